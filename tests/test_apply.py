"""Apply in a real (scratch) network namespace: kernel state, rollback, removal, fw3.

Packets are proven in the lab tests (tests/test_lab_*.py); these tests check that apply
puts exactly the planned state into the kernel and takes it out again.
"""

import json
import os
import stat

import pytest

from tests import support
from wormhole.render import nft as nft_render

FW4_BASE = """table inet fw4
flush table inet fw4
table inet fw4 {
	chain input { type filter hook input priority filter; policy accept;
		iif "lo" accept comment "!fw4: Accept traffic from loopback"
		ct state vmap { established : accept, related : accept } comment "!fw4: Handle inbound flows"
	}
	chain forward { type filter hook forward priority filter; policy accept;
		ct state vmap { established : accept, related : accept } comment "!fw4: Handle forwarded flows"
	}
	chain mangle_forward { type filter hook forward priority mangle; policy accept;
	}
}
"""


@pytest.fixture
def lab(netns, tmp_path):
    root = tmp_path / "root"
    support.write_config(root, support.UPLINK_WAN)
    netns.exec(["nft", "-f", "-"], input=FW4_BASE)
    netns.root = root
    return netns


def wh(lab, *args, check=True, env=None):
    p = support.cli(lab.root, *args, ns=lab, extra_env=env)
    if check:
        assert p.returncode == 0, "wormhole %s: %s%s" % (" ".join(args), p.stdout, p.stderr)
    return p


def kernel(lab):
    """Everything wormhole could have touched in the namespace, as text."""
    parts = [lab.exec(["nft", "list", "ruleset"]).stdout]
    for fam in ("-4", "-6"):
        parts.append(lab.exec(["ip", fam, "rule", "show"]).stdout)
        parts.append(lab.exec(["ip", fam, "route", "show", "table", "all"]).stdout)
    return "\n".join(parts)


def test_apply_installs_the_plan(lab):
    wh(lab, "inbound", "add", "tcp:443", "--label", "LuCI", "--open")
    ruleset = lab.exec(["nft", "list", "table", "inet", "wormhole"]).stdout
    assert "443 . tcp . ipv4" in ruleset and "443 . tcp . ipv6" in ruleset
    fw4_input = lab.exec(["nft", "list", "chain", "inet", "fw4", "input"]).stdout
    assert "!wormhole: accept ports opened or forwarded" in fw4_input
    rules4 = lab.exec(["ip", "-4", "rule", "show"]).stdout
    assert "89:\tfrom all fwmark 0x1000000/0xf000000 iif wan0 lookup main" in rules4
    assert "90:\tfrom all fwmark 0x1000000/0xf000000 lookup 4091" in rules4
    assert "default via 192.0.2.1 dev wan0" in lab.exec(["ip", "-4", "route", "show", "table", "4091"]).stdout
    assert "default via 2001:db8:2::1 dev wan0" in lab.exec(["ip", "-6", "route", "show", "table", "4091"]).stdout
    ruleset_file = lab.root / "usr/share/nftables.d/ruleset-post/50-wormhole.nft"
    assert ruleset_file.read_text().count("table inet wormhole") == 3
    status = json.loads(wh(lab, "status", "--json").stdout)
    assert status["last_apply"]["ok"] is True
    listed = json.loads(wh(lab, "inbound", "list", "--json").stdout)["exemptions"]
    assert [e["status"] for e in listed] == ["inert"]


def test_reapply_is_idempotent(lab):
    wh(lab, "inbound", "add", "tcp:443")
    first = kernel(lab)
    wh(lab, "apply")
    wh(lab, "apply")
    assert kernel(lab) == first


def test_reapply_does_not_rewrite_files(lab):
    """Hotplug re-applies on every interface event: unchanged output must not touch flash."""
    wh(lab, "inbound", "add", "tcp:443")
    files = [p for p in (lab.root / "usr").rglob("*") if p.is_file()]
    before = {p: p.stat().st_ino for p in files}
    wh(lab, "apply")
    assert {p: p.stat().st_ino for p in files} == before


def test_snippets_are_inserted_once(lab):
    wh(lab, "inbound", "add", "tcp:443")
    wh(lab, "inbound", "add", "tcp:80")
    for chain in nft_render.SNIPPET_CHAINS:
        text = lab.exec(["nft", "list", "chain", "inet", "fw4", chain]).stdout
        assert text.count("!wormhole:") == 1, text


def _failing_nft(tmp_path):
    """An `nft` that hands the kernel a ruleset with one bad line appended to every -f load."""
    d = tmp_path / "bin"
    d.mkdir()
    real = "/usr/sbin/nft"
    script = d / "nft"
    script.write_text("#!/bin/sh\nif [ \"$1\" = -f ]; then cp \"$2\" \"$2.bad\"; "
                      "echo 'table inet wormhole { chain broken { jump does_not_exist } }' >> \"$2.bad\"; "
                      "exec %s -f \"$2.bad\"; fi\nexec %s \"$@\"\n" % (real, real))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return {"WORMHOLE_PATH": "%s:%s" % (d, support.CLEAN_PATH)}


def test_rejected_apply_keeps_previous_state_and_the_config_change(lab, tmp_path):
    wh(lab, "inbound", "add", "tcp:443")
    before = kernel(lab)
    files_before = (lab.root / "usr/share/nftables.d/ruleset-post/50-wormhole.nft").read_text()
    p = wh(lab, "inbound", "add", "udp:51820", "--json", check=False, env=_failing_nft(tmp_path))
    assert p.returncode == 1
    err = json.loads(p.stdout)["error"]
    assert err["code"] == "apply_failed" and "does_not_exist" in err["message"] and err["id"].startswith("ex_")
    assert kernel(lab) == before
    assert (lab.root / "usr/share/nftables.d/ruleset-post/50-wormhole.nft").read_text() == files_before
    assert "udp" in support.read_config(lab.root).decode()
    status = json.loads(wh(lab, "status", "--json").stdout)
    assert status["last_apply"]["ok"] is False and "does_not_exist" in status["last_apply"]["error"]
    listed = {e["port"]: e for e in json.loads(wh(lab, "inbound", "list", "--json").stdout)["exemptions"]}
    assert listed["51820"]["status"] == "error"
    wh(lab, "apply")
    assert "51820 . udp . ipv4" in lab.exec(["nft", "list", "table", "inet", "wormhole"]).stdout


def test_missing_tool_is_reported(lab, tmp_path):
    env = {"WORMHOLE_PATH": str(tmp_path / "empty")}
    p = wh(lab, "inbound", "add", "tcp:443", "--json", check=False, env=env)
    err = json.loads(p.stdout)["error"]
    assert err["code"] == "apply_failed" and "not installed" in err["message"]


def test_disable_and_cleanup_remove_everything(lab):
    pristine = kernel(lab)
    wh(lab, "inbound", "add", "tcp:443", "--open")
    wh(lab, "forward", "add", "tcp:8443", "192.168.1.20:443", "--snat")
    assert kernel(lab) != pristine
    cfg = support.read_config(lab.root).decode().replace("option backend 'fw4'", "option backend 'fw4'\n\toption enabled '0'")
    support.write_config(lab.root, cfg)
    wh(lab, "apply")
    assert kernel(lab) == pristine
    assert not (lab.root / "usr/share/nftables.d/chain-pre/input/50-wormhole.nft").exists()
    support.write_config(lab.root, cfg.replace("\toption enabled '0'\n", ""))
    wh(lab, "apply")
    assert kernel(lab) != pristine
    wh(lab, "cleanup")
    assert kernel(lab) == pristine
    leftovers = [os.path.join(d, f) for d, _, fs in os.walk(lab.root / "usr") for f in fs]
    assert leftovers == []


def test_flushed_ip_rules_come_back_on_apply(lab):
    wh(lab, "inbound", "add", "tcp:443")
    good = kernel(lab)
    for fam in ("-4", "-6"):
        for prio in ("89", "90"):
            lab.exec(["ip", fam, "rule", "del", "priority", prio])
    lab.exec(["ip", "-4", "route", "flush", "table", "4091"])
    assert kernel(lab) != good
    check = json.loads(wh(lab, "check", "--json", check=False).stdout)
    assert any(f["check"] == "ip-rule" and f["level"] == "error" for f in check["findings"])
    wh(lab, "apply")
    assert kernel(lab) == good


def test_fw3_backend(lab):
    cfg = support.read_config(lab.root).decode().replace("option backend 'fw4'", "option backend 'fw3'")
    support.write_config(lab.root, cfg)
    wh(lab, "inbound", "add", "tcp:443", "--open")
    wh(lab, "apply")
    wh(lab, "apply")
    saved = lab.exec(["iptables-save"]).stdout
    assert saved.count("-j WORMHOLE_PRE") == 1 and saved.count("-j WORMHOLE_INPUT") == 1
    assert "--dport 443" in saved and "CONNMARK --set-xmark 0x21000000/0x2f000000" in saved
    assert "--dport 443" in lab.exec(["ip6tables-save"]).stdout
    assert "90:\tfrom all fwmark 0x1000000/0xf000000 lookup 4091" in lab.exec(["ip", "-4", "rule"]).stdout
    wh(lab, "inbound", "del", "tcp:443")
    saved = lab.exec(["iptables-save"]).stdout
    assert "WORMHOLE" not in saved
    wh(lab, "inbound", "add", "tcp:443")
    wh(lab, "cleanup")
    after = kernel(lab)
    # iptables-nft leaves its (empty) built-in tables behind; ours must all be gone.
    assert "WORMHOLE" not in after and "wormhole" not in after
    for fam in ("-4", "-6"):
        assert "fwmark" not in lab.exec(["ip", fam, "rule", "show"]).stdout
        assert "table 4091" not in lab.exec(["ip", fam, "route", "show", "table", "all"]).stdout
