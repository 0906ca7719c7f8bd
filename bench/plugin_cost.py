"""4. Plugin cost: how sluggish the LuCI page is.

LuCI's page polls through rpcd, which execs the plugin for every call, so each call pays a
whole interpreter start: the page makes one call per poll, `list` with `status: true`
(before issue 15 it made two, `status` and `list`; both rows are here). Baseline: `python3 -c pass` (the floor any
Python plugin pays), in the same rounds. Everything runs in the lab router's namespace
with a small real config applied (8 exemptions, 2 forwards), as rpcd runs the plugin:
an almost empty environment, cwd /, the request on stdin.
"""

import re

from . import common
from .common import Row, ms, times
from .nsexec import gnu_time_available

SECTION = "4 plugin"
ROUNDS = 25
QUICK_ROUNDS = 6
RSS_RUNS = 5
# page poll: one interpreter start plus what `list` and `status` read, not two starts.
TARGETS = {"list": 1.3, "call list": 2.0, "page poll": 2.5}
SAVED_TARGET = 0.6      # page poll / the two calls it replaces


def commands():
    plugin = common.PLUGIN
    return {
        "python3 -c pass": ([common.PYTHON, "-c", "pass"], None),
        "list": ([plugin, "list"], None),
        "call status": ([plugin, "call", "status"], "{}"),
        "call list": ([plugin, "call", "list"], "{}"),
        "page poll": ([plugin, "call", "list"], '{"status": true}'),
    }


def setup(lab, nsx):
    """A typical small router: a few services exempted, two port forwards to the LAN host."""
    ex = [("ex_b%d" % i, {"proto": "tcp" if i % 2 else "udp", "port": str(p), "label": "service %d" % i})
          for i, p in enumerate((22, 80, 443, 1194, 8080, 8443, 9000, 51820))]
    rd = common.redirect_ports(2, 7000, lab.lan4, 80)
    common.write_config(lab, ex, rd)
    common.cli(nsx, lab, "apply")


def run(ctx):
    lab, nsxs = ctx.router_lab()
    nsx = nsxs["router"]
    setup(lab, nsx)
    env = common.product_env(lab)
    cmds = commands()
    for argv, stdin in cmds.values():                  # warm the page cache and bytecode
        for _ in range(3):
            nsx.run(argv, env=env, input=stdin).check(argv[-1])

    def once(name):
        argv, stdin = cmds[name]
        r = nsx.run(argv, env=env, input=stdin).check(name)
        if name != "python3 -c pass" and "error" in r.stdout[:200]:
            raise RuntimeError("%s replied with an error: %s" % (name, r.stdout[:300]))
        return r.seconds

    walls = common.interleaved(QUICK_ROUNDS if ctx.quick else ROUNDS, list(cmds), once)
    rss = {}
    if gnu_time_available():
        for name, (argv, stdin) in cmds.items():
            rss[name] = common.median([nsx.peak_rss_kb(argv, env=env, input=stdin) for _ in range(RSS_RUNS)])
    base = walls["python3 -c pass"]
    rows = [Row(SECTION, "python3 -c pass (baseline)", ms(common.median(base)),
                note="peak RSS %s" % _kb(rss.get("python3 -c pass")),
                data={"wall_s": base, "rss_kb": rss.get("python3 -c pass")})]
    for name in ("list", "call status", "call list", "page poll"):
        r = common.paired_ratio(walls[name], base)
        target = TARGETS.get(name)
        rss_ratio = common.ratio(rss[name], rss["python3 -c pass"]) if rss else None
        rows.append(Row(SECTION, "plugin %s" % name, ms(common.median(walls[name])), ms(common.median(base)), r,
                        "<= %.1fx" % target if target else "", (r <= target) if target else None,
                        "peak RSS %s (%s)" % (_kb(rss.get(name)), times(rss_ratio) if rss_ratio else "?"),
                        {"wall_s": walls[name], "rss_kb": rss.get(name)}))
    two = [a + b for a, b in zip(walls["call status"], walls["call list"])]
    r = common.paired_ratio(two, base)
    rows.append(Row(SECTION, "page poll before (status + list: two calls)", ms(common.median(two)),
                    ms(common.median(base)), r, note="the same poll as two interpreter starts",
                    data={"wall_s": two}))
    saved = common.paired_ratio(walls["page poll"], two)
    rows.append(Row(SECTION, "page poll / page poll before", ms(common.median(walls["page poll"])),
                    ms(common.median(two)), saved, "<= %.1fx" % SAVED_TARGET, saved <= SAVED_TARGET,
                    "one call per poll instead of two"))
    rows.append(_subprocess_row(nsx, env, cmds["call list"]))
    rows.append(_subprocess_row(nsx, env, cmds["call status"], "call status"))
    imports = importtime(nsx, env, cmds["call list"])
    report = ["", "python3 -X importtime, `call list`, top-level imports (cumulative / self, us):"]
    report += ["  %-28s %8d %8d" % row for row in imports]
    return rows, {"importtime": imports, "report": report}


def _kb(v):
    return "?" if v is None else "%.1f MB" % (v / 1024)


def _subprocess_row(nsx, env, cmd, name="call list"):
    """How many tools one call starts (each is a fork+exec of a C program: ~1-5 ms)."""
    argv, stdin = cmd
    try:
        r = nsx.run(["strace", "-f", "-qq", "-e", "trace=execve", "-e", "signal=none", "-o", "/dev/stderr"] + argv,
                    env=env, input=stdin)
    except FileNotFoundError:
        return common.skipped(SECTION, "tools started by %s" % name, "strace is not installed")
    if r.returncode != 0 and "strace" in r.stderr[:100]:
        return common.skipped(SECTION, "tools started by %s" % name, "strace failed: %s" % r.stderr[:100])
    tools = [m.group(1) for m in re.finditer(r'execve\("([^"]+)"', r.stderr) if "ENOENT" not in m.group(0)]
    started = [t.rsplit("/", 1)[-1] for t in tools[1:]]           # the first execve is the plugin itself
    names = sorted(set(started))
    return Row(SECTION, "tools started by %s" % name, str(len(started)),
               note=", ".join("%s x%d" % (n, started.count(n)) for n in names) or "none",
               data={"tools": started})


def importtime(nsx, env, cmd, top=12):
    """[(module, cumulative us, self us)] of the top-level imports of one call, largest first."""
    argv, stdin = cmd
    with open(argv[0]) as f:
        flags = f.readline().split()[1:]       # as the shebang runs it (-S)
    r = nsx.run([common.PYTHON] + flags + ["-X", "importtime"] + argv, env=env, input=stdin)
    rows = []
    for line in r.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if m and len(m.group(3)) <= 1:          # top level: imported by our code, not by a module
            rows.append((m.group(4), int(m.group(2)), int(m.group(1))))
    rows.sort(key=lambda x: -x[1])
    return rows[:top]
