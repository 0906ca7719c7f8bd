"""Self-tests of the netns lab: it builds, cleans up, and shows the problem the
product solves with real packets."""

import json
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from . import GatewayLab, RouterLab, cleanup_stale, netns, state
from . import pytest_support
from .firewall import Fw4, Rule, Zone
from .fw4_render import render
from .observe import parse_conntrack_line
from .pytest_support import require_lab

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
FAMILIES = [4, 6]


def lab_traces(lab_id):
    """Everything a lab with this id could leave behind (processes: by namespace)."""
    namespaces = [ns for ns in netns.list_ns() if ns.startswith(f"wh{lab_id}-")]
    return {
        "namespaces": namespaces,
        "sockets": sorted(p.name for p in state.WG_SOCKET_DIR.glob(f"wh{lab_id}*")),
        "processes": sorted(pid for ns in namespaces for pid in netns.ns_pids(ns)),
        "state": state.state_path(lab_id).exists(),
    }


def assert_gone(lab_id, tmp, pids=()):
    assert lab_traces(lab_id) == {"namespaces": [], "sockets": [], "processes": [],
                                  "state": False}
    assert not Path(tmp).exists()
    assert [pid for pid in pids if netns.pid_alive(pid)] == []


# --- lifecycle ---------------------------------------------------------------------

def test_require_lab_skips_or_fails_under_ci(monkeypatch):
    monkeypatch.setattr(pytest_support, "lab_unavailable_reason", lambda: "no lab here")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no lab here"):
        require_lab()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true but no lab here"):
        require_lab()


def test_router_lab_tears_down_even_when_the_body_raises():
    require_lab()
    with pytest.raises(RuntimeError, match="boom"):
        with RouterLab() as lab:
            lab_id, tmp = lab.id, lab.tmp
            lab.tcp_server("client", 80)
            lab.udp_server("router", 5353)
            traces = lab_traces(lab_id)
            assert len(traces["namespaces"]) == 5
            assert len(traces["sockets"]) == 2
            assert len(traces["processes"]) == 4      # 2 x wireguard-go + 2 servers
            assert lab.setup_seconds < 5
            raise RuntimeError("boom")
    assert_gone(lab_id, tmp, traces["processes"])


def test_failed_setup_cleans_up_half_built_state():
    require_lab()

    class Broken(RouterLab):
        def _configure(self):
            self._start_tunnel()                       # wireguard-go is running now
            Broken.seen = (self.id, self.tmp, lab_traces(self.id)["processes"])
            netns.run(["ip", "-n", self.ns["router"], "link", "set", "nosuchdev", "up"])

    with pytest.raises(netns.CommandError, match="nosuchdev"):
        Broken()
    assert len(Broken.seen[2]) == 2
    assert_gone(*Broken.seen)


def test_cleanup_stale_removes_labs_of_dead_processes():
    require_lab()
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(REPO)!r})
        from tests.lab import RouterLab
        lab = RouterLab()
        print(lab.id, lab.tmp, flush=True)
        os._exit(0)          # dies without teardown, like a SIGKILLed test run
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    lab_id, tmp = out.split()
    left = lab_traces(lab_id)
    assert len(left["namespaces"]) == 5 and len(left["processes"]) == 2  # wireguard-go
    removed = cleanup_stale()
    assert f"wh{lab_id}-router" in removed
    assert_gone(lab_id, tmp, left["processes"])


def test_two_labs_at_once_are_isolated():
    require_lab()
    with RouterLab(killswitch="off") as one, RouterLab(killswitch="metric") as two:
        assert set(one.ns.values()).isdisjoint(two.ns.values())
        assert one.wg_router != two.wg_router
        for lab in (one, two):
            lab.tcp_server("client", 80)
        assert one.tcp_request("router", one.client4, 80).peer_ip == one.wan4
        assert two.tcp_request("router", two.client4, 80).peer_ip == two.provider4


def test_describe_names_everything():
    require_lab()
    with RouterLab(wan1=True) as lab:
        text = lab.describe()
        for needle in (lab.ns["router"], lab.wg_router, lab.wg_provider, "wan1",
                       str(lab.root), "kill-switch: metric"):
            assert needle in text


# --- the router tunnel -----------------------------------------------------------------

@pytest.fixture
def router_lab():
    require_lab()
    with RouterLab() as lab:
        yield lab


def test_router_pings_provider_through_tunnel(router_lab):
    lab = router_lab
    for dst in (lab.tun_provider4, lab.tun_provider6):
        lab.run("router", ["ping", "-c1", "-W2", dst])


@pytest.mark.parametrize("mode", ["metric", "split"])
@pytest.mark.parametrize("family", FAMILIES)
def test_killswitch_sends_router_and_lan_traffic_through_tunnel(router_lab, mode, family):
    lab = router_lab
    lab.killswitch(mode)
    lab.tcp_server("client", 80)
    client = lab.addr("client", "eth0", family)
    provider = lab.addr("vpn", "eth0", family)
    for host in ("router", "lan"):
        reply = lab.tcp_request(host, client, 80)
        assert reply is not None, f"{host} could not reach the client in mode {mode}"
        assert reply.peer_ip == provider
    assert lab.route_get("router", client)["dev"] == lab.wg_router


@pytest.mark.parametrize("family", FAMILIES)
def test_killswitch_off_uses_wan_and_lan_stays_blocked(router_lab, family):
    lab = router_lab
    lab.killswitch("off")
    lab.tcp_server("client", 80)
    client = lab.addr("client", "eth0", family)
    assert lab.tcp_request("router", client, 80).peer_ip == lab.addr("router", "wan", family)
    assert lab.route_get("router", client)["dev"] == "wan0"
    # the kill-switch firewall never forwards LAN traffic to the WAN
    assert lab.tcp_request("lan", client, 80, timeout=1) is None


# --- the problem the product solves -----------------------------------------------------

def _inbound_works(lab, family, proto, dst, port):
    """Try from the client with the kill-switch on and off: (on, off) replies."""
    request = lab.tcp_request if proto == "tcp" else lab.udp_request
    results = []
    for mode in ("metric", "off"):
        lab.killswitch(mode)
        results.append(request("client", dst, port, timeout=1.5))
    return results


@pytest.mark.parametrize("family", FAMILIES)
def test_problem_router_service_dies_under_killswitch(router_lab, family):
    lab = router_lab
    lab.fw4_accept_input(zone="wan", proto="tcp", port=443)
    lab.tcp_server("router", 443)
    wan = lab.addr("router", "wan", family)
    on, off = _inbound_works(lab, family, "tcp", wan, 443)
    assert on is None, "the reply should have been routed into the tunnel"
    assert off is not None and off.peer_ip == lab.addr("client", "eth0", family)


@pytest.mark.parametrize("family", FAMILIES)
def test_problem_lan_service_dies_under_killswitch(router_lab, family):
    lab = router_lab
    lab.tcp_server("lan", 443)
    if family == 4:
        lab.fw4_redirect(src="wan", proto="tcp", src_dport=8443, dest_ip=lab.lan4, dest_port=443)
        dst, port = lab.wan4, 8443
    else:  # routed IPv6 LAN: no NAT, a forward accept
        lab.fw4_accept_forward(src="wan", dest="lan", proto="tcp", port=443, dest_ip=lab.lan6)
        dst, port = lab.lan6, 443
    on, off = _inbound_works(lab, family, "tcp", dst, port)
    assert on is None
    assert off is not None
    assert (off.local_ip, off.peer_ip) == (lab.addr("lan", "eth0", family),
                                           lab.addr("client", "eth0", family))


@pytest.mark.parametrize("family", FAMILIES)
def test_problem_udp_service_dies_under_killswitch(router_lab, family):
    lab = router_lab
    lab.fw4_accept_input(zone="wan", proto="udp", port=5353)
    lab.udp_server("router", 5353)
    wan = lab.addr("router", "wan", family)
    on, off = _inbound_works(lab, family, "udp", wan, 5353)
    assert on is None
    assert off is not None and off.local_ip == wan and "mode=pktinfo" in off


def test_naive_udp_reply_leaves_by_the_tunnel_from_the_wrong_address(router_lab):
    """Documents naive servers (wildcard socket + sendto): under the kill-switch
    the reply takes the tunnel's source address and reaches the client from
    the provider, which a connected client ignores."""
    lab = router_lab
    lab.fw4_accept_input(zone="wan", proto="udp", port=5354)
    lab.udp_server("router", 5354, naive=True)
    with lab.ingress_counter("client", proto="udp", saddr=lab.provider4) as seen:
        assert lab.udp_request("client", lab.wan4, 5354, timeout=1.5) is None
        assert seen.packets("eth0") >= 1
    lab.killswitch("off")
    assert lab.udp_request("client", lab.wan4, 5354).local_ip == lab.wan4


# --- probes ------------------------------------------------------------------------------

def test_egress_counter_shows_where_replies_leave(router_lab):
    lab = router_lab
    lab.fw4_accept_input(zone="wan", proto="tcp", port=443)
    lab.tcp_server("router", 443)
    lab.killswitch("off")
    with lab.egress_counter("router", proto="tcp", port=443) as out:
        assert lab.tcp_request("client", lab.wan4, 443) is not None
        counts = out.read()
    assert counts["wan0"] >= 2 and counts[lab.wg_router] == 0
    lab.killswitch("metric")
    with lab.egress_counter("router", proto="tcp", sport=443) as out:
        assert lab.tcp_request("client", lab.wan4, 443, timeout=1) is None
        assert out.packets(lab.wg_router) >= 1 and out.packets("wan0") == 0


def test_probes_leave_product_tables_alone(router_lab):
    lab = router_lab
    wormhole = "table inet wormhole {\n chain c {\n  counter comment \"!wormhole: x\"\n }\n}\n"
    lab.run("router", ["nft", "-f", "-"], input=wormhole)
    before = lab.run("router", ["nft", "list", "table", "inet", "wormhole"]).stdout
    with lab.egress_counter("router"), lab.ingress_counter("router"), lab.drop_icmp_ptb("router"):
        tables = lab.run("router", ["nft", "list", "tables"]).stdout
        assert "labprobe" in tables and "labptb" in tables
    tables = lab.run("router", ["nft", "list", "tables"]).stdout.split("\n")
    assert sorted(t for t in tables if t) == ["table inet fw4", "table inet wormhole"]
    assert lab.run("router", ["nft", "list", "table", "inet", "wormhole"]).stdout == before


def test_conntrack_and_route_helpers(router_lab):
    lab = router_lab
    lab.killswitch("off")
    lab.tcp_server("lan", 443)
    lab.fw4_redirect(src="wan", proto="tcp", src_dport=8443, dest_ip=lab.lan4, dest_port=443)
    reply = lab.tcp_request("client", lab.wan4, 8443)
    entries = [e for e in lab.conntrack("router", family=4)
               if e.proto == "tcp" and e.orig.get("dport") == 8443]
    assert len(entries) == 1
    entry = entries[0]
    assert entry.orig["src"] == lab.client4 and entry.orig["sport"] == reply.peer_port
    assert (entry.reply["src"], entry.reply["sport"]) == (lab.lan4, 443)
    assert entry.mark == 0 and entry.state in ("ESTABLISHED", "FIN_WAIT", "TIME_WAIT", "CLOSE",
                                                "CLOSE_WAIT", "LAST_ACK")
    route = lab.route_get("router", lab.client4, src=lab.wan4)
    assert (route["dev"], route["gateway"]) == ("wan0", lab.wan_gw4)


def test_stream_and_bulk_helpers(router_lab):
    lab = router_lab
    lab.killswitch("off")
    lab.fw4_accept_input(zone="wan", proto="tcp", port=7000)
    lab.tcp_server("router", 7000)
    stream = lab.stream("client", lab.wan4, 7000, op_timeout=1.0)
    assert stream.wait_replies(10)
    healthy = stream.stats()
    assert healthy.ok and healthy.max_gap < 1.0, healthy
    lab.killswitch("metric")            # replies of this inbound flow now go into the tunnel
    time.sleep(2.2)
    broken = stream.stop()
    assert broken.errors >= 1 and broken.max_gap >= 2.0 and not broken.ok, broken
    lab.killswitch("off")
    for direction in ("download", "upload"):
        result = lab.bulk("client", lab.wan4, 7000, 4 << 20, direction, timeout=20)
        assert result.completed and result.bytes == 4 << 20, result


# --- fw4 emulation -------------------------------------------------------------------------

def test_fw4_includes_land_where_fw4_puts_them(router_lab):
    lab = router_lab
    lab.killswitch("off")
    nftd = lab.root / "usr/share/nftables.d"
    (nftd / "chain-pre/input").mkdir(parents=True, exist_ok=True)
    (nftd / "chain-pre/input/50-test.nft").write_text(
        'tcp dport 4444 counter accept comment "!wormhole: test"\n')
    (nftd / "ruleset-post/50-wormhole.nft").write_text(
        "table inet wormhole {}\ndelete table inet wormhole\n"
        "table inet wormhole {\n chain pre {\n"
        "  type filter hook prerouting priority mangle; policy accept;\n }\n}\n")
    lab.fw4_reload()
    lab.fw4_reload()                     # reloading must not duplicate anything
    ruleset = json.loads(lab.run("router", ["nft", "-j", "list", "ruleset"]).stdout)["nftables"]
    rules = [i["rule"] for i in ruleset if "rule" in i and i["rule"]["chain"] == "input"
             and i["rule"]["table"] == "fw4"]
    assert rules[1]["comment"] == "!wormhole: test"     # right after iif lo accept
    chains = [i["chain"]["name"] for i in ruleset
              if "chain" in i and i["chain"]["table"] == "wormhole"]
    assert chains == ["pre"]
    lab.tcp_server("router", 4444)
    assert lab.tcp_request("client", lab.wan4, 4444) is not None


def test_fw4_stub_in_root_reloads_like_fw4(router_lab):
    """<root>/sbin/fw4 reload, run in the router namespace, re-renders the
    config and picks up include files that appeared since."""
    lab = router_lab
    stub = lab.root / "sbin/fw4"
    assert lab.run("router", [stub, "print"]).stdout == lab.fw4_reload()
    post = lab.root / "usr/share/nftables.d/chain-post/forward_wan/50-x.nft"
    post.parent.mkdir(parents=True)
    post.write_text('meta l4proto udp counter comment "!wormhole: late"\n')
    lab.run("router", [stub, "check"])
    lab.run("router", [stub, "reload"])
    assert '"!wormhole: late"' in lab.run("router", ["nft", "list", "chain", "inet", "fw4",
                                                     "forward_wan"]).stdout


def test_fw4_reload_writes_the_uci_firewall_config(router_lab):
    lab = router_lab
    lab.fw4_redirect(src="wan", proto="tcp", src_dport=8443, dest_ip=lab.lan4, dest_port=443,
                     name="NAS")
    text = (lab.root / "etc/config/firewall").read_text()
    assert "config redirect\n\toption name 'NAS'\n\toption src 'wan'\n\toption proto 'tcp'\n" \
           "\toption src_dport '8443'\n\toption dest_ip '192.168.1.10'\n" in text
    assert "\tlist device 'lan0'\n" in text and "option target 'DNAT'" in text


def test_conntrack_line_parser():
    line = ("ipv4     2 udp      17 29 src=198.51.100.10 dst=192.0.2.2 sport=40000 dport=5353 "
            "[UNREPLIED] src=192.0.2.2 dst=198.51.100.10 sport=5353 dport=40000 mark=16777216 "
            "use=1")
    entry = parse_conntrack_line(line)
    assert (entry.family, entry.proto, entry.state, entry.flags) == (4, "udp", "", ["UNREPLIED"])
    assert entry.orig == {"src": "198.51.100.10", "dst": "192.0.2.2", "sport": 40000,
                          "dport": 5353}
    assert entry.reply["sport"] == 5353 and entry.mark == 0x1000000
    icmp = parse_conntrack_line("ipv6     10 icmpv6   58 29 src=2001:db8:100::10 "
                                "dst=2001:db8:2::2 type=128 code=0 id=7 src=2001:db8:2::2 "
                                "dst=2001:db8:100::10 type=129 code=0 id=7 mark=0 use=1")
    assert icmp.family == 6 and icmp.orig["type"] == 128 and icmp.reply["type"] == 129


def test_wormhole_helper_runs_cli_in_namespace_with_root(router_lab):
    lab = router_lab
    cli = lab.tmp / "fake-wormhole"
    cli.write_text('#!/bin/sh\necho "root=$WORMHOLE_ROOT args=$*"\nip -o link show dev wan0\n')
    cli.chmod(0o755)
    out = lab.wormhole("router", "apply", "--json", cli=cli).stdout
    assert f"root={lab.root} args=apply --json" in out and "wan0" in out
    assert lab.uplinks()["wan"] == {"device": "wan0", "gateway": lab.wan_gw4,
                                    "gateway6": lab.wan_gw6}


def test_fw4_base_chains_match_firewall4(router_lab):
    ruleset = json.loads(router_lab.run("router", ["nft", "-j", "list", "table", "inet", "fw4"])
                         .stdout)["nftables"]
    base = {c["name"]: (c["type"], c["hook"], c["prio"], c["policy"])
            for c in (i["chain"] for i in ruleset if "chain" in i) if "hook" in c}
    assert base == {
        "input": ("filter", "input", 0, "drop"),
        "forward": ("filter", "forward", 0, "drop"),
        "output": ("filter", "output", 0, "accept"),
        "prerouting": ("filter", "prerouting", 0, "accept"),
        "dstnat": ("nat", "prerouting", -100, "accept"),
        "srcnat": ("nat", "postrouting", 100, "accept"),
        "raw_prerouting": ("filter", "prerouting", -300, "accept"),
        "raw_output": ("filter", "output", -300, "accept"),
        "mangle_prerouting": ("filter", "prerouting", -150, "accept"),
        "mangle_postrouting": ("filter", "postrouting", -150, "accept"),
        "mangle_input": ("filter", "input", -150, "accept"),
        "mangle_output": ("route", "output", -150, "accept"),
        "mangle_forward": ("filter", "forward", -150, "accept"),
    }


@pytest.mark.parametrize("field, bad", [
    ("dest_port", "0"), ("dest_port", "65536"), ("dest_port", "22; drop"), ("dest_port", "1-"),
    ("dest_port", "9-8"), ("name", 'x" accept'), ("src", "nozone"), ("dest_ip", "1.2.3.4 accept"),
    ("proto", "tcp dport 1"), ("icmp", ["8 } accept"])])
def test_fw4_render_rejects_unsafe_values(field, bad):
    zones = [Zone("wan", ["wan0"])]
    good = Rule("ok", src="wan", proto="tcp", dest_port="22")
    assert 'tcp dport 22 counter accept comment "!fw4: ok"' in render(Fw4(zones, rules=[good]))
    rule = Rule("ok", src="wan", proto="tcp", dest_port="22")
    setattr(rule, field, bad)
    with pytest.raises(ValueError):
        render(Fw4(zones, rules=[rule]))


def test_fw4_helpers_validate_before_loading(router_lab):
    lab = router_lab

    def state():
        # rule counters move with stray traffic (an IPv6 MLD report leaving wan0): not a change
        rules = re.sub(r"counter packets \d+ bytes \d+", "counter", lab.nft_ruleset("router"))
        return rules, len(lab.fw4().rules), len(lab.fw4().redirects)
    before = state()
    with pytest.raises(ValueError):
        lab.fw4_accept_input(zone="wan", proto="tcp", port="443 accept")
    with pytest.raises(ValueError):
        lab.fw4_redirect(src="nozone", proto="tcp", src_dport=80, dest_ip=lab.lan4)
    assert state() == before


def test_multi_wan_and_sysctls():
    require_lab()
    with RouterLab(wan1=True, killswitch="off") as lab:
        lab.run("router", ["ping", "-c1", "-W2", lab.wan1_gw4])
        lab.run("router", ["ping", "-c1", "-W2", lab.wan1_gw6])
        assert lab.sysctl("router", "net.ipv4.conf.wan0.rp_filter") == "2"
        assert lab.sysctl("router", "net.ipv4.conf.wan1.rp_filter") == "2"
        assert lab.sysctl("router", "net.ipv4.ip_forward") == "1"
        assert lab.sysctl("client", "net.ipv4.ip_forward") == "0"
        lab.set_sysctl("router", "net.ipv4.conf.wan0.rp_filter", 1)
        assert lab.sysctl("router", "net.ipv4.conf.wan0.rp_filter") == "1"
        assert lab.fw4().zone("wan").devices == ["wan0", "wan1"]


@pytest.mark.parametrize("family", FAMILIES)
def test_multi_wan_reply_by_the_wrong_uplink_dies_at_the_isp(family):
    """Even without a tunnel: a connection to wan1 is answered via the main
    default route (wan0); the isp's anti-spoofing filter drops it."""
    require_lab()
    with RouterLab(wan1=True, killswitch="off") as lab:
        lab.fw4_accept_input(zone="wan", proto="tcp", port=443)
        lab.tcp_server("router", 443)
        wan0, wan1 = (lab.addr("router", dev, family) for dev in ("wan0", "wan1"))
        assert lab.tcp_request("client", wan0, 443) is not None
        with lab.egress_counter("router", proto="tcp", sport=443) as out:
            assert lab.tcp_request("client", wan1, 443, timeout=1) is None
            assert out.packets("wan0") >= 1 and out.packets("wan1") == 0


# --- the gateway lab ----------------------------------------------------------------------

@pytest.fixture
def gateway_lab():
    require_lab()
    with GatewayLab(gateway_mtu=1280, backend_mtu=1420) as lab:
        yield lab


def test_gateway_backend_handshake_through_nat(gateway_lab):
    lab = gateway_lab
    endpoint = lab.handshake_endpoint()
    assert endpoint.startswith(f"{lab.natbox_wan4}:"), endpoint
    for dst in (lab.tun_gateway4, lab.tun_gateway6):
        lab.run("backend", ["ping", "-c1", "-W2", dst])
    # allowed-ips 0.0.0.0/0 on the backend, but no route: the internet is not via the tunnel
    assert lab.route_get("backend", lab.client4)["dev"] == "wan0"


def test_gateway_mtu_per_side(gateway_lab):
    lab = gateway_lab
    assert (lab.mtu("gateway", "wg"), lab.mtu("backend", "wg")) == (1280, 1420)
    lab.run("backend", ["ping", "-c1", "-W2", "-M", "do", "-s", "1392", lab.tun_gateway4])
    too_big = lab.run("gateway", ["ping", "-c1", "-W1", "-M", "do", "-s", "1300",
                                  lab.tun_backend4], check=False)
    assert too_big.returncode != 0
    lab.set_mtu("backend", "wg", 1300)
    assert lab.mtu("backend", "wg") == 1300


@pytest.mark.parametrize("family", FAMILIES)
def test_gateway_ptb_blackhole_stalls_uploads(gateway_lab, family):
    """Client -> gateway DNAT -> 1280-MTU tunnel -> backend (1420): the client's
    1420-byte segments need a frag-needed / packet-too-big from the gateway."""
    lab = gateway_lab
    lab.fw4("gateway").zone("vpn").masq = family == 4
    lab.fw4("gateway").zone("vpn").masq6 = family == 6
    backend = lab.addr("backend", "wg", family)
    lab.fw4_redirect(src="wan", proto="tcp", src_dport=8080, dest_ip=backend)
    lab.fw4_accept_input(zone="vpn", proto="tcp", port=8080, host="backend")
    lab.tcp_server("backend", 8080)
    public = lab.addr("gateway", "wan", family)
    assert lab.tcp_request("client", public, 8080).local_ip == backend
    with lab.drop_icmp_ptb("gateway") as blackhole:
        stalled = lab.bulk("client", public, 8080, 2 << 20, "upload", timeout=10, stall=2)
        assert stalled.stalled and not stalled.completed, stalled
        assert blackhole.dropped() >= 1
    lab.flush_route_cache("client")
    done = lab.bulk("client", public, 8080, 2 << 20, "upload", timeout=20)
    assert done.completed, done
