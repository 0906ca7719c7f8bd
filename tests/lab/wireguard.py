"""WireGuard tunnels with wireguard-go (there is no kernel module here).

wireguard-go must run in the foreground (-f): its daemon mode dies. Its UAPI
socket directory /var/run/wireguard is shared by all namespaces, so interface
names must be unique machine-wide (the lab puts its id in them).
"""

import os
import subprocess
import time
from dataclasses import dataclass, field

from . import netns
from .state import WG_SOCKET_DIR

# wireguard-go prints a banner (and old versions refuse to run) when it thinks
# the kernel has WireGuard; we use it on purpose.
WG_ENV = {"LOG_LEVEL": "error", "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1"}


def genkey():
    """(private, public) key pair, base64 text."""
    private = netns.run(["wg", "genkey"]).stdout.strip()
    public = netns.run(["wg", "pubkey"], input=private + "\n").stdout.strip()
    return private, public


@dataclass
class Peer:
    public_key: str
    allowed_ips: list
    endpoint: str = None          # "203.0.113.2:51820"; None = learn it from the peer
    keepalive: int = None         # seconds


@dataclass
class WgInterface:
    host: str                     # lab host name
    ns: str
    name: str                     # globally unique device name
    private_key: str
    public_key: str
    listen_port: int = None
    addresses: list = field(default_factory=list)   # "10.64.0.2/24", "fd00:64::2/64"
    mtu: int = 1420
    proc: subprocess.Popen = None

    @property
    def socket(self):
        return WG_SOCKET_DIR / f"{self.name}.sock"


def start(iface, keyfile, log_path, popen):
    """Start wireguard-go for iface, set addresses/MTU/key, bring it up.

    `popen(argv, **kw)` is the lab's tracked Popen, so teardown kills it.
    """
    log = open(log_path, "ab")
    try:
        iface.proc = popen(netns.ns_exec(iface.ns, ["wireguard-go", "-f", iface.name]),
                           stdout=log, stderr=subprocess.STDOUT, env=WG_ENV)
    finally:
        log.close()
    netns.wait_for(lambda: _ready(iface), timeout=5, what=f"wireguard-go {iface.name} socket")
    cmds = [f"link set dev {iface.name} mtu {iface.mtu}"]
    cmds += [f"addr add {a} dev {iface.name}" + (" nodad" if ":" in a else "")
             for a in iface.addresses]
    cmds.append(f"link set dev {iface.name} up")
    netns.ip_batch(iface.ns, cmds)
    argv = ["wg", "set", iface.name, "private-key", str(keyfile)]
    if iface.listen_port:
        argv += ["listen-port", str(iface.listen_port)]
    netns.run(netns.ns_exec(iface.ns, argv))


def _ready(iface):
    if iface.proc.poll() is not None:
        raise netns.LabError(f"wireguard-go {iface.name} in {iface.ns} exited "
                             f"with {iface.proc.returncode}; see its log in the lab tmp dir")
    return iface.socket.exists()


def add_peer(iface, peer):
    argv = ["wg", "set", iface.name, "peer", peer.public_key,
            "allowed-ips", ",".join(peer.allowed_ips)]
    if peer.endpoint:
        argv += ["endpoint", peer.endpoint]
    if peer.keepalive:
        argv += ["persistent-keepalive", str(peer.keepalive)]
    netns.run(netns.ns_exec(iface.ns, argv))


def latest_handshakes(iface):
    """{peer public key: unix time of last handshake (0 = never)}."""
    out = netns.run(netns.ns_exec(iface.ns, ["wg", "show", iface.name, "latest-handshakes"]),
                    timeout=5).stdout
    result = {}
    for line in out.splitlines():
        key, _, ts = line.partition("\t")
        result[key] = int(ts or 0)
    return result


def wait_handshake(iface, peer_key, timeout=10.0, kick=None):
    """Poll until iface has completed a handshake with peer_key.

    kick() is called about once a second to provoke a handshake (a keepalive
    normally starts one at once; the kick covers a lost first packet).
    """
    deadline = time.monotonic() + timeout
    next_kick = time.monotonic() + 1.0
    while latest_handshakes(iface).get(peer_key, 0) == 0:
        now = time.monotonic()
        if now >= deadline:
            raise netns.LabError(f"no WireGuard handshake on {iface.name} ({iface.host}) "
                                 f"within {timeout}s")
        if kick and now >= next_kick:
            kick()
            next_kick = now + 1.0
        time.sleep(0.02)


def write_key(path, private_key):
    """Private key file readable by root only (wg refuses nothing, but be tidy)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(private_key + "\n")
