"""OpenVPN as the kill-switch VPN (Debian's openvpn 2.6, tun, TLS with a PKI made at test
time), proven with real packets in the router lab on both firewall backends.

The provider's server pushes `redirect-gateway def1 ipv6`: the router's client installs
0/1 + 128/1 (and ::/3, 2000::/4, 3000::/4, fc00::/7) into the tun device, which beat the
WAN's default routes by prefix length, and a /32 to the server via the WAN gateway. The
server drops packets from the router whose source is not the address it pushed (OpenVPN's
"bad source address"), so a reply with the WAN source that is routed into the tunnel dies
there: the problem, as users of OpenVPN providers meet it. Each scenario shows that failure
first, then the product's exemption or forward fixing it, with the replies counted on the
WAN device and none on the tun device, and nothing else leaking out of the WAN.
"""

import contextlib
import os

import pytest

from tests.lab import openvpn
from tests.lab.pytest_support import require_lab
from tests.test_lab_exemptions import add, configure, wh_json
from tests.test_lab_redirects import fw3_firewall

BACKENDS = ["fw4", "fw3"]


def require_openvpn():
    require_lab()
    reason = openvpn.unavailable_reason()
    if reason:
        # under CI=true a missing tool fails the test, as require_lab() does
        if os.environ.get("CI", "").strip().lower() == "true":
            pytest.fail("CI=true but " + reason, pytrace=False)
        pytest.skip(reason)


@contextlib.contextmanager
def ovpn_lab(backend, fw3_filter=False):
    """The OpenVPN router lab with the product configured for `backend`; fw3_filter: the
    emulated fw4 table replaced by fw3's shape in iptables (the product's accepts are then
    the only way to a forwarded LAN service)."""
    require_openvpn()
    with openvpn.OpenVpnRouterLab() as lab:
        configure(lab, backend)
        if fw3_filter:
            fw3_firewall(lab, "router", trusted=[lab.dev("router", "lan")], mtu_fix=lab.mtu_fix)
        yield lab


def assert_pushed_killswitch(lab):
    tun = lab.dev("router", "wg")
    for probe in ("198.51.100.10", "2001:db8:100::10"):
        assert lab.route_get("router", probe)["dev"] == tun, lab.describe()
    status = wh_json(lab, "status")
    assert status["killswitch"]["active"] and status["killswitch"]["via"] == tun, status["killswitch"]


@pytest.mark.lab
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("family", [4, 6])
def test_router_services_under_openvpn(backend, family):
    with ovpn_lab(backend) as lab:
        assert_pushed_killswitch(lab)
        lab.fw4_accept_input(zone="wan", proto="tcp", port=443)
        lab.fw4_accept_input(zone="wan", proto="udp", port=5000)
        lab.tcp_server("router", 443, name="luci")
        lab.udp_server("router", 5000)
        dst, client = (lab.wan4, lab.client4) if family == 4 else (lab.wan6, lab.client6)
        assert lab.tcp_request("client", dst, 443, timeout=1.5) is None, "OpenVPN's routes should break it first"
        assert lab.udp_request("client", dst, 5000, timeout=1.5) is None
        add(lab, "tcp:443", "--label", "LuCI")
        add(lab, "udp:5000")
        wan, tun = lab.dev("router", "wan"), lab.dev("router", "wg")
        with lab.egress_counter("router", sport=443, proto="tcp") as tcp_out, \
                lab.egress_counter("router", sport=5000, proto="udp") as udp_out:
            reply = lab.tcp_request("client", dst, 443)
            assert reply is not None and reply.peer_ip == client and reply.local_ip == dst, reply
            reply = lab.udp_request("client", dst, 5000)
            assert reply is not None and reply.peer_ip == client, reply
            assert tcp_out.packets(wan) > 0 and tcp_out.packets(tun) == 0, tcp_out.read()
            assert udp_out.packets(wan) > 0 and udp_out.packets(tun) == 0, udp_out.read()
        check = wh_json(lab, "check")
        assert check["ok"], check


@pytest.mark.lab
@pytest.mark.parametrize("backend", BACKENDS)
def test_port_forward_to_lan_under_openvpn(backend):
    with ovpn_lab(backend, fw3_filter=backend == "fw3") as lab:
        lab.tcp_server("lan", 8096, name="jellyfin")
        lab.udp_server("lan", 5353)
        # a forward whose replies follow the routes: into the tunnel, dropped by the server
        fid = wh_json(lab, "forward", "add", "tcp:8096", "%s:8096" % lab.lan4, "--no-reply")["id"]
        assert lab.tcp_request("client", lab.wan4, 8096, timeout=1.5) is None
        assert "error" not in wh_json(lab, "forward", "del", fid)
        assert "error" not in wh_json(lab, "forward", "add", "tcp:8096", "%s:8096" % lab.lan4)
        assert "error" not in wh_json(lab, "forward", "add", "udp:5353", "%s:5353" % lab.lan4)
        wan, tun = lab.dev("router", "wan"), lab.dev("router", "wg")
        with lab.egress_counter("router", sport=8096, proto="tcp") as out, \
                lab.egress_counter("router", sport=5353, proto="udp") as uout:
            reply = lab.tcp_request("client", lab.wan4, 8096)
            assert reply is not None and reply.peer_ip == lab.client4 and reply.local_ip == lab.lan4, reply
            reply = lab.udp_request("client", lab.wan4, 5353)
            assert reply is not None and reply.peer_ip == lab.client4, reply
            assert out.packets(wan) > 0 and out.packets(tun) == 0, out.read()
            assert uout.packets(wan) > 0 and uout.packets(tun) == 0, uout.read()


@pytest.mark.lab
@pytest.mark.parametrize("backend", BACKENDS)
def test_nothing_else_leaks_out_of_the_wan_under_openvpn(backend):
    """With exemptions and a forward in place, connections the router or the LAN start (to
    the exempt ports too, and from an exempt source port) still go into OpenVPN's tunnel and
    reach the client from the provider's address; not one packet to the client leaves by
    the WAN."""
    with ovpn_lab(backend) as lab:
        add(lab, "tcp:443")
        add(lab, "tcp:80", "--open")
        assert "error" not in wh_json(lab, "forward", "add", "tcp:8096", "%s:8096" % lab.lan4)
        for port in (443, 80, 8096):
            lab.tcp_server("client", port, name="outside-%d" % port)
        tunnel_src = {lab.provider4, lab.provider6}
        wan = lab.dev("router", "wan")
        with lab.egress_counter("router", ifname="wan", daddr=lab.client4) as wan4, \
                lab.egress_counter("router", ifname="wan", daddr=lab.client6) as wan6:
            for host in ("router", "lan"):
                for port in (443, 80, 8096):
                    for dst in (lab.client4, lab.client6):
                        reply = lab.tcp_request(host, dst, port)
                        assert reply is not None and reply.peer_ip in tunnel_src, (host, dst, port, reply)
                reply = lab.tcp_request(host, lab.client4, 443, src_port=80)
                assert reply is not None and reply.peer_ip == lab.provider4, reply
                reply = lab.tcp_request(host, lab.client4, 443, src_port=8096)
                assert reply is not None and reply.peer_ip == lab.provider4, reply
            assert wan4.packets(wan) == 0, wan4.read()
            assert wan6.packets(wan) == 0, wan6.read()
