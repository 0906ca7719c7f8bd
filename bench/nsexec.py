"""Run and time processes inside a network namespace, without `ip netns exec` in the way.

`ip netns exec` costs a few milliseconds per call (it also unshares the mount namespace
and remounts /sys), which would blur the very numbers we measure. Instead one thread
joins the namespace with setns() and starts every process from there: a child inherits
the namespace of the thread that forks it, and Python's subprocess still uses vfork.
"""

import ctypes
import os
import queue
import subprocess
import threading
import time

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"
CLEAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
GNU_TIME = "/usr/bin/time"

_libc = ctypes.CDLL(None, use_errno=True)


class Result:
    __slots__ = ("seconds", "returncode", "stdout", "stderr")

    def __init__(self, seconds, returncode, stdout, stderr):
        self.seconds = seconds
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr

    def check(self, what):
        if self.returncode != 0:
            raise RuntimeError("%s failed (%d): %s%s" % (what, self.returncode, self.stdout, self.stderr))
        return self


class NsExec:
    """A worker thread living in namespace `ns`; `run()` hands it one process at a time."""

    def __init__(self, ns):
        self.ns = ns
        self._jobs = queue.Queue()
        ready = queue.Queue()
        self._thread = threading.Thread(target=self._serve, args=(ready,), name="nsexec-" + ns, daemon=True)
        self._thread.start()
        err = ready.get()
        if err:
            raise err

    def _serve(self, ready):
        try:
            fd = os.open(os.path.join(NETNS_DIR, self.ns), os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    errno = ctypes.get_errno()
                    raise OSError(errno, "setns(%s): %s" % (self.ns, os.strerror(errno)))
            finally:
                os.close(fd)
        except OSError as e:
            ready.put(e)
            return
        ready.put(None)
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, box, done = job
            try:
                box["value"] = fn()
            except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
                box["error"] = e
            done.set()

    def call(self, fn):
        """Run fn() in the namespace thread (processes it starts live in the namespace)."""
        box, done = {}, threading.Event()
        self._jobs.put((fn, box, done))
        done.wait()
        if "error" in box:
            raise box["error"]
        return box["value"]

    def run(self, argv, env=None, input=None, timeout=120, cwd="/"):
        """Start argv in the namespace; Result with the wall time from spawn to exit."""
        data = input.encode() if isinstance(input, str) else input

        def go():
            started = time.perf_counter()
            p = subprocess.run([str(a) for a in argv], input=data, capture_output=True, timeout=timeout,
                               env=env if env is not None else {"PATH": CLEAN_PATH}, cwd=cwd)
            return Result(time.perf_counter() - started, p.returncode,
                          p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace"))
        return self.call(go)

    def peak_rss_kb(self, argv, env=None, input=None, tmpdir="/tmp"):
        """Peak RSS of argv in kB, by GNU time: its own small parent process keeps ours (the
        bench's, tens of MB) out of the child's ru_maxrss, which exec() inherits."""
        out = os.path.join(tmpdir, "bench-rss-%d-%d" % (os.getpid(), threading.get_ident()))
        try:
            self.run([GNU_TIME, "-f", "%M", "-o", out] + list(argv), env=env, input=input).check(argv[0])
            with open(out) as f:
                return int(f.read().split()[-1])
        finally:
            if os.path.exists(out):
                os.unlink(out)

    def close(self):
        self._jobs.put(None)
        self._thread.join(timeout=5)


def gnu_time_available():
    return os.path.exists(GNU_TIME)
