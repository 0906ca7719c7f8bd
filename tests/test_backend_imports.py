"""The backend runs on python3-light: it imports none of the modules OpenWrt splits out.

Two checks:
- statically, every import statement in the backend and its entry points names a stdlib
  module that python3-light ships (or an optional router binding: euci, ubus);
- at run time, the plugin's `list` verb and call paths (and the CLI) run under a bare
  interpreter (`-S -I`) whose import system refuses the split-out modules and records
  every attempt, even one the code would survive. The `list` verb, which rpcd runs at
  start-up without a timeout, may load nothing but the plugin and the method table.
"""

import ast
import glob
import json
import os
import subprocess
import sys

import pytest

from tests import support

# Modules in the python3-* packages split off python3-light (openwrt/packages
# lang/python/python3/files/python3-package-*.mk), plus hashlib, which needs _hashlib
# (python3-openssl) for most algorithms, and things no router has.
FORBIDDEN = {
    "asyncio", "cgi", "cgitb", "ctypes", "_ctypes", "dbm", "_dbm", "_gdbm", "decimal", "_decimal",
    "distutils", "email", "lib2to3", "logging", "lzma", "_lzma", "multiprocessing", "_multiprocessing",
    "curses", "_curses", "_curses_panel", "ssl", "_ssl", "_hashlib", "hashlib", "pydoc", "pydoc_data",
    "readline", "sqlite3", "_sqlite3", "unittest", "urllib", "uuid", "_uuid", "venv", "ensurepip",
    "webbrowser", "xml", "xmlrpc", "pyexpat", "_elementtree", "unicodedata", "_codecs_cn", "_codecs_hk",
    "_codecs_iso2022", "_codecs_jp", "_codecs_kr", "_codecs_tw", "pkg_resources", "setuptools", "pip",
    "tkinter", "idlelib", "turtle",
}
ROUTER_BINDINGS = {"euci", "uci", "ubus"}  # python3-uci (pyuci), python3-ubus: optional, under try
LIST_MODULES = {"wormhole", "wormhole.plugin", "wormhole.methods"}

BACKEND = os.path.join(support.REPO, "rpcd", "wormhole")
ENTRY_POINTS = (support.PLUGIN, support.CLI)

# Runs a script as __main__ behind an import hook; writes what it imported to a report.
# An attempt is charged to the first frame outside importlib: our code, or the stdlib.
# `os` is loaded first because site loads it on every normal start (we run with -S).
WRAPPER = r'''
import os, sys
report, forbidden, script = sys.argv[1], set(sys.argv[2].split(",")), sys.argv[3]
attempts = []

class Refuse:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.split(".")[0] not in forbidden:
            return None
        frame = sys._getframe(1)
        while frame is not None and frame.f_code.co_filename.startswith("<frozen importlib"):
            frame = frame.f_back
        attempts.append([name, frame.f_code.co_filename if frame else "?"])
        raise ModuleNotFoundError("refused by the test: %s" % name, name=name)

sys.meta_path.insert(0, Refuse)
preloaded = sorted(m for m in sys.modules if m.split(".")[0] in forbidden)
before = set(sys.modules)
sys.argv = sys.argv[3:]
with open(script) as f:
    code = compile(f.read(), script, "exec")
rc = 0
try:
    exec(code, {"__name__": "__main__", "__file__": script})
except SystemExit as e:
    rc = e.code
new = sorted(set(sys.modules) - before)
import json
with open(report, "w") as f:
    json.dump({"new": new, "attempts": attempts, "preloaded": preloaded, "rc": rc}, f)
'''


def _interpreter():
    with open(support.PLUGIN) as f:
        return f.readline()[2:].split()[0]


def run_guarded(tmp_path, root, script, args, stdin=b"", ns=None, extra_env=None):
    """Run an entry point behind the hook; returns (report, stdout)."""
    report = str(tmp_path / ("report-%d.json" % len(os.listdir(str(tmp_path)))))
    argv = [_interpreter(), "-S", "-I", "-c", WRAPPER, report, ",".join(sorted(FORBIDDEN)), script] + list(args)
    if ns is not None:
        argv = ["ip", "netns", "exec", ns.name] + argv
    p = subprocess.run(argv, input=stdin, capture_output=True, timeout=60, cwd="/",
                       env=support.clean_env(root, extra_env))
    assert os.path.exists(report), p.stderr.decode()
    with open(report) as f:
        rep = json.load(f)
    assert rep["preloaded"] == [], rep
    ours = [(name, where) for name, where in rep["attempts"] if _is_ours(where)]
    assert ours == [], "our code imports split-out modules: %s" % ours
    # The stdlib's own attempts (shutil trying lzma) are refused too: the run only passes
    # when the stdlib copes without them, as it must on python3-light.
    return rep, p.stdout.decode()


def _is_ours(filename):
    path = os.path.realpath(filename) if os.path.isabs(filename) else filename
    return path.startswith(os.path.join(support.REPO, ""))


# --- static ----------------------------------------------------------------------------------

def _imports(path):
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.lineno, node.module


def _sources():
    return sorted(glob.glob(os.path.join(BACKEND, "**", "*.py"), recursive=True)) + list(ENTRY_POINTS)


def test_backend_sources_import_only_what_python3_light_ships():
    assert len(_sources()) > 10
    bad = []
    for path in _sources():
        for line, name in _imports(path):
            top = name.split(".")[0]
            if top == "wormhole":
                continue
            if top in FORBIDDEN or (top not in sys.stdlib_module_names and top not in ROUTER_BINDINGS):
                bad.append("%s:%d: %s" % (os.path.relpath(path, support.REPO), line, name))
    assert bad == []


# --- at run time -----------------------------------------------------------------------------

@pytest.fixture
def croot(tmp_path):
    r = tmp_path / "root"
    support.write_config(r, support.UPLINK_WAN + """
config exemption 'ex_a'
	option port '443'
	option label 'LuCI'

config redirect 'rd_b'
	option src_dport '8443'
	option dest_ip '192.168.1.20'
	option src_ip '198.51.100.0/24'
""")
    return r


@pytest.fixture
def reports(tmp_path):
    d = tmp_path / "reports"
    d.mkdir()
    return d


@pytest.fixture
def no_tools(tmp_path):
    """For requests that must be refused: should one slip through, its apply finds no tool."""
    d = tmp_path / "no-tools"
    d.mkdir()
    return {"WORMHOLE_PATH": str(d)}


def test_list_verb_loads_only_the_method_table(reports, tmp_path):
    rep, out = run_guarded(reports, tmp_path / "absent", support.PLUGIN, ["list"])
    assert set(json.loads(out)) == {"list", "status", "add", "update", "del", "settings", "apply", "render", "check"}
    assert set(rep["new"]) <= LIST_MODULES, sorted(set(rep["new"]) - LIST_MODULES)


@pytest.mark.parametrize("method,request_", [
    ("list", {}), ("status", {}), ("render", {}), ("render", {"backend": "fw3"}), ("check", {}),
    ("frobnicate", {}), ("add", {"port": {}}),
])
def test_reading_calls_stay_within_python3_light(reports, croot, no_tools, method, request_):
    # Read-only methods run with the real tools; refused requests without any.
    env = None if method in ("list", "status", "render", "check") else no_tools
    rep, out = run_guarded(reports, croot, support.PLUGIN, ["call", method], json.dumps(request_).encode(),
                           extra_env=env)
    reply = json.loads(out)
    assert reply.get("error", {}).get("code") != "internal_error", reply
    assert "wormhole.jsonio" in rep["new"] and "wormhole.api" in rep["new"]
    if method in ("list", "status"):
        # LuCI polls these: `json`, `re` and `enum` are a third of the start-up (PERFORMANCE.md)
        assert not {"json", "re", "enum"} & set(rep["new"]), sorted(rep["new"])


def test_changing_calls_stay_within_python3_light(netns, reports, croot):
    def call(method, request_):
        rep, out = run_guarded(reports, croot, support.PLUGIN, ["call", method], json.dumps(request_).encode(),
                               ns=netns)
        return json.loads(out)

    sid = call("add", {"port": "2222", "label": "ssh"})["id"]
    assert call("update", {"id": sid, "port": "2223"})["applied"] is True
    assert call("apply", {})["applied"] is True
    assert call("del", {"id": sid})["deleted"] == [sid]
    assert call("list", {})["exemptions"][0]["status"] == "inert"


@pytest.mark.parametrize("args", [["list", "--json"], ["status"], ["render", "--fw4"], ["check", "--json"],
                                  ["inbound", "add", "tcp:99999"]])
def test_cli_stays_within_python3_light(reports, croot, no_tools, args):
    rep, _out = run_guarded(reports, croot, support.CLI, args, extra_env=None if args[0] != "inbound" else no_tools)
    assert "wormhole.cli" in rep["new"]
    # argparse's help formatter would import shutil (with bz2 and lzma) on every run
    assert "shutil" not in rep["new"], sorted(rep["new"])
    if "--json" not in args:
        assert "json" not in rep["new"], sorted(rep["new"])


# --- started without `site` ----------------------------------------------------------------

def test_entry_points_start_without_site():
    """rpcd starts the plugin for every ubus call: `-S` saves `site` (PERFORMANCE.md, 4)."""
    for path in ENTRY_POINTS:
        with open(path) as f:
            assert f.readline().split() == ["#!/usr/bin/python3", "-S"], path


def test_site_packages_are_where_site_puts_them(monkeypatch):
    """Under -S the entry points add the interpreter's site-packages themselves, where
    OpenWrt's python3-uci and python3-ubus are: the directories sysconfig names."""
    import sysconfig

    import wormhole
    expected = {sysconfig.get_path(k, "posix_prefix") for k in ("purelib", "platlib")}
    monkeypatch.setattr(sys, "path", ["/stdlib"])
    monkeypatch.setattr(os.path, "isdir", lambda p: True)
    wormhole.add_site_packages()
    assert sys.path[0] == "/stdlib" and expected <= set(sys.path[1:]), sys.path
    assert all(p.startswith((sys.prefix, sys.exec_prefix)) and p.endswith("site-packages") for p in sys.path[1:])
    wormhole.add_site_packages()            # idempotent: a normal start already has them
    assert len(sys.path) == len(set(sys.path))
