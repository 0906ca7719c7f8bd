"""A scratch router for the browser tests: a namespace, a WORMHOLE_ROOT, the LuCI host.

Everything that applies (the plugin's add/update/del) runs inside the scratch namespace;
the HTTP host itself listens on the host's 127.0.0.1 so the browser can reach it.
"""

import os
import subprocess
import sys
import uuid

from tests import support
from tests.luci_host import server

KILLSWITCH_ROUTE = "198.51.100.0/24"   # covers facts.PROBE4: public traffic "leaves by wg0"
PEER_ADDR = "192.0.2.1"                # the uplink's gateway, played by a peer namespace
ROUTER_ADDR = "192.0.2.2"


class Lab:
    def __init__(self, tmp_path, config=support.UPLINK_WAN):
        self.root = tmp_path / "root"
        support.write_config(self.root, config)
        self.peer = None
        self.procs = []
        self.has_wg0 = False
        self.ns = support.ScratchNetns()
        try:
            self.host = server.Host(self.root, ns=self.ns)
            self.host.start()
        except BaseException:
            self.ns.close()
            raise

    # -- the backend, as another admin or the CLI would use it -----------------------------

    def plugin(self, method, request=None):
        reply, _p = support.plugin(self.root, method, request, ns=self.ns)
        return reply

    def add(self, **opts):
        reply = self.plugin("add", opts)
        assert "id" in reply, reply
        return reply["id"]

    def config(self):
        return support.read_config(self.root).decode()

    # -- kernel state ------------------------------------------------------------------

    def killswitch(self, on):
        """A VPN-like tunnel device `wg0` that does (or not) carry traffic to the internet."""
        if not self.has_wg0:
            self.ns.exec(["ip", "link", "add", "wg0", "type", "veth", "peer", "name", "wg0p"])
            self.ns.exec(["ip", "link", "set", "wg0p", "up"])
            self.ns.exec(["ip", "link", "set", "wg0", "up"])
            self.has_wg0 = True
        self.ns.exec(["ip", "route", "replace" if on else "del", KILLSWITCH_ROUTE, "dev", "wg0"], check=on)

    def lan(self):
        """A LAN side (lan0, 192.168.1.1/24) so forwards to 192.168.1.x are routable."""
        self.ns.exec(["ip", "link", "add", "lan0", "type", "veth", "peer", "name", "lan0p"])
        self.ns.exec(["ip", "link", "set", "lan0p", "up"])
        self.ns.exec(["ip", "addr", "add", "192.168.1.1/24", "dev", "lan0"])
        self.ns.exec(["ip", "link", "set", "lan0", "up"])

    def tunnel(self):
        """A point-to-point tunnel device (tun0, 10.9.0.1/24), as wireguard-go makes one."""
        self.ns.exec(["ip", "tuntap", "add", "dev", "tun0", "mode", "tun"])
        self.ns.exec(["ip", "addr", "add", "10.9.0.1/24", "dev", "tun0"])
        self.ns.exec(["ip", "link", "set", "tun0", "up"])

    def uplink(self, name, device):
        """Declare another uplink (as `config uplink` does where netifd is absent)."""
        with open(self.root / "etc" / "config" / "wormhole", "a") as f:
            f.write("\nconfig uplink '%s'\n\toption device '%s'\n" % (name, device))

    def internet(self):
        """Move the far end of the uplink into a peer namespace that plays the gateway."""
        if self.peer is None:
            self.peer = "whpeer-" + uuid.uuid4().hex[:8]
            support.run(["ip", "netns", "add", self.peer])
            self.ns.exec(["ip", "link", "set", "wan0p", "netns", self.peer])
            for argv in (["ip", "link", "set", "lo", "up"], ["ip", "addr", "add", PEER_ADDR + "/28", "dev", "wan0p"],
                         ["ip", "link", "set", "wan0p", "up"]):
                support.run(["ip", "netns", "exec", self.peer] + argv)
        return self.peer

    def connect_from_internet(self, port, times=1):
        """TCP connection attempts from the internet side to the router's uplink address."""
        peer = self.internet()
        code = ("import socket\n"
                "for _ in range(%d):\n"
                "    s = socket.socket(); s.settimeout(2)\n"
                "    s.connect_ex((%r, %d)); s.close()\n") % (times, ROUTER_ADDR, port)
        support.run(["ip", "netns", "exec", peer, sys.executable, "-c", code])

    def listen(self, port):
        """A TCP service on the router (inside the namespace) until the lab closes."""
        code = ("import socket, time\n"
                "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                "s.bind(('0.0.0.0', %d)); s.listen(); print('ready', flush=True); time.sleep(300)\n") % port
        p = subprocess.Popen(["ip", "netns", "exec", self.ns.name, sys.executable, "-c", code],
                             stdout=subprocess.PIPE, text=True)
        self.procs.append(p)
        assert p.stdout.readline().strip() == "ready"

    def break_apply(self):
        """Make the next apply fail the way a full or read-only overlay would: the include can't be written."""
        d = os.path.join(str(self.root), "usr", "share", "nftables.d")
        os.makedirs(d, exist_ok=True)
        open(os.path.join(d, "ruleset-post"), "w").close()

    def close(self):
        self.host.stop()
        for p in self.procs:
            p.kill()
            p.wait()
        if self.peer:
            support.run(["ip", "netns", "del", self.peer], check=False)
        self.ns.close()
