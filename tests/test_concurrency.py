"""One lock for every writer: concurrent adds all land, a held lock gives `busy`, never a hang.

The plugin, the CLI, init and hotplug all take <root>/var/lock/wormhole.lock (flock) for
the whole read-validate-write-apply sequence. These tests run separate processes, as
rpcd, a shell and procd would.
"""

import fcntl
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests import support
from wormhole import config

N = 50
BASE_PORT = 20000


def _in_root(root, monkeypatch):
    monkeypatch.setenv("WORMHOLE_ROOT", str(root))
    monkeypatch.setenv("WORMHOLE_UCI_BACKEND", "file")


def _add(root, ns, i, env):
    """Add port BASE_PORT+i: even i through the plugin, odd i through the CLI."""
    port = str(BASE_PORT + i)
    if i % 2 == 0:
        reply, p = support.plugin(root, "add", {"proto": "tcp", "port": port, "label": "plugin %d" % i},
                                  ns=ns, extra_env=env)
        return port, reply, p
    p = support.cli(root, "inbound", "add", "tcp:" + port, "--label", "cli %d" % i, "--json", ns=ns, extra_env=env)
    return port, json.loads(p.stdout), p


def test_fifty_concurrent_adds_all_land(netns, tmp_path, monkeypatch):
    root = tmp_path / "root"
    support.write_config(root, support.UPLINK_WAN)
    # Fifty applies queue behind one lock; give the last one time enough to get it.
    env = {"WORMHOLE_LOCK_TIMEOUT": "120"}
    with ThreadPoolExecutor(max_workers=N) as pool:
        results = list(pool.map(lambda i: _add(root, netns, i, env), range(N)))

    for port, reply, p in results:
        assert "error" not in reply and reply["applied"] is True, (port, reply, p.stderr)
    ids = [reply["id"] for _port, reply, _p in results]
    assert len(set(ids)) == N

    _in_root(root, monkeypatch)
    cfg = config.load()
    assert cfg.error is None and cfg.problems == []
    assert sorted((e.id, config.format_value(e.rec["port"])) for e in cfg.entries) == \
        sorted((reply["id"], port) for port, reply, _p in results)
    assert all(e.valid and e.type == "exemption" for e in cfg.entries)
    leftovers = [n for n in os.listdir(str(root / "etc" / "config")) if n != "wormhole"]
    assert leftovers == []

    # The last apply saw every entry: all fifty ports are in the kernel.
    table = netns.exec(["nft", "list", "table", "inet", "wormhole"]).stdout
    for port, _reply, _p in results:
        assert " %s . tcp . " % port in table, port
    listed, _ = support.plugin(root, "list", {}, ns=netns)
    assert len(listed["exemptions"]) == N


# --- a held lock ---------------------------------------------------------------------------

@pytest.fixture
def held_lock(tmp_path):
    """The scratch root, with the writers' lock held by this test process."""
    root = tmp_path / "root"
    support.write_config(root, support.UPLINK_WAN + "\nconfig exemption 'ex_a'\n\toption port '443'\n")
    lock = root / "var" / "lock" / "wormhole.lock"
    lock.parent.mkdir(parents=True)
    fd = os.open(str(lock), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield root
    finally:
        os.close(fd)


def _no_tools(tmp_path):
    # Should the lock not hold them off, the writers find no tool instead of this host's firewall.
    d = tmp_path / "no-tools"
    d.mkdir(exist_ok=True)
    return {"WORMHOLE_PATH": str(d), "WORMHOLE_LOCK_TIMEOUT": "1"}


@pytest.mark.parametrize("method,request_", [
    ("add", {"port": "80"}),
    ("update", {"id": "ex_a", "label": "x"}),
    ("del", {"id": "ex_a"}),
    ("apply", {}),
])
def test_held_lock_gives_busy(held_lock, tmp_path, method, request_):
    before = support.read_config(held_lock)
    reply, p = support.plugin(held_lock, method, request_, extra_env=_no_tools(tmp_path))
    assert reply["error"]["code"] == "busy", reply
    assert support.read_config(held_lock) == before


def test_held_lock_gives_busy_to_the_cli(held_lock, tmp_path):
    p = support.cli(held_lock, "inbound", "add", "tcp:80", "--json", extra_env=_no_tools(tmp_path))
    assert p.returncode == 1
    assert json.loads(p.stdout)["error"]["code"] == "busy"


def test_readers_do_not_wait_for_the_lock(held_lock, tmp_path):
    env = _no_tools(tmp_path)
    for method in ("list", "status", "render"):
        reply, _ = support.plugin(held_lock, method, {}, extra_env=env)
        assert "error" not in reply, (method, reply)


HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(120)
"""


def test_lock_is_released_when_a_writer_dies(tmp_path):
    """flock dies with its holder: a writer killed (say by rpcd's SIGKILL) leaves no stale lock."""
    root = tmp_path / "root"
    support.write_config(root, support.UPLINK_WAN)
    lock = root / "var" / "lock" / "wormhole.lock"
    lock.parent.mkdir(parents=True)
    env = _no_tools(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        reply, _ = support.plugin(root, "apply", {}, extra_env=env)
        assert reply["error"]["code"] == "busy"
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    reply, _ = support.plugin(root, "apply", {}, extra_env=env)
    assert reply["error"]["code"] == "apply_failed"  # got the lock; then found no nft, as arranged
