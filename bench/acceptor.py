#!/usr/bin/env python3
"""A TCP server that accepts and closes at once, as fast as Python can: the far end of the
connection-rate benchmark. Run inside a namespace: `acceptor.py PORT`; prints READY once
listening; exits when stdin closes (so it never outlives the benchmark)."""

import socket
import sys
import threading


def main():
    port = int(sys.argv[1])
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("::", port))
    sock.listen(4096)
    threading.Thread(target=_serve, args=(sock,), daemon=True).start()
    print("READY", flush=True)
    sys.stdin.read()          # until our owner goes away


def _serve(sock):
    while True:
        try:
            conn, _ = sock.accept()
            conn.close()
        except OSError:
            continue


if __name__ == "__main__":
    main()
