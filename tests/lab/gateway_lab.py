"""GatewayLab: publish services of a host behind NAT through a VPS.

    client ---- isp ---- wan0 [gateway]  (VPS, 203.0.113.10, WireGuard server)
                 |            ||
                 |            || tunnel 10.99.0.1 <-> 10.99.0.2 (fd00:99::1/::2)
                 |            ||
                 `---- wan0 [natbox] lan0 ---- wan0 [backend]  (10.77.0.10)

The backend starts the tunnel to the gateway's public endpoint through the
natbox's masquerade (like a host behind CGNAT). Its peer for the gateway has
allowed-ips 0.0.0.0/0, ::/0 but NO routes are added for them: only the tunnel
subnet is on-link, so replies go back through the tunnel only if something
(the product) routes them there.
"""

from . import firewall, wireguard
from .base import Lab, Link


class GatewayLab(Lab):
    KIND = "gateway"
    HOSTS = ("client", "isp", "gateway", "natbox", "backend")
    FORWARDING_HOSTS = ("isp", "gateway", "natbox")
    FW4_HOST = "gateway"

    client4, client6 = "198.51.100.10", "2001:db8:100::10"
    isp_client4, isp_client6 = "198.51.100.1", "2001:db8:100::1"
    gateway4, gateway6 = "203.0.113.10", "2001:db8:113::10"
    gateway_gw4, gateway_gw6 = "203.0.113.1", "2001:db8:113::1"
    natbox_wan4, natbox_wan6 = "192.0.2.34", "2001:db8:32::2"
    natbox_gw4, natbox_gw6 = "192.0.2.33", "2001:db8:32::1"
    natbox_lan4 = "10.77.0.1"
    backend4 = "10.77.0.10"
    tun_gateway4, tun_gateway6 = "10.99.0.1", "fd00:99::1"
    tun_backend4, tun_backend6 = "10.99.0.2", "fd00:99::2"
    wg_port = 51820

    def __init__(self, gateway_mtu=1420, backend_mtu=1420, keep_tmp=False):
        self.gateway_mtu, self.backend_mtu = gateway_mtu, backend_mtu
        super().__init__(keep_tmp=keep_tmp)

    @property
    def wg_gateway(self):
        return self.wg["gateway"].name

    @property
    def wg_backend(self):
        return self.wg["backend"].name

    @property
    def gateway_root(self):
        return self.roots["gateway"]

    @property
    def backend_root(self):
        return self.roots["backend"]

    def _plan(self):
        self.links = [Link("isp", "to-client", "client", "eth0"),
                      Link("isp", "to-gateway", "gateway", "wan0"),
                      Link("isp", "to-natbox", "natbox", "wan0"),
                      Link("natbox", "lan0", "backend", "wan0")]
        a = self.addrs
        a[("client", "eth0")] = [f"{self.client4}/24", f"{self.client6}/64"]
        a[("isp", "to-client")] = [f"{self.isp_client4}/24", f"{self.isp_client6}/64"]
        a[("isp", "to-gateway")] = [f"{self.gateway_gw4}/28", f"{self.gateway_gw6}/64"]
        a[("gateway", "wan0")] = [f"{self.gateway4}/28", f"{self.gateway6}/64"]
        a[("isp", "to-natbox")] = [f"{self.natbox_gw4}/28", f"{self.natbox_gw6}/64"]
        a[("natbox", "wan0")] = [f"{self.natbox_wan4}/28", f"{self.natbox_wan6}/64"]
        a[("natbox", "lan0")] = [f"{self.natbox_lan4}/24"]
        a[("backend", "wan0")] = [f"{self.backend4}/24"]
        self.aliases.update({("gateway", "wan"): "wan0", ("backend", "wan"): "wan0",
                             ("natbox", "wan"): "wan0", ("natbox", "lan"): "lan0",
                             ("client", "wan"): "eth0"})
        self.routes = {
            "client": [f"route add default via {self.isp_client4}",
                       f"route add ::/0 via {self.isp_client6}"],
            "gateway": [f"route add default via {self.gateway_gw4}",
                        f"route add ::/0 via {self.gateway_gw6}"],
            "natbox": [f"route add default via {self.natbox_gw4}",
                       f"route add ::/0 via {self.natbox_gw6}"],
            "backend": [f"route add default via {self.natbox_lan4}"],
        }
        self._new_wg("gateway", "g", [f"{self.tun_gateway4}/24", f"{self.tun_gateway6}/64"],
                     listen_port=self.wg_port, mtu=self.gateway_mtu)
        self._new_wg("backend", "b", [f"{self.tun_backend4}/24", f"{self.tun_backend6}/64"],
                     mtu=self.backend_mtu)
        for host in ("gateway", "backend"):
            self.roots[host] = self.tmp / f"{host}-root"
        self.uplink_info["gateway"] = {"wan": {"device": "wan0", "gateway": self.gateway_gw4,
                                               "gateway6": self.gateway_gw6}}
        # for the backend the tunnel is the uplink that clients arrive by
        self.uplink_info["backend"] = {"wan": {"device": "wan0", "gateway": self.natbox_lan4},
                                       "vpn": {"device": self.wg_backend}}
        self.fw["gateway"] = self._gateway_fw4()
        self.fw["backend"] = self._backend_fw4()

    def _gateway_fw4(self):
        """A plain VPS: WAN closed except its WireGuard port; tunnel zone trusted."""
        return firewall.Fw4(zones=[
            firewall.Zone("wan", ["wan0"], ["203.0.113.0/28", "2001:db8:113::/64"]),
            firewall.Zone("vpn", [self.wg_gateway], ["10.99.0.0/24", "fd00:99::/64"],
                          input="accept"),
        ], rules=[*firewall.openwrt_default_rules("wan"),
                  firewall.Rule("Allow-WireGuard", src="wan", proto="udp",
                                dest_port=str(self.wg_port))])

    def _backend_fw4(self):
        return firewall.Fw4(zones=[
            firewall.Zone("wan", ["wan0"], ["10.77.0.0/24"]),
            firewall.Zone("vpn", [self.wg_backend], ["10.99.0.0/24", "fd00:99::/64"]),
        ], rules=firewall.openwrt_default_rules("wan"))

    def _configure(self):
        self._antispoof("isp")
        self._load_nft("natbox", "table inet labnat {\n chain postrouting {\n"
                       "  type nat hook postrouting priority srcnat; policy accept;\n"
                       '  oifname "wan0" meta nfproto ipv4 masquerade\n }\n}\n')
        for host in ("gateway", "backend"):
            self.fw4_reload(host=host)
        gateway, backend = self.wg["gateway"], self.wg["backend"]
        self._start_wireguard("gateway")
        self._start_wireguard("backend")
        wireguard.add_peer(gateway, wireguard.Peer(
            backend.public_key, [f"{self.tun_backend4}/32", f"{self.tun_backend6}/128"]))
        # allowed-ips everything, routes nothing: replies are the product's job
        wireguard.add_peer(backend, wireguard.Peer(
            gateway.public_key, ["0.0.0.0/0", "::/0"],
            endpoint=f"{self.gateway4}:{self.wg_port}", keepalive=25))
        wireguard.wait_handshake(backend, gateway.public_key, kick=lambda: self.run(
            "backend", ["ping", "-c1", "-W1", self.tun_gateway4], check=False))

    def handshake_endpoint(self):
        """The backend's endpoint as the gateway sees it ("192.0.2.34:port": NATed)."""
        out = self.run("gateway", ["wg", "show", self.wg_gateway, "endpoints"]).stdout
        return out.split("\t")[1].strip() if "\t" in out else None

    def _describe_extra(self):
        return [f"  tunnel: gateway {self.tun_gateway4}/{self.tun_gateway6} (mtu "
                f"{self.gateway_mtu}) <-> backend {self.tun_backend4}/{self.tun_backend6} "
                f"(mtu {self.backend_mtu}), backend dials {self.gateway4}:{self.wg_port} "
                f"through natbox NAT {self.natbox_wan4}"]
