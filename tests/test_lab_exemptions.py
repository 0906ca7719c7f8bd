"""Exemptions under a WireGuard kill-switch, proven with real packets in the router lab.

Each scenario first shows the failure (the reply is routed into the tunnel and dies),
then adds the exemption with the product's CLI and shows the connection working, the
reply leaving by the WAN device, and nothing the router or the LAN starts leaking out of
the WAN. Most scenarios run against both firewall backends.
"""

import json
import re

import pytest

from tests.lab import RouterLab
from tests.lab.pytest_support import require_lab

BACKENDS = ["fw4", "fw3"]


def configure(lab, backend="fw4", host="router", uplinks=None, extra=""):
    """Write the product config: backend and the lab's uplinks (there is no netifd here)."""
    lines = ["config wormhole 'main'", "\toption backend '%s'" % backend, ""]
    for name, opts in (uplinks or lab.uplinks(host)).items():
        lines.append("config uplink '%s'" % name)
        lines += ["\toption %s '%s'" % kv for kv in opts.items() if kv[1]]
        lines.append("")
    root = lab.roots[host]
    (root / "etc/config").mkdir(parents=True, exist_ok=True)
    (root / "etc/config/wormhole").write_text("\n".join(lines) + extra)


def wh_json(lab, *args, host="router"):
    p = lab.wormhole(host, *args, "--json", check=False)
    return json.loads(p.stdout)


def add(lab, *args, host="router"):
    reply = wh_json(lab, "inbound", "add", *args, host=host)
    assert "error" not in reply, reply
    return reply["id"]


@pytest.fixture
def lab():
    require_lab()
    with RouterLab(killswitch="metric") as lab:
        yield lab


def _services(lab):
    lab.fw4_accept_input(zone="wan", proto="tcp", port=443)
    lab.fw4_accept_input(zone="wan", proto="udp", port=5000)
    lab.tcp_server("router", 443, name="luci")
    lab.udp_server("router", 5000)


@pytest.mark.lab
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("family", [4, 6])
def test_router_local_services(lab, backend, family):
    configure(lab, backend)
    _services(lab)
    dst = lab.wan4 if family == 4 else lab.wan6
    client = lab.client4 if family == 4 else lab.client6
    assert lab.tcp_request("client", dst, 443, timeout=1.5) is None, "the kill-switch should break it first"
    assert lab.udp_request("client", dst, 5000, timeout=1.5) is None
    add(lab, "tcp:443", "--label", "LuCI")
    add(lab, "udp:5000")
    with lab.egress_counter("router", sport=443, proto="tcp") as tcp_out, \
            lab.egress_counter("router", sport=5000, proto="udp") as udp_out:
        reply = lab.tcp_request("client", dst, 443)
        assert reply is not None and reply.peer_ip == client and reply.local_ip == dst
        reply = lab.udp_request("client", dst, 5000)
        assert reply is not None and reply.peer_ip == client
        wan, wg = lab.dev("router", "wan"), lab.dev("router", "wg")
        assert tcp_out.packets(wan) > 0 and tcp_out.packets(wg) == 0, tcp_out.read()
        assert udp_out.packets(wan) > 0 and udp_out.packets(wg) == 0, udp_out.read()
    listed = wh_json(lab, "inbound", "list")["exemptions"]
    assert [(e["port"], e["status"]) for e in listed] == [("443", "active"), ("5000", "active")]
    if backend == "fw4":
        assert all(e["hits"] >= 1 for e in listed), listed
        add(lab, "tcp:8080")    # another apply replaces the table: hits are carried over
        again = wh_json(lab, "inbound", "list")["exemptions"]
        assert [e["hits"] for e in again[:2]] == [e["hits"] for e in listed], again


@pytest.mark.lab
@pytest.mark.parametrize("backend", BACKENDS)
def test_lan_service_behind_a_port_forward_with_remap(lab, backend):
    configure(lab, backend)
    lab.fw4_redirect(src="wan", proto="tcp", src_dport=8443, dest_ip=lab.lan4, dest_port=443)
    lab.fw4_accept_forward(src="wan", dest="lan", proto="tcp", port=443, dest_ip=lab.lan6)
    lab.tcp_server("lan", 443, name="nas")
    assert lab.tcp_request("client", lab.wan4, 8443, timeout=1.5) is None
    assert lab.tcp_request("client", lab.lan6, 443, timeout=1.5) is None
    add(lab, "tcp:8443", "--family", "ipv4", "--label", "NAS")     # the public port, not the LAN one
    add(lab, "tcp:443", "--family", "ipv6")
    with lab.egress_counter("router", sport=443, proto="tcp") as out:
        reply = lab.tcp_request("client", lab.wan4, 8443)
        assert reply is not None and reply.peer_ip == lab.client4 and reply.local_ip == lab.lan4
        reply = lab.tcp_request("client", lab.lan6, 443)
        assert reply is not None and reply.peer_ip == lab.client6
        assert out.packets(lab.dev("router", "wan")) > 0 and out.packets(lab.dev("router", "wg")) == 0, out.read()


def _lan_mss(lab, dst, port):
    """The MSS the LAN host may send on a connection from the client (ss: minus 12 bytes of
    TCP timestamps), i.e. the client's SYN after the router clamped it."""
    stream = lab.stream("client", dst, port)
    try:
        assert stream.wait_replies(2), stream.stats()
        out = lab.run("lan", ["ss", "-tniH", "state", "established", "( sport = :443 )"]).stdout
    finally:
        stream.stop()
    found = re.findall(r"\bmss:(\d+)", out)
    assert found, out
    return int(found[0])


@pytest.mark.lab
def test_inbound_syn_mss_fits_the_uplink_not_the_tunnel(lab):
    """fw4's mtu_fix clamps with `rt mtu`, which looks up the route back to the client
    without the connection's mark: under the kill-switch it finds the tunnel (MTU 1420) and
    every forwarded inbound connection got the tunnel's MSS, though its replies leave by the
    WAN (docs/PERFORMANCE.md, 3). wormhole clamps those SYNs to the uplink's MTU instead:
    full-size segments on a 1500 WAN, and still a clamp when the WAN is narrower."""
    configure(lab)
    lab.fw4_redirect(src="wan", proto="tcp", src_dport=8443, dest_ip=lab.lan4, dest_port=443)
    lab.fw4_accept_forward(src="wan", dest="lan", proto="tcp", port=443, dest_ip=lab.lan6)
    lab.tcp_server("lan", 443, name="nas")
    assert "maxseg size set rt mtu" in lab.run("router", ["nft", "list", "chain", "inet", "fw4", "mangle_forward"]).stdout
    add(lab, "tcp:8443", "--family", "ipv4")
    add(lab, "tcp:443", "--family", "ipv6")
    timestamps = 12
    assert _lan_mss(lab, lab.wan4, 8443) == 1500 - 40 - timestamps
    assert _lan_mss(lab, lab.lan6, 443) == 1500 - 60 - timestamps
    # the same under fw4's rule alone: the tunnel's MSS (what users had before)
    lab.run("router", ["nft", "flush", "chain", "inet", "wormhole", "mss_in_wan"])
    handles = [line.rsplit("# handle ", 1)[1] for line in lab.run(
        "router", ["nft", "-a", "list", "chain", "inet", "fw4", "mangle_forward"]).stdout.splitlines() if "!wormhole:" in line]
    assert len(handles) == 1
    lab.run("router", ["nft", "delete", "rule", "inet", "fw4", "mangle_forward", "handle", handles[0]])
    assert _lan_mss(lab, lab.wan4, 8443) == 1420 - 40 - timestamps
    # a narrower WAN (PPPoE-like): the clamp follows the uplink once wormhole re-applies
    lab.run("router", ["ip", "link", "set", "dev", lab.dev("router", "wan"), "mtu", "1400"])
    lab.wormhole("router", "apply")
    assert _lan_mss(lab, lab.wan4, 8443) == 1400 - 40 - timestamps
    assert _lan_mss(lab, lab.lan6, 443) == 1400 - 60 - timestamps


@pytest.mark.lab
@pytest.mark.parametrize("backend", BACKENDS)
def test_no_leak_for_connections_the_router_or_lan_start(lab, backend):
    configure(lab, backend)
    _services(lab)
    add(lab, "tcp:443")
    add(lab, "tcp:80", "--open")
    lab.tcp_server("client", 443, name="outside-443")
    lab.tcp_server("client", 80, name="outside-80")
    tunnel_src = {lab.provider4, lab.provider6}
    with lab.egress_counter("router", ifname="wan", daddr=lab.client4) as wan4, \
            lab.egress_counter("router", ifname="wan", daddr=lab.client6) as wan6:
        for host in ("router", "lan"):
            for port in (443, 80):
                for dst in (lab.client4, lab.client6):
                    reply = lab.tcp_request(host, dst, port)
                    assert reply is not None and reply.peer_ip in tunnel_src, (host, dst, port, reply)
            # a LAN host or the router borrowing an exempt *source* port gets no reply path either
            reply = lab.tcp_request(host, lab.client4, 443, src_port=80)
            assert reply is not None and reply.peer_ip == lab.provider4, reply
        assert wan4.packets(lab.dev("router", "wan")) == 0, wan4.read()
        assert wan6.packets(lab.dev("router", "wan")) == 0, wan6.read()
    # the inbound path is unaffected by all that
    assert lab.tcp_request("client", lab.wan4, 443).peer_ip == lab.client4


@pytest.mark.lab
@pytest.mark.parametrize("mode", ["split", "metric"])
def test_both_killswitch_forms(lab, mode):
    configure(lab)
    _services(lab)
    lab.killswitch(mode)
    assert lab.tcp_request("client", lab.wan4, 443, timeout=1.5) is None
    add(lab, "tcp:443")
    for dst in (lab.wan4, lab.wan6):
        assert lab.tcp_request("client", dst, 443) is not None, (mode, dst)


@pytest.mark.lab
@pytest.mark.parametrize("backend", BACKENDS)
def test_two_uplinks_reply_by_the_uplink_they_came_in_on(backend):
    require_lab()
    with RouterLab(killswitch="metric", wan1=True) as lab:
        configure(lab, backend)
        lab.fw4_accept_input(zone="wan", proto="tcp", port=443)
        lab.tcp_server("router", 443)
        add(lab, "tcp:443", "--interface", "wan")
        wan1_name = [n for n in lab.uplinks() if n != "wan"][0]
        assert lab.tcp_request("client", lab.wan1_4, 443, timeout=1.5) is None, "wan1 not exempt yet"
        add(lab, "tcp:443", "--interface", wan1_name)
        wan, wan1 = lab.dev("router", "wan"), lab.dev("router", "wan1")
        for dst, dev, other in ((lab.wan4, wan, wan1), (lab.wan1_4, wan1, wan), (lab.wan6, wan, wan1),
                                (lab.wan1_6, wan1, wan)):
            with lab.egress_counter("router", sport=443, proto="tcp") as out:
                reply = lab.tcp_request("client", dst, 443)
                assert reply is not None and reply.local_ip == dst, dst
                assert out.packets(dev) > 0 and out.packets(other) == 0, (dst, out.read())


@pytest.mark.lab
def test_strict_rp_filter_needs_src_valid_mark_and_says_so():
    """Evidence for the documented choice: with strict rp_filter the inbound SYN is dropped
    (its reverse route is the tunnel) unless src_valid_mark lets the mark choose our table.
    status/check name the uplink and the exact sysctls."""
    require_lab()
    with RouterLab(killswitch="metric", rp_filter=1) as lab:
        configure(lab)
        _services(lab)
        add(lab, "tcp:443")
        dev = lab.dev("router", "wan")
        lab.set_sysctl("router", "net.ipv4.conf.all.src_valid_mark", "0")
        lab.set_sysctl("router", "net.ipv4.conf.%s.src_valid_mark" % dev, "0")
        assert lab.tcp_request("client", lab.wan4, 443, timeout=1.5) is None
        warnings = wh_json(lab, "status")["warnings"]
        assert any("net.ipv4.conf.%s.src_valid_mark=1" % dev in w and "rp_filter=2" in w for w in warnings), warnings
        check = wh_json(lab, "check")
        assert any(f["check"] == "rp_filter" and f["level"] == "error" for f in check["findings"])
        lab.set_sysctl("router", "net.ipv4.conf.%s.src_valid_mark" % dev, "1")
        reply = lab.tcp_request("client", lab.wan4, 443)
        assert reply is not None and reply.peer_ip == lab.client4
        assert not any("src_valid_mark" in w for w in wh_json(lab, "status")["warnings"])


def _throughput_advice(lab):
    return [f for f in wh_json(lab, "check")["findings"] if f["check"] == "throughput"]


@pytest.mark.lab
def test_tcp_fwmark_accept_is_set_while_tcp_exemptions_exist_and_given_back(lab):
    """Router services behind TCP exemptions lose 10-20 % of their throughput to per-packet
    re-routing unless accepted sockets take their SYN's mark (docs/PERFORMANCE.md, 3).
    wormhole sets the sysctl while a TCP exemption exists and puts back what it found;
    with it on, replies still leave by the WAN and what the router starts uses the tunnel."""
    accept = "net.ipv4.tcp_fwmark_accept"
    configure(lab)
    _services(lab)
    lab.set_sysctl("router", accept, "0")
    udp = add(lab, "udp:5000")
    assert lab.sysctl("router", accept) == "0"          # no TCP exemption: not needed
    tcp = add(lab, "tcp:443")
    assert lab.sysctl("router", accept) == "1"
    assert not _throughput_advice(lab)
    wan, wg = lab.dev("router", "wan"), lab.dev("router", "wg")
    with lab.egress_counter("router", sport=443, proto="tcp") as out:
        for dst, client in ((lab.wan4, lab.client4), (lab.wan6, lab.client6)):
            reply = lab.tcp_request("client", dst, 443)
            assert reply is not None and reply.peer_ip == client, (dst, reply)
        assert out.packets(wan) > 0 and out.packets(wg) == 0, out.read()
    lab.tcp_server("client", 443, name="outside-443")
    reply = lab.tcp_request("router", lab.client4, 443)
    assert reply is not None and reply.peer_ip == lab.provider4, reply
    # the last TCP exemption goes: the value found before comes back
    assert "error" not in wh_json(lab, "inbound", "del", tcp)
    assert lab.sysctl("router", accept) == "0"
    # cleanup (the init script's stop) gives it back too
    add(lab, "tcp:443")
    assert lab.sysctl("router", accept) == "1"
    lab.wormhole("router", "cleanup")
    assert lab.sysctl("router", accept) == "0"
    # a value the user set is theirs: kept when wormhole no longer needs it
    lab.set_sysctl("router", accept, "1")
    lab.wormhole("router", "apply")
    assert "error" not in wh_json(lab, "inbound", "del", "tcp:443")
    assert lab.sysctl("router", accept) == "1"
    assert [e["id"] for e in wh_json(lab, "inbound", "list")["exemptions"]] == [udp]


@pytest.mark.lab
def test_tcp_fwmark_accept_left_alone_when_switched_off(lab):
    """fwmark_accept=0: wormhole never writes the sysctl, and check explains the cost and both fixes."""
    accept = "net.ipv4.tcp_fwmark_accept"
    configure(lab)
    cfg = lab.roots["router"] / "etc/config/wormhole"
    cfg.write_text(cfg.read_text().replace("config wormhole 'main'\n", "config wormhole 'main'\n\toption fwmark_accept '0'\n"))
    _services(lab)
    lab.set_sysctl("router", accept, "0")
    add(lab, "tcp:443")
    assert lab.sysctl("router", accept) == "0"
    advice = _throughput_advice(lab)
    assert len(advice) == 1 and advice[0]["level"] == "warn", advice
    msg = advice[0]["message"]
    assert "(tcp/443)" in msg and "fwmark_accept=1" in msg and "sysctl -w net.ipv4.tcp_fwmark_accept=1" in msg
    reply = lab.tcp_request("client", lab.wan4, 443)     # slower, still right
    assert reply is not None and reply.peer_ip == lab.client4


@pytest.mark.lab
def test_killswitch_off_makes_exemptions_inert(lab):
    configure(lab)
    _services(lab)
    add(lab, "tcp:443")
    assert wh_json(lab, "status")["killswitch"]["active"] is True
    assert wh_json(lab, "inbound", "list")["exemptions"][0]["status"] == "active"
    lab.killswitch("off")
    status = wh_json(lab, "status")
    assert status["killswitch"]["active"] is False
    assert wh_json(lab, "inbound", "list")["exemptions"][0]["status"] == "inert"
    assert lab.tcp_request("client", lab.wan4, 443) is not None
    assert lab.tcp_request("client", lab.wan6, 443) is not None
    lab.killswitch("metric")
    ks = wh_json(lab, "status")["killswitch"]
    assert ks["active"] is True and ks["via"] == lab.dev("router", "wg")
    assert lab.tcp_request("client", lab.wan4, 443) is not None


@pytest.mark.lab
def test_established_connection_survives_50_applies(lab):
    configure(lab)
    _services(lab)
    add(lab, "tcp:443")
    stream = lab.stream("client", lab.wan4, 443)
    stream.wait_replies(10)
    ids = []
    for i in range(25):
        ids.append(add(lab, "tcp:%d" % (2000 + i)))
    for sid in ids:
        reply = wh_json(lab, "inbound", "del", sid)
        assert "error" not in reply, reply
    stats = stream.stop()
    assert stats.resets == 0 and stats.errors == 0, stats
    assert stats.received >= stats.sent - 1 and stats.received > 50, stats
    assert stats.max_gap < 1.0, stats


@pytest.mark.lab
def test_fw4_reload_keeps_it_working(lab):
    """After a full fw4 reload (which drops our live-inserted accept and reloads every
    include), the exemption and its `open` accept come back from the include files alone."""
    configure(lab)
    lab.tcp_server("router", 443)
    add(lab, "tcp:443", "--open")
    assert lab.tcp_request("client", lab.wan4, 443) is not None
    lab.fw4_reload()
    assert "!wormhole: accept ports opened" in lab.run("router", ["nft", "list", "chain", "inet", "fw4", "input"]).stdout
    reply = lab.tcp_request("client", lab.wan4, 443)
    assert reply is not None and reply.peer_ip == lab.client4


@pytest.mark.lab
def test_open_is_the_only_input_accept_and_is_off_by_default(lab):
    configure(lab)
    lab.tcp_server("router", 8080)
    add(lab, "tcp:8080")
    assert lab.tcp_request("client", lab.wan4, 8080, timeout=1.5) is None, "an exemption alone must not open the port"
    reply = wh_json(lab, "inbound", "add", "tcp:8080", "--open")
    assert reply["error"]["code"] == "conflict"
    sid = wh_json(lab, "inbound", "list")["exemptions"][0]["id"]
    assert "error" not in wh_json(lab, "inbound", "del", sid)
    add(lab, "tcp:8080", "--open")
    assert lab.tcp_request("client", lab.wan4, 8080) is not None


OTHERS = ("203.0.113.0/24", "2001:db8:99::/48")      # not the lab's client, one per family


def _allow(*nets):
    return [a for n in nets for a in ("--allow", n)]


def _client(lab, family):
    dst, client = (lab.wan4, lab.client4) if family == 4 else (lab.wan6, lab.client6)
    return dst, client, "%s/%d" % (client, 32 if family == 4 else 128)


@pytest.mark.lab
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("family", [4, 6])
def test_an_allowlist_marks_only_its_clients(lab, backend, family):
    """`--allow`: only the listed clients are marked, so only their replies leave by the
    WAN; any other client gets what it got without the exemption (the kill-switch)."""
    configure(lab, backend)
    dst, client, mine = _client(lab, family)
    for port in (8443, 8444):
        lab.fw4_accept_input(zone="wan", proto="tcp", port=port)
        lab.tcp_server("router", port)
    add(lab, "tcp:8443", *_allow(mine, *OTHERS))
    add(lab, "tcp:8444", *_allow(*OTHERS))
    wan, wg = lab.dev("router", "wan"), lab.dev("router", "wg")
    with lab.egress_counter("router", sport=8444, proto="tcp") as out:
        assert lab.tcp_request("client", dst, 8444, timeout=1.5) is None, "a client not listed is not exempted"
        assert out.packets(wan) == 0, out.read()
    with lab.egress_counter("router", sport=8443, proto="tcp") as out:
        reply = lab.tcp_request("client", dst, 8443)
        assert reply is not None and reply.peer_ip == client
        assert out.packets(wan) > 0 and out.packets(wg) == 0, out.read()
    listed = {e["port"]: e for e in wh_json(lab, "inbound", "list")["exemptions"]}
    assert listed["8443"]["src_ip"] == [mine] + list(OTHERS) and listed["8443"]["status"] == "active"


@pytest.mark.lab
@pytest.mark.parametrize("family", [4, 6])
def test_open_with_an_allowlist_accepts_only_its_clients(lab, family):
    """`--open --allow`: the firewall accepts the listed clients and no one else. With the
    kill-switch off, so that only the accept decides. (fw4: the lab's firewall is fw4's
    table, which an iptables accept cannot override; fw3's accept is the same connmark test
    as without an allowlist, golden case exemption_allowlist.)"""
    configure(lab)
    lab.killswitch("off")
    dst, client, mine = _client(lab, family)
    for port in (8445, 8446):
        lab.tcp_server("router", port)
    add(lab, "tcp:8445", "--open", *_allow(mine))
    add(lab, "tcp:8446", "--open", *_allow(*OTHERS))
    reply = lab.tcp_request("client", dst, 8445)
    assert reply is not None and reply.peer_ip == client
    assert lab.tcp_request("client", dst, 8446, timeout=1.5) is None, "open must not accept a client not listed"
