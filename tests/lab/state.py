"""Lab ids, the on-disk registry of live labs, and removal of stale ones.

A lab writes /run/wormhole-lab/<id>.json (owner pid + its start time, the
namespaces, wg interfaces and scratch dir) BEFORE it creates anything, and
deletes the file last. So a namespace with the lab prefix whose state file is
missing or names a dead owner is garbage from a crashed run.
"""

import json
import os
import re
import secrets
import shutil
from pathlib import Path

from . import netns

PREFIX = "wh"
STATE_DIR = Path("/run/wormhole-lab")
WG_SOCKET_DIR = Path("/var/run/wireguard")
NS_NAME = re.compile(rf"^{PREFIX}([0-9a-f]{{6}})-[a-z0-9]+$")
WG_NAME = re.compile(rf"^{PREFIX}([0-9a-f]{{6}})[a-z0-9]$")


def new_lab_id():
    """6 random hex digits not used by any namespace or state file."""
    taken = {m.group(1) for m in map(NS_NAME.match, netns.list_ns()) if m}
    while True:
        lab_id = secrets.token_hex(3)
        if lab_id not in taken and not state_path(lab_id).exists():
            return lab_id


def state_path(lab_id):
    return STATE_DIR / f"{lab_id}.json"


def write_state(lab_id, data):
    STATE_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    owner = {"pid": os.getpid(), "start": netns.pid_start_time(os.getpid())}
    tmp = state_path(lab_id).with_suffix(".tmp")
    tmp.write_text(json.dumps({**owner, **data}, indent=1))
    os.replace(tmp, state_path(lab_id))


def remove_state(lab_id):
    state_path(lab_id).unlink(missing_ok=True)


def _read_states():
    states = {}
    for path in STATE_DIR.glob("*.json") if STATE_DIR.exists() else []:
        try:
            states[path.stem] = json.loads(path.read_text())
        except (OSError, ValueError):
            states[path.stem] = {}  # half-written: owner unknown, treat as dead
    return states


def _owner_alive(state):
    return bool(state) and netns.pid_alive(state.get("pid", -1), state.get("start"))


def remove_lab_leftovers(lab_id, namespaces=(), wg_names=(), tmp=None):
    """Kill processes in the namespaces, delete them, wg sockets and scratch dir."""
    for ns in namespaces:
        netns.kill_pids(netns.ns_pids(ns))
    for ns in namespaces:
        netns.delete_ns(ns)
    for name in wg_names:
        if WG_NAME.match(name):
            (WG_SOCKET_DIR / f"{name}.sock").unlink(missing_ok=True)
    if tmp and Path(tmp).name.startswith(f"wormhole-lab-{lab_id}"):
        shutil.rmtree(tmp, ignore_errors=True)


def cleanup_stale():
    """Remove every lab whose owner process is gone. Returns the removed namespaces."""
    states = _read_states()
    dead = {lab_id for lab_id, st in states.items() if not _owner_alive(st)}
    live = set(states) - dead
    removed = []
    for ns in netns.list_ns():
        m = NS_NAME.match(ns)
        if m and m.group(1) not in live:
            dead.add(m.group(1))
    for lab_id in sorted(dead):
        st = states.get(lab_id, {})
        namespaces = set(st.get("namespaces", []))
        namespaces |= {ns for ns in netns.list_ns() if ns.startswith(f"{PREFIX}{lab_id}-")}
        wg_names = set(st.get("wg", []))
        wg_names |= {p.stem for p in WG_SOCKET_DIR.glob(f"{PREFIX}{lab_id}*.sock")}
        remove_lab_leftovers(lab_id, sorted(namespaces), sorted(wg_names), st.get("tmp"))
        remove_state(lab_id)
        removed.extend(sorted(namespaces))
    return removed
