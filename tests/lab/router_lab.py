"""RouterLab: an OpenWrt-like router whose default route goes through a VPN.

    client ---- isp ---- wan0 [router] lan0 ---- lan
   (internet)    |  `--- wan1 (optional)  `=== wg tunnel ===.
                 `---------------- vpn (provider) <---------'

The router reaches the provider endpoint 203.0.113.2 over wan0 and runs a
WireGuard tunnel to it; the provider masquerades tunnel traffic, so anything
the router or LAN sends through the tunnel reaches the client from
203.0.113.2 / 2001:db8:203::2, and anything sent via the WAN from 192.0.2.2 /
2001:db8:2::2 (IPv4 LAN traffic is masqueraded; IPv6 LAN addresses are routed
by the isp and appear as themselves).
"""

from . import firewall, netns, wireguard
from .base import Lab, Link

KILLSWITCH_ROUTES = {
    # tunnel default route preferred over the WAN default (metric 10)
    "metric": ["default dev {wg} metric 1", "::/0 dev {wg} metric 1"],
    # the two halves beat the default routes by prefix length (wg-quick style)
    "split": ["0.0.0.0/1 dev {wg}", "128.0.0.0/1 dev {wg}",
              "::/1 dev {wg}", "8000::/1 dev {wg}"],
    "off": [],
}


class RouterLab(Lab):
    KIND = "router"
    HOSTS = ("client", "isp", "router", "lan", "vpn")
    FORWARDING_HOSTS = ("isp", "router", "vpn")
    FW4_HOST = "router"

    client4, client6 = "198.51.100.10", "2001:db8:100::10"
    isp_client4, isp_client6 = "198.51.100.1", "2001:db8:100::1"
    wan4, wan6 = "192.0.2.2", "2001:db8:2::2"
    wan_gw4, wan_gw6 = "192.0.2.1", "2001:db8:2::1"
    wan1_4, wan1_6 = "192.0.2.18", "2001:db8:3::2"
    wan1_gw4, wan1_gw6 = "192.0.2.17", "2001:db8:3::1"
    router_lan4, router_lan6 = "192.168.1.1", "2001:db8:1::1"
    lan4, lan6 = "192.168.1.10", "2001:db8:1::10"
    provider4, provider6 = "203.0.113.2", "2001:db8:203::2"
    provider_gw4, provider_gw6 = "203.0.113.1", "2001:db8:203::1"
    tun_provider4, tun_provider6 = "10.64.0.1", "fd00:64::1"
    tun_router4, tun_router6 = "10.64.0.2", "fd00:64::2"
    provider_port = 51820          # the provider's WireGuard listener
    router_wg_port = 51999         # the router's own tunnel socket
    wan_dev, wan1_dev, lan_dev = "wan0", "wan1", "lan0"
    WAN_METRIC, WAN1_METRIC = 10, 20

    def __init__(self, killswitch="metric", wan1=False, rp_filter=2, mtu_fix=True,
                 keep_tmp=False):
        if killswitch not in KILLSWITCH_ROUTES:
            raise ValueError(f"killswitch must be one of {sorted(KILLSWITCH_ROUTES)}")
        self.has_wan1 = wan1
        self.rp_filter = rp_filter
        self.mtu_fix = mtu_fix
        self.killswitch_mode = "off"
        self._initial_killswitch = killswitch
        super().__init__(keep_tmp=keep_tmp)

    # --- plan -----------------------------------------------------------------------

    @property
    def wg_router(self):
        return self.wg["router"].name

    @property
    def wg_provider(self):
        return self.wg["vpn"].name

    @property
    def root(self):
        """The router's product root (WORMHOLE_ROOT); fw4 includes are read from here."""
        return self.roots["router"]

    @property
    def wan_devs(self):
        return [self.wan_dev, self.wan1_dev] if self.has_wan1 else [self.wan_dev]

    def _plan(self):
        self.links = [Link("isp", "to-client", "client", "eth0"),
                      Link("isp", "to-wan0", "router", "wan0"),
                      Link("router", "lan0", "lan", "eth0"),
                      Link("isp", "to-vpn", "vpn", "eth0")]
        a = self.addrs
        a[("client", "eth0")] = [f"{self.client4}/24", f"{self.client6}/64"]
        a[("isp", "to-client")] = [f"{self.isp_client4}/24", f"{self.isp_client6}/64"]
        a[("isp", "to-wan0")] = [f"{self.wan_gw4}/28", f"{self.wan_gw6}/64"]
        a[("router", "wan0")] = [f"{self.wan4}/28", f"{self.wan6}/64"]
        a[("router", "lan0")] = [f"{self.router_lan4}/24", f"{self.router_lan6}/64"]
        a[("lan", "eth0")] = [f"{self.lan4}/24", f"{self.lan6}/64"]
        a[("isp", "to-vpn")] = [f"{self.provider_gw4}/28", f"{self.provider_gw6}/64"]
        a[("vpn", "eth0")] = [f"{self.provider4}/28", f"{self.provider6}/64"]
        if self.has_wan1:
            self.links.append(Link("isp", "to-wan1", "router", "wan1"))
            a[("isp", "to-wan1")] = [f"{self.wan1_gw4}/28", f"{self.wan1_gw6}/64"]
            a[("router", "wan1")] = [f"{self.wan1_4}/28", f"{self.wan1_6}/64"]
        self.aliases.update({("router", "wan"): "wan0", ("router", "lan"): "lan0",
                             ("lan", "lan"): "eth0", ("client", "wan"): "eth0",
                             ("vpn", "wan"): "eth0"})
        self.routes = self._routes()
        self.uplink_info["router"] = {"wan": {"device": "wan0", "gateway": self.wan_gw4,
                                              "gateway6": self.wan_gw6}}
        if self.has_wan1:
            self.uplink_info["router"]["wan1"] = {"device": "wan1", "gateway": self.wan1_gw4,
                                                  "gateway6": self.wan1_gw6}
        self._new_wg("router", "r", [f"{self.tun_router4}/24", f"{self.tun_router6}/64"],
                     listen_port=self.router_wg_port)
        self._new_wg("vpn", "p", [f"{self.tun_provider4}/24", f"{self.tun_provider6}/64"],
                     listen_port=self.provider_port)
        self.roots["router"] = self.tmp / "router-root"
        self.fw["router"] = self._default_fw4()

    def _routes(self):
        router = [f"route add default via {self.wan_gw4} dev wan0 metric {self.WAN_METRIC}",
                  f"route add ::/0 via {self.wan_gw6} dev wan0 metric {self.WAN_METRIC}",
                  # the tunnel endpoint always goes out the WAN, whatever the kill-switch
                  f"route add {self.provider4}/32 via {self.wan_gw4} dev wan0",
                  f"route add {self.provider6}/128 via {self.wan_gw6} dev wan0"]
        if self.has_wan1:
            router += [f"route add default via {self.wan1_gw4} dev wan1 metric {self.WAN1_METRIC}",
                       f"route add ::/0 via {self.wan1_gw6} dev wan1 metric {self.WAN1_METRIC}"]
        return {
            "client": [f"route add default via {self.isp_client4}",
                       f"route add ::/0 via {self.isp_client6}"],
            "isp": [f"route add 2001:db8:1::/64 via {self.wan6}"],
            "router": router,
            "lan": [f"route add default via {self.router_lan4}",
                    f"route add ::/0 via {self.router_lan6}"],
            "vpn": [f"route add default via {self.provider_gw4}",
                    f"route add ::/0 via {self.provider_gw6}"],
        }

    def _default_fw4(self):
        """OpenWrt's default zones plus a VPN zone; lan may only forward to vpn."""
        return firewall.Fw4(zones=[
            firewall.Zone("lan", ["lan0"], ["192.168.1.0/24", "2001:db8:1::/64"],
                          input="accept", output="accept", forward="accept"),
            firewall.Zone("wan", self.wan_devs, ["192.0.2.0/28", "2001:db8:2::/64"]
                          + (["192.0.2.16/28", "2001:db8:3::/64"] if self.has_wan1 else []),
                          masq=True, mtu_fix=self.mtu_fix),
            firewall.Zone("vpn", [self.wg_router], ["10.64.0.0/24", "fd00:64::/64"],
                          masq=True, masq6=True),
        ], forwardings=[("lan", "vpn")], rules=firewall.openwrt_default_rules("wan"))

    # --- wiring ---------------------------------------------------------------------

    def _configure(self):
        self._antispoof("isp")
        netns.write_sysctls(self.ns["router"], {
            f"net.ipv4.conf.{dev}.rp_filter": self.rp_filter for dev in self.wan_devs})
        # The provider NATs its customers to its public address.
        self._load_nft("vpn", "table inet labnat {\n chain postrouting {\n"
                       "  type nat hook postrouting priority srcnat; policy accept;\n"
                       '  oifname "eth0" ip saddr 10.64.0.0/24 masquerade\n'
                       '  oifname "eth0" ip6 saddr fd00:64::/64 masquerade\n }\n}\n')
        self._start_tunnel()
        self.fw4_reload()
        self.killswitch(self._initial_killswitch)

    def _start_tunnel(self):
        router, vpn = self.wg["router"], self.wg["vpn"]
        self._start_wireguard("router")
        self._start_wireguard("vpn")
        wireguard.add_peer(vpn, wireguard.Peer(
            router.public_key, [f"{self.tun_router4}/32", f"{self.tun_router6}/128"]))
        wireguard.add_peer(router, wireguard.Peer(
            vpn.public_key, ["0.0.0.0/0", "::/0"],
            endpoint=f"{self.provider4}:{self.provider_port}", keepalive=25))
        wireguard.wait_handshake(router, vpn.public_key, kick=lambda: self.run(
            "router", ["ping", "-c1", "-W1", self.tun_provider4], check=False))

    def killswitch(self, mode):
        """"metric": tunnel default route with a lower metric than the WAN's;
        "split": 0/1 + 128/1 (and ::/1 + 8000::/1) via the tunnel;
        "off": no tunnel routes. The firewall never lets LAN traffic out the WAN."""
        if mode not in KILLSWITCH_ROUTES:
            raise ValueError(f"killswitch mode must be one of {sorted(KILLSWITCH_ROUTES)}")
        wg = self.wg_router
        lines = [f"route del {r.format(wg=wg)}" for r in KILLSWITCH_ROUTES[self.killswitch_mode]]
        lines += [f"route add {r.format(wg=wg)}" for r in KILLSWITCH_ROUTES[mode]]
        netns.ip_batch(self.ns["router"], lines)
        self.killswitch_mode = mode

    def _describe_extra(self):
        lines = [f"  tunnel: router {self.tun_router4}/{self.tun_router6} <-> provider "
                 f"{self.tun_provider4}/{self.tun_provider6}, endpoint "
                 f"{self.provider4}:{self.provider_port} (provider NATs to {self.provider4} / "
                 f"{self.provider6})",
                 f"  kill-switch: {self.killswitch_mode}", "  router routes:"]
        for fam in ("-4", "-6"):
            out = netns.run(["ip", "-n", self.ns["router"], fam, "route", "show"], check=False)
            lines += [f"    {line}" for line in out.stdout.splitlines()]
        return lines
