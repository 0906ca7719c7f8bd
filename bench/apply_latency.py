"""1. Apply latency: how long a change takes to be live in the kernel.

`wormhole inbound add tcp:P` (the whole CLI process: interpreter, lock, config, facts,
render, `nft -f`, ip rules) until it returns, with 1, 100 and 1,000 existing exemptions;
after each add the element is looked up in the kernel (untimed) and the entry deleted
again. Baseline in the same rounds: re-loading a fw4-style full ruleset of the same size
(fw4's table with one `config rule` per entry, as tests/lab renders fw4; `nft -f` of
`table` + `flush table` + the table, what `fw4 reload` hands the kernel after rendering;
loaded in the lab's LAN namespace so the router under test is left alone). Also timed:
our own kernel step alone (`nft -f` of the rendered `table inet wormhole`).
"""

import copy
import re

from . import common
from .common import Row, ms

SECTION = "1 apply"
SIZES = (1, 100, 1000)
QUICK_SIZES = (1, 100)
ROUNDS = 7
QUICK_ROUNDS = 3
FIRST_PORT = 10000
PROBE_PORT = 30000
TARGET_GROWTH = 3.0


def fw4_style_ruleset(lab, n):
    """The router's fw4 table plus n accept rules (one per entry), without any include."""
    from tests.lab import firewall, fw4_render
    fw = copy.deepcopy(lab.fw4("router"))
    fw.rules = list(fw.rules) + [firewall.Rule("bench-%d" % i, src="wan", proto="tcp", dest_port=str(FIRST_PORT + i))
                                 for i in range(n)]
    return fw4_render.render(fw, None)


def run(ctx):
    lab, nsx = ctx.router_lab(killswitch="metric")
    router, lan = nsx["router"], nsx["lan"]
    sizes = QUICK_SIZES if ctx.quick else SIZES
    rounds = QUICK_ROUNDS if ctx.quick else ROUNDS
    results = {}
    for n in sizes:
        results[n] = _measure(lab, router, lan, n, rounds)
    rows = []
    for n in sizes:
        r = results[n]
        add, reload_, swap = (common.median(r[k]) for k in ("add", "reload", "swap"))
        rows.append(Row(SECTION, "inbound add, %d existing" % n, ms(add), "%s full reload" % ms(reload_),
                        common.ratio(add, reload_), "< 1x reload", add < reload_,
                        "del %s; rules %d lines vs fw4 %d" % (ms(common.median(r["del"])), r["lines"], r["fw4_lines"]),
                        {k: r[k] for k in ("add", "del", "reload", "swap")}))
        rows.append(Row(SECTION, "  kernel step (nft -f of table inet wormhole), %d" % n, ms(swap),
                        "%s full reload" % ms(reload_), common.ratio(swap, reload_), "< 1x reload", swap < reload_))
    big, small = max(sizes), min(sizes)
    growth = common.ratio(common.median(results[big]["add"]), common.median(results[small]["add"]))
    rows.append(Row(SECTION, "add with %d vs %d existing" % (big, small), ms(common.median(results[big]["add"])),
                    ms(common.median(results[small]["add"])), growth, "<= %.0fx" % TARGET_GROWTH,
                    growth <= TARGET_GROWTH))
    rows.append(_tools_row(lab, router))
    return rows, {}


def _measure(lab, router, lan, n, rounds):
    common.write_config(lab, common.exemption_ports(n, FIRST_PORT))
    common.cli(router, lab, "apply")
    ours = (lab.root / "usr/share/nftables.d/ruleset-post/50-wormhole.nft").read_text()
    baseline = fw4_style_ruleset(lab, n)
    base_file = lab.tmp / ("bench-fw4-%d.nft" % n)
    base_file.write_text(baseline)
    ours_file = lab.tmp / ("bench-ours-%d.nft" % n)
    ours_file.write_text(ours)
    lan.run(["nft", "-f", base_file], timeout=60).check("nft -f fw4-style")      # create it once
    samples = {"add": [], "del": [], "reload": [], "swap": []}

    def once(what):
        if what == "add":
            port = PROBE_PORT + len(samples["add"])
            r = common.cli(router, lab, "inbound", "add", "tcp:%d" % port)
            _check_live(router, port)
            samples["add"].append(r.seconds)
            samples["del"].append(common.cli(router, lab, "inbound", "del", "tcp:%d" % port).seconds)
        elif what == "reload":
            samples["reload"].append(lan.run(["nft", "-f", base_file], timeout=60).check("reload").seconds)
        else:
            samples["swap"].append(router.run(["nft", "-f", ours_file], timeout=60).check("swap").seconds)
    common.interleaved(rounds, ["add", "reload", "swap"], once)
    common.cli(router, lab, "apply")          # the swaps zeroed the counters; back to the product's own state
    lan.run(["nft", "delete", "table", "inet", "fw4"]).check("delete fw4-style table")
    samples["lines"] = ours.count("\n")
    samples["fw4_lines"] = baseline.count("\n")
    return samples


def _check_live(router, port):
    """The add returned: its element must be in the kernel's map now."""
    for fam in ("ipv4", "ipv6"):
        for key in ("%d . tcp . %s" % (port, fam), "%s . tcp . %d" % (fam, port)):   # port first since 0.1.0
            r = router.run(["nft", "get", "element", "inet", "wormhole", "in_wan", "{ %s }" % key])
            if r.returncode == 0:
                break
        if r.returncode != 0:
            raise RuntimeError("after `inbound add tcp:%d` returned, %s is not in the kernel: %s" % (port, fam, r.stderr))


def _tools_row(lab, router):
    """Tools one `inbound add` starts (1 existing entry): each is a fork+exec."""
    common.write_config(lab, common.exemption_ports(1, FIRST_PORT))
    common.cli(router, lab, "apply")
    try:
        r = router.run(["strace", "-f", "-qq", "-e", "trace=execve", "-e", "signal=none", "-o", "/dev/stderr",
                        common.CLI, "inbound", "add", "tcp:%d" % PROBE_PORT], env=common.product_env(lab))
    except FileNotFoundError:
        return common.skipped(SECTION, "tools started by inbound add", "strace is not installed")
    if r.returncode != 0:
        return common.skipped(SECTION, "tools started by inbound add", "strace: %s" % r.stderr[-200:])
    tools = [m.group(1).rsplit("/", 1)[-1] for m in re.finditer(r'execve\("([^"]+)"', r.stderr)
             if "ENOENT" not in m.group(0)][1:]
    return Row(SECTION, "tools started by inbound add", str(len(tools)),
               note=", ".join("%s x%d" % (t, tools.count(t)) for t in sorted(set(tools))), data={"tools": tools})

