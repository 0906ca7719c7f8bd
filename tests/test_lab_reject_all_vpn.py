"""A VPN that brings its own reject-all table (NymVPN on OpenWrt, Mullvad-style clients):
`table inet nym` with input/output/forward filter chains at `filter - 10`, ahead of fw4,
accepting loopback, the tunnel, the tunnel endpoint, the LAN and (input only) established
traffic, and rejecting the rest. Its rules here follow NymVPN's own description of its
kill-switch (nym-vpn-openwrt, docs/architecture/firewall.md: "ct established — INPUT only",
endpoint and tunnel accepts, final reject).

A drop in any base chain is final in nftables, whatever other chains at the same hook
accept, so wormhole cannot out-vote such a table from its own. The packets show where
they die (the counter of each chain's final reject): the inbound SYN in `input` (router
services) and in `forward` (port forwards), and, once input lets them in, the replies in
`output`. What passes them is one rule per chain accepting wormhole's connection mark,
which only connections that came in by an uplink or a forward carry; `wormhole check`
finds such chains and names that rule; run as printed it makes the services work again,
and the table still stops every other packet from leaving by the WAN.
"""

import re

import pytest

from tests.lab import RouterLab
from tests.lab.pytest_support import require_lab
from tests.test_lab_exemptions import add, configure, wh_json
from tests.test_lab_redirects import fw3_firewall

BACKENDS = ["fw4", "fw3"]


def nym_table(lab):
    tun, lan = lab.wg_router, lab.dev("router", "lan")
    return "\n".join([
        "table inet nym {",
        " chain input {", "  type filter hook input priority filter - 10; policy accept;",
        '  iif "lo" accept', "  ct state established,related accept",
        '  iifname "%s" accept' % tun, '  iifname "%s" accept' % lan,
        "  meta l4proto { icmp, ipv6-icmp } accept",
        "  counter reject", " }",
        " chain output {", "  type filter hook output priority filter - 10; policy accept;",
        '  oif "lo" accept',
        "  ip daddr %s udp dport %d accept" % (lab.provider4, lab.provider_port),
        '  oifname "%s" accept' % tun, '  oifname "%s" accept' % lan,
        "  meta l4proto ipv6-icmp accept",
        "  counter reject", " }",
        " chain forward {", "  type filter hook forward priority filter - 10; policy accept;",
        '  oifname "%s" accept' % tun,
        '  iifname "%s" ct state established,related accept' % tun,
        "  counter reject", " }",
        "}", ""])


def reject_counts(lab):
    text = lab.run("router", ["nft", "list", "table", "inet", "nym"]).stdout
    counts, chain = {}, None
    for line in text.splitlines():
        m = re.match(r"\s*chain (\w+)", line)
        if m:
            chain = m.group(1)
        m = re.search(r"counter packets (\d+) .* reject", line)
        if m:
            counts[chain] = int(m.group(1))
    return counts


def foreign(lab):
    return [f for f in wh_json(lab, "check")["findings"] if f["check"] == "foreign-firewall"]


@pytest.mark.lab
@pytest.mark.parametrize("backend", BACKENDS)
def test_reject_all_vpn_table_needs_the_mark_rule_check_names(backend):
    require_lab()
    with RouterLab(killswitch="split") as lab:
        configure(lab, backend)
        if backend == "fw3":     # fw3's shape in iptables: the product's accepts are the way in
            fw3_firewall(lab, "router", trusted=[lab.dev("router", "lan")], mtu_fix=lab.mtu_fix)
        lab.tcp_server("router", 443, name="luci")
        lab.tcp_server("lan", 8096, name="jellyfin")
        add(lab, "tcp:443", "--open")
        assert "error" not in wh_json(lab, "forward", "add", "tcp:8096", "%s:8096" % lab.lan4)
        assert lab.tcp_request("client", lab.wan4, 443) is not None
        assert lab.tcp_request("client", lab.wan4, 8096) is not None
        assert foreign(lab) == []

        lab.run("router", ["nft", "-f", "-"], input=nym_table(lab))
        # the tunnel itself still works through the VPN's table
        lab.tcp_server("client", 80, name="outside")
        assert lab.tcp_request("router", lab.client4, 80).peer_ip == lab.provider4
        assert lab.tcp_request("client", lab.wan4, 443, timeout=1.5) is None
        assert lab.tcp_request("client", lab.wan4, 8096, timeout=1.5) is None
        dead = reject_counts(lab)
        assert dead["input"] > 0 and dead["forward"] > 0, dead      # where the SYNs died

        found = foreign(lab)
        assert [f["level"] for f in found] == ["error"] * 3, found
        assert {re.search(r"chain (\w+) \(", f["message"]).group(1) for f in found} == {"input", "output", "forward"}
        commands = [re.search(r"`(nft insert rule [^`]+)`", f["message"]).group(1) for f in found]
        # input alone: the SYN gets in, the router's reply dies in the VPN's output chain
        lab.run("router", [c for c in commands if " input " in c][0].split())
        before = reject_counts(lab)["output"]
        assert lab.tcp_request("client", lab.wan4, 443, timeout=1.5) is None
        assert reject_counts(lab)["output"] > before, reject_counts(lab)
        for command in commands:
            if " input " not in command:
                lab.run("router", command.split())
        assert [f["level"] for f in foreign(lab)] == ["ok"] * 3, foreign(lab)
        assert wh_json(lab, "check")["ok"]

        wan, tun = lab.dev("router", "wan"), lab.wg_router
        with lab.egress_counter("router", sport=443, proto="tcp") as out443, \
                lab.egress_counter("router", sport=8096, proto="tcp") as out8096:
            reply = lab.tcp_request("client", lab.wan4, 443)
            assert reply is not None and reply.peer_ip == lab.client4, reply
            reply = lab.tcp_request("client", lab.wan4, 8096)
            assert reply is not None and reply.peer_ip == lab.client4 and reply.local_ip == lab.lan4, reply
            assert out443.packets(wan) > 0 and out443.packets(tun) == 0, out443.read()
            assert out8096.packets(wan) > 0 and out8096.packets(tun) == 0, out8096.read()

        # the VPN's kill-switch still holds for everything else: take the tunnel routes away
        # (a VPN that is down) and nothing the router or the LAN starts gets out by the WAN
        lab.killswitch("off")
        with lab.egress_counter("router", ifname="wan", daddr=lab.client4) as leak:
            for host in ("router", "lan"):
                for port, src_port in ((80, None), (443, None), (80, 443), (80, 8096)):
                    assert lab.tcp_request(host, lab.client4, port, timeout=1.0, src_port=src_port) is None
            assert leak.packets(wan) == 0, leak.read()
