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

        ok(lab, "inbound", "add", "tcp:8443", "--family", "ipv4", "--label", "NAS")
        census = nb.MarkCensus(lab, "router", replies, nb.PBR_MASK, [vpn_mark])
        with lab.egress_counter("router", ifname=[wan, wg], sport=8443) as out:
            reply = lab.tcp_request("client", lab.wan4, 8443)
            assert reply is not None and reply.server == "nas" and reply.peer_ip == lab.client4, reply
            assert out.packets(wan) > 0 and out.packets(wg) == 0, out.read()
        after = census.read()
        census.stop()
        # pbr's bits on the replies are the ones pbr set, with wormhole's beside them
        assert after["all"] > 0 and after[vpn_mark] == after["all"], after

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
