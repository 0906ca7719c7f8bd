"""Servers inside namespaces: agent.py processes started by the lab."""

import select
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from . import netns

AGENT = Path(__file__).with_name("agent.py")


@dataclass
class Server:
    host: str
    proto: str            # "tcp" | "udp"
    port: int
    bind: str             # "" = every address, both families
    naive: bool
    proc: subprocess.Popen
    log: Path

    def stop(self):
        netns.stop_process(self.proc)

    @property
    def running(self):
        return self.proc.poll() is None


def start_server(popen, ns, host, proto, port, bind="", naive=False, name=None, log=None):
    """Start an agent server and wait until it listens.

    `popen` is the lab's tracked Popen; the agent's stdin stays a pipe to us,
    and the agent exits when it closes (so it dies with the lab process).
    """
    argv = [sys.executable, str(AGENT), proto, "--port", str(port), "--name", name or host]
    if bind:
        argv += ["--bind", bind]
    if naive:
        argv.append("--naive")
    with open(log, "ab") as errlog:
        proc = popen(netns.ns_exec(ns, argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                     stderr=errlog)
    server = Server(host, proto, port, bind, naive, proc, Path(log))
    _wait_ready(server, argv)
    return server


def _wait_ready(server, argv, timeout=5.0):
    ready, _, _ = select.select([server.proc.stdout], [], [], timeout)
    line = server.proc.stdout.readline() if ready else b""
    if line.strip() != b"READY":
        server.stop()
        log = server.log.read_text(errors="replace").strip()[-2000:]
        raise netns.LabError(f"{server.proto} server on {server.host} port {server.port} did not "
                             f"start: {' '.join(argv)}\n{log or '(no output)'}")
