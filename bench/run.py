"""`make bench`: run every benchmark, print one table, write the results.

    python3 -m bench.run [--only apply,plugin] [--quick] [--out bench/results] [--doc docs/PERFORMANCE.md]

Each benchmark that needs the network builds its own RouterLab (tests/lab), so nothing
here ever touches the host's firewall or routing. Results: <out>/latest.json (every
sample, the machine) and <out>/latest.md (the table); --doc also replaces the table
between the `bench:begin` / `bench:end` markers of docs/PERFORMANCE.md.
"""

import argparse
import importlib
import json
import os
import sys
import time
import traceback

from . import common
from .common import Row

# name -> module; the order of the table
BENCHMARKS = {
    "apply": "bench.apply_latency",
    "connections": "bench.connections",
    "rate": "bench.conn_rate",
    "plugin": "bench.plugin_cost",
    "footprint": "bench.footprint",
}
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


class Context:
    """What a benchmark gets: a fresh router lab on demand, and the run's options."""

    def __init__(self, quick):
        self.quick = quick
        self._labs = []

    def router_lab(self, **kw):
        from tests.lab import RouterLab
        from .nsexec import NsExec
        lab = RouterLab(**kw)
        nsx = {host: NsExec(ns) for host, ns in lab.ns.items()}
        self._labs.append((lab, nsx))
        return lab, nsx

    def close(self):
        for lab, nsx in self._labs:
            for x in nsx.values():
                x.close()
            lab.close()
        self._labs = []


def run_one(name, quick):
    module = importlib.import_module(BENCHMARKS[name])
    if getattr(module, "NEEDS_LAB", True):
        reason = common.lab_unavailable()
        if reason:
            return [common.skipped(module.SECTION, name, reason)], {}
    ctx = Context(quick)
    started = time.monotonic()
    try:
        rows, extra = module.run(ctx)
    except Exception as e:  # noqa: BLE001 - one broken benchmark must not hide the others
        traceback.print_exc()
        rows, extra = [Row(module.SECTION, name, "FAILED", note="%s: %s" % (type(e).__name__, e))], {}
    finally:
        ctx.close()
    extra["seconds"] = round(time.monotonic() - started, 1)
    return rows, extra


# --- output -------------------------------------------------------------------------------

HEADERS = ("", "measure", "value", "baseline (same run)", "ratio", "target", "met", "notes")


def _cells(row):
    met = {True: "yes", False: "**NO**", None: ""}[row.ok]
    ratio = "" if row.ratio is None else ("%.2f" % row.ratio)
    return (row.section, row.name, row.value, row.baseline, ratio, row.target, met, row.note)


def markdown(rows):
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    for row in rows:
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in _cells(row)) + " |")
    return "\n".join(lines)


def text_table(rows):
    cells = [HEADERS] + [_cells(r) for r in rows]
    widths = [min(60, max(len(str(c[i])) for c in cells)) for i in range(len(HEADERS))]
    out = []
    for c in cells:
        out.append("  ".join(str(v)[:60].ljust(w) for v, w in zip(c, widths)).rstrip())
        if c is HEADERS:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def machine_line(m):
    return "%s (%d CPUs), Linux %s, %s, %s" % (m["cpu"], m["cpus"] or 0, m["kernel"], m["nft"], m["python"])


def update_doc(path, table_md, m, when):
    with open(path) as f:
        text = f.read()
    if BEGIN not in text or END not in text:
        raise SystemExit("%s has no %s ... %s markers" % (path, BEGIN, END))
    head, rest = text.split(BEGIN, 1)
    _old, tail = rest.split(END, 1)
    block = "%s\nMeasured %s on %s.\n\n%s\n%s" % (BEGIN, when, machine_line(m), table_md, END)
    with open(path, "w") as f:
        f.write(head + block + tail)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python3 -m bench.run", description=__doc__.splitlines()[0])
    p.add_argument("--only", help="comma-separated: %s" % ", ".join(BENCHMARKS))
    p.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run, not for the docs)")
    p.add_argument("--out", default=os.path.join(common.REPO, "bench", "results"))
    p.add_argument("--doc", help="also put the table into this markdown file (between the markers)")
    args = p.parse_args(argv)
    names = args.only.split(",") if args.only else list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        p.error("unknown benchmark(s): %s" % ", ".join(unknown))
    m = common.machine()
    print("machine: %s" % machine_line(m), flush=True)
    if common.PRODUCT != common.REPO:
        print("product: %s" % common.PRODUCT, flush=True)
    rows, extras = [], {}
    for name in names:
        print("running %s ..." % name, file=sys.stderr, flush=True)
        r, extra = run_one(name, args.quick)
        rows += r
        extras[name] = extra
        print("  %s done in %.0fs" % (name, extra.get("seconds", 0)), file=sys.stderr, flush=True)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print()
    print(text_table(rows))
    for name, extra in extras.items():
        for line in extra.get("report", []):
            print(line)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "latest.json"), "w") as f:
        json.dump({"when": when, "machine": m, "product": common.PRODUCT, "quick": args.quick,
                   "rows": [r.to_json() for r in rows],
                   "extra": extras}, f, indent=1, default=str)
    table_md = markdown(rows)
    with open(os.path.join(args.out, "latest.md"), "w") as f:
        f.write("Measured %s on %s.\n\n%s\n" % (when, machine_line(m), table_md))
    if args.doc:
        update_doc(args.doc, table_md, m, when)
    print("\nresults: %s" % os.path.join(args.out, "latest.json"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
