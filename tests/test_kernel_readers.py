"""rtnl and nfnl: the in-process readers of routes, rules, links, addresses, map counters and
fw4's rule comments give the same answers as `ip -j` / `nft -j`, on the real kernel in a
scratch namespace; and every reader falls back to the tool when netlink fails.

The comparisons run inside the namespace, in a helper process that prints both sides.
"""

import json
import os
import subprocess
import sys

import pytest

from tests import support
from wormhole import facts, nfnl, rtnl, system

HELPER = r'''
import json, subprocess, sys
sys.path.insert(0, sys.argv[1])
from wormhole import facts, nfnl, rtnl

def tool(*argv):
    p = subprocess.run(list(argv), capture_output=True, text=True)
    return json.loads(p.stdout) if p.returncode == 0 and p.stdout.strip() else None

out = {}
exec(sys.argv[2])
print(json.dumps(out))
'''


def inside(ns, code):
    """Run `code` (filling `out`) in the namespace with rtnl/nfnl/facts and `tool()` at hand."""
    p = ns.exec([sys.executable, "-c", HELPER, os.path.join(support.REPO, "rpcd"), code])
    return json.loads(p.stdout)


ROUTE_KEYS = ("type", "dst", "gateway", "dev", "table")


def _routes(rows):
    return [{k: r[k] for k in ROUTE_KEYS if k in r} for r in rows or []]


@pytest.fixture
def lan(netns):
    """The scratch namespace plus a LAN-side link, forwarding, and rules and routes like ours."""
    for argv in (["ip", "link", "add", "lan0", "type", "veth", "peer", "name", "lan0p"],
                 ["ip", "link", "set", "lan0", "up"], ["ip", "link", "set", "lan0p", "up"],
                 ["ip", "addr", "add", "192.168.1.1/24", "dev", "lan0"],
                 ["sysctl", "-qw", "net.ipv4.ip_forward=1"],
                 ["ip", "route", "add", "198.51.100.0/24", "via", "192.0.2.1", "mtu", "1400"],
                 ["ip", "rule", "add", "priority", "89", "iif", "wan0", "fwmark", "0x1000000/0xf000000", "lookup", "main"],
                 ["ip", "rule", "add", "priority", "90", "fwmark", "0x1000000/0xf000000", "lookup", "4091"],
                 ["ip", "rule", "add", "priority", "32857", "from", "10.0.0.1", "fwmark", "0/0xf000000", "lookup", "4091"],
                 ["ip", "rule", "add", "priority", "32858", "from", "10.1.0.0/16", "lookup", "4092"],
                 ["ip", "-6", "rule", "add", "priority", "90", "fwmark", "0x1000000/0xf000000", "lookup", "4091"],
                 ["ip", "route", "add", "default", "via", "192.0.2.1", "dev", "wan0", "table", "4091"],
                 ["ip", "route", "add", "10.9.0.0/16", "dev", "wan0", "table", "4091"],
                 ["ip", "route", "add", "unreachable", "10.8.0.0/16", "table", "4091"],
                 ["ip", "-6", "route", "add", "default", "via", "2001:db8:2::1", "dev", "wan0", "table", "4091"]):
        netns.exec(argv)
    return netns


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_rules_are_what_ip_shows(lan, family):
    r = inside(lan, "out['ours'] = rtnl.rules(%r); out['ip'] = tool('ip', '-j', %r, 'rule', 'show')"
               % (family, "-4" if family == "ipv4" else "-6"))
    assert r["ours"] == r["ip"]
    assert any(x.get("fwmask") == "0xf000000" for x in r["ours"])


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_routes_of_all_tables_are_what_ip_shows(lan, family):
    r = inside(lan, "out['ours'] = rtnl.routes(%r); out['ip'] = tool('ip', '-j', %r, 'route', 'show', 'table', 'all')"
               % (family, "-4" if family == "ipv4" else "-6"))
    assert _routes(r["ours"]) == _routes(r["ip"])
    assert {"dst": "default", "gateway": "192.0.2.1" if family == "ipv4" else "2001:db8:2::1", "dev": "wan0",
            "table": "4091"} in _routes(r["ours"])


def test_links_addresses_and_default_routes_are_what_ip_shows(lan):
    r = inside(lan, """
out['link'] = rtnl.link('wan0'); out['ip_link'] = tool('ip', '-j', 'link', 'show', 'dev', 'wan0')
out['none'] = rtnl.link('nosuchdev0')
out['addr'] = rtnl.addresses('ipv4'); out['ip_addr'] = tool('ip', '-j', '-4', 'addr', 'show')
out['gw'] = rtnl.default_routes('wan0', 'ipv4'); out['ip_gw'] = tool('ip', '-j', '-4', 'route', 'show', 'default', 'dev', 'wan0')
""")
    keys = ("ifname", "flags", "mtu")
    assert [{k: x[k] for k in keys} for x in r["link"]] == [{k: x[k] for k in keys} for x in r["ip_link"]]
    assert "UP" in r["link"][0]["flags"] and r["none"] == []
    addr = [(x["ifname"], x["flags"], [(a["local"], a["prefixlen"]) for a in x["addr_info"]]) for x in r["addr"]]
    assert addr == [(x["ifname"], x["flags"], [(a["local"], a["prefixlen"]) for a in x["addr_info"]])
                    for x in r["ip_addr"]]
    assert [x["gateway"] for x in r["gw"]] == [x["gateway"] for x in r["ip_gw"]] == ["192.0.2.1"]


@pytest.mark.parametrize("args", [
    ("198.51.100.254",),                   # via a gateway, a route with an mtu
    ("192.0.2.3",),                        # on-link
    ("192.0.2.2",),                        # local
    ("203.0.113.9", "192.168.1.7", "lan0"),  # forwarded from the LAN (the kill-switch probe)
    ("2001:db8:2::9",),
    ("2001:db8:ffff::1",),                 # no IPv6 default route here: no answer
    ("10.8.1.1", "192.168.1.7", "nosuchdev0"),
])
def test_route_get_is_what_ip_shows(lan, args):
    extra = ("from", args[1], "iif", args[2]) if len(args) > 1 else ()
    r = inside(lan, "out['ours'] = facts.route_get(%r, %r); out['ip'] = tool(*%r)"
               % (args[0], extra, ["ip", "-j", "route", "get", args[0]] + list(extra)))
    ip = r["ip"][0] if r["ip"] else None
    if ip is None:
        assert r["ours"] is None
        return
    assert {k: r["ours"].get(k) for k in ("type", "dst", "gateway", "dev", "metrics")} == \
        {k: ip.get(k) for k in ("type", "dst", "gateway", "dev", "metrics")}


# --- nfnl ---------------------------------------------------------------------------------------

TABLE = """table inet wormhole {
	map in_wan {
		type inet_service . inet_proto . nf_proto : verdict
		flags interval
		counter
		elements = { 443 . tcp . ipv4 counter packets 5 bytes 300 : jump mark_wan,
			     443 . tcp . ipv6 counter packets 0 bytes 0 : jump mark_wan,
			     9000-9003 . udp . ipv4 counter packets 7 bytes 12345678901 : jump mark_wan }
	}
	map dnat_old {
		type nf_proto . inet_proto . inet_service : verdict
		flags interval
		counter
		elements = { ipv4 . tcp . 8443 counter packets 2 bytes 120 : jump mark_wan,
			     ipv6 . udp . 5000-5010 counter packets 1 bytes 60 : jump mark_wan }
	}
	map in_empty {
		type inet_service . inet_proto . nf_proto : verdict
		flags interval
		counter
	}
	set in_not_a_map {
		type inet_service
	}
	chain mark_wan {
		ct mark set 1
	}
}
table inet fw4 {
	chain input {
		type filter hook input priority filter; policy accept;
		ct mark & 0x30000000 != 0x00000000 accept comment "!wormhole: accept ports opened or forwarded"
		tcp dport 22 accept comment "Allow-SSH"
		tcp dport 23 accept
	}
}
"""


@pytest.fixture
def tables(netns, tmp_path):
    f = tmp_path / "t.nft"
    f.write_text(TABLE)
    netns.exec(["nft", "-f", str(f)])
    return netns


def _nft_counters_by_nft():
    """What facts.nft_counters made of `nft -j` before nfnl (its own fallback path)."""
    return '''
data = tool('nft', '-j', 'list', 'table', 'inet', 'wormhole')
ref = {}
for obj in (data or {}).get('nftables', []):
    m = obj.get('map')
    if m and m['name'].startswith(('in_', 'dnat_')):
        ref[m['name']] = dict(facts._element(i) for i in m.get('elem', []))
out['nft'] = ref
'''


def test_map_counters_are_what_nft_shows(tables):
    r = inside(tables, "out['ours'] = nfnl.map_counters()\n" + _nft_counters_by_nft())
    assert r["ours"] == r["nft"]
    assert r["ours"]["in_wan"] == {"443 . tcp . ipv4": [5, 300], "443 . tcp . ipv6": [0, 0],
                                   "9000-9003 . udp . ipv4": [7, 12345678901]}
    # a table loaded with the family first (before 0.1.0-r2) reads the same, port first
    assert r["ours"]["dnat_old"] == {"8443 . tcp . ipv4": [2, 120], "5000-5010 . udp . ipv6": [1, 60]}
    assert r["ours"]["in_empty"] == {} and "in_not_a_map" not in r["ours"]


def test_map_counters_without_the_table(netns):
    assert inside(netns, "out['ours'] = nfnl.map_counters()") == {"ours": {}}


def test_rule_comments_are_what_nft_shows(tables):
    r = inside(tables, """
out['ours'] = {str(h): c for h, c in nfnl.rule_comments('fw4', 'input').items()}
data = tool('nft', '-j', '-a', 'list', 'chain', 'inet', 'fw4', 'input')
out['nft'] = {str(o['rule']['handle']): o['rule'].get('comment') for o in data['nftables'] if 'rule' in o}
out['no_chain'] = nfnl.rule_comments('fw4', 'forward')
out['no_table'] = nfnl.rule_comments('nosuchtable', 'input')
""")
    assert r["ours"] == r["nft"]
    assert sorted(c for c in r["ours"].values() if c) == ["!wormhole: accept ports opened or forwarded", "Allow-SSH"]
    assert r["no_chain"] is None and r["no_table"] is None


# --- fallbacks ----------------------------------------------------------------------------------

@pytest.fixture
def tools_here(monkeypatch):
    monkeypatch.delenv("WORMHOLE_PATH", raising=False)
    support.require_root_tools("ip", "nft")


def _broken(*_a, **_k):
    raise rtnl.Error("simulated netlink failure")


def test_rtnl_failure_falls_back_to_ip(tools_here, monkeypatch):
    expected = facts._link("lo")
    monkeypatch.setattr(rtnl, "_request", _broken)
    calls = []
    real = system.run_json
    monkeypatch.setattr(system, "run_json", lambda argv, **kw: calls.append(argv) or real(argv, **kw))
    assert facts._link("lo")["ifname"] == "lo" and facts._link("lo")["flags"] == expected["flags"]
    assert calls and calls[0][:2] == ["ip", "-j"]


def test_nfnl_failure_falls_back_to_nft(tools_here, monkeypatch):
    def broken(*_a, **_k):
        raise nfnl.Error("simulated")
    monkeypatch.setattr(nfnl, "_request", broken)
    calls = []
    monkeypatch.setattr(system, "run_json", lambda argv, **kw: calls.append(argv) or None)
    assert facts.nft_counters() == {}
    assert calls == [["nft", "-j", "list", "table", "inet", "wormhole"]]


def test_no_kernel_reading_where_the_tool_is_missing(monkeypatch, tmp_path):
    # As before: without `ip` there are no route facts (tests rely on an empty WORMHOLE_PATH).
    monkeypatch.setenv("WORMHOLE_PATH", str(tmp_path))
    monkeypatch.setattr(rtnl, "_request", lambda *a, **k: pytest.fail("rtnl used without ip"))
    monkeypatch.setattr(nfnl, "_request", lambda *a, **k: pytest.fail("nfnl used without nft"))
    assert facts._link("lo") is None and facts.route_get("198.51.100.1") is None
    assert facts.nft_counters() == {}


# --- what a LuCI poll loads --------------------------------------------------------------------

MODULES = r'''
import runpy, sys
sys.argv = [sys.argv[1], "call", sys.argv[2]]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit:
    pass
sys.stderr.write("MODULES " + " ".join(sorted(sys.modules)) + "\n")
'''


@pytest.mark.parametrize("method", ["list", "status"])
def test_a_poll_starts_no_tool_and_loads_no_writer(netns, tmp_path, method):
    root = tmp_path / "root"
    support.write_config(root, support.UPLINK_WAN + "\nconfig exemption 'ex_a'\n\toption port '443'\n")
    p = subprocess.run(["ip", "netns", "exec", netns.name, "strace", "-f", "-qq", "-e", "trace=execve",
                        "-e", "signal=none", "-o", "/dev/stderr", sys.executable, "-c", MODULES, support.PLUGIN,
                        method], input=b"{}", capture_output=True, timeout=60, cwd="/",
                       env=support.clean_env(root)) if _has("strace") else None
    if p is None:
        support.unavailable("needs strace")
    err = p.stderr.decode()
    reply = json.loads(p.stdout)
    assert "error" not in reply, reply
    execs = [line for line in err.splitlines() if "execve(" in line and "ENOENT" not in line]
    assert len(execs) == 1, execs           # the interpreter itself, nothing else
    modules = set(err.split("MODULES ", 1)[1].split())
    assert not {"subprocess", "wormhole.apply", "wormhole.render", "wormhole.diagnostics"} & modules


def test_status_with_forwards_loads_no_writer(netns, tmp_path):
    """With forwards, status adds their warnings (diagnostics), still without apply or render."""
    root = tmp_path / "root"
    support.write_config(root, support.UPLINK_WAN + "\nconfig redirect 'rd_a'\n\toption src_dport '8443'\n"
                                                    "\toption dest_ip '192.0.2.5'\n")
    p = subprocess.run(["ip", "netns", "exec", netns.name, sys.executable, "-c", MODULES, support.PLUGIN, "status"],
                       input=b"{}", capture_output=True, timeout=60, cwd="/", env=support.clean_env(root))
    reply = json.loads(p.stdout)
    assert "error" not in reply, reply
    modules = set(p.stderr.decode().split("MODULES ", 1)[1].split())
    assert "wormhole.diagnostics" in modules
    assert not {"wormhole.apply", "wormhole.render"} & modules


def _has(tool):
    import shutil
    return shutil.which(tool) is not None


# --- a foreign firewall's drop-all chains (check's `foreign-firewall`) ---------------------

FOREIGN = """
table inet nym {
	chain input {
		type filter hook input priority filter - 10; policy drop;
		ct mark & 0x1f000000 != 0 accept
		iif "lo" accept
	}
	chain output {
		type filter hook output priority filter - 10; policy drop;
		oif "lo" accept
		ct mark & 0x1f000000 != 0 accept
	}
	chain forward {
		type filter hook forward priority filter - 10; policy accept;
		iifname "tun0" accept
		counter reject
	}
	chain quiet {
		type filter hook prerouting priority filter; policy accept;
	}
}
table ip filter {
	chain INPUT {
		type filter hook input priority filter; policy drop;
	}
}
table inet open {
	chain input {
		type filter hook input priority filter; policy accept;
		tcp dport 22 accept
	}
}
"""


def test_foreign_filter_chains_are_read_as_nft_lists_them(netns):
    netns.exec(["nft", "-f", "-"], input=FOREIGN)
    got = inside(netns, "out['chains'] = facts.foreign_filter_chains()")["chains"]
    by = {(c["table"], c["chain"]): c for c in got}
    # the iptables-nft table and the chain at prerouting are not a VPN's filter
    assert set(by) == {("nym", "input"), ("nym", "output"), ("nym", "forward"), ("open", "input")}
    assert by[("nym", "input")]["drops"] and by[("nym", "input")]["accepts"] == [0x1f000000]
    # an accept appended after the others still comes before a drop *policy*
    assert by[("nym", "output")]["drops"] and by[("nym", "output")]["accepts"] == [0x1f000000]
    # a last rule that rejects drops too; nothing there accepts our mark
    assert by[("nym", "forward")]["drops"] and by[("nym", "forward")]["accepts"] == []
    assert not by[("open", "input")]["drops"]
    from wormhole import diagnostics
    from wormhole.layout import Marks
    findings = diagnostics.foreign_drop_findings(got, Marks(0xff000000))
    levels = {f["message"].split(" (hook")[0]: f["level"] for f in findings}
    assert levels == {"table inet nym chain forward": "error", "table inet nym chain input": "ok",
                      "table inet nym chain output": "ok"}, levels
    fix = [f for f in findings if f["level"] == "error"][0]["message"]
    assert "nft insert rule inet nym forward ct mark & 0x1f000000 != 0 accept" in fix
