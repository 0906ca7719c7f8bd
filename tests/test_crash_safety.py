"""Crash safety: a writer killed with SIGKILL at any point of `add` (or `del`).

rpcd SIGKILLs a plugin that overruns its timeout, and routers lose power. Whatever point
the writer dies at, the config is the old version or the new one, parseable, never
truncated; the lock of the dead writer never blocks the next one; the next writer leaves
no temp file behind and brings the kernel back in line with the config.

Two ways of choosing the point:
- every point: the writer runs under a small harness (CRASHER) that counts the calls
  through which it touches the world (open, write, fsync, rename, unlink, chmod, close,
  flock, each tool it runs: before and after) and SIGKILLs itself at the N-th; a dry run
  counts them, then N walks through all of them;
- random times: a plain plugin process killed from outside after a random delay.
Writers run inside a scratch network namespace, so their applies touch only it.
"""

import json
import os
import random
import re
import subprocess
import sys
import time

import pytest

from tests import reliability, support
from wormhole import config

TALLY = reliability.Tally()
RANDOM_KILLS = int(os.environ.get("WORMHOLE_CRASH_RANDOM", "60"))

OLD = support.UPLINK_WAN + """
config exemption 'ex_web'
	option proto 'tcp'
	option port '443'
	option label 'LuCI'

config exemption 'ex_ssh'
	option proto 'tcp'
	option port '2222'

config redirect 'rd_nas'
	option src_dport '8443'
	option dest_ip '192.168.1.20'
	option dest_port '443'
"""
OLD_PORTS = {"443", "2222", "8443"}
NEW_PORT = "5000"          # what the crashing `add` adds
RECOVERY_PORT = "39000"    # what the writer after the crash adds

# Runs the plugin in-process with a kill switch on every call that touches the world.
CRASHER = r"""
import builtins, fcntl, io, json, os, signal, subprocess, sys
sys.path.insert(0, sys.argv[1])
from wormhole import plugin

crash_at = int(os.environ["WH_CRASH_AT"])
log = os.environ.get("WH_CRASH_LOG")
events = []
inside_tool = [False]

def hook(owner, name):
    real = getattr(owner, name)
    def wrapped(*args, **kwargs):
        if inside_tool[0]:
            return real(*args, **kwargs)
        point(name + ":" + _what(args))
        if name != "run":
            return real(*args, **kwargs)
        inside_tool[0] = True
        try:
            return real(*args, **kwargs)
        finally:
            inside_tool[0] = False
            point("ran:" + _what(args))
    setattr(owner, name, wrapped)

def _what(args):
    a = args[0] if args else ""
    if isinstance(a, (list, tuple)):
        return " ".join(str(x) for x in a[:4])
    return os.path.basename(str(a)) if isinstance(a, str) else type(a).__name__

def point(what):
    events.append(what)
    if len(events) == crash_at:
        os.kill(os.getpid(), signal.SIGKILL)

for owner, name in ((os, "open"), (os, "write"), (os, "fsync"), (os, "close"), (os, "rename"), (os, "replace"),
                    (os, "unlink"), (os, "chmod"), (fcntl, "flock"), (builtins, "open"), (subprocess, "run")):
    hook(owner, name)
try:
    rc = plugin.main(["wormhole", "call", sys.argv[2]])
finally:
    inside_tool[0] = True
    if log:
        with io.open(log, "w") as f:
            json.dump(events, f)
sys.exit(rc)
"""


@pytest.fixture(scope="module")
def ns():
    support.require_root_tools("ip", "nft")
    n = support.ScratchNetns()
    try:
        yield n
    finally:
        n.close()


@pytest.fixture(scope="module", autouse=True)
def figures():
    yield
    reliability.record("crash", TALLY.figures())


class Writer:
    def __init__(self, ns, root):
        self.ns = ns
        self.root = root

    def env(self, extra=None):
        return support.clean_env(self.root, dict({"WORMHOLE_LOCK_TIMEOUT": "3"}, **(extra or {})))

    def crash(self, method, request, at, log=None):
        """Run `method` under CRASHER, killed at its `at`-th event (0: never)."""
        extra = {"WH_CRASH_AT": str(at)}
        if log:
            extra["WH_CRASH_LOG"] = log
        argv = ["ip", "netns", "exec", self.ns.name, sys.executable, "-c", CRASHER,
                os.path.join(support.REPO, "rpcd"), method]
        return subprocess.run(argv, input=json.dumps(request).encode(), capture_output=True, timeout=60, cwd="/",
                              env=self.env(extra))

    def call(self, method, request):
        reply, p = support.plugin(self.root, method, request, ns=self.ns, extra_env={"WORMHOLE_LOCK_TIMEOUT": "3"})
        return reply


def entries(root):
    """The config as data: {id: options}; fails on an unreadable or truncated file."""
    assert os.environ["WORMHOLE_ROOT"] == str(root)
    cfg = config.load()
    assert cfg.error is None, cfg.error
    assert [e.id for e in cfg.entries if not e.valid] == []
    return {e.id: dict(e.raw) for e in cfg.entries}


def kernel_ports(ns):
    """The public ports in the live maps of `table inet wormhole` (whatever the key order)."""
    data = json.loads(ns.exec(["nft", "-j", "list", "table", "inet", "wormhole"]).stdout)["nftables"]
    found = set()
    for obj in data:
        m = obj.get("map")
        if not m or not m["name"].startswith(("in_", "dnat_")):
            continue
        for item in m.get("elem", []):
            item = item[0] if isinstance(item, list) else item
            elem = item.get("elem", item)
            for part in elem["val"]["concat"]:
                if isinstance(part, int):
                    found.add(str(part))
                elif isinstance(part, dict) and "range" in part:
                    found.add("%s-%s" % tuple(part["range"]))
    return found


def temp_files(root):
    d = os.path.join(str(root), "etc", "config")
    return sorted(n for n in os.listdir(d) if n != "wormhole")


def state_leftovers(root):
    d = os.path.join(str(root), "var", "run", "wormhole")
    return sorted(n for n in os.listdir(d) if n.startswith(".")) if os.path.isdir(d) else []


@pytest.fixture
def writer(ns, tmp_path, monkeypatch):
    root = tmp_path / "root"
    monkeypatch.setenv("WORMHOLE_ROOT", str(root))
    monkeypatch.setenv("WORMHOLE_UCI_BACKEND", "file")
    support.write_config(root, OLD)
    w = Writer(ns, root)
    assert "error" not in w.call("apply", {})
    return w


def _old_or_new(root, old_entries, new_options, removed=None):
    """'old' or 'new'; fails for anything else."""
    now = entries(root)
    if now == old_entries:
        return "old"
    if removed is not None:
        assert now == {k: v for k, v in old_entries.items() if k != removed}, now
        return "new"
    added = {k: v for k, v in now.items() if k not in old_entries}
    assert {k: v for k, v in now.items() if k in old_entries} == old_entries, now
    assert list(added.values()) == [new_options], now
    return "new"


def _recover(w, old_entries_outcome):
    """The next writer: never busy, leaves no temp file, and the kernel matches the config."""
    reply = w.call("add", {"proto": "udp", "port": RECOVERY_PORT})
    assert "error" not in reply, reply          # a dead writer's lock never blocks
    assert temp_files(w.root) == [], temp_files(w.root)
    assert state_leftovers(w.root) == [], state_leftovers(w.root)
    ports = {o["port"] if "port" in o else o["src_dport"] for o in entries(w.root).values()}
    assert kernel_ports(w.ns) == ports
    rules = w.ns.exec(["ip", "-4", "rule", "show"]).stdout
    assert rules.count("fwmark 0x1000000/0xf000000") == 2, rules
    TALLY.add("recoveries")


def _sweep(w, method, request, outcome_of, stride=1):
    """Crash `method` at every `stride`-th event; check old-or-new and recovery each time."""
    log = os.path.join(str(w.root), "..", "events.json")
    p = w.crash(method, request, 0, log)
    reply = json.loads(p.stdout)
    assert "error" not in reply, reply
    with open(log) as f:
        events = json.load(f)
    TALLY.add("crash points in %s" % method, len(events))
    outcomes = {"old": 0, "new": 0}
    for at in range(1, len(events) + 1, stride):
        support.write_config(w.root, OLD)
        old = entries(w.root)
        p = w.crash(method, request, at)
        assert p.returncode == -9, (at, events[at - 1], p.returncode, p.stdout, p.stderr)
        assert b"Traceback" not in p.stdout
        outcome = outcome_of(w.root, old)
        outcomes[outcome] += 1
        TALLY.add("crashes survived")
        for name in temp_files(w.root) + state_leftovers(w.root):
            TALLY.add("temp files left by a killed writer (removed by the next one)")
            TALLY.note("left by a killed writer, removed by the next: %s" % re.sub(r"[0-9]+", "<pid>", name))
        _recover(w, outcome)
    TALLY.add("%s crashes leaving the old config" % method, outcomes["old"])
    TALLY.add("%s crashes leaving the new config" % method, outcomes["new"])
    return events, outcomes


def test_kill_at_every_point_of_add(writer):
    request = {"proto": "tcp", "port": NEW_PORT, "label": "crash"}
    events, outcomes = _sweep(writer, "add", request,
                              lambda root, old: _old_or_new(root, old, {"proto": "tcp", "port": NEW_PORT,
                                                                         "label": "crash"}))
    assert outcomes["old"] and outcomes["new"], outcomes     # the sweep crossed the rename
    assert any(e.startswith("rename:") for e in events)


def test_kill_at_every_point_of_del(writer):
    events, outcomes = _sweep(writer, "del", {"id": "ex_ssh"},
                              lambda root, old: _old_or_new(root, old, None, removed="ex_ssh"), stride=2)
    assert outcomes["old"] and outcomes["new"], outcomes


def test_kill_at_random_times(writer):
    """A plain plugin `add`, SIGKILLed from outside after a random delay within its run time."""
    rng = random.Random(int(os.environ.get("WORMHOLE_CRASH_SEED", "9")))
    start = time.monotonic()
    assert "error" not in writer.call("add", {"proto": "tcp", "port": "6000"})
    duration = time.monotonic() - start
    writer.call("del", {"proto": "tcp", "port": "6000"})
    outcomes = {"old": 0, "new": 0, "finished": 0}
    request = os.path.join(str(writer.root), "..", "request.json")
    with open(request, "w") as f:
        json.dump({"proto": "tcp", "port": NEW_PORT}, f)
    for i in range(RANDOM_KILLS):
        support.write_config(writer.root, OLD)
        old = entries(writer.root)
        argv = ["ip", "netns", "exec", writer.ns.name, support.PLUGIN, "call", "add"]
        with open(request, "rb") as stdin:
            proc = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/",
                                    env=writer.env())
        time.sleep(rng.uniform(0, duration * 1.1))
        proc.kill()
        out, _err = proc.communicate(timeout=60)
        assert b"Traceback" not in out
        outcome = _old_or_new(writer.root, old, {"proto": "tcp", "port": NEW_PORT})
        outcomes["finished" if proc.returncode == 0 else outcome] += 1
        TALLY.add("crashes survived" if proc.returncode != 0 else "random kills too late")
        if i % 10 == 9 or i == RANDOM_KILLS - 1:
            _recover(writer, outcome)
    TALLY.add("random kills", RANDOM_KILLS)
    assert outcomes["old"] + outcomes["new"] > RANDOM_KILLS // 2, outcomes


def test_a_dead_writers_lock_and_temp_files_never_block(writer):
    """Leftovers of a writer killed mid-write (its lock file, its temp file) are harmless."""
    d = os.path.join(str(writer.root), "etc", "config")
    dead = subprocess.Popen(["sleep", "0"])
    dead.wait()
    stale = os.path.join(d, ".wormhole.tmp-%d" % dead.pid)
    with open(stale, "w") as f:
        f.write("config exemption 'half")         # a truncated temp file of a dead writer
    assert "error" not in writer.call("add", {"proto": "tcp", "port": "7000"})
    assert temp_files(writer.root) == []
    assert set(entries(writer.root)) >= {"ex_web", "ex_ssh", "rd_nas"}
