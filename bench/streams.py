"""Long-lived probe streams that record when every answer came back.

TCP: one connection to a lab echo server; a line every `interval`, the echo awaited.
UDP: one connected socket to a lab UDP server; a datagram every `interval`, each
answered by one reply. Both keep the arrival time of every answer, so any window of
the run (idle baseline, during applies) can be judged afterwards: longest gap between
answers, gaps over a threshold, resets, lost datagrams.
"""

import bisect
import socket
import threading
import time


def _sock(ns, family, kind):
    from tests.lab import traffic
    return traffic.make_socket(ns, family, kind)


class _Stream:
    def __init__(self, interval):
        self.interval = interval
        self.answers = []          # monotonic times of answers
        self.sent = []             # monotonic times of sends
        self.resets = 0
        self.timeouts = 0
        self.error = ""
        self._stop = threading.Event()
        self._thread = None

    def start(self):
        self._thread = threading.Thread(target=self._loop, daemon=True, name=type(self).__name__)
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

    def window(self, t0, t1, stall):
        """{answers, max_gap_s, stalls, lost, resets} of answers in [t0, t1]; the gap from the
        last answer before t0 counts, so a stall that starts at t0 is not missed."""
        i = bisect.bisect_left(self.answers, t0)
        j = bisect.bisect_right(self.answers, t1)
        times = ([self.answers[i - 1]] if i > 0 else [t0]) + self.answers[i:j] + [t1]
        gaps = [b - a for a, b in zip(times, times[1:])]
        return {"answers": j - i, "max_gap_s": max(gaps), "stalls": sum(1 for g in gaps if g > stall)}

    def totals(self):
        """After stop(): what was sent, answered, reset over the whole run."""
        return {"sent": len(self.sent), "answers": len(self.answers), "lost": max(0, len(self.sent) - len(self.answers)),
                "resets": self.resets, "timeouts": self.timeouts, "error": self.error}


class TcpStream(_Stream):
    """Echo lines over one established connection (the lab's tcp_server echoes)."""

    def __init__(self, ns, dst, port, interval=0.01, timeout=3.0):
        super().__init__(interval)
        family = socket.AF_INET6 if ":" in dst else socket.AF_INET
        self.sock = _sock(ns, family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect((dst, port))
        self._buf = b""
        self._line()                              # the server's greeting

    def _line(self):
        while b"\n" not in self._buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionResetError("closed by peer")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def _loop(self):
        seq = 0
        while not self._stop.is_set():
            seq += 1
            want = b"seq %d" % seq
            try:
                self.sock.sendall(want + b"\n")
                self.sent.append(time.monotonic())
                while self._line() != want:
                    pass
                self.answers.append(time.monotonic())
            except socket.timeout:
                self.timeouts += 1
                continue
            except OSError as e:
                self.resets += 1
                self.error = repr(e)
                return
            self._stop.wait(self.interval)

    def stop(self):
        super().stop()
        self.sock.close()


class UdpStream(_Stream):
    """Datagrams to the lab's UDP server, which answers each one."""

    def __init__(self, ns, dst, port, interval=0.01):
        super().__init__(interval)
        family = socket.AF_INET6 if ":" in dst else socket.AF_INET
        self.sock = _sock(ns, family, socket.SOCK_DGRAM)
        self.sock.connect((dst, port))
        self.sock.settimeout(0.2)
        self._done = threading.Event()
        self._rx = threading.Thread(target=self._receive, daemon=True, name="udp-rx")

    def start(self):
        self._rx.start()
        return super().start()

    def _loop(self):
        seq = 0
        while not self._stop.is_set():
            seq += 1
            try:
                self.sock.send(b"seq %d\n" % seq)
                self.sent.append(time.monotonic())
            except OSError as e:                  # ICMP unreachable surfaces here
                self.resets += 1
                self.error = repr(e)
            self._stop.wait(self.interval)

    def _receive(self):
        while not self._done.is_set():
            try:
                self.sock.recv(2048)
                self.answers.append(time.monotonic())
            except socket.timeout:
                continue
            except OSError as e:
                self.resets += 1
                self.error = repr(e)
                if self._done.wait(0.01):
                    return

    def stop(self):
        super().stop()
        time.sleep(0.3)                           # answers still on their way
        self._done.set()
        self._rx.join(timeout=1)
        self.sock.close()
