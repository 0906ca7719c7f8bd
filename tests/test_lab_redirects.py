"""Redirects (port forwards) proven with real packets: the gateway lab and the router lab.

Gateway lab: an internet client, a gateway with a public address, and a backend behind
its own NAT that dials the gateway over WireGuard (wireguard-go). Router lab: a router
whose traffic goes through a VPN kill-switch, with a LAN host behind it.

Every scenario runs against both firewall backends. fw4 is the lab's emulation of
OpenWrt's firewall4; for fw3 the emulated fw4 table is replaced by an iptables ruleset of
fw3's shape (`fw3_firewall`), so the product's own accepts are the only way in. Each
behaviour is shown to fail without the piece that provides it (no exemption on the
backend, no clamp, no reply marking, no forward accept), so the tests can fail.
"""

import contextlib
import json
import re
import shlex

import pytest

from tests import support
from tests.lab import GatewayLab, RouterLab
from tests.lab.pytest_support import require_lab

BACKENDS = ["fw4", "fw3"]
FAMILIES = [4, 6]


# --- helpers ---------------------------------------------------------------------------------

def configure(lab, host, backend):
    """The product config of a host: its firewall backend and the lab's uplinks (no netifd here)."""
    lines = ["config wormhole 'main'", "\toption backend '%s'" % backend, ""]
    for name, opts in lab.uplinks(host).items():
        lines.append("config uplink '%s'" % name)
        lines += ["\toption %s '%s'" % kv for kv in opts.items() if kv[1]]
        lines.append("")
    root = lab.roots[host]
    (root / "etc/config").mkdir(parents=True, exist_ok=True)
    (root / "etc/config/wormhole").write_text("\n".join(lines))


def fw3_firewall(lab, host, trusted=(), mtu_fix=False):
    """Stand-in for fw3 on a host: no emulated fw4 table, and fw3's shape in iptables (input
    and forward dropped unless established, loopback, ICMP, or from a trusted device).
    wormhole's fw3 rules then are the only thing that can accept a forward or an opened port.
    With mtu_fix (as the lab's fw4 has it: on for the router, off for the gateway), the wan
    zone's clamp as fw3 writes it: egress and, since firewall3 e9b90df, ingress
    (`--clamp-mss-to-pmtu`, whose route back toward the source ignores the mark)."""
    lab.run(host, ["nft", "delete", "table", "inet", "fw4"], check=False)     # gone already on a reload
    tunnel = lab.wg[host].name if host in lab.wg else None
    wan = [o["device"] for o in lab.uplinks(host).values() if o.get("device") not in (None, tunnel)]
    mtu_fix = ["*mangle"] + ["-A FORWARD -%s %s -p tcp -m tcp --tcp-flags SYN,RST SYN -m comment --comment "
                             "\"!fw3: Zone wan MTU fixing\" -j TCPMSS --clamp-mss-to-pmtu" % (way, dev)
                             for dev in (wan if mtu_fix else ()) for way in ("o", "i")] + ["COMMIT"]
    for tool, icmp in (("iptables-restore", "icmp"), ("ip6tables-restore", "ipv6-icmp")):
        rules = ["*filter", ":INPUT DROP [0:0]", ":FORWARD DROP [0:0]", ":OUTPUT ACCEPT [0:0]",
                 "-A INPUT -i lo -j ACCEPT",
                 "-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                 "-A INPUT -p %s -j ACCEPT" % icmp,
                 "-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                 "-A FORWARD -p %s -j ACCEPT" % icmp]
        rules += ["-A INPUT -i %s -j ACCEPT" % dev for dev in trusted]
        if host == "gateway":
            rules.append("-A INPUT -p udp --dport %d -j ACCEPT" % lab.wg_port)
        lab.run(host, [tool], input="\n".join(rules + ["COMMIT"] + mtu_fix) + "\n")


def backend_accepts(lab, backend, proto, port):
    """The backend's own firewall accepts proto/port from the tunnel (services behind snat 1)."""
    if backend == "fw4":
        lab.fw4_accept_input(zone="vpn", proto=proto, port=str(port), host="backend")
        return
    for tool in ("iptables", "ip6tables"):
        lab.run("backend", [tool, "-A", "INPUT", "-i", lab.wg_backend, "-p", proto,
                            "--dport", str(port).replace("-", ":"), "-j", "ACCEPT"])


@contextlib.contextmanager
def gateway(backend, **kw):
    require_lab()
    with GatewayLab(**kw) as lab:
        for host in ("gateway", "backend"):
            configure(lab, host, backend)
        if backend == "fw3":
            fw3_firewall(lab, "gateway", trusted=[lab.wg_gateway])
            fw3_firewall(lab, "backend")
        yield lab


@contextlib.contextmanager
def router(backend):
    require_lab()
    with RouterLab(killswitch="metric") as lab:
        configure(lab, "router", backend)
        if backend == "fw3":
            fw3_firewall(lab, "router", trusted=[lab.dev("router", "lan")], mtu_fix=lab.mtu_fix)
        yield lab


def wh_json(lab, host, *args):
    p = lab.wormhole(host, *args, "--json", check=False)
    return json.loads(p.stdout)


def ok(lab, host, *args):
    reply = wh_json(lab, host, *args)
    assert "error" not in reply, reply
    return reply


def forward(lab, *args, host="gateway"):
    return ok(lab, host, "forward", "add", *args)["id"]


def hostport(addr, port):
    return ("[%s]:%s" if ":" in addr else "%s:%s") % (addr, port)


def findings(lab, host, check=None, level=None):
    return [f for f in wh_json(lab, host, "check")["findings"]
            if (check is None or f["check"] == check) and (level is None or f["level"] == level)]


def warnings(lab, host):
    return wh_json(lab, host, "status")["warnings"]


def public(lab, family):
    return lab.gateway4 if family == 4 else lab.gateway6


def client(lab, family):
    return lab.client4 if family == 4 else lab.client6


def tunnel(lab, host, family):
    return lab.addr(host, "wg", family)


# --- the gateway: publish a backend behind NAT --------------------------------------------------

@pytest.mark.lab
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_gateway_snat_backend_sees_the_gateway(backend, family):
    with gateway(backend) as lab:
        backend_accepts(lab, backend, "tcp", 8080)
        backend_accepts(lab, backend, "udp", 5353)
        lab.tcp_server("backend", 8080, name="web")
        lab.udp_server("backend", 5353)
        dest = tunnel(lab, "backend", family)
        assert lab.tcp_request("client", public(lab, family), 8080, timeout=1) is None
        forward(lab, "tcp:8080", hostport(dest, 8080), "--snat", "--label", "Web")
        forward(lab, "udp:5353", dest, "--snat")
        reply = lab.tcp_request("client", public(lab, family), 8080)
        assert reply is not None and reply.server == "web", reply
        assert (reply.local_ip, reply.peer_ip) == (dest, tunnel(lab, "gateway", family)), reply
        reply = lab.udp_request("client", public(lab, family), 5353)
        assert reply is not None and reply.peer_ip == tunnel(lab, "gateway", family), reply
        listed = wh_json(lab, "gateway", "forward", "list")["redirects"]
        assert [(e["src_dport"], e["via"], e["snat"]) for e in listed] == [("8080", "tunnel", True), ("5353", "tunnel", True)]
        if backend == "fw4":
            assert all(e["hits"] >= 1 for e in listed), listed
        assert not findings(lab, "gateway", level="error")


@pytest.mark.lab
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_gateway_preserves_the_client_address(backend, family):
    """snat 0: the backend sees the real client. It answers through the tunnel only with an
    exemption on its tunnel uplink; without one its replies leave by its own NAT and die,
    and the gateway's `check` says so (conntrack shows the forwarded connections unanswered)."""
    with gateway(backend) as lab:
        lab.tcp_server("backend", 8080, name="web")
        lab.udp_server("backend", 5353)
        dest = tunnel(lab, "backend", family)
        forward(lab, "tcp:8080", hostport(dest, 8080), "--label", "Web (client address kept)")
        forward(lab, "udp:5353", dest)
        pending = [f for f in findings(lab, "gateway", "redirect") if "no forwarded connection" in f["message"]]
        assert len(pending) == 2 and all(f["level"] == "warn" for f in pending), pending
        assert "--interface <tunnel network>" in pending[0]["message"]
        assert lab.tcp_request("client", public(lab, family), 8080, timeout=1.5) is None
        assert lab.udp_request("client", public(lab, family), 5353, timeout=1.5) is None
        unanswered = findings(lab, "gateway", "redirect", "error")
        assert len(unanswered) == 2 and all("got no reply" in f["message"] for f in unanswered), unanswered
        assert "allowed_ips 0.0.0.0/0, ::/0" in unanswered[0]["message"]

        vpn = lab.wg_backend
        ok(lab, "backend", "inbound", "add", "tcp:8080", "--interface", "vpn", "--open", "--label", "Web")
        ok(lab, "backend", "inbound", "add", "udp:5353", "--interface", "vpn", "--open")
        with lab.egress_counter("backend", daddr=client(lab, family)) as out:
            reply = lab.tcp_request("client", public(lab, family), 8080)
            assert reply is not None and reply.server == "web", reply
            assert (reply.local_ip, reply.peer_ip) == (dest, client(lab, family)), reply
            reply = lab.udp_request("client", public(lab, family), 5353)
            assert reply is not None and reply.peer_ip == client(lab, family), reply
            assert out.packets(vpn) >= 2 and out.packets("wan0") == 0, out.read()
        good = findings(lab, "gateway", "redirect")
        assert [f["level"] for f in good] == ["ok", "ok"], good
        assert all("answers through the tunnel" in f["message"] for f in good), good
        assert not findings(lab, "backend", level="error")


@pytest.mark.lab
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_mss_clamp_saves_a_bulk_upload_through_a_narrow_tunnel(backend, family):
    """The gateway's tunnel MTU is 1280, the backend's 1420, and ICMP "fragmentation needed"
    / "packet too big" is dropped at the gateway. The backend advertises an MSS for 1420, so
    without a clamp the client's full-size segments cannot enter the tunnel and the upload
    stalls. Shown by emptying wormhole's clamp chain by hand (nothing else changes), then
    restoring it with `wormhole apply`."""
    with gateway(backend, gateway_mtu=1280, backend_mtu=1420) as lab:
        backend_accepts(lab, backend, "tcp", 8080)
        lab.tcp_server("backend", 8080)
        forward(lab, "tcp:8080", hostport(tunnel(lab, "backend", family), 8080), "--snat")
        if backend == "fw4":
            assert "maxseg" not in lab.run("gateway", ["nft", "list", "table", "inet", "fw4"]).stdout
        dst = public(lab, family)
        with lab.drop_icmp_ptb("gateway") as blackhole:
            done = lab.bulk("client", dst, 8080, 4 << 20, "upload", timeout=30, stall=3)
            assert done.completed, done
            assert blackhole.dropped() == 0
            if backend == "fw4":
                lab.run("gateway", ["nft", "flush", "chain", "inet", "wormhole", "mss_clamp"])
            else:
                lab.run("gateway", ["iptables" if family == 4 else "ip6tables", "-t", "mangle", "-F", "WORMHOLE_FWD"])
            for host in ("client", "gateway"):
                lab.flush_route_cache(host)
            stalled = lab.bulk("client", dst, 8080, 4 << 20, "upload", timeout=15, stall=3)
            assert stalled.stalled and not stalled.completed, stalled
            assert blackhole.dropped() >= 1
            ok(lab, "gateway", "apply")
            lab.flush_route_cache("client")
            again = lab.bulk("client", dst, 8080, 4 << 20, "upload", timeout=30, stall=3)
            assert again.completed, again


def _established_mss(lab, port):
    out = lab.run("backend", ["ss", "-tniH", "state", "established", "( sport = :%d )" % port]).stdout
    found = re.findall(r"\bmss:(\d+)", out)
    assert found, out
    return int(found[0])


@pytest.mark.lab
@pytest.mark.parametrize("backend", BACKENDS)
def test_explicit_mss_for_a_nested_tunnel(backend):
    """An explicit mss clamps the SYN the backend receives below what the tunnel's own MTU
    would give (a path narrower than the device: a tunnel inside a tunnel). The backend's
    socket shows the MSS it may send (minus 12 bytes of TCP timestamps)."""
    with gateway(backend) as lab:
        backend_accepts(lab, backend, "tcp", "8080-8081")
        lab.tcp_server("backend", 8080)
        lab.tcp_server("backend", 8081)
        forward(lab, "tcp:8080", hostport(lab.tun_backend4, 8080), "--snat")
        forward(lab, "tcp:8081", hostport(lab.tun_backend4, 8081), "--snat", "--mss", "1100")
        sizes = {}
        for port in (8080, 8081):
            stream = lab.stream("client", lab.gateway4, port)
            assert stream.wait_replies(2), stream.stats()
            sizes[port] = _established_mss(lab, port)
            stream.stop()
        # 8080: the SYN fits the hop toward the backend (wg0, MTU 1420), below the uplink's 1500
        assert sizes[8080] == 1420 - 40 - 12 and sizes[8081] <= 1100, sizes


# --- the router: a LAN port forward under a VPN kill-switch ------------------------------------

def _drop_forward_accept(lab, backend):
    """Take wormhole's accept of published forwards out of the live firewall (by hand)."""
    if backend == "fw4":
        listing = lab.run("router", ["nft", "-a", "list", "chain", "inet", "fw4", "forward"]).stdout
        handles = [line.rsplit("# handle ", 1)[1] for line in listing.splitlines()
                   if "!wormhole: accept port forwards" in line]
        assert handles, listing
        for h in handles:
            lab.run("router", ["nft", "delete", "rule", "inet", "fw4", "forward", "handle", h])
        return
    for tool in ("iptables", "ip6tables"):
        saved = lab.run("router", [tool + "-save", "-t", "filter"]).stdout
        jumps = [line for line in saved.splitlines() if line.startswith("-A FORWARD") and "WORMHOLE_FORWARD" in line]
        assert jumps, saved
        for line in jumps:
            lab.run("router", [tool, "-t", "filter", "-D"] + shlex.split(line)[1:])


@pytest.mark.lab
@pytest.mark.parametrize("backend", BACKENDS)
def test_lan_forward_with_remap_under_a_killswitch_in_one_step(backend):
    with router(backend) as lab:
        lab.tcp_server("lan", 443, name="nas")
        lab.udp_server("lan", 5000)
        assert lab.tcp_request("client", lab.wan4, 8443, timeout=1) is None
        forward(lab, "tcp:8443", hostport(lab.lan4, 443), "--label", "NAS", host="router")
        forward(lab, "tcp:8443", hostport(lab.lan6, 443), "--label", "NAS IPv6", host="router")
        forward(lab, "udp:6000", hostport(lab.lan4, 5000), host="router")
        wan, wg = lab.dev("router", "wan"), lab.dev("router", "wg")
        with lab.egress_counter("router", ifname=[wan, wg], sport=8443) as tcp_out, \
                lab.egress_counter("router", ifname=[wan, wg], sport=6000) as udp_out:
            for dst, lan, src in ((lab.wan4, lab.lan4, lab.client4), (lab.wan6, lab.lan6, lab.client6)):
                reply = lab.tcp_request("client", dst, 8443)
                assert reply is not None and reply.server == "nas", (dst, reply)
                assert (reply.local_ip, reply.local_port, reply.peer_ip) == (lan, 443, src), reply
            reply = lab.udp_request("client", lab.wan4, 6000)
            assert reply is not None and reply.local_port == 5000 and reply.peer_ip == lab.client4, reply
            assert tcp_out.packets(wan) > 0 and tcp_out.packets(wg) == 0, tcp_out.read()
            assert udp_out.packets(wan) > 0 and udp_out.packets(wg) == 0, udp_out.read()
        listed = wh_json(lab, "router", "list")
        assert listed["exemptions"] == []
        assert [e["status"] for e in listed["redirects"]] == ["active"] * 3, listed
        assert [e["via"] for e in listed["redirects"]] == ["lan"] * 3
        assert not findings(lab, "router", level="error")

        # without reply marking the same forward dies in the kill-switch
        forward(lab, "tcp:9443", hostport(lab.lan4, 443), "--no-reply", host="router")
        assert lab.tcp_request("client", lab.wan4, 9443, timeout=1.5) is None
        # and without wormhole's forward accept the firewall drops it
        _drop_forward_accept(lab, backend)
        assert lab.tcp_request("client", lab.wan4, 8443, timeout=1.5) is None
        ok(lab, "router", "apply")
        assert lab.tcp_request("client", lab.wan4, 8443) is not None


@pytest.mark.lab
@pytest.mark.parametrize("backend", BACKENDS)
def test_nat_loopback_a_lan_host_reaches_the_forward_by_the_wan_address(backend):
    """fw4's redirects reflect by default; a forward moved into wormhole must too. The LAN
    host connects to the router's public address and reaches the forward's destination,
    masqueraded (else the destination, on the same LAN, would answer it directly)."""
    with router(backend) as lab:
        lab.tcp_server("lan", 443, name="nas")
        forward(lab, "tcp:8443", hostport(lab.lan4, 443), host="router")
        forward(lab, "tcp:9443", hostport(lab.lan4, 443), "--no-reflection", host="router")
        reply = lab.tcp_request("lan", lab.wan4, 8443)
        assert reply is not None and reply.server == "nas", reply
        assert (reply.local_port, reply.peer_ip) == (443, lab.router_lan4), reply
        assert lab.tcp_request("lan", lab.wan4, 9443, timeout=1.5) is None, "reflection 0 turns it off"
        reply = lab.tcp_request("client", lab.wan4, 9443)       # from outside, both work as before
        assert reply is not None and reply.peer_ip == lab.client4, reply
        listed = {e["src_dport"]: e for e in wh_json(lab, "router", "list")["redirects"]}
        assert (listed["8443"]["reflection"], listed["9443"]["reflection"]) == (True, False)


FLOWTABLE = """table inet whflow {{
	flowtable ft {{ hook ingress priority 0; devices = {{ {wan}, {lan} }}; }}
	chain forward {{
		type filter hook forward priority filter - 1; policy accept;
		meta l4proto {{ tcp, udp }} flow add @ft comment "as fw4's flow_offloading 1"
	}}
}}
"""


@pytest.mark.lab
def test_flow_offloaded_forward_keeps_its_reply_path():
    """docs/DESIGN-NOTES.md, "Flow offloading, on paper": an offloaded forward's replies
    keep leaving by the uplink under the kill-switch. Needs flowtables: where the kernel
    refuses them (CONFIG_NF_FLOW_TABLE off, as on the machine this was written on), the
    test says so and skips."""
    with router("fw4") as lab:
        wan, lan, wg = lab.dev("router", "wan"), lab.dev("router", "lan"), lab.dev("router", "wg")
        p = lab.run("router", ["nft", "-f", "-"], input=FLOWTABLE.format(wan=wan, lan=lan), check=False)
        if p.returncode != 0:
            support.kernel_refuses("an nft flowtable", p.stderr)
        lab.tcp_server("lan", 443, name="nas")
        forward(lab, "tcp:8443", hostport(lab.lan4, 443), host="router")
        # Offloaded packets skip postrouting, where the counter sits: it sees the slow-path
        # packets (the handshake); the answer arriving proves the offloaded replies' path.
        with lab.egress_counter("router", ifname=[wan, wg], sport=8443) as out:
            for _ in range(3):      # each connection is offloaded after its handshake
                reply = lab.tcp_request("client", lab.wan4, 8443)
                assert reply is not None and reply.peer_ip == lab.client4, reply
            assert out.packets(wg) == 0, out.read()
        flows = lab.run("router", ["conntrack", "-L", "-p", "tcp", "--dport", "8443"], check=False).stdout
        assert "[OFFLOAD]" in flows or "[HW_OFFLOAD]" in flows, flows


# --- allowlist, public address, ranges -------------------------------------------------------------

@pytest.mark.lab
@pytest.mark.parametrize("backend", BACKENDS)
def test_lan_forward_mss_fits_the_uplink_not_the_tunnel(backend):
    """`rt mtu` / --clamp-mss-to-pmtu look up the route back to the client without the
    connection's mark and, under the kill-switch, find the tunnel (MTU 1420). A forward's
    SYN is clamped to the uplink its replies leave by instead (full size on a 1500 WAN);
    the SYN-ACK still takes the route MTU toward the LAN host."""
    with router(backend) as lab:
        lab.tcp_server("lan", 443, name="nas")
        forward(lab, "tcp:8443", hostport(lab.lan4, 443), host="router")
        stream = lab.stream("client", lab.wan4, 8443)
        assert stream.wait_replies(2), stream.stats()
        lan = lab.run("lan", ["ss", "-tniH", "state", "established", "( sport = :443 )"]).stdout
        client = lab.run("client", ["ss", "-tniH", "state", "established", "( dport = :8443 )"]).stdout
        stream.stop()
        timestamps = 12
        assert re.findall(r"\bmss:(\d+)", lan) == [str(1500 - 40 - timestamps)], lan
        assert re.findall(r"\bmss:(\d+)", client) == [str(1500 - 40 - timestamps)], client


@pytest.mark.lab
@pytest.mark.parametrize("backend", BACKENDS)
def test_allowlist_public_address_and_port_range(backend):
    with gateway(backend) as lab:
        backend_accepts(lab, backend, "tcp", "9000-9003")
        for port in range(9000, 9004):
            lab.tcp_server("backend", port, name="p%d" % port)
        lab.run("client", ["ip", "addr", "add", "198.51.100.11/24", "dev", "eth0"])
        lab.run("client", ["ip", "addr", "add", "2001:db8:100::11/64", "dev", "eth0", "nodad"])
        forward(lab, "tcp:8000-8003", hostport(lab.tun_backend4, "9000-9003"), "--snat", "--allow", "198.51.100.11/32")
        forward(lab, "tcp:8000-8003", hostport(lab.tun_backend6, "9000-9003"), "--snat",
                "--allow", "2001:db8:100::11", "--allow", "2001:db8:ffff::/48")
        for port in (8000, 8003):
            assert lab.tcp_request("client", lab.gateway4, port, src="198.51.100.10", timeout=1) is None
            reply = lab.tcp_request("client", lab.gateway4, port, src="198.51.100.11")
            assert reply is not None and reply.local_port == port + 1000, reply
        assert lab.tcp_request("client", lab.gateway6, 8002, src="2001:db8:100::10", timeout=1) is None
        reply = lab.tcp_request("client", lab.gateway6, 8002, src="2001:db8:100::11")
        assert reply is not None and reply.local_port == 9002, reply

        # src_dip: only connections to a second public address of the gateway are forwarded
        lab.run("gateway", ["ip", "addr", "add", "203.0.113.11/28", "dev", "wan0"])
        forward(lab, "tcp:8100", hostport(lab.tun_backend4, 9000), "--snat", "--src-dip", "203.0.113.11")
        assert lab.tcp_request("client", lab.gateway4, 8100, timeout=1) is None
        reply = lab.tcp_request("client", "203.0.113.11", 8100)
        assert reply is not None and reply.server == "p9000", reply


# --- conflicts ----------------------------------------------------------------------------------------

def _snapshot(lab, backend):
    root = lab.roots["gateway"]
    files = sorted(str(p.relative_to(root)) + "\n" + p.read_text()
                   for p in root.rglob("*") if p.is_file() and "var/run" not in str(p) and "var/lock" not in str(p))
    if backend == "fw4":
        kernel = lab.run("gateway", ["nft", "list", "table", "inet", "wormhole"]).stdout
    else:
        kernel = "".join(lab.run("gateway", [tool]).stdout for tool in ("iptables-save", "ip6tables-save"))
        kernel = "\n".join(line for line in kernel.splitlines() if not line.startswith("#"))
    # counters move with background traffic (WireGuard keepalives, neighbour discovery)
    kernel = re.sub(r"\[\d+:\d+\]|counter packets \d+ bytes \d+", "", kernel)
    rules = lab.run("gateway", ["ip", "rule"]).stdout + lab.run("gateway", ["ip", "-6", "rule"]).stdout
    return files, kernel, rules


@pytest.mark.lab
@pytest.mark.parametrize("backend", BACKENDS)
def test_conflicts_are_rejected_and_nothing_changes(backend):
    with gateway(backend) as lab:
        web = forward(lab, "tcp:8080", hostport(lab.tun_backend4, 80), "--snat")
        ssh = ok(lab, "gateway", "inbound", "add", "tcp:2222")["id"]
        before = _snapshot(lab, backend)
        attempts = [
            (("forward", "add", "tcp:8080", hostport(lab.tun_backend4, 81)), web),      # same public port
            (("forward", "add", "tcp:8075-8085", lab.tun_backend4), web),               # overlapping range
            (("forward", "add", "tcpudp:8080", lab.tun_backend4), web),                 # tcp half overlaps
            (("inbound", "add", "tcp:8080"), web),                                     # exemption on a published port
            (("forward", "add", "tcp:2222", hostport(lab.tun_backend4, 22)), ssh),      # forward on an exempt port
        ]
        for args, other in attempts:
            reply = wh_json(lab, "gateway", *args)
            assert reply["error"]["code"] == "conflict", (args, reply)
            assert "overlaps" in reply["error"]["message"] and other in reply["error"]["message"], reply
            p = lab.wormhole("gateway", *args, check=False)
            assert p.returncode != 0 and "(conflict)" in p.stderr and other in p.stderr, p.stderr
            assert _snapshot(lab, backend) == before, args
        # other protocols and other ports are not conflicts
        forward(lab, "udp:8080", hostport(lab.tun_backend4, 80), "--snat")
        forward(lab, "tcp:8081", hostport(lab.tun_backend4, 80), "--snat")


@pytest.mark.lab
@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_written_duplicate_is_skipped_and_reported(backend):
    with gateway(backend) as lab:
        backend_accepts(lab, backend, "tcp", 8080)
        lab.tcp_server("backend", 8080, name="first")
        first = forward(lab, "tcp:8080", hostport(lab.tun_backend4, 8080), "--snat")
        config = lab.roots["gateway"] / "etc/config/wormhole"
        config.write_text(config.read_text() + "\nconfig redirect 'dup'\n\toption proto 'tcp'\n"
                          "\toption src_dport '8080'\n\toption dest_ip '10.99.0.9'\n"
                          "\nconfig exemption 'same'\n\toption proto 'tcp'\n\toption port '8079-8080'\n")
        ok(lab, "gateway", "apply")
        status = warnings(lab, "gateway")
        assert any(w.startswith("dup: src_dport: overlaps redirect %s" % first) for w in status), status
        assert any(w.startswith("same: port: overlaps redirect %s" % first) for w in status), status
        listed = wh_json(lab, "gateway", "list")
        dup = [e for e in listed["redirects"] if e["id"] == "dup"][0]
        same = listed["exemptions"][0]
        assert dup["status"] == same["status"] == "error" and first in dup["error"] and first in same["error"], listed
        reply = lab.tcp_request("client", lab.gateway4, 8080)
        assert reply is not None and reply.server == "first", reply


@pytest.mark.lab
@pytest.mark.parametrize("backend", BACKENDS)
def test_forward_cli_list_and_del(backend):
    with gateway(backend) as lab:
        backend_accepts(lab, backend, "tcp", 8080)
        lab.tcp_server("backend", 8080)
        sid = forward(lab, "tcp:8443", hostport(lab.tun_backend4, 8080), "--snat", "--label", "Web",
                      "--allow", "198.51.100.0/24", "--mss", "1300")
        forward(lab, "tcp:8443", hostport(lab.tun_backend6, 8080), "--snat")
        text = lab.wormhole("gateway", "forward", "list").stdout
        assert re.search(r"%s\s+tcp\s+8443\s+wan\s+10\.99\.0\.2:8080\s+snat\s+\w+\s+\d+\s+Web" % sid, text), text
        listed = wh_json(lab, "gateway", "forward", "list")["redirects"][0]
        assert (listed["src_ip"], str(listed["mss"]), listed["label"]) == (["198.51.100.0/24"], "1300", "Web"), listed
        assert lab.tcp_request("client", lab.gateway4, 8443) is not None
        assert "deleted %s" % sid in lab.wormhole("gateway", "forward", "del", sid).stdout
        assert lab.tcp_request("client", lab.gateway4, 8443, timeout=1) is None
        assert lab.tcp_request("client", lab.gateway6, 8443) is not None
        ok(lab, "gateway", "forward", "del", "tcp:8443")
        assert wh_json(lab, "gateway", "forward", "list")["redirects"] == []
        assert lab.tcp_request("client", lab.gateway6, 8443, timeout=1) is None
        assert wh_json(lab, "gateway", "forward", "del", "tcp:8443")["error"]["code"] == "not_found"


# --- what `check` and `status` explain ------------------------------------------------------------

def test_conntrack_lines_are_read_as_the_kernel_writes_them():
    """/proc/net/nf_conntrack: reply source and port, mark (decimal), [UNREPLIED]; IPv6 expanded."""
    import ipaddress
    from wormhole import facts
    lines = [
        "ipv4     2 tcp      6 118 SYN_SENT src=198.51.100.10 dst=203.0.113.10 sport=34736 dport=8080 [UNREPLIED] "
        "src=10.99.0.2 dst=198.51.100.10 sport=8080 dport=34736 mark=285212672 zone=0 use=2",
        "ipv6     10 tcp      6 116 TIME_WAIT src=2001:0db8:0100:0000:0000:0000:0000:0010 "
        "dst=2001:0db8:0113:0000:0000:0000:0000:0010 sport=44302 dport=8080 src=fd00:0099:0000:0000:0000:0000:0000:0002 "
        "dst=2001:0db8:0100:0000:0000:0000:0000:0010 sport=8080 dport=44302 [ASSURED] mark=285212672 zone=0 use=2",
        "ipv4     2 udp      17 26 src=198.51.100.10 dst=203.0.113.10 sport=52207 dport=5353 src=10.99.0.2 "
        "dst=198.51.100.10 sport=5353 dport=52207 mark=0 zone=0 use=2",
        "ipv4     2 icmp     1 29 src=10.99.0.2 dst=10.99.0.1 type=8 code=0 id=1 src=10.99.0.1 dst=10.99.0.2 type=0 "
        "code=0 id=1 mark=0 use=1",
    ]
    parsed = [facts._conntrack_line(line.split()) for line in lines]
    assert parsed == [
        ("tcp", ipaddress.ip_address("10.99.0.2"), 8080, 0x11000000, False),
        ("tcp", ipaddress.ip_address("fd00:99::2"), 8080, 0x11000000, True),
        ("udp", ipaddress.ip_address("10.99.0.2"), 5353, 0, True),
        None,
    ]


@pytest.mark.lab
@pytest.mark.parametrize("backend", BACKENDS)
def test_check_backend_peer_without_default_allowed_ips(backend):
    """The backend's peer for the gateway must allow 0.0.0.0/0, ::/0: WireGuard only sends a
    packet to a peer whose allowed_ips cover its destination, and the replies go to clients."""
    with gateway(backend) as lab:
        lab.tcp_server("backend", 8080)
        forward(lab, "tcp:8080", hostport(lab.tun_backend4, 8080))
        ok(lab, "backend", "inbound", "add", "tcp:8080", "--interface", "vpn", "--open")
        assert lab.tcp_request("client", lab.gateway4, 8080) is not None
        gw_key = lab.wg["gateway"].public_key
        lab.run("backend", ["wg", "set", lab.wg_backend, "peer", gw_key, "allowed-ips", "10.99.0.0/24,fd00:99::/64"])
        assert lab.tcp_request("client", lab.gateway4, 8080, timeout=1.5) is None
        bad = findings(lab, "backend", "wireguard")
        assert [f["level"] for f in bad] == ["error", "warn"], bad
        assert lab.wg_backend in bad[0]["message"] and "0.0.0.0/0" in bad[0]["message"]
        assert "route_allowed_ips '0'" in bad[0]["message"] and "Table = off" in bad[0]["message"]
        lab.run("backend", ["wg", "set", lab.wg_backend, "peer", gw_key, "allowed-ips", "0.0.0.0/0,::/0"])
        assert not findings(lab, "backend", "wireguard")
        assert lab.tcp_request("client", lab.gateway4, 8080) is not None


@pytest.mark.lab
@pytest.mark.parametrize("backend", BACKENDS)
def test_check_gateway_peer_not_covering_the_backend(backend):
    with gateway(backend) as lab:
        backend_accepts(lab, backend, "tcp", 8080)
        lab.tcp_server("backend", 8080)
        forward(lab, "tcp:8080", hostport(lab.tun_backend4, 8080), "--snat")
        assert not findings(lab, "gateway", "wireguard")
        backend_key = lab.wg["backend"].public_key
        lab.run("gateway", ["wg", "set", lab.wg_gateway, "peer", backend_key, "allowed-ips", "10.99.0.3/32"])
        assert lab.tcp_request("client", lab.gateway4, 8080, timeout=1.5) is None
        bad = findings(lab, "gateway", "wireguard", "error")
        assert len(bad) == 1 and lab.tun_backend4 in bad[0]["message"] and lab.wg_gateway in bad[0]["message"], bad
        assert "list allowed_ips '10.99.0.2/32'" in bad[0]["message"]


@pytest.mark.lab
@pytest.mark.parametrize("backend", BACKENDS)
def test_check_and_status_destination_not_routable_or_hairpin(backend):
    with gateway(backend) as lab:
        lab.run("gateway", ["ip", "route", "add", "unreachable", "10.55.0.0/16"])
        lost = forward(lab, "tcp:8080", "10.55.0.5", "--snat")
        hairpin = forward(lab, "tcp:8081", lab.client4)
        msgs = {f["id"]: f["message"] for f in findings(lab, "gateway", "redirect", "error")}
        assert "not routable" in msgs[lost], msgs
        assert "through the uplink wan0 itself" in msgs[hairpin], msgs
        status = warnings(lab, "gateway")
        assert any(w.startswith(lost + ":") and "not routable" in w for w in status), status
        assert any(w.startswith(hairpin + ":") and "uplink wan0" in w for w in status), status
        listed = {e["id"]: e["via"] for e in wh_json(lab, "gateway", "list")["redirects"]}
        assert listed == {lost: None, hairpin: "uplink"}


@pytest.mark.lab
@pytest.mark.parametrize("backend", BACKENDS)
def test_check_and_status_mss_larger_than_the_tunnel(backend):
    with gateway(backend) as lab:
        too_big = forward(lab, "tcp:8080", hostport(lab.tun_backend4, 8080), "--snat", "--mss", "1400")
        fine = forward(lab, "tcp:8081", hostport(lab.tun_backend6, 8080), "--snat", "--mss", "1300")
        warned = findings(lab, "gateway", "mss")
        assert [(f["id"], f["level"]) for f in warned] == [(too_big, "warn")], warned
        assert "MTU 1420, so at most 1380" in warned[0]["message"]
        assert any(w.startswith(too_big + ": mss 1400") for w in warnings(lab, "gateway"))
        assert not any(w.startswith(fine) for w in warnings(lab, "gateway"))


@pytest.mark.lab
def test_check_and_status_firewall_redirect_on_the_same_port():
    with gateway("fw4") as lab:
        backend_accepts(lab, "fw4", "tcp", "8080-8081")
        lab.tcp_server("backend", 8080, name="wormhole")
        lab.tcp_server("backend", 8081, name="firewall")
        lab.fw4_redirect(src="wan", proto="tcp", src_dport=8080, dest_ip=lab.tun_backend4, dest_port=8081,
                         name="Old-forward")
        lab.fw4("gateway").zone("vpn").masq = True
        lab.fw4_reload()
        assert lab.tcp_request("client", lab.gateway4, 8080).server == "firewall"
        sid = forward(lab, "tcp:8080", hostport(lab.tun_backend4, 8080), "--snat")
        assert lab.tcp_request("client", lab.gateway4, 8080).server == "wormhole"
        warned = [f for f in findings(lab, "gateway", "redirect", "warn") if "Old-forward" in f["message"]]
        assert len(warned) == 1 and warned[0]["id"] == sid, warned
        assert any(w.startswith(sid) and "'Old-forward'" in w for w in warnings(lab, "gateway"))


@pytest.mark.lab
@pytest.mark.parametrize("backend", BACKENDS)
def test_check_and_status_forwarding_off(backend):
    with gateway(backend) as lab:
        backend_accepts(lab, backend, "tcp", 8080)
        lab.tcp_server("backend", 8080)
        forward(lab, "tcp:8080", hostport(lab.tun_backend4, 8080), "--snat")
        assert lab.tcp_request("client", lab.gateway4, 8080) is not None
        lab.set_sysctl("gateway", "net.ipv4.ip_forward", 0)
        assert lab.tcp_request("client", lab.gateway4, 8080, timeout=1.5) is None
        bad = findings(lab, "gateway", "forwarding", "error")
        assert len(bad) == 1 and "sysctl -w net.ipv4.ip_forward=1" in bad[0]["message"], bad
        assert any("IPv4 forwarding is off" in w for w in warnings(lab, "gateway"))
        lab.set_sysctl("gateway", "net.ipv4.ip_forward", 1)
        assert not findings(lab, "gateway", "forwarding")
