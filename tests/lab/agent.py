#!/usr/bin/env python3
"""Lab servers, run inside a namespace: `ip netns exec NS python3 agent.py tcp|udp ...`.

Standalone (stdlib only, no package imports): it runs as a script.
Prints "READY" on stdout once listening. Exits when its stdin closes, so a
server can never outlive the lab process that started it.

TCP: on each connection sends "wh-lab tcp name=N local=A:P peer=A:P\\n", then
  - first line "SOURCE <n>": sends n bytes and closes;
  - first line "SINK": reads to EOF and answers "RECEIVED <n>";
  - anything else: echoes everything back until EOF.
UDP: answers every datagram with "wh-lab udp name=N mode=M local=A:P peer=A:P",
  - mode pktinfo (default): from the address the datagram was sent to
    (IP_PKTINFO / IPV6_PKTINFO), as WireGuard and dnsmasq do;
  - mode naive: plain sendto() on a wildcard socket; the kernel picks the source.
"""

import argparse
import os
import select
import socket
import struct
import sys
import threading

IP_PKTINFO = 8
IPV6_RECVPKTINFO = 49
IPV6_PKTINFO = 50
IDLE_TIMEOUT = 300
CHUNK = 65536


def fmt(addr):
    host, port = addr[0], addr[1]
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def tcp_listener(bind, port):
    if bind:
        family = socket.AF_INET6 if ":" in bind else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
    else:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # dual stack
        bind = "::"
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((bind, port))
    sock.listen(128)
    return sock


def read_first_line(conn, limit=256):
    data = b""
    while b"\n" not in data and len(data) < limit:
        chunk = conn.recv(limit - len(data))
        if not chunk:
            break
        data += chunk
    return data


def serve_tcp_conn(conn, name):
    with conn:
        conn.settimeout(IDLE_TIMEOUT)
        local, peer = fmt(conn.getsockname()), fmt(conn.getpeername())
        hello = f"wh-lab tcp name={name} local={local} peer={peer}\n"
        conn.sendall(hello.encode())
        first = read_first_line(conn)
        # the first recv may already hold data behind the command line
        command, _, rest = first.partition(b"\n")
        if command.startswith(b"SOURCE "):
            send_bytes(conn, int(command.split()[1]))
        elif command == b"SINK":
            total = len(rest)
            while True:
                chunk = conn.recv(CHUNK)
                if not chunk:
                    break
                total += len(chunk)
            conn.sendall(f"RECEIVED {total}\n".encode())
        else:
            data = first
            while data:
                conn.sendall(data)
                data = conn.recv(CHUNK)


def send_bytes(conn, total):
    block = bytes(range(256)) * (CHUNK // 256)
    while total > 0:
        n = min(total, len(block))
        conn.sendall(block[:n])
        total -= n
    conn.shutdown(socket.SHUT_WR)


def run_tcp(args):
    sock = tcp_listener(args.bind, args.port)
    ready()
    while True:
        conn, _ = sock.accept()
        threading.Thread(target=guarded, args=(serve_tcp_conn, conn, args.name),
                         daemon=True).start()


def guarded(fn, *args):
    try:
        fn(*args)
    except OSError:
        pass  # resets and timeouts are what the tests provoke


def udp_sockets(bind, port):
    if bind:
        families = [(socket.AF_INET6 if ":" in bind else socket.AF_INET, bind)]
    else:
        families = [(socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")]
    socks = []
    for family, addr in families:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        sock.bind((addr, port))
        socks.append(sock)
    return socks


def reached_address(sock, ancdata):
    """The destination address of the received datagram, from its pktinfo."""
    for level, kind, data in ancdata:
        if sock.family == socket.AF_INET and level == socket.IPPROTO_IP and kind == IP_PKTINFO:
            return socket.inet_ntop(socket.AF_INET, data[8:12])  # ipi_addr
        if sock.family == socket.AF_INET6 and level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO:
            return socket.inet_ntop(socket.AF_INET6, data[:16])
    return sock.getsockname()[0]


def pktinfo_cmsg(sock, local):
    """Ancillary data that makes the reply leave from `local` (ifindex 0: routing decides)."""
    if sock.family == socket.AF_INET:
        data = struct.pack("=i4s4s", 0, socket.inet_aton(local), bytes(4))
        return [(socket.IPPROTO_IP, IP_PKTINFO, data)]
    data = struct.pack("=16si", socket.inet_pton(socket.AF_INET6, local), 0)
    return [(socket.IPPROTO_IPV6, IPV6_PKTINFO, data)]


def answer_udp(sock, args):
    data, ancdata, _flags, peer = sock.recvmsg(2048, socket.CMSG_SPACE(64))
    local = reached_address(sock, ancdata)
    port = sock.getsockname()[1]
    mode = "naive" if args.naive else "pktinfo"
    reply = f"wh-lab udp name={args.name} mode={mode} local={fmt((local, port))} peer={fmt(peer)}\n"
    try:
        if args.naive:
            sock.sendto(reply.encode(), peer)
        else:
            sock.sendmsg([reply.encode()], pktinfo_cmsg(sock, local), 0, peer)
    except OSError:
        pass  # e.g. no route: the client simply sees no answer


def run_udp(args):
    socks = udp_sockets(args.bind, args.port)
    ready()
    while True:
        readable, _, _ = select.select(socks, [], [])
        for sock in readable:
            answer_udp(sock, args)


def ready():
    sys.stdout.write("READY\n")
    sys.stdout.flush()


def exit_when_stdin_closes():
    try:
        while os.read(0, 4096):
            pass
    finally:
        os._exit(0)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("proto", choices=["tcp", "udp"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bind", default="")
    parser.add_argument("--name", default="server")
    parser.add_argument("--naive", action="store_true")
    args = parser.parse_args()
    threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
    try:
        (run_tcp if args.proto == "tcp" else run_udp)(args)
    except OSError as exc:
        sys.stderr.write(f"agent: {exc}\n")
        sys.exit(1)


if __name__ == "__main__":
    main()
