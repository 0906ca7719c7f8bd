"""3. Flat per-entry cost: does the router slow down as entries grow?

New inbound TCP connections per second through the lab router (kill-switch active), from
an in-process generator in the client namespace (connect, then close with RST so no
TIME_WAIT piles up) to a server that accepts and closes: for exemptions a router service,
for port forwards a LAN host behind DNAT. With 10, 1,000 and 10,000 entries; the target
port is the last entry. Also exemptions that each carry a client allowlist (`src_ip`:
the lab client's /24 and two other prefixes), whose new connections pass one more lookup
(the entry's own `allow_` chain, an anonymous set): that must stay flat too.

Ours: the `table inet wormhole` the product renders for that config (`wormhole render`),
loaded under another name. Baseline, the same run: a one-rule-per-entry table with the
same function (mark new inbound connections, restore the mark on every packet, DNAT and
flag forwards), reached by new connections only:
    chain classify { iifname "wan0" tcp dport P ct mark set ct mark & ... | 0x01000000 ... }
    chain dstnat   { iifname "wan0" tcp dport P ct mark set ct mark | 0x10000000 dnat ip to ... }
All tables are loaded once with `flags dormant`, and each measurement wakes exactly one
(a dormant table has no hooks). Each size is compared with the smallest in adjacent pairs
of short runs (random order within a pair), and the median of the pair ratios is reported:
the shared machine drifts by tens of percent over a minute, far less within a pair.
The product applies the ip rules; its own table is removed for the rate runs.

Then bulk throughput: downloads (bench/pump.py, sendfile, so the interpreter is not what
is measured) from a router service through an exemption, and from the LAN host through a
fw4 port forward whose public port is exempted, under the kill-switch; vs. the same paths
without wormhole (disabled by the product, kill-switch off so the replies still leave by
the WAN), all interleaved. The product sets net.ipv4.tcp_fwmark_accept=1 while it has a TCP
exemption (option fwmark_accept, on by default), which gives the accepted socket the
connection's mark, so its packets are routed right the first time; a third router variant
switches the option off, and every reply packet is re-routed in the output hook.
The LAN path is also measured with wormhole enabled and the kill-switch off, the same
conditions as its baseline (what wormhole's marks, chains and ip rules cost), and the
baseline with one ip rule no packet matches (what any policy routing costs the kernel).
"""

import os
import random
import socket
import struct
import subprocess
import sys
import time

from . import common
from .common import Row

SECTION = "3 per-entry cost"
SIZES = (10, 1000, 10000)
QUICK_SIZES = (10, 1000)
PAIRS = 12              # for the comparisons with a target; the baselines degrade far beyond the noise
BASELINE_PAIRS = 4
QUICK_PAIRS = 2
RUN_S = 0.4
EX_FIRST, RD_FIRST, AL_FIRST = 20000, 40000, 30000
ALLOWLIST = "198.51.100.0/24 203.0.113.0/24 2001:db8:99::/48"    # the lab client is 198.51.100.10
LAN_PORT = 8000
BULK_PORT = 443
BULK_FORWARD = 8443
BULK_BYTES = 512 << 20
BULK_ROUNDS = 11
TARGET_FLAT = 0.90
TARGET_BULK = 0.95
UPLINK_MARK, UPLINK_KEEP, PUBLISHED = 0x01000000, 0xf0ffffff, 0x10000000
ACCEPTOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "acceptor.py")
PUMP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pump.py")


def run(ctx):
    lab, nsx = ctx.router_lab(killswitch="metric")
    sizes = QUICK_SIZES if ctx.quick else SIZES
    started = time.monotonic()
    tables = _setup(lab, nsx, sizes)
    setup_s = time.monotonic() - started
    client = nsx["client"]

    awake = []

    def measure(name):
        _wake(nsx["router"], awake, name)
        kind, n = name.split("_")[1], int(name.rsplit("_", 1)[1])
        port = {"ex": EX_FIRST, "rd": RD_FIRST, "al": AL_FIRST}[kind] + n - 1
        return client.call(lambda: connect_loop(lab.wan4, port, RUN_S))
    rows = []
    small = min(sizes)
    for kind, what in (("ex", "exemptions"), ("rd", "port forwards")):
        for variant, label in (("ours", "wormhole"), ("naive", "one rule per entry")):
            for n in sizes[1:]:
                with_target = variant == "ours" and n == max(sizes)
                pairs = QUICK_PAIRS if ctx.quick else PAIRS if with_target else BASELINE_PAIRS
                rows.append(_compare(measure, "%s_%s_" % (variant, kind), small, n, pairs,
                                     "%s, %d %s: new conn/s" % (label, n, what), with_target))
    for n in sizes[1:]:
        with_target = n == max(sizes)
        pairs = QUICK_PAIRS if ctx.quick else PAIRS if with_target else BASELINE_PAIRS
        rows.append(_compare(measure, "ours_al_", small, n, pairs,
                             "wormhole, %d exemptions with allowlists: new conn/s" % n, with_target))
    rows += _bulk(lab, nsx, tables, ctx.quick)
    return rows, {"setup_s": round(setup_s, 1)}


def _compare(measure, prefix, small, n, pairs, name, with_target):
    """Adjacent runs with `small` and `n` entries, in random order within each pair; the
    ratio of each pair, so slow drift of the shared machine cancels out."""
    rnd = random.Random(n)
    rates = {small: [], n: []}
    fails = 0
    for _ in range(pairs):
        order = [small, n]
        rnd.shuffle(order)
        for size in order:
            rate, failed = measure(prefix + str(size))
            rates[size].append(rate)
            fails += failed
    r = common.paired_ratio(rates[n], rates[small])
    return Row(SECTION, name, "%.0f/s" % common.median(rates[n]), "%.0f/s with %d" % (common.median(rates[small]), small),
               r, (">= %d%% of %d" % (TARGET_FLAT * 100, small)) if with_target else "",
               (r >= TARGET_FLAT) if with_target else None,
               ("%d failed connects" % fails) if fails else "", {"rates": rates[n], "baseline_rates": rates[small]})


# --- connections ---------------------------------------------------------------------------

LINGER_RST = struct.pack("ii", 1, 0)


def connect_loop(dst, port, seconds):
    """(connections per second, failures): connect, close with RST, again, for `seconds`."""
    ok = failed = 0
    started = time.monotonic()
    end = started + seconds
    while time.monotonic() < end:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
        s.settimeout(1.0)
        try:
            s.connect((dst, port))
            ok += 1
        except OSError:
            failed += 1
        finally:
            s.close()
    return ok / (time.monotonic() - started), failed


# --- the tables ----------------------------------------------------------------------------

def _setup(lab, nsx, sizes):
    router = nsx["router"]
    for n in sizes:
        lab.fw4_accept_input(zone="wan", proto="tcp", port=EX_FIRST + n - 1, reload=False)
        lab.fw4_accept_input(zone="wan", proto="tcp", port=AL_FIRST + n - 1, reload=False)
    lab.fw4_reload()
    tables = {}
    for n in sizes:
        ex = common.exemption_ports(n, EX_FIRST)
        rd = common.redirect_ports(n, RD_FIRST, lab.lan4, LAN_PORT)
        tables["ours_ex_%d" % n] = _ours(lab, router, ex, [], "ours_ex_%d" % n)
        tables["ours_rd_%d" % n] = _ours(lab, router, [], rd, "ours_rd_%d" % n)
        al = [(sid.replace("ex_", "al_"), dict(opts, src_ip=ALLOWLIST)) for sid, opts in common.exemption_ports(n, AL_FIRST)]
        tables["ours_al_%d" % n] = _ours(lab, router, al, [], "ours_al_%d" % n)
        ports_ex = [EX_FIRST + i for i in range(n)]
        ports_rd = [RD_FIRST + i for i in range(n)]
        tables["naive_ex_%d" % n] = naive_table("naive_ex_%d" % n, ports_ex)
        tables["naive_rd_%d" % n] = naive_table("naive_rd_%d" % n, ports_rd, lab.lan4, LAN_PORT)
    # the product installs the ip rules, tables and fw4 accepts; then its own table goes
    common.write_config(lab, common.exemption_ports(1, EX_FIRST))
    common.cli(router, lab, "apply")
    router.run(["nft", "delete", "table", "inet", "wormhole"]).check("nft delete table")
    for name, text in sorted(tables.items()):
        path = lab.tmp / ("bench-%s.nft" % name)
        path.write_text(text)
        router.run(["nft", "-f", path], timeout=600).check("loading %s" % name)
    for n in sizes:
        _acceptor(lab, "router", EX_FIRST + n - 1)
        _acceptor(lab, "router", AL_FIRST + n - 1)
    _acceptor(lab, "lan", LAN_PORT)
    return tables


def _ours(lab, router, ex, rd, name):
    """The product's rendered table for this config, renamed and dormant."""
    common.write_config(lab, ex, rd)
    reply = common.cli_json(router, lab, "render")
    text = reply["files"]["/usr/share/nftables.d/ruleset-post/50-wormhole.nft"]
    reset = "table inet wormhole {}\ndelete table inet wormhole\n"
    if text.count(reset) != 1 or text.count("table inet wormhole {\n") != 1:
        raise RuntimeError("unexpected shape of the rendered ruleset")
    return text.replace(reset, "").replace("table inet wormhole {\n", "table inet %s {\n\tflags dormant\n" % name)


def naive_table(name, ports, dest_ip=None, dest_port=None):
    """One rule per entry, for new connections only, with the same marks as ours."""
    mark = "ct mark set ct mark & 0x%08x | 0x%08x" % (UPLINK_KEEP, UPLINK_MARK)
    restore = "ct mark & 0x0f000000 == 0x%08x meta mark set meta mark & 0x%08x | 0x%08x" % (
        UPLINK_MARK, UPLINK_KEEP, UPLINK_MARK)
    lines = ["table inet %s {" % name, "\tflags dormant",
             "\tchain mangle_prerouting {", "\t\ttype filter hook prerouting priority mangle - 10; policy accept;",
             "\t\tct state new jump classify", "\t\t" + restore, "\t}",
             "\tchain mangle_output {", "\t\ttype route hook output priority mangle - 10; policy accept;",
             "\t\t" + restore, "\t}",
             "\tchain classify {"]
    lines += ['\t\tiifname "wan0" tcp dport %d %s' % (p, mark) for p in ports]
    lines.append("\t}")
    if dest_ip:
        lines += ["\tchain dstnat {", "\t\ttype nat hook prerouting priority dstnat - 10; policy accept;"]
        lines += ['\t\tiifname "wan0" tcp dport %d ct mark set ct mark | 0x%08x dnat ip to %s:%d' % (
            p, PUBLISHED, dest_ip, dest_port) for p in ports]
        lines.append("\t}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _wake(router, awake, name):
    """Exactly one table active (`awake` holds it); conntrack emptied so every run starts alike."""
    cmds = ["add table inet %s { flags dormant; }" % t for t in awake if t != name]
    cmds.append("add table inet %s" % name)
    router.run(["nft", "-f", "-"], input="\n".join(cmds) + "\n").check("wake %s" % name)
    awake[:] = [name]
    router.run(["conntrack", "-F"])
    time.sleep(0.05)


def _acceptor(lab, host, port):
    return _server(lab, host, [ACCEPTOR, str(port)])


def _server(lab, host, args):
    """A helper server of ours in host's namespace; it exits when the lab closes its stdin."""
    p = lab.popen(host, [sys.executable] + args, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    if p.stdout.readline().strip() != b"READY":
        raise RuntimeError("%s on %s did not start" % (os.path.basename(args[0]), host))
    return p


# --- bulk throughput -----------------------------------------------------------------------

BULK_MODES = {   # name: (path, wormhole enabled, its fwmark_accept option, kill-switch, an unrelated ip rule)
    "router": ("router", True, "1", "metric", False),
    "router no fwmark_accept": ("router", True, "0", "metric", False),
    "router disabled": ("router", False, "1", "off", False),
    "lan": ("lan", True, "1", "metric", False),
    "lan, kill-switch off": ("lan", True, "1", "off", False),
    "lan disabled": ("lan", False, "1", "off", False),
    "lan disabled, one ip rule": ("lan", False, "1", "off", True),
}
ACCEPT = "net.ipv4.tcp_fwmark_accept"
# A rule no packet matches: what any policy routing (pbr, mwan3, a VPN client with its own
# table) makes every forwarded packet pay, the kernel's rule walk instead of its fast path.
UNRELATED_RULE = ["priority", "30000", "fwmark", "0x1/0x1", "lookup", "30000"]


def _bulk(lab, nsx, tables, quick):
    router = nsx["router"]
    # the rate tables go: nft would read all of them into its cache on every later load
    router.run(["nft", "-f", "-"], input="".join(
        "delete table inet %s\n" % t for t in sorted(tables)), timeout=300).check("delete the rate tables")
    lab.fw4_accept_input(zone="wan", proto="tcp", port=BULK_PORT, reload=False)
    lab.fw4_redirect(src="wan", proto="tcp", src_dport=BULK_FORWARD, dest_ip=lab.lan4, dest_port=BULK_PORT)
    for host in ("router", "lan"):
        _server(lab, host, [PUMP, str(BULK_PORT), str(lab.tmp / ("pump-%s.data" % host))])
    entries = [("ex_bulk", {"proto": "tcp", "port": str(BULK_PORT)}),
               ("ex_fwd", {"proto": "tcp", "port": str(BULK_FORWARD)})]
    nbytes = BULK_BYTES // (4 if quick else 1)
    lab.set_sysctl("router", ACCEPT, 0)     # the kernel's default: what wormhole finds on a router
    state = {}

    def unrelated_rule(on):
        if state.get("rule", False) != on:
            for fam in ("-4", "-6"):
                router.run(["ip", fam, "rule", "add" if on else "del"] + UNRELATED_RULE).check("ip rule")
            state["rule"] = on

    def measure(mode):
        path, enabled, option, killswitch, rule = BULK_MODES[mode]
        if state.get("config") != (enabled, option):
            common.write_config(lab, entries, enabled=enabled, main={"fwmark_accept": option})
            common.cli(router, lab, "apply")
            state["config"] = (enabled, option)
            # the product sets the sysctl while it has a TCP exemption and the option is on,
            # and gives the kernel's 0 back otherwise
            want = "1" if enabled and option == "1" else "0"
            if str(lab.sysctl("router", ACCEPT)) != want:
                raise RuntimeError("%s: %s is %s after apply, expected %s" % (mode, ACCEPT, lab.sysctl("router", ACCEPT), want))
        lab.killswitch(killswitch)
        unrelated_rule(rule)
        port = BULK_PORT if path == "router" else BULK_FORWARD
        return nsx["client"].call(lambda: pump(lab.wan4, port, nbytes))
    for mode in BULK_MODES:                    # the first pass fills the page cache with the files
        measure(mode)
    got = common.interleaved(2 if quick else BULK_ROUNDS, list(BULK_MODES), measure)
    lab.killswitch("metric")
    unrelated_rule(False)
    rows = []
    for mode, name, target, base_mode in (
            ("router", "bulk download from a router service (exemption)", True, "router disabled"),
            ("router no fwmark_accept", "  the same with option fwmark_accept 0", False, "router disabled"),
            ("lan", "bulk download from a LAN host (port forward + exemption)", True, "lan disabled"),
            ("lan, kill-switch off", "  the same, kill-switch off on both sides", True, "lan disabled"),
            ("lan disabled, one ip rule", "  wormhole disabled, one unrelated ip rule", False, "lan disabled")):
        base = got[base_mode]
        ratio = common.paired_ratio(got[mode], base)
        note = BULK_NOTES.get(name) or "%d MiB per run (sendfile), median of %d paired ratios" % (nbytes >> 20, len(base))
        rows.append(Row(SECTION, name, "%.0f Mbit/s" % common.median(got[mode]),
                        "%.0f Mbit/s wormhole disabled" % common.median(base), ratio,
                        (">= %d%%" % (TARGET_BULK * 100)) if target else "", (ratio >= TARGET_BULK) if target else None,
                        note, {"mbit_s": got[mode], "disabled_mbit_s": base}))
    return rows


BULK_NOTES = {
    "  the same with option fwmark_accept 0": "sysctl left at 0: every reply packet re-routed (docs/PERFORMANCE.md)",
    "  the same, kill-switch off on both sides": "wormhole's own cost: its marks, nft chains and ip rules on every packet",
    "  wormhole disabled, one unrelated ip rule": "a rule no packet matches: the kernel's rule walk that any policy routing costs",
}


def pump(dst, port, nbytes):
    """Mbit/s of one download of `nbytes` from bench/pump.py, timed from the request on."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.settimeout(10)
        s.connect((dst, port))
        buf = bytearray(1 << 20)
        got = 0
        started = time.perf_counter()
        s.sendall(b"%d\n" % nbytes)
        while got < nbytes:
            n = s.recv_into(buf)
            if not n:
                break
            got += n
        elapsed = time.perf_counter() - started
    finally:
        s.close()
    if got < nbytes:
        raise RuntimeError("bulk download ended after %d of %d bytes" % (got, nbytes))
    return got * 8 / elapsed / 1e6
