#!/usr/bin/env python3
"""A bulk TCP source for the throughput benchmark: the client sends "<bytes>\\n", the server
answers with that many bytes by sendfile() from a sparse file (the kernel moves the data,
no Python per chunk, so the measurement is of the network path and not of the interpreter).
Run inside a namespace: `pump.py PORT FILE`; prints READY; exits when stdin closes."""

import os
import socket
import sys
import threading

SIZE = 1 << 30


def main():
    port, path = int(sys.argv[1]), sys.argv[2]
    with open(path, "wb") as f:
        f.truncate(SIZE)                       # sparse: zero pages, nothing on disk
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("::", port))
    sock.listen(16)
    threading.Thread(target=_serve, args=(sock, path), daemon=True).start()
    print("READY", flush=True)
    sys.stdin.read()
    os.unlink(path)


def _serve(sock, path):
    while True:
        conn, _ = sock.accept()
        try:
            want = int(conn.makefile("rb").readline())
            with open(path, "rb") as f:
                sent = 0
                while sent < want:
                    n = os.sendfile(conn.fileno(), f.fileno(), sent % SIZE, min(want - sent, SIZE - sent % SIZE))
                    if n <= 0:
                        break
                    sent += n
        except (OSError, ValueError):
            pass
        finally:
            conn.close()


if __name__ == "__main__":
    main()
