"""What every benchmark shares: result rows, statistics, the machine, the product in a lab.

The machines these run on are shared and noisy, so a benchmark never reports a lone
absolute time: it measures its baseline in the same run, interleaved with the thing it
compares, and reports medians and the ratio of medians (or the median of paired ratios).
"""

import json
import os
import platform
import random
import statistics
import subprocess
from dataclasses import asdict, dataclass, field

from .nsexec import CLEAN_PATH

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The product measured: this checkout, or another one (e.g. a worktree of an older commit,
# to measure before/after in one sitting): WORMHOLE_BENCH_PRODUCT=<checkout>.
PRODUCT = os.environ.get("WORMHOLE_BENCH_PRODUCT") or REPO
PLUGIN = os.path.join(PRODUCT, "rpcd", "libexec", "wormhole")
CLI = os.path.join(PRODUCT, "files", "usr", "sbin", "wormhole")
PYTHON = "/usr/bin/python3"          # what the plugin's and the CLI's shebang run


@dataclass
class Row:
    """One line of the results table."""
    section: str             # "1 apply", "2 connections", ...
    name: str                # what was measured
    value: str               # the measurement, formatted
    baseline: str = ""       # the same-run baseline, formatted
    ratio: float = None      # value / baseline (or the figure the target speaks of)
    target: str = ""         # e.g. "<= 3x"
    ok: bool = None          # target met? None: no target
    note: str = ""
    data: dict = field(default_factory=dict)    # raw numbers for results.json

    def to_json(self):
        return asdict(self)


def skipped(section, name, reason):
    return Row(section, name, "skipped", note=reason)


# --- statistics ------------------------------------------------------------------------

def median(xs):
    return statistics.median(xs) if xs else float("nan")


def quantile(xs, q):
    """Nearest-rank quantile (no interpolation: with few samples it stays a real sample)."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, int(round(q * (len(s) - 1)))))]


def ratio(a, b):
    return a / b if b else float("nan")


def paired_ratio(values, baselines):
    """Median of per-round ratios: each round's noise hits both sides alike."""
    return median([v / b for v, b in zip(values, baselines) if b])


def interleaved(rounds, items, fn, seed=8):
    """{item: [fn(item) per round]}, each round in a fresh shuffled order, so drift over
    the run (thermal, neighbours on the host) spreads evenly over what is compared."""
    rnd = random.Random(seed)
    out = {item: [] for item in items}
    for _ in range(rounds):
        order = list(items)
        rnd.shuffle(order)
        for item in order:
            out[item].append(fn(item))
    return out


def ms(seconds):
    return "%.1f ms" % (seconds * 1000)


def times(x):
    return "%.2fx" % x


# --- the machine -----------------------------------------------------------------------

def machine():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "nft": _version(["nft", "--version"]),
        "python": _version([PYTHON, "--version"]),
        "memory_mb": _mem_mb(),
    }


def _version(argv):
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=5)
        return (p.stdout or p.stderr).strip()
    except (OSError, subprocess.SubprocessError):
        return "not installed"


def _mem_mb():
    try:
        with open("/proc/meminfo") as f:
            return int(f.readline().split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        return None


# --- the product in a lab --------------------------------------------------------------

def lab_unavailable():
    """Why the netns lab cannot run here, or None."""
    from tests.lab.netns import lab_unavailable_reason
    return lab_unavailable_reason()


def write_config(lab, exemptions=(), redirects=(), backend="fw4", enabled=True, host="router", main=None):
    """The router's /etc/config/wormhole: its uplinks (no netifd in the lab) and entries.

    exemptions: [(section id, {option: value})]; redirects likewise; main: more options
    of the `wormhole` section.
    """
    lines = ["config wormhole 'main'", "\toption backend '%s'" % backend,
             "\toption enabled '%s'" % ("1" if enabled else "0")]
    lines += ["\toption %s '%s'" % kv for kv in sorted((main or {}).items())] + [""]
    for name, opts in lab.uplinks(host).items():
        lines.append("config uplink '%s'" % name)
        lines += ["\toption %s '%s'" % kv for kv in opts.items() if kv[1]]
        lines.append("")
    for stype, entries in (("exemption", exemptions), ("redirect", redirects)):
        for sid, opts in entries:
            lines.append("config %s '%s'" % (stype, sid))
            lines += ["\toption %s '%s'" % kv for kv in opts.items()]
            lines.append("")
    root = lab.roots[host]
    (root / "etc/config").mkdir(parents=True, exist_ok=True)
    (root / "etc/config/wormhole").write_text("\n".join(lines))


def exemption_ports(n, first):
    return [("ex_b%05d" % i, {"proto": "tcp", "port": str(first + i)}) for i in range(n)]


def redirect_ports(n, first, dest_ip, dest_port):
    return [("rd_b%05d" % i, {"proto": "tcp", "src_dport": str(first + i), "dest_ip": dest_ip,
                              "dest_port": str(dest_port)}) for i in range(n)]


def product_env(lab, host="router"):
    """The environment rpcd gives the plugin (almost nothing), plus the lab host's root."""
    return {"PATH": CLEAN_PATH, "WORMHOLE_ROOT": str(lab.roots[host])}


def cli(nsx, lab, *args, host="router", check=True):
    """The product CLI in the namespace, timed; Result."""
    r = nsx.run([CLI] + list(args), env=product_env(lab, host))
    return r.check("wormhole " + " ".join(args)) if check else r


def cli_json(nsx, lab, *args, host="router"):
    r = cli(nsx, lab, *args, "--json", host=host, check=False)
    reply = json.loads(r.stdout)
    if "error" in reply:
        raise RuntimeError("wormhole %s: %s" % (" ".join(args), reply["error"]))
    return reply
