"""The edges a router owner touches first (issue 14): nothing fails quietly, a bad value is
never read as "on", each verb touches only its own type, and the service can be switched
off as a whole. Through the CLI and the plugin as a router runs them, in a scratch
namespace (apply reaches a real kernel there)."""

import json

import pytest

from tests import support

BROKEN = """
config exemption 'ex_ok'
	option port '443'

config exemption 'ex_badport'
	option port '8o8o'

config exemption 'ex_typo'
	option port '5000'
	option prot 'udp'

config exemption 'ex_maybe'
	option port '5001'
	option enabled 'maybe'

config exemption 'ex_nowhere'
	option port '5002'
	option interface 'nowhere'
"""


@pytest.fixture
def broken(tmp_path):
    r = tmp_path / "root"
    support.write_config(r, support.UPLINK_WAN + BROKEN)
    return r


def _skipped(reply):
    return set(reply["skipped"])


def test_apply_names_every_skipped_section_and_exits_3(broken, netns):
    p = support.cli(broken, "apply", ns=netns)
    assert p.returncode == 3, (p.stdout, p.stderr)
    for sid in ("ex_badport", "ex_maybe", "ex_nowhere"):
        assert "wormhole: skipped %s: " % sid in p.stderr, p.stderr
    assert "skipped ex_ok" not in p.stderr and "skipped ex_typo" not in p.stderr
    assert "warning: ex_typo: prot: unknown option ignored" in p.stdout
    reply = json.loads(support.cli(broken, "apply", "--json", ns=netns).stdout)
    assert reply["applied"] is True
    assert reply["skipped"]["ex_badport"] == "port: '8o8o' is not a port or a range N-M"
    assert reply["skipped"]["ex_maybe"] == "enabled: 'maybe' is not a boolean (use 1 or 0)"
    assert "nowhere" in reply["skipped"]["ex_nowhere"]
    assert _skipped(reply) == {"ex_badport", "ex_maybe", "ex_nowhere"}
    # the kernel has what was not skipped, and only that
    table = netns.exec(["nft", "list", "table", "inet", "wormhole"]).stdout
    assert " 443 . tcp . " in table and " 5000 . tcp . " in table
    assert "5001" not in table and "5002" not in table


def test_render_skipped_includes_sections_with_bad_options(broken, netns):
    reply, _ = support.plugin(broken, "render", {"backend": "fw4"}, ns=netns)
    assert _skipped(reply) == {"ex_badport", "ex_maybe", "ex_nowhere"}
    assert "ex_typo: prot: unknown option ignored" in reply["warnings"]
    p = support.cli(broken, "render", "--fw3", ns=netns)
    assert p.returncode == 3 and "# skipped ex_badport: " in p.stdout


def test_an_unknown_option_is_said_by_list_and_status(broken):
    reply, _ = support.plugin(broken, "list")
    typo = [e for e in reply["exemptions"] if e["id"] == "ex_typo"][0]
    assert typo["warnings"] == ["prot: unknown option ignored"]
    assert "warnings" not in [e for e in reply["exemptions"] if e["id"] == "ex_ok"][0]
    assert "ex_typo: prot: unknown option ignored" in support.plugin(broken, "status")[0]["warnings"]


def test_a_clean_apply_exits_0_with_nothing_skipped(tmp_path, netns):
    r = tmp_path / "root"
    support.write_config(r, support.UPLINK_WAN + "\nconfig exemption 'ex_ok'\n\toption port '443'\n")
    p = support.cli(r, "apply", ns=netns)
    assert p.returncode == 0 and p.stderr == ""
    assert json.loads(support.cli(r, "apply", "--json", ns=netns).stdout)["skipped"] == {}


@pytest.mark.parametrize("word", ["maybe", "2", "ture"])
def test_main_enabled_that_is_neither_on_nor_off_applies_nothing_and_changes_nothing(tmp_path, netns, word):
    r = tmp_path / "root"
    path = support.write_config(r, support.UPLINK_WAN.replace("option backend 'fw4'", "option backend 'fw4'\n\toption enabled '%s'" % word)
                                + "\nconfig exemption 'ex_ok'\n\toption port '443'\n")
    before = support.read_config(r)
    for method, args in (("apply", {}), ("add", {"port": "22"}), ("update", {"id": "ex_ok", "label": "x"}),
                         ("del", {"id": "ex_ok"})):
        reply, _ = support.plugin(r, method, args, ns=netns)
        assert reply["error"]["code"] == "invalid_argument" and reply["error"]["field"] == "main.enabled", reply
        assert "wormhole enable" in reply["error"]["message"]
        assert support.read_config(r) == before, method
    assert netns.exec(["nft", "list", "table", "inet", "wormhole"], check=False).returncode != 0, \
        "nothing was applied"
    # the fix is the one write allowed
    p = support.cli(r, "enable", ns=netns)
    assert p.returncode == 0, p.stderr
    assert "option enabled '1'" in open(path).read()
    assert " 443 . tcp . " in netns.exec(["nft", "list", "table", "inet", "wormhole"]).stdout


def test_disable_and_enable_switch_the_whole_service(tmp_path, netns):
    r = tmp_path / "root"
    support.write_config(r, support.UPLINK_WAN + "\nconfig exemption 'ex_ok'\n\toption port '443'\n")
    assert support.cli(r, "apply", ns=netns).returncode == 0
    p = support.cli(r, "disable", ns=netns)
    assert p.returncode == 0, p.stderr
    assert netns.exec(["nft", "list", "table", "inet", "wormhole"], check=False).returncode != 0
    assert "fwmark" not in netns.exec(["ip", "rule"]).stdout
    assert support.plugin(r, "status", ns=netns)[0]["enabled"] is False
    # off means off for the hotplug path as well
    assert json.loads(support.cli(r, "apply", "--json", ns=netns).stdout)["applied"] is True
    assert netns.exec(["nft", "list", "table", "inet", "wormhole"], check=False).returncode != 0
    assert support.cli(r, "enable", ns=netns).returncode == 0
    assert " 443 . tcp . " in netns.exec(["nft", "list", "table", "inet", "wormhole"]).stdout
    reply, _ = support.plugin(r, "settings", {"priority": "x"}, ns=netns)
    assert reply["error"]["field"] == "priority"
    reply, _ = support.plugin(r, "settings", {}, ns=netns)
    assert reply["error"]["code"] == "invalid_argument"


def test_mss_on_a_udp_forward_is_a_warning_in_the_reply(tmp_path, netns):
    r = tmp_path / "root"
    support.write_config(r, support.UPLINK_WAN)
    p = support.cli(r, "forward", "add", "udp:27015", "192.168.1.20", "--mss", "1400", ns=netns)
    assert p.returncode == 0, p.stderr
    assert "mss: ignored: MSS clamping applies to TCP only" in p.stdout


def test_a_forward_to_the_router_itself_points_to_an_exemption(tmp_path, netns):
    r = tmp_path / "root"
    support.write_config(r, support.UPLINK_WAN)
    before = support.read_config(r)
    for dest in ("192.0.2.2:80", "[2001:db8:2::2]:80"):
        p = support.cli(r, "forward", "add", "tcp:8080", dest, "--json", ns=netns)
        err = json.loads(p.stdout)["error"]
        assert (err["code"], err["field"]) == ("invalid_argument", "dest_ip"), err
        assert "address of this router" in err["message"] and "wormhole inbound add tcp:8080" in err["message"]
    assert support.read_config(r) == before


def test_each_verb_touches_only_its_own_type(tmp_path, netns):
    r = tmp_path / "root"
    support.write_config(r, support.UPLINK_WAN + "\nconfig exemption 'ex_a'\n\toption port '8000-8010'\n"
                         "\nconfig redirect 'rd_a'\n\toption src_dport '8000-8010'\n\toption dest_ip '192.168.1.20'\n"
                         "\toption src 'wan'\n")
    before = support.read_config(r)
    for argv in (["forward", "del", "ex_a"], ["inbound", "del", "rd_a"], ["forward", "disable", "ex_a"],
                 ["inbound", "enable", "rd_a"]):
        p = support.cli(r, *argv, ns=netns)
        assert p.returncode == 1 and "(not_found)" in p.stderr, (argv, p.stderr)
        assert support.read_config(r) == before, argv
    # `del 8000-8010` is the spec `add 8000-8010` took, not an id
    p = support.cli(r, "inbound", "del", "8000-8010", ns=netns)
    assert p.returncode == 0 and "deleted ex_a" in p.stdout, p.stderr
    p = support.cli(r, "forward", "del", "tcp:8000-8010", "--src", "wan", ns=netns)
    assert p.returncode == 0 and "deleted rd_a" in p.stdout, p.stderr


def test_an_unwritable_config_has_its_own_code(tmp_path, netns):
    """Not `conflict` (overlapping entries): the UI must tell "fix the file" apart."""
    r = tmp_path / "root"
    support.write_config(r, "config exemption 'x'\n\toption port '1\n")
    reply, _ = support.plugin(r, "add", {"port": "80"}, ns=netns)
    assert (reply["error"]["code"], reply["error"]["field"]) == ("config_error", "config")
    reply, _ = support.plugin(r, "list", ns=netns)
    assert reply["error"]["code"] == "config_error"


def _vpn_device(netns, name="vpn0"):
    netns.exec(["ip", "link", "add", name, "type", "veth", "peer", "name", name + "p"])
    netns.exec(["ip", "link", "set", name + "p", "up"])
    netns.exec(["ip", "addr", "add", "10.99.0.2/30", "dev", name])
    netns.exec(["ip", "link", "set", name, "up"])


@pytest.mark.parametrize("style", ["pbr", "tailscale"])
def test_a_vpn_that_captures_by_marks_and_rules_is_seen(tmp_path, netns, style):
    """pbr's policies mark traffic (0x00ff0000 bits) and route the marks by ip rules from
    30000; a Tailscale exit node routes by its table 52 (rules 5210-5270). Neither touches
    the main default route, so a probe without a mark alone said "kill-switch off"."""
    r = tmp_path / "root"
    support.write_config(r, support.UPLINK_WAN)
    assert support.plugin(r, "status", ns=netns)[0]["killswitch"]["active"] is False
    _vpn_device(netns)
    if style == "pbr":
        netns.exec(["ip", "route", "add", "default", "dev", "vpn0", "table", "30001"])
        netns.exec(["ip", "rule", "add", "fwmark", "0x10000/0xff0000", "lookup", "30001", "priority", "30000"])
    else:
        netns.exec(["ip", "route", "add", "default", "dev", "vpn0", "table", "52"])
        netns.exec(["ip", "rule", "add", "fwmark", "0x80000/0xff0000", "lookup", "main", "priority", "5210"])
        netns.exec(["ip", "rule", "add", "lookup", "52", "priority", "5270"])
    ks = support.plugin(r, "status", ns=netns)[0]["killswitch"]
    assert ks["active"] is True and ks["via"] == "vpn0", ks
    if style == "pbr":
        assert ks["marked"] is True and "0x10000/0xff0000" in ks["reason"] and "30000" in ks["reason"]
    # and the exemptions are then active, not inert
    support.write_config(r, support.UPLINK_WAN + "\nconfig exemption 'ex_a'\n\toption port '443'\n")
    assert support.cli(r, "apply", ns=netns).returncode == 0
    (entry,) = support.plugin(r, "list", ns=netns)[0]["exemptions"]
    assert entry["status"] == "active", entry


def test_our_own_mark_rules_are_not_a_killswitch(tmp_path, netns):
    r = tmp_path / "root"
    support.write_config(r, support.UPLINK_WAN + "\nconfig exemption 'ex_a'\n\toption port '443'\n")
    assert support.cli(r, "apply", ns=netns).returncode == 0
    assert "fwmark" in netns.exec(["ip", "rule"]).stdout
    assert support.plugin(r, "status", ns=netns)[0]["killswitch"]["active"] is False


@pytest.mark.parametrize("options,fw,level,words", [
    ({}, "fw4", None, None),
    ({"flow_offloading": "0"}, "fw4", None, None),
    ({"flow_offloading": "1"}, "fw4", "ok", "restored mark"),
    ({"flow_offloading": "1", "flow_offloading_hw": "1"}, "fw4", "ok", "not verified on hardware"),
    ({"flow_offloading": "on"}, "fw3", "warn", "not analysed"),
])
def test_check_says_what_it_knows_of_flow_offloading(options, fw, level, words):
    from wormhole import diagnostics
    from wormhole.uci import Section
    found = diagnostics.offload_findings([Section("d", "defaults", True, options)], fw)
    if level is None:
        assert found == []
        return
    (f,) = found
    assert f["check"] == "offload" and f["level"] == level and words in f["message"]
    assert "DESIGN-NOTES" in f["message"]
