"""OpenVPN as the router's kill-switch VPN: a tiny PKI, a server in the provider
namespace, the client on the router, and OpenVpnRouterLab (RouterLab with the
WireGuard tunnel replaced by OpenVPN).

Debian's openvpn 2.6 deprecates static-key mode (`--secret`: a warning in 2.6, gone in
2.7) and a static-key peer cannot be pushed routes, so the lab uses TLS with a CA, a
server and a client certificate made with `openssl` at test time (EC P-256, `dh none`:
ECDHE). The server pushes `redirect-gateway def1 ipv6`: the client installs 0/1 + 128/1
(and ::/3, 2000::/4, 3000::/4, fc00::/7) into the tunnel and a /32 to the server via the
WAN gateway, as on a router running the OpenWrt openvpn package with a provider's .ovpn.
DCO is off (`disable-dco`): no ovpn-dco module here; the tun path is the same one
OpenWrt uses without kmod-ovpn-dco.
"""

import shutil

from . import netns
from .router_lab import RouterLab

PORT = 1194
CLIENT_CN = "router"


def unavailable_reason():
    missing = [t for t in ("openvpn", "openssl") if not shutil.which(t)]
    return f"the OpenVPN lab needs: {', '.join(missing)}" if missing else None


def make_pki(d):
    """CA, server and client key + certificate in directory d (openssl, EC P-256)."""
    d.mkdir(parents=True, exist_ok=True)

    def ssl(*args):
        netns.run(["openssl", *args], timeout=30)

    ssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", d / "ca.key", "-out", d / "ca.crt", "-days", "2", "-subj", "/CN=wh-lab-ca",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for name, eku in (("server", "serverAuth"), (CLIENT_CN, "clientAuth")):
        ext = d / f"{name}.ext"
        ext.write_text(f"basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                       f"extendedKeyUsage={eku}\n")
        ssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", d / f"{name}.key", "-out", d / f"{name}.csr", "-subj", f"/CN={name}")
        ssl("x509", "-req", "-in", d / f"{name}.csr", "-CA", d / "ca.crt", "-CAkey", d / "ca.key",
            "-CAcreateserial", "-out", d / f"{name}.crt", "-days", "2", "-extfile", ext)
    return d


def server_config(pki, dev, local, tun4, tun6, client4, client6):
    """A provider's server: subnet topology, the router's addresses pinned by its CN, and
    `redirect-gateway def1 ipv6` pushed."""
    ccd = pki / "ccd"
    ccd.mkdir(exist_ok=True)
    (ccd / CLIENT_CN).write_text(f"ifconfig-push {client4} 255.255.255.0\n"
                                 f"ifconfig-ipv6-push {client6}/64 {tun6}\n")
    net4 = tun4.rsplit(".", 1)[0] + ".0"
    return "\n".join([
        f"server {net4} 255.255.255.0", f"server-ipv6 {tun6.rsplit(':', 2)[0]}::/64",
        f"dev {dev}", "dev-type tun", "proto udp", f"local {local}", f"port {PORT}", "topology subnet",
        "push \"redirect-gateway def1 ipv6\"", f"client-config-dir {ccd}", "ccd-exclusive",
        f"ca {pki / 'ca.crt'}", f"cert {pki / 'server.crt'}", f"key {pki / 'server.key'}", "dh none",
        "keepalive 1 5", "disable-dco", "verb 3", ""])


def client_config(pki, dev, remote):
    return "\n".join([
        "client", f"dev {dev}", "dev-type tun", "proto udp", f"remote {remote} {PORT}", "nobind",
        "remote-cert-tls server", f"ca {pki / 'ca.crt'}", f"cert {pki / (CLIENT_CN + '.crt')}",
        f"key {pki / (CLIENT_CN + '.key')}", "keepalive 1 5", "connect-retry 1 1",
        "disable-dco", "verb 3", ""])


class OpenVpnRouterLab(RouterLab):
    """RouterLab whose VPN is OpenVPN over tun (`lab.wg_router` / `lab.dev("router", "wg")`
    name the client's tun device). The kill-switch is what the server pushes
    (`killswitch_mode == "openvpn"`); the router has no static route to the endpoint:
    OpenVPN adds it via the WAN gateway it found, as on OpenWrt."""

    KIND = "router-openvpn"
    provider_port = PORT

    def __init__(self, **kw):
        self.tun = {}
        self._ovpn = {}          # host -> (Popen, log path)
        self._ovpn_seen = {}     # host -> "Initialization Sequence Completed" lines seen
        super().__init__(killswitch="off", **kw)

    @property
    def wg_router(self):
        return self.tun["router"]

    @property
    def wg_provider(self):
        return self.tun["vpn"]

    def _new_wg(self, host, suffix, addresses, listen_port=None, mtu=1420):
        name = f"{self.ns[host][:8]}o"     # wh<id>o: unique, like the WireGuard names
        self.tun[host] = name
        self.addrs[(host, name)] = list(addresses)
        self.aliases[(host, "wg")] = name
        return name

    def _is_wg(self, host, dev):
        return self.tun.get(host) == dev    # OpenVPN configures its own tun devices

    def _routes(self):
        routes = super()._routes()
        routes["router"] = [r for r in routes["router"] if self.provider4 not in r]
        return routes

    def _start_tunnel(self):
        pki = make_pki(self.tmp / "pki")
        cfg = self.tmp / "openvpn-vpn.conf"
        cfg.write_text(server_config(pki, self.tun["vpn"], self.provider4, self.tun_provider4,
                                     self.tun_provider6, self.tun_router4, self.tun_router6))
        self._ovpn["vpn"] = self._openvpn("vpn", cfg)
        self.wait_link("vpn")
        cfg = self.tmp / "openvpn-router.conf"
        cfg.write_text(client_config(pki, self.tun["router"], self.provider4))
        self.vpn_up()
        self.killswitch_mode = "openvpn"

    def _openvpn(self, host, cfg):
        log = self.tmp / f"openvpn-{host}.log"
        with open(log, "ab") as f:
            proc = self.popen(host, ["openvpn", "--config", cfg], stdout=f, stderr=f)
        return proc, log

    def wait_link(self, host, timeout=15):
        """Until host's OpenVPN has finished connecting (its log says so, its routes exist)."""
        proc, log = self._ovpn[host]

        def done():
            if proc.poll() is not None:
                raise netns.LabError(f"openvpn on {host} exited ({proc.returncode}):\n"
                                     + log.read_text(errors="replace")[-3000:])
            return log.read_text(errors="replace").count("Initialization Sequence Completed") \
                > self._ovpn_seen.get(host, 0)
        netns.wait_for(done, timeout, interval=0.05, what=f"openvpn on {host} to connect")
        self._ovpn_seen[host] = log.read_text(errors="replace").count("Initialization Sequence Completed")

    def vpn_down(self):
        """Stop the router's OpenVPN client (it removes its tun device and pushed routes)."""
        proc, _ = self._ovpn.pop("router")
        netns.stop_process(proc, grace=5)
        netns.wait_for(lambda: not self._tun_exists(), 5, what="the router's tun device to go")

    def vpn_up(self):
        """Start the router's OpenVPN client and wait until it is connected."""
        self._ovpn["router"] = self._openvpn("router", self.tmp / "openvpn-router.conf")
        self.wait_link("router")

    def _tun_exists(self):
        return self.run("router", ["ip", "link", "show", "dev", self.tun["router"]], check=False).returncode == 0

    def killswitch(self, mode):
        if mode == "openvpn" or (mode == "off" and self.setup_seconds is None):
            return          # RouterLab's set-up asks for "off": the routes are OpenVPN's
        raise ValueError("the OpenVPN lab's kill-switch is the routes its server pushes")

    def _describe_extra(self):
        return [line.replace("tunnel:", "OpenVPN tunnel:") for line in super()._describe_extra()]
