"""Client side traffic, in-process: sockets are created inside a namespace
(netns.in_netns) and then used from ordinary threads. Every operation has a
timeout; failures return None / are recorded in stats, never hang.
"""

import re
import socket
import threading
import time
from dataclasses import dataclass

from . import netns

_FIELD = re.compile(r"(\w+)=(\S+)")


class Reply(str):
    """A server's answer line; also parsed: reply.peer_ip, reply.local, ..."""

    @property
    def fields(self):
        return dict(_FIELD.findall(self))

    def _split(self, key):
        value = self.fields.get(key, "")
        host, _, port = value.rpartition(":")
        return host.strip("[]"), int(port) if port.isdigit() else None

    @property
    def peer_ip(self):
        """The client address as the server saw it."""
        return self._split("peer")[0]

    @property
    def peer_port(self):
        return self._split("peer")[1]

    @property
    def local_ip(self):
        """The server address the request reached (after any DNAT)."""
        return self._split("local")[0]

    @property
    def local_port(self):
        return self._split("local")[1]

    @property
    def server(self):
        return self.fields.get("name")


def _family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def make_socket(ns, family, kind, src=None, src_port=None):
    """A socket living in namespace ns, optionally bound to src/src_port."""
    def make():
        sock = socket.socket(family, kind)
        if src or src_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            wildcard = "::" if family == socket.AF_INET6 else "0.0.0.0"
            sock.bind((src or wildcard, src_port or 0))
        return sock
    return netns.in_netns(ns, make)


def _recv_line(sock, deadline, buf=b""):
    """Read up to a newline; returns (line, rest). Raises socket.timeout."""
    while b"\n" not in buf:
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    line, _, rest = buf.partition(b"\n")
    return line.decode(errors="replace"), rest


def tcp_connect(ns, dst, port, timeout, src=None, src_port=None):
    sock = make_socket(ns, _family(dst), socket.SOCK_STREAM, src, src_port)
    if src_port:
        # No TIME_WAIT on our side, so the same source port can be reused at once.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
    sock.settimeout(timeout)
    try:
        sock.connect((dst, port))
    except BaseException:
        sock.close()
        raise
    return sock


def tcp_request(ns, dst, port, timeout=3.0, src=None, src_port=None):
    """Connect and return the server's greeting (Reply), or None on any failure."""
    deadline = time.monotonic() + timeout
    try:
        sock = tcp_connect(ns, dst, port, timeout, src, src_port)
    except OSError:
        return None
    with sock:
        try:
            line, _ = _recv_line(sock, deadline)
        except OSError:
            return None
    return Reply(line)


def udp_request(ns, dst, port, timeout=3.0, src=None, src_port=None, retry=1.0):
    """Send a datagram (resent every `retry` s) and return the Reply, or None.

    The socket is connected, so like a real client it ignores answers coming
    from any other address than dst:port.
    """
    deadline = time.monotonic() + timeout
    sock = make_socket(ns, _family(dst), socket.SOCK_DGRAM, src, src_port)
    with sock:
        try:
            sock.connect((dst, port))
            while time.monotonic() < deadline:
                sock.send(b"wh-lab udp request\n")
                sock.settimeout(max(0.001, min(retry, deadline - time.monotonic())))
                try:
                    return Reply(sock.recv(2048).decode(errors="replace").strip())
                except socket.timeout:
                    continue
        except OSError:
            return None
    return None


@dataclass
class StreamStats:
    sent: int
    received: int
    max_gap: float        # longest time without a reply (incl. until stop), seconds
    resets: int           # connection reset / closed by peer
    errors: int           # replies that did not come within the op timeout
    last_error: str
    connected: bool       # the connection was established
    alive: bool           # still working when stopped
    duration: float

    @property
    def ok(self):
        return self.connected and self.alive and self.resets == 0 and self.errors == 0


class Stream:
    """A long-lived echo connection: one small message every `interval` s in a
    background thread, measuring the gaps between replies."""

    def __init__(self, ns, dst, port, interval=0.02, op_timeout=2.0,
                 connect_timeout=3.0, src=None, src_port=None):
        self.interval, self.op_timeout = interval, op_timeout
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.sent = self.received = self.resets = self.errors = 0
        self.last_error = ""
        self.max_gap = 0.0
        self.alive = False
        self.started = time.monotonic()
        self._last_reply = self.started
        self._buf = b""
        self.sock = None
        try:
            self.sock = tcp_connect(ns, dst, port, connect_timeout, src, src_port)
            _, self._buf = _recv_line(self.sock, time.monotonic() + connect_timeout)
            self.alive = True
        except OSError as exc:
            self.last_error = f"connect: {exc!r}"
        self.connected = self.alive
        self._thread = threading.Thread(target=self._loop, name="lab-stream", daemon=True)
        if self.alive:
            self._thread.start()

    def _loop(self):
        seq = 0
        while not self._stop.is_set() and self.alive:
            seq += 1
            try:
                self.sock.sendall(f"seq {seq}\n".encode())
                with self._lock:
                    self.sent += 1
                self._await(seq)
            except (ConnectionError, OSError) as exc:
                if isinstance(exc, socket.timeout):
                    continue
                with self._lock:
                    self.resets += 1
                    self.last_error = repr(exc)
                    self.alive = False
                break
            self._stop.wait(self.interval)

    def _await(self, seq):
        """Read echoed lines until `seq` comes back; late ones still count."""
        deadline = time.monotonic() + self.op_timeout
        while True:
            try:
                line, self._buf = _recv_line(self.sock, deadline, self._buf)
            except socket.timeout:
                with self._lock:
                    self.errors += 1
                    self.last_error = f"no echo for seq {seq} within {self.op_timeout}s"
                raise
            self._note_reply()
            if line == f"seq {seq}":
                return

    def _note_reply(self):
        now = time.monotonic()
        with self._lock:
            self.received += 1
            self.max_gap = max(self.max_gap, now - self._last_reply)
            self._last_reply = now

    def wait_replies(self, count, timeout=5.0):
        """Block until `count` replies have arrived in total; True if they did."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.received >= count:
                return True
            if not self.alive:
                return False
            time.sleep(0.01)
        return self.received >= count

    def stats(self):
        now = time.monotonic()
        with self._lock:
            tail = now - self._last_reply if self.connected else 0.0
            return StreamStats(self.sent, self.received, max(self.max_gap, tail), self.resets,
                               self.errors, self.last_error, self.connected, self.alive,
                               now - self.started)

    def stop(self):
        """Stop the stream, close the connection and return its StreamStats."""
        result = self.stats()
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.op_timeout + 1)
        if self.sock:
            self.sock.close()
        return result


@dataclass
class BulkResult:
    direction: str        # "upload" (client -> server) | "download"
    requested: int
    bytes: int            # downloaded / confirmed by the receiver (upload: sent, if stalled)
    duration: float
    completed: bool
    stalled: bool         # no progress for `stall` seconds
    error: str

    @property
    def mbit_per_s(self):
        return self.bytes * 8 / self.duration / 1e6 if self.duration else 0.0


def bulk(ns, dst, port, nbytes=4 << 20, direction="download", timeout=30.0, stall=3.0,
         src=None, src_port=None):
    """Transfer nbytes to (upload) or from (download) a lab TCP server."""
    if direction not in ("upload", "download"):
        raise ValueError(f"direction must be upload or download, not {direction!r}")
    start = time.monotonic()
    deadline = start + timeout
    result = {"bytes": 0, "stalled": False, "error": ""}
    try:
        sock = tcp_connect(ns, dst, port, min(stall, timeout), src, src_port)
    except OSError as exc:
        return BulkResult(direction, nbytes, 0, 0.0, False, False, f"connect: {exc!r}")
    with sock:
        try:
            _, rest = _recv_line(sock, time.monotonic() + stall)
            mover = _upload if direction == "upload" else _download
            mover(sock, nbytes, rest, deadline, stall, result)
        except socket.timeout:
            if time.monotonic() >= deadline:
                result["error"] = f"not finished within {timeout}s"
            else:
                result["stalled"] = True
                result["error"] = f"no progress for {stall}s"
        except OSError as exc:
            result["error"] = repr(exc)
    done = result["bytes"] == nbytes
    return BulkResult(direction, nbytes, result["bytes"], time.monotonic() - start,
                      done, result["stalled"], result["error"])


def _download(sock, nbytes, rest, deadline, stall, result):
    sock.sendall(f"SOURCE {nbytes}\n".encode())
    result["bytes"] = len(rest)
    while result["bytes"] < nbytes:
        sock.settimeout(max(0.001, min(stall, deadline - time.monotonic())))
        chunk = sock.recv(1 << 16)
        if not chunk:
            break
        result["bytes"] += len(chunk)


def _upload(sock, nbytes, _rest, deadline, stall, result):
    sock.sendall(b"SINK\n")
    block = bytes(1 << 16)
    while result["bytes"] < nbytes:
        sock.settimeout(max(0.001, min(stall, deadline - time.monotonic())))
        result["bytes"] += sock.send(block[: min(len(block), nbytes - result["bytes"])])
    sock.shutdown(socket.SHUT_WR)
    line, _ = _recv_line(sock, min(deadline, time.monotonic() + stall))
    result["bytes"] = int(line.split()[1]) if line.startswith("RECEIVED ") else 0
