"""wormhole beside pbr, mwan3 and Tailscale, proven with real packets in the router lab.

Each neighbour is installed the way the real package installs itself (tests/lab/neighbours.py:
the same nft/iptables text, marks, ip rule priorities and tables, quoted from their sources
in /work/notes/neighbours.md). With it present each test shows:

- wormhole's exemption and forward replies leave by the WAN they came in on, and what the
  router or the LAN starts still goes where the kill-switch (or the neighbour) sends it;
- the neighbour's own policy still works (pbr's policy host leaves by its interface, mwan3
  balances across both WANs and restores its CONNMARK, Tailscale's bypass mark and table 52
  route);
- no bit of theirs is changed by ours: the mark bits outside main.mark_mask of live
  conntrack entries (and, for pbr, which marks packets only, of the packets themselves) are
  the same without wormhole and with it;
- `wormhole check` sees the neighbour's ip rules and that they leave wormhole's alone.

Broken variants: WH_NEIGHBOURS_BROKEN=priority puts wormhole's ip rules after the
neighbour's (main.priority 30010 beside pbr, 6000 beside Tailscale), WH_NEIGHBOURS_BROKEN=mask
moves main.mark_mask onto the neighbour's bits (0x00ff0000 beside pbr and Tailscale,
0x0000ff00 beside mwan3). Every test here must fail with one of them (docs/RECIPES.md says
which).
"""

import json
import os

import pytest

from tests.lab import RouterLab, Zone
from tests.lab import neighbours as nb
from tests.lab.pytest_support import require_lab
from tests.test_lab_exemptions import configure as lab_configure
from tests.test_lab_redirects import fw3_firewall

BROKEN = os.environ.get("WH_NEIGHBOURS_BROKEN", "")
DEFAULT_MASK = 0xff000000
BROKEN_MASK = {"pbr": 0x00ff0000, "tailscale": 0x00ff0000, "mwan3": 0x0000ff00}
BROKEN_PRIORITY = {"pbr": 30010, "tailscale": 6000, "mwan3": 3010}


def wormhole_mask(neighbour):
    return BROKEN_MASK[neighbour] if BROKEN == "mask" else DEFAULT_MASK


def configure(lab, backend, neighbour):
    """The product config (backend and the lab's uplinks) and, in a broken variant, the bad
    mark_mask or priority."""
    lab_configure(lab, backend)
    extra = {"mask": "\toption mark_mask '%#010x'\n" % BROKEN_MASK[neighbour],
             "priority": "\toption priority '%d'\n" % BROKEN_PRIORITY[neighbour]}.get(BROKEN, "")
    path = lab.root / "etc/config/wormhole"
    line = "\toption backend '%s'\n" % backend
    path.write_text(path.read_text().replace(line, line + extra, 1))


def wh_json(lab, *args):
    return json.loads(lab.wormhole("router", *args, "--json", check=False).stdout)


def ok(lab, *args):
    reply = wh_json(lab, *args)
    assert "error" not in reply, reply
    return reply


def check(lab):
    return wh_json(lab, "check")


def findings(report, check_id, level=None):
    return [f for f in report["findings"] if f["check"] == check_id and (level is None or f["level"] == level)]


def flush_conntrack(lab):
    lab.run("router", ["conntrack", "-F"], check=False)


# --- pbr ------------------------------------------------------------------------------------------

PBR_POLICY = "NAS via VPN"


@pytest.mark.lab
def test_beside_pbr_forward_replies_leave_by_the_wan_and_the_policy_still_holds():
    """pbr as the VPN policy router (note 1.5): main's default is the WAN, pbr's policy sends
    the NAS (the LAN host) through the WireGuard interface. The NAS is published by a fw4
    port forward; its replies carry pbr's VPN mark, so without wormhole they go into the
    tunnel. wormhole's exemption on the public port sends them out of the WAN, while the
    NAS's own connections still go through the tunnel and pbr's bits on every reply packet
    stay what pbr set."""
    require_lab()
    with RouterLab(killswitch="off") as lab:
        configure(lab, "fw4", "pbr")
        ifaces = nb.install_pbr(lab, [(PBR_POLICY, lab.lan4, "wg0")])
        wan, wg = lab.dev("router", "wan"), lab.wg_router
        vpn_mark = next(i["mark"] for i in ifaces if i["name"] == "wg0")
        assert "pbr_mark_0x020000" in lab.run("router", ["nft", "list", "chain", "inet", "fw4", "pbr_prerouting"]).stdout
        lab.fw4_redirect(src="wan", proto="tcp", src_dport=8443, dest_ip=lab.lan4, dest_port=443)
        lab.tcp_server("lan", 443, name="nas")
        lab.tcp_server("client", 8080, name="site")
        replies = f'iifname "{lab.dev("router", "lan")}" ip saddr {lab.lan4} tcp sport 443'

        # pbr's policy: the NAS leaves through the tunnel (the provider NATs it), before and after
        reply = lab.tcp_request("lan", lab.client4, 8080)
        assert reply is not None and reply.peer_ip == lab.provider4, reply

        # without wormhole: the forward's replies carry pbr's VPN mark and die in the tunnel
        census = nb.MarkCensus(lab, "router", replies, nb.PBR_MASK, [vpn_mark])
        assert lab.tcp_request("client", lab.wan4, 8443, timeout=1.5) is None
        before = census.read()
        census.stop()
        assert before["all"] > 0 and before[vpn_mark] == before["all"], before
        without = foreign_bits(lab)     # pbr marks packets only: nothing of it in conntrack
        flush_conntrack(lab)

        ok(lab, "inbound", "add", "tcp:8443", "--family", "ipv4", "--label", "NAS")
        ok(lab, "forward", "add", "tcp:9443", "%s:443" % lab.lan4, "--label", "NAS again")
        census = nb.MarkCensus(lab, "router", replies, nb.PBR_MASK, [vpn_mark])
        with lab.egress_counter("router", ifname=[wan, wg], sport=8443) as out, \
                lab.egress_counter("router", ifname=[wan, wg], sport=9443) as fwd_out:
            for port, counter in ((8443, out), (9443, fwd_out)):
                reply = lab.tcp_request("client", lab.wan4, port)
                assert reply is not None and reply.server == "nas" and reply.peer_ip == lab.client4, reply
                assert counter.packets(wan) > 0 and counter.packets(wg) == 0, (port, counter.read())
        after = census.read()
        census.stop()
        # pbr's bits on the replies are the ones pbr set, with wormhole's beside them
        assert after["all"] > 0 and after[vpn_mark] == after["all"], after
        key = ("tcp", lab.client4, lab.wan4, 8443)
        assert without[key] == foreign_bits(lab)[key] == [0], (without, foreign_bits(lab))

        # nothing leaks: the NAS's own connections still take pbr's tunnel
        reply = lab.tcp_request("lan", lab.client4, 8080)
        assert reply is not None and reply.peer_ip == lab.provider4, reply
        route = lab.route_get("router", lab.client4, src=lab.lan4, iif=lab.dev("router", "lan"), mark=hex(vpn_mark))
        assert route["dev"] == wg, route

        report = check(lab)
        assert report["killswitch"]["active"] and report["killswitch"]["via"] == wg, report["killswitch"]
        assert not findings(report, "neighbours", "error"), report["findings"]
        seen = findings(report, "neighbours", "ok")
        assert seen and "29998" in seen[0]["message"] and "30000" in seen[0]["message"], report["findings"]



def foreign_bits(lab):
    """Other packages' mark bits (outside wormhole's default mask, whatever the variant) on the
    router's live connections, by kind of connection."""
    return nb.foreign_marks(lab.conntrack("router", family=4), DEFAULT_MASK)


# --- Tailscale ------------------------------------------------------------------------------------

def _tailscale_firewall(lab, backend):
    """The router's firewall with a zone for the tailnet device (masquerading the LAN into it,
    as users set up an exit node), a rule accepting the router's HTTPS from the WAN."""
    ts = lab.ts_router.name
    if backend == "fw4":
        lab.fw4().zones.append(Zone("tailscale", [ts], masq=True))
        lab.fw4().forwardings.append(("lan", "tailscale"))
        lab.fw4_accept_input(zone="wan", proto="tcp", port=443)
        return
    fw3_firewall(lab, "router", trusted=[lab.dev("router", "lan")], mtu_fix=lab.mtu_fix)
    lab.run("router", ["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", ts, "-j", "MASQUERADE"])
    lab.run("router", ["iptables", "-A", "INPUT", "-i", lab.dev("router", "wan"), "-p", "tcp", "--dport", "443",
                       "-j", "ACCEPT"])


@pytest.mark.lab
@pytest.mark.parametrize("backend,mode", [("fw4", "nft"), ("fw3", "iptables")])
def test_beside_tailscale_with_an_exit_node(backend, mode):
    """Tailscale as the kill-switch: an exit node, so table 52 (rule 5270) routes everything
    into the tailnet; tailscaled's own tunnel packets carry the bypass mark 0x80000 and leave
    by main (rule 5210). Its nftables tables on fw4 (OpenWrt's default mode), its iptables
    chains beside fw3. wormhole's rules (90) come before 5270: replies of the router's HTTPS
    and of a forward to the LAN leave by the WAN, everything the router and the LAN start
    still goes to the exit node, and Tailscale's bits on every live connection stay."""
    require_lab()
    with nb.TailnetLab() as lab:
        configure(lab, backend, "tailscale")
        ts, wan = lab.ts_router.name, lab.dev("router", "wan")
        _tailscale_firewall(lab, backend)
        nb.install_tailscale(lab, mode)
        lab.ts_handshake()
        lab.tcp_server("router", 443, name="luci")
        lab.tcp_server("lan", 443, name="nas")
        lab.tcp_server("client", 8080, name="site")

        def outbound():
            """The router's and the LAN's own connections go to the exit node (which NATs them
            to the provider's address), through the tunnel whose packets bypass table 52."""
            with lab.egress_counter("router", ifname=[wan, ts], dport=8080) as out, \
                    lab.egress_counter("router", ifname=[wan], proto="udp", dport=nb.TS_PORT) as tunnel:
                for host in ("router", "lan"):
                    reply = lab.tcp_request(host, lab.client4, 8080)
                    assert reply is not None and reply.peer_ip == lab.provider4, (host, reply)
                assert out.packets(ts) > 0 and out.packets(wan) == 0, out.read()
                assert tunnel.packets(wan) > 0, tunnel.read()

        # without wormhole: the HTTPS reply follows table 52 into the tailnet and dies there
        flush_conntrack(lab)
        outbound()
        assert lab.tcp_request("client", lab.wan4, 443, timeout=1.5) is None
        without = foreign_bits(lab)
        tunnel_key = ("udp", lab.wan4, lab.provider4, nb.TS_PORT)
        assert without.get(tunnel_key) == [nb.TS_BYPASS_MARK], without

        ok(lab, "inbound", "add", "tcp:443", "--label", "LuCI")
        ok(lab, "forward", "add", "tcp:8443", "%s:443" % lab.lan4, "--label", "NAS")
        flush_conntrack(lab)
        outbound()
        with lab.egress_counter("router", ifname=[wan, ts], sport=443) as router_out, \
                lab.egress_counter("router", ifname=[wan, ts], sport=8443) as lan_out:
            reply = lab.tcp_request("client", lab.wan4, 443)
            assert reply is not None and reply.server == "luci" and reply.peer_ip == lab.client4, reply
            reply = lab.tcp_request("client", lab.wan4, 8443)
            assert reply is not None and reply.server == "nas" and reply.peer_ip == lab.client4, reply
            for out in (router_out, lan_out):
                assert out.packets(wan) > 0 and out.packets(ts) == 0, out.read()
        with_wormhole = foreign_bits(lab)
        common = set(without) & set(with_wormhole)
        assert tunnel_key in common and ("tcp", lab.client4, lab.wan4, 443) in common, (without, with_wormhole)
        assert {k: without[k] for k in common} == {k: with_wormhole[k] for k in common}, (without, with_wormhole)
        assert with_wormhole[("tcp", lab.client4, lab.wan4, 8443)] == [0], with_wormhole

        # Tailscale's own routing: table 52 for everything, main for the bypass mark
        assert lab.route_get("router", lab.client4)["dev"] == ts
        assert lab.route_get("router", lab.client4, mark=hex(nb.TS_BYPASS_MARK))["dev"] == wan

        report = check(lab)
        assert report["killswitch"]["active"] and report["killswitch"]["via"] == ts, report["killswitch"]
        assert not findings(report, "neighbours", "error"), report["findings"]
        (seen,) = findings(report, "neighbours", "ok")
        assert all(p in seen["message"] for p in ("5210", "5250", "5270")), seen


# --- mwan3 ----------------------------------------------------------------------------------------

def _mwan3_firewall(lab, backend):
    """What an mwan3 router has: the LAN to both WANs (masqueraded), the router's HTTPS from
    both, and a port forward of public 8443 to the LAN host's 443."""
    if backend == "fw4":
        lab.fw4().forwardings.append(("lan", "wan"))
        lab.fw4_accept_input(zone="wan", proto="tcp", port=443, reload=False)
        lab.fw4_redirect(src="wan", proto="tcp", src_dport=8443, dest_ip=lab.lan4, dest_port=443)
        return
    fw3_firewall(lab, "router", trusted=[lab.dev("router", "lan")], mtu_fix=lab.mtu_fix)
    lab.run("router", ["iptables", "-A", "FORWARD", "-m", "conntrack", "--ctstate", "DNAT", "-j", "ACCEPT"])
    for dev in lab.wan_devs:
        for rule in (["-A", "FORWARD", "-i", lab.dev("router", "lan"), "-o", dev, "-j", "ACCEPT"],
                     ["-t", "nat", "-A", "POSTROUTING", "-o", dev, "-j", "MASQUERADE"],
                     ["-A", "INPUT", "-i", dev, "-p", "tcp", "--dport", "443", "-j", "ACCEPT"],
                     ["-t", "nat", "-A", "PREROUTING", "-i", dev, "-p", "tcp", "--dport", "8443", "-j", "DNAT",
                      "--to-destination", "%s:443" % lab.lan4]):
            lab.run("router", ["iptables"] + rule)


BALANCED = 24       # LAN connections: all on one member by chance is 2 in 2**24


@pytest.mark.lab
@pytest.mark.parametrize("fwmark_accept", ["1", "0"])
@pytest.mark.parametrize("backend", ["fw4", "fw3"])
def test_beside_mwan3_balancing_two_wans(backend, fwmark_accept):
    """mwan3 (iptables: iptables-nft beside fw4, or beside fw3) balances the LAN over wan and
    wan2 with its CONNMARK save/restore under 0x3f00; the router itself stays behind the VPN
    kill-switch. wormhole's exemptions on both uplinks, for the router's HTTPS and a port
    forward to the LAN: each reply leaves by the WAN its connection came in by; mwan3 still
    balances (both members get connections), every packet of a balanced connection keeps its
    member (CONNMARK restore), and mwan3's bits on every live connection are the same with
    wormhole and without. With tcp_fwmark_accept on (wormhole's default) too: an accepted
    socket takes its SYN's mark, which carries mwan3's "default" 0x3f00 (set after its save,
    for a connected destination), and its replies would save that over mwan3's record of the
    router's HTTPS connections; wormhole's input chain leaves the SYN only its own bits."""
    require_lab()
    with RouterLab(killswitch="metric", wan1=True) as lab:
        configure(lab, backend, "mwan3")
        path = lab.root / "etc/config/wormhole"
        path.write_text(path.read_text().replace("config wormhole 'main'\n", "config wormhole 'main'\n"
                                                 "\toption fwmark_accept '%s'\n" % fwmark_accept, 1))
        _mwan3_firewall(lab, backend)
        members = {m["id"]: m["dev"] for m in nb.install_mwan3(lab)}
        mark_of_addr = {lab.wan4: nb.mwan3_mark(1), lab.wan1_4: nb.mwan3_mark(3)}
        assert sorted(members) == [1, 3]
        lab.tcp_server("router", 443, name="luci")
        lab.tcp_server("lan", 443, name="nas")
        lab.tcp_server("client", 8080, name="site")
        wans = ((lab.wan4, lab.wan_dev), (lab.wan1_4, lab.wan1_dev))

        def traffic():
            flush_conntrack(lab)
            peers = set()
            for _ in range(BALANCED):
                reply = lab.tcp_request("lan", lab.client4, 8080)
                assert reply is not None, reply
                peers.add(reply.peer_ip)
            assert peers == {lab.wan4, lab.wan1_4}, peers       # both members see connections
            stream = lab.stream("lan", lab.client4, 8080)
            try:
                assert stream.wait_replies(20), stream.stats()
            finally:
                stats = stream.stop()
            assert stats.ok, stats                              # one connection, one member throughout
            reply = lab.tcp_request("router", lab.client4, 8080)
            assert reply is not None and reply.peer_ip == lab.provider4, reply   # the router: kill-switch
            balanced = [e for e in lab.conntrack("router", family=4)
                        if e.proto == "tcp" and e.orig["src"] == lab.lan4 and e.orig["dport"] == 8080]
            assert len(balanced) == BALANCED + 1, balanced
            for e in balanced:      # the member mwan3 saved in conntrack is the WAN the connection used
                assert e.mark & nb.MWAN3_MASK == mark_of_addr[e.reply["dst"]], e.line
            for addr, dev in wans:      # inbound: each reply by the WAN its connection came in by
                for port, server in ((443, "luci"), (8443, "nas")):
                    with lab.egress_counter("router", ifname=[lab.wan_dev, lab.wan1_dev, lab.wg_router],
                                            proto="tcp", port=port) as out:
                        reply = lab.tcp_request("client", addr, port)
                        assert reply is not None and reply.server == server and reply.peer_ip == lab.client4, reply
                        assert out.packets(dev) > 0 and sum(out.read().values()) == out.packets(dev), (addr, out.read())
            return foreign_bits(lab)

        without = traffic()         # mwan3 alone routes inbound replies by its own CONNMARK
        for uplink in ("wan", "wan1"):
            ok(lab, "inbound", "add", "tcp:443", "--interface", uplink, "--label", "LuCI")
            ok(lab, "inbound", "add", "tcp:8443", "--interface", uplink, "--family", "ipv4", "--label", "NAS")
        with_wormhole = traffic()
        forwarded = [("tcp", lab.client4, addr, 8443) for addr, _ in wans]
        local = [("tcp", lab.client4, addr, 443) for addr, _ in wans]
        assert [without[k] for k in forwarded + local] == [[0x100], [0x300]] * 2, without
        common = set(without) & set(with_wormhole)
        assert set(forwarded + local) <= common, (without, with_wormhole)
        assert {k: without[k] for k in common} == {k: with_wormhole[k] for k in common}, (without, with_wormhole)

        report = check(lab)
        assert report["killswitch"]["active"] and report["killswitch"]["via"] == lab.wg_router, report["killswitch"]
        assert not findings(report, "neighbours", "error"), report["findings"]
        (seen,) = findings(report, "neighbours", "ok")
        assert all(p in seen["message"] for p in ("1001", "2003", "3001", "2061", "2062")), seen
        assert not findings(report, "neighbours", "warn"), report["findings"]
