"""5. Footprint: what the packages cost in flash, and what each entry costs in rules.

Package sizes from `tools/mkipk.py` (the .ipk as opkg downloads it; Installed-Size is
the unpacked size before the overlay's own compression). Rules per entry: the generated
files rendered purely (no kernel, no tools) for 1 and 101 entries, per backend; the
difference over 100 is what one more entry adds. Baseline: a fw4 `config rule` or
`config redirect` is one rule line per entry (per family and protocol when mixed).
"""

import io
import os
import subprocess
import sys
import tarfile
import tempfile

from . import common
from .common import Row

SECTION = "5 footprint"
NEEDS_LAB = False


def run(ctx):
    rows = _packages()
    rows += _rules_per_entry()
    return rows, {}


def _packages():
    with tempfile.TemporaryDirectory(prefix="wormhole-bench-ipk-") as out:
        p = subprocess.run([sys.executable, os.path.join(common.REPO, "tools", "mkipk.py"), "--out", out],
                           capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            return [Row(SECTION, "packages", "FAILED", note=p.stderr.strip()[-200:])]
        rows = []
        for name in sorted(os.listdir(out)):
            if not name.endswith(".ipk"):
                continue
            path = os.path.join(out, name)
            installed, files = _ipk_contents(path)
            size = os.path.getsize(path)
            rows.append(Row(SECTION, "package %s" % name.split("_")[0], "%.1f kB .ipk" % (size / 1000.0),
                            note="%d files, Installed-Size %.0f kB" % (files, installed / 1000.0),
                            data={"ipk_bytes": size, "installed_bytes": installed, "files": files}))
        return rows


def _ipk_contents(path):
    """(Installed-Size, number of files) of an .ipk (a gzip'd tar of two gzip'd tars)."""
    with tarfile.open(path, "r:gz") as outer:
        control = _inner(outer, "control.tar.gz")
        data = _inner(outer, "data.tar.gz")
    installed = 0
    with tarfile.open(fileobj=io.BytesIO(control), mode="r:gz") as t:
        text = t.extractfile("./control").read().decode()
        for line in text.splitlines():
            if line.startswith("Installed-Size:"):
                installed = int(line.split(":", 1)[1])
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as t:
        files = sum(1 for m in t.getmembers() if m.isfile())
    return installed, files


def _inner(outer, name):
    for member in outer.getmembers():
        if member.name.lstrip("./") == name:
            return outer.extractfile(member).read()
    raise ValueError("no %s in the package" % name)


# --- rules per entry ---------------------------------------------------------------------------

FACTS = {"uplinks": {"wan": {"device": "wan0", "gateway": "192.0.2.1", "gateway6": "2001:db8:2::1", "up": True}},
         "uplink_index": {"wan": 1}, "dest_mtu": {"192.168.1.10": 1500}, "counters": {}}


def _rules_per_entry():
    sys.path.insert(0, os.path.join(common.REPO, "rpcd"))
    from wormhole import config, render
    from wormhole.uci import Section
    rows = []
    for stype, make in (("exemption", lambda i: {"proto": "tcp", "port": str(20000 + i)}),
                        ("redirect", lambda i: {"proto": "tcp", "src_dport": str(40000 + i),
                                                "dest_ip": "192.168.1.10", "dest_port": "80"})):
        per = {}
        for backend in ("fw4", "fw3"):
            lines = []
            for n in (1, 101):
                sections = [Section("e%d" % i, stype, False, make(i)) for i in range(n)]
                plan = render.render(config.build(sections), FACTS, backend)
                lines.append(sum(_rule_lines(text) for text in plan["files"].values() if text))
            per[backend] = (lines[1] - lines[0]) / 100.0
        rows.append(Row(SECTION, "generated rule lines per %s" % stype, "fw4 %.1f, fw3 %.1f" % (per["fw4"], per["fw3"]),
                        note="fw4: map elements (one per family and protocol); %s" % (
                            "fw3: one rule per family" if stype == "exemption" else "fw3: DNAT, mark and accept rules"),
                        data=per))
    return rows


def _rule_lines(text):
    """Lines that are rules or elements: not blank, not comments, not braces alone."""
    return sum(1 for line in text.splitlines()
               if line.strip() and not line.strip().startswith("#") and line.strip() not in ("{", "}"))

