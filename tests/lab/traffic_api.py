"""The traffic, probe and path helpers of a Lab (a mixin of base.Lab).

Everything takes a lab host name ("client", "router", ...) and works inside
that host's namespace.
"""

import json

from . import netns, observe, probes, services, traffic


class TrafficApi:
    # --- devices and paths ------------------------------------------------------

    def set_mtu(self, host, ifname, mtu):
        netns.run(["ip", "-n", self.ns[host], "link", "set", "dev", self.dev(host, ifname),
                   "mtu", str(int(mtu))])

    def mtu(self, host, ifname):
        return int(self._link(host, ifname)["mtu"])

    def _link(self, host, ifname):
        out = netns.run(["ip", "-n", self.ns[host], "-j", "link", "show", "dev",
                         self.dev(host, ifname)]).stdout
        return json.loads(out)[0]

    def drop_icmp_ptb(self, host):
        """Make ICMP frag-needed / packet-too-big vanish at host (returns a handle
        with .stop() / context manager / .dropped())."""
        return probes.PtbBlackhole(self.ns[host]).start()

    def flush_route_cache(self, host):
        """Forget learned path MTUs (IPv4 and IPv6) on host."""
        for fam in ("-4", "-6"):
            netns.run(["ip", "-n", self.ns[host], fam, "route", "flush", "cache"])

    # --- observing ----------------------------------------------------------------

    def egress_counter(self, host, ifname=None, **match):
        """Started PacketCounter of packets leaving host, per device: all devices,
        or only ifname (a name, role or list). match: proto, port, sport, dport,
        family, saddr, daddr. Use .read() / .packets(dev); stop() or `with`."""
        return self._counter(host, "egress", ifname, match)

    def ingress_counter(self, host, ifname=None, **match):
        """Like egress_counter, for packets arriving (before DNAT)."""
        return self._counter(host, "ingress", ifname, match)

    def _counter(self, host, direction, ifname, match):
        names = [ifname] if isinstance(ifname, str) else ifname
        devices = [self.dev(host, n) for n in names] if names else None
        return probes.PacketCounter(self.ns[host], direction, devices, **match).start()

    def conntrack(self, host, family=None):
        return observe.conntrack(self.ns[host], family)

    def route_get(self, host, dst, **kwargs):
        return observe.route_get(self.ns[host], dst, **kwargs)

    def nft_ruleset(self, host):
        return self.run(host, ["nft", "list", "ruleset"]).stdout

    # --- services and traffic ------------------------------------------------------

    def tcp_server(self, host, port, addr="", name=None):
        """TCP server (greeting with the peer address, echo, bulk) on host."""
        return self._server(host, "tcp", port, addr, False, name)

    def udp_server(self, host, port, addr="", naive=False, name=None):
        """UDP server replying from the address it was reached on (naive=True:
        wildcard socket + sendto)."""
        return self._server(host, "udp", port, addr, naive, name)

    def _server(self, host, proto, port, addr, naive, name):
        log = self.tmp / f"server-{host}-{proto}-{port}.log"
        return services.start_server(self._popen, self.ns[host], host, proto, port,
                                     addr, naive, name, log)

    def tcp_request(self, host, dst, port, timeout=3.0, src_port=None, src=None):
        return traffic.tcp_request(self.ns[host], dst, port, timeout, src, src_port)

    def udp_request(self, host, dst, port, timeout=3.0, src_port=None, src=None):
        return traffic.udp_request(self.ns[host], dst, port, timeout, src, src_port)

    def stream(self, host, dst, port, interval=0.02, op_timeout=2.0, src=None, src_port=None):
        """Started Stream; stream.stop() returns StreamStats."""
        stream = traffic.Stream(self.ns[host], dst, port, interval, op_timeout,
                                src=src, src_port=src_port)
        self._streams.append(stream)
        return stream

    def bulk(self, host, dst, port, nbytes=4 << 20, direction="download", timeout=30.0,
             stall=3.0, src=None):
        return traffic.bulk(self.ns[host], dst, port, nbytes, direction, timeout, stall, src)
