"""No holes, with real packets: what wormhole must never let through or leave behind.

(a) The uplink mark is set only on new connections that arrive from an uplink: the
    router and LAN hosts cannot borrow the reply path, whatever exempt or forwarded ports
    they use as source or destination, and connections arriving from the LAN or the
    tunnel are never marked (conntrack shows the marks).
(b) `open` is the only thing that accepts input on the router, and it is off by default:
    exemptions and redirects open nothing on the router itself, and an opened port is
    open only to connections from the uplink.
(c) A redirect with src_ip accepts nobody else: not through the redirect, and not by
    going around it to the LAN host directly.
(d) Disabling wormhole (and `wormhole cleanup`) leaves nothing behind: nft, iptables,
    ip rules, routes, fw4's chains, include files, and the behaviour is as before.
Run against both backends where the backend makes a difference. For fw3's accepts, the
emulated fw4 table is replaced by an fw3-shaped iptables ruleset (FW3_STANDIN), so the
product's own rules are the only way in.
"""

import json
import re

import pytest

from tests import reliability
from tests.lab import RouterLab
from tests.lab.pytest_support import require_lab

BACKENDS = ["fw4", "fw3"]
TALLY = reliability.Tally()
QUICK = 1.2     # seconds to wait for a connection that must fail


@pytest.fixture(scope="module", autouse=True)
def figures():
    yield
    reliability.record("holes", TALLY.figures())


def configure(lab, backend):
    lines = ["config wormhole 'main'", "\toption backend '%s'" % backend, ""]
    for name, opts in lab.uplinks("router").items():
        lines.append("config uplink '%s'" % name)
        lines += ["\toption %s '%s'" % kv for kv in opts.items() if kv[1]]
        lines.append("")
    (lab.root / "etc/config").mkdir(parents=True, exist_ok=True)
    (lab.root / "etc/config/wormhole").write_text("\n".join(lines))


def set_enabled(lab, backend, enabled):
    """Switch wormhole on or off in the config, keeping every entry (as LuCI's switch does)."""
    path = lab.root / "etc/config/wormhole"
    text = path.read_text().replace("\toption enabled '0'\n", "")
    if not enabled:
        text = text.replace("option backend '%s'\n" % backend, "option backend '%s'\n\toption enabled '0'\n" % backend)
    path.write_text(text)


def wh(lab, *args):
    p = lab.wormhole("router", *args, "--json", check=False)
    reply = json.loads(p.stdout)
    assert "error" not in reply, (args, reply)
    return reply


def fw3_standin(lab):
    """fw3's shape in iptables instead of the emulated fw4 table: input and forward dropped
    unless established, loopback, ICMP, or from the LAN."""
    lan = lab.dev("router", "lan")
    lab.run("router", ["nft", "delete", "table", "inet", "fw4"])
    for tool, icmp in (("iptables-restore", "icmp"), ("ip6tables-restore", "ipv6-icmp")):
        rules = ["*filter", ":INPUT DROP [0:0]", ":FORWARD DROP [0:0]", ":OUTPUT ACCEPT [0:0]",
                 "-A INPUT -i lo -j ACCEPT", "-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                 "-A INPUT -p %s -j ACCEPT" % icmp, "-A INPUT -i %s -j ACCEPT" % lan,
                 "-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                 "-A FORWARD -p %s -j ACCEPT" % icmp, "COMMIT"]
        lab.run("router", [tool], input="\n".join(rules) + "\n")


def must_fail(result, what):
    TALLY.add("probes that must fail")
    assert result is None, "%s: got through: %s" % (what, result)


def must_pass(result, what):
    TALLY.add("probes that must pass")
    assert result is not None, "%s: no answer" % what
    return result


@pytest.fixture
def lab():
    require_lab()
    with RouterLab(killswitch="metric") as lab:
        yield lab


# --- (a) the mark only on new connections from an uplink ------------------------------------

@pytest.mark.lab
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_router_and_lan_cannot_borrow_the_reply_path(lab, backend):
    configure(lab, backend)
    for port in (443, 8443):
        lab.tcp_server("client", port, name="outside-%d" % port)
    lab.udp_server("client", 5353)
    lab.fw4_accept_input(zone="wan", proto="tcp", port=443)
    wh(lab, "inbound", "add", "tcp:443", "--open")
    wh(lab, "inbound", "add", "udp:5353")
    wh(lab, "forward", "add", "tcp:8443", "%s:443" % lab.lan4)
    tunnel = {lab.provider4, lab.provider6}
    wan = lab.dev("router", "wan")
    with lab.egress_counter("router", ifname="wan", daddr=lab.client4) as out4, \
            lab.egress_counter("router", ifname="wan", daddr=lab.client6) as out6:
        for host in ("router", "lan"):
            for dst in (lab.client4, lab.client6):
                # exempt/forwarded ports as destination, and as source port too
                for port, src_port in ((443, None), (8443, None), (443, 8443), (8443, 443), (443, 5353)):
                    reply = must_pass(lab.tcp_request(host, dst, port, src_port=src_port),
                                      "%s -> %s:%s from port %s" % (host, dst, port, src_port))
                    assert reply.peer_ip in tunnel, (host, dst, port, src_port, reply)
                reply = must_pass(lab.udp_request(host, dst, 5353, src_port=5353), "%s udp 5353" % host)
                assert reply.peer_ip in tunnel, reply
        assert out4.packets(wan) == 0 and out6.packets(wan) == 0, (out4.read(), out6.read())
    TALLY.add("leak checks (egress counters on the uplink)")

    # conntrack: nothing the router or the LAN started carries an uplink mark
    lab.tcp_server("router", 443, name="luci")      # (not earlier: the probes above bind port 443)
    marked = [e for e in lab.conntrack("router") if e.mark & 0x0F000000]
    assert marked == [], [e.line for e in marked]
    # connections arriving from the LAN or from the tunnel to an exempt port: unmarked
    lab.tcp_request("lan", lab.router_lan4, 443)
    lab.tcp_request("vpn", lab.tun_router4, 443, timeout=QUICK)
    assert [e.line for e in lab.conntrack("router") if e.mark & 0x0F000000] == []
    # one from the uplink: marked, with the uplink number only
    must_pass(lab.tcp_request("client", lab.wan4, 443), "client -> router:443")
    marks = {e.mark for e in lab.conntrack("router") if e.orig.get("dport") == 443 and e.orig.get("src") == lab.client4}
    assert marks and all(m & 0x0F000000 == 0x01000000 for m in marks), marks
    TALLY.add("conntrack mark checks")


# --- (b) only `open` accepts input, off by default -----------------------------------------------

@pytest.mark.lab
@pytest.mark.parametrize("backend", BACKENDS)
def test_b_only_open_accepts_input_and_it_is_off_by_default(lab, backend):
    configure(lab, backend)
    if backend == "fw3":
        fw3_standin(lab)
    ports = (22, 80, 443, 8080, 9000)
    for port in ports:
        lab.tcp_server("router", port, name="router-%d" % port)
    lab.tcp_server("lan", 80, name="lan-80")
    # exemptions without open, a redirect of 8080 to the LAN host's 80, a range
    wh(lab, "inbound", "add", "tcp:22")
    wh(lab, "inbound", "add", "tcp:9000-9010", "--label", "range")
    wh(lab, "forward", "add", "tcp:8080", "%s:80" % lab.lan4)
    for dst in (lab.wan4, lab.wan6):
        for port in ports:
            if port == 8080 and dst == lab.wan4:
                reply = must_pass(lab.tcp_request("client", dst, 8080), "the redirect")
                assert reply.server == "lan-80", reply       # to the LAN host, not the router
                continue
            must_fail(lab.tcp_request("client", dst, port, timeout=QUICK), "router port %s on %s" % (port, dst))
    # open opens exactly its own port and family, to the uplink only
    wh(lab, "inbound", "add", "tcp:443", "--open", "--family", "ipv4")
    reply = must_pass(lab.tcp_request("client", lab.wan4, 443), "opened 443")
    assert reply.server == "router-443"
    must_fail(lab.tcp_request("client", lab.wan6, 443, timeout=QUICK), "443 opened for IPv4 only, over IPv6")
    for port in (22, 80, 9000):
        must_fail(lab.tcp_request("client", lab.wan4, port, timeout=QUICK), "port %s after opening 443" % port)
    must_fail(lab.tcp_request("vpn", lab.tun_router4, 443, timeout=QUICK), "opened port, from the tunnel")
    TALLY.add("input accept checks")


# --- (c) an allowlist keeps everybody else out ------------------------------------------------

@pytest.mark.lab
@pytest.mark.parametrize("backend", BACKENDS)
def test_c_a_redirect_with_src_ip_accepts_nobody_else(lab, backend):
    configure(lab, backend)
    if backend == "fw3":
        fw3_standin(lab)
    lab.run("client", ["ip", "addr", "add", "198.51.100.11/24", "dev", "eth0"])
    lab.run("client", ["ip", "addr", "add", "2001:db8:100::11/64", "dev", "eth0", "nodad"])
    lab.tcp_server("lan", 443, name="nas")
    lab.tcp_server("router", 443, name="router-443")
    wh(lab, "forward", "add", "tcp:8443", "%s:443" % lab.lan4, "--allow", "198.51.100.11/32",
       "--allow", "203.0.113.0/24", "--label", "NAS")
    wh(lab, "forward", "add", "tcp:8443", "[%s]:443" % lab.lan6, "--allow", "2001:db8:100::11")
    reply = must_pass(lab.tcp_request("client", lab.wan4, 8443, src="198.51.100.11"), "allowed client")
    assert reply.server == "nas" and reply.peer_ip == "198.51.100.11", reply
    reply = must_pass(lab.tcp_request("client", lab.wan6, 8443, src="2001:db8:100::11"), "allowed client (IPv6)")
    assert reply.server == "nas", reply
    must_fail(lab.tcp_request("client", lab.wan4, 8443, src=lab.client4, timeout=QUICK), "other client")
    must_fail(lab.tcp_request("client", lab.wan6, 8443, src=lab.client6, timeout=QUICK), "other client (IPv6)")
    # around the redirect: straight to the LAN host's routed IPv6 address, or the router's own 443
    must_fail(lab.tcp_request("client", lab.lan6, 443, src=lab.client6, timeout=QUICK), "direct to the LAN host")
    must_fail(lab.tcp_request("client", lab.lan6, 443, src="2001:db8:100::11", timeout=QUICK),
              "allowed client, direct to the LAN host")
    must_fail(lab.tcp_request("client", lab.wan4, 443, src=lab.client4, timeout=QUICK), "the router's own 443")
    # the refused attempts never got the "published" flag that fw4's chains accept by
    published = [e.line for e in lab.conntrack("router")
                 if e.mark & 0x10000000 and e.orig.get("src") in (lab.client4, lab.client6)]
    assert published == [], published
    TALLY.add("allowlist checks")


# --- (d) disabled: nothing left ----------------------------------------------------------------

_VOLATILE = re.compile(r"counter packets \d+ bytes \d+|\[\d+:\d+\]|^#.*$", re.M)


def _drop_empty_tables(nft_text, saved):
    """iptables-nft leaves empty built-in tables (mangle, nat) once our chains are gone; fw3
    itself keeps them on OpenWrt. Only rules count: tables without any are dropped."""
    blocks = re.split(r"(?m)^(?=table )", nft_text)
    nft_text = "".join(b for b in blocks if not re.match(r"table ip6? (mangle|nat|filter) \{", b)
                       or re.search(r"(?m)^\t\t(?!type )\S", b))
    sections = re.split(r"(?m)^(?=\*)", saved)
    saved = "".join(sec for sec in sections if not sec.startswith("*") or "\n-A " in sec)
    return nft_text, saved


def kernel(lab):
    saved = "".join(lab.run("router", [save]).stdout for save in ("iptables-save", "ip6tables-save"))
    parts = list(_drop_empty_tables(lab.run("router", ["nft", "list", "ruleset"]).stdout, saved))
    for fam in ("-4", "-6"):
        parts.append(lab.run("router", ["ip", fam, "rule", "show"]).stdout)
        parts.append(lab.run("router", ["ip", fam, "route", "show", "table", "all"]).stdout)
    text = _VOLATILE.sub("", "\n".join(parts))
    return "\n".join(line.rstrip() for line in text.splitlines() if line.strip())


def included(lab):
    usr = lab.root / "usr"
    return sorted(str(p.relative_to(lab.root)) for p in usr.rglob("*") if p.is_file()) if usr.exists() else []


@pytest.mark.lab
@pytest.mark.parametrize("backend", BACKENDS)
def test_d_disabling_leaves_nothing_behind(lab, backend):
    configure(lab, backend)
    if backend == "fw4":
        lab.fw4_accept_input(zone="wan", proto="tcp", port=443)
    else:
        fw3_standin(lab)
        for tool in ("iptables", "ip6tables"):
            lab.run("router", [tool, "-A", "INPUT", "-p", "tcp", "--dport", "443", "-j", "ACCEPT"])
    lab.tcp_server("router", 443, name="luci")
    lab.tcp_server("router", 2222, name="ssh")
    lab.tcp_server("lan", 443, name="nas")
    must_fail(lab.tcp_request("client", lab.wan4, 443, timeout=QUICK), "kill-switch on, no exemption")
    pristine = kernel(lab)
    wh(lab, "inbound", "add", "tcp:443", "--label", "LuCI")
    wh(lab, "inbound", "add", "tcp:2222", "--open")
    wh(lab, "forward", "add", "tcp:8443", "%s:443" % lab.lan4, "--snat", "--mss", "1300",
       "--allow", "198.51.100.0/24")
    wh(lab, "forward", "add", "udp:5000-5010", "[%s]:6000-6010" % lab.lan6)
    must_pass(lab.tcp_request("client", lab.wan4, 443), "exempted")
    must_pass(lab.tcp_request("client", lab.wan4, 2222), "opened")
    must_pass(lab.tcp_request("client", lab.wan4, 8443), "forwarded")
    assert kernel(lab) != pristine

    for how in ("disable", "cleanup"):
        if how == "disable":
            set_enabled(lab, backend, False)
            wh(lab, "apply")
        else:
            set_enabled(lab, backend, True)
            wh(lab, "apply")
            assert kernel(lab) != pristine
            lab.wormhole("router", "cleanup")
        assert kernel(lab) == pristine, how
        assert included(lab) == [], (how, included(lab))
        if backend == "fw4":
            lab.fw4_reload()        # what a reboot or a firewall restart loads: nothing of ours
            assert kernel(lab) == pristine, how
        must_fail(lab.tcp_request("client", lab.wan4, 443, timeout=QUICK), "exemption after %s" % how)
        must_fail(lab.tcp_request("client", lab.wan4, 2222, timeout=QUICK), "opened port after %s" % how)
        must_fail(lab.tcp_request("client", lab.wan4, 8443, timeout=QUICK), "forward after %s" % how)
        TALLY.add("disable/cleanup checks")
