"""Namespaces, commands and process control: the lab's only door to the system.

Every external command goes through run(): argv lists only, always a timeout,
and a failure raises an exception naming the command and its stderr.
"""

import ctypes
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)

REQUIRED_TOOLS = ("ip", "nft", "wireguard-go", "wg", "iptables-restore", "conntrack", "ping")


def lab_unavailable_reason():
    """Why the lab cannot run on this machine, or None."""
    if os.geteuid() != 0:
        return "the netns lab needs root"
    missing = [tool for tool in REQUIRED_TOOLS if not shutil.which(tool)]
    if missing:
        return f"the netns lab needs these tools: {', '.join(missing)}"
    if not Path("/dev/net/tun").exists():
        return "the netns lab needs /dev/net/tun (wireguard-go)"
    return None


class LabError(RuntimeError):
    """Something in the lab itself went wrong (not the code under test)."""


class CommandError(LabError):
    def __init__(self, argv, returncode, stdout, stderr, note=""):
        self.argv = [str(a) for a in argv]
        self.returncode = returncode
        self.stdout = stdout or ""
        self.stderr = stderr or ""
        detail = self.stderr.strip() or self.stdout.strip() or "(no output)"
        msg = f"command failed (rc={returncode}): {' '.join(self.argv)}\n{detail}"
        super().__init__(msg + (f"\n{note}" if note else ""))


class CommandTimeout(LabError):
    def __init__(self, argv, timeout):
        self.argv = [str(a) for a in argv]
        super().__init__(f"command timed out after {timeout}s: {' '.join(self.argv)}")


def run(argv, *, check=True, timeout=10, env=None, input=None, cwd=None):
    """Run argv (no shell), return CompletedProcess with text output."""
    full_env = None if env is None else {**os.environ, **env}
    try:
        proc = subprocess.run(
            [str(a) for a in argv], input=input, capture_output=True, text=True,
            timeout=timeout, env=full_env, cwd=cwd, check=False)
    except subprocess.TimeoutExpired:
        raise CommandTimeout(argv, timeout) from None
    if check and proc.returncode != 0:
        raise CommandError(argv, proc.returncode, proc.stdout, proc.stderr)
    return proc


def ns_exec(ns, argv):
    """argv that runs `argv` inside namespace ns."""
    return ["ip", "netns", "exec", ns, *argv]


def ip_batch(ns, lines, timeout=10):
    """Run many `ip` commands in one process (fast); errors show the numbered batch."""
    if not lines:
        return
    text = "\n".join(lines) + "\n"
    try:
        run(["ip", "-n", ns, "-batch", "-"], input=text, timeout=timeout)
    except CommandError as err:
        numbered = "\n".join(f"  {i}: {line}" for i, line in enumerate(lines, 1))
        raise CommandError(err.argv, err.returncode, err.stdout, err.stderr,
                           note=f"batch:\n{numbered}") from None


# --- namespaces -----------------------------------------------------------

def create_ns(name):
    run(["ip", "netns", "add", name])


def delete_ns(name):
    """Delete a namespace; a missing one is fine (idempotent teardown)."""
    if (NETNS_DIR / name).exists():
        run(["ip", "netns", "del", name], check=False, timeout=10)


def list_ns():
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []


def ns_pids(name):
    """Pids of processes whose network namespace is `name`."""
    if not (NETNS_DIR / name).exists():
        return []
    out = run(["ip", "netns", "pids", name], check=False, timeout=5).stdout
    return [int(tok) for tok in out.split() if tok.isdigit()]


def in_netns(ns, fn):
    """Call fn() in a short-lived thread that has joined namespace ns.

    setns() only moves the calling thread, and a socket keeps the namespace it
    was created in for its whole life, so sockets made here work from any thread.
    """
    box = {}

    def worker():
        try:
            fd = os.open(NETNS_DIR / ns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({ns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=worker, name=f"netns-{ns}", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


# --- sysctl (through /proc/sys in a thread inside the namespace) -----------

def _sysctl_path(key):
    # Dotted keys as in sysctl(8); a key with "/" is taken as a path, so that
    # device names containing dots (eth0.2) can be written too.
    rel = key if "/" in key else key.replace(".", "/")
    return Path("/proc/sys") / rel


def write_sysctls(ns, items):
    """Write {key: value} inside ns, in order."""
    def write_all():
        for key, value in items.items():
            path = _sysctl_path(key)
            try:
                path.write_text(f"{value}\n")
            except OSError as exc:
                raise LabError(f"sysctl {key}={value} in {ns}: {exc}") from None
    in_netns(ns, write_all)


def read_sysctl(ns, key):
    return in_netns(ns, lambda: _sysctl_path(key).read_text().strip())


# --- processes -------------------------------------------------------------

def _proc_stat(pid):
    """Fields of /proc/<pid>/stat after the command name, or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may contain spaces: fields start after the last ")".
    return stat.rsplit(")", 1)[1].split()


def pid_start_time(pid):
    """Start time of pid in clock ticks (guards against pid reuse), or None."""
    fields = _proc_stat(pid)
    return int(fields[19]) if fields else None


def pid_alive(pid, start_time=None):
    """True for a running process (a zombie waiting for its reaper is dead)."""
    fields = _proc_stat(pid)
    if not fields or fields[0] in ("Z", "X"):
        return False
    return start_time is None or int(fields[19]) == start_time


def stop_process(proc, grace=1.0):
    """Terminate a Popen we started (its whole process group), then reap it."""
    if proc.poll() is None:
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream:
            stream.close()


def _signal_group(pid, sig):
    try:
        os.killpg(pid, sig)  # popen() starts every process in its own session
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def kill_pids(pids, grace=1.0):
    """SIGTERM the given pids, SIGKILL what is left after `grace` seconds."""
    pids = [p for p in pids if p != os.getpid()]
    for pid in pids:
        _kill_quiet(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if pid_alive(p)]
        time.sleep(0.02)
    for pid in pids:
        _kill_quiet(pid, signal.SIGKILL)


def _kill_quiet(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def wait_for(predicate, timeout, interval=0.02, what="condition"):
    """Poll predicate() until it returns a truthy value; raise LabError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise LabError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
