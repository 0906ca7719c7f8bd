"""The Lab base class: build namespaces from a plan, run things in them,
tear everything down no matter what.

A subclass fills the plan in _plan() (hosts, veth links, addresses, routes,
WireGuard interfaces, fw4 configs) and does its extra wiring in _configure().
"""

import atexit
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import firewall, netns, state, wireguard
from .fw4_api import Fw4Api
from .traffic_api import TrafficApi

# Applied to every namespace before any device exists, so new devices inherit
# them: IPv6 addresses usable at once (no DAD), no router advertisements, no
# reverse path filter unless a lab asks for one, no ICMP rate limits (PMTU and
# reject tests must not depend on a token bucket).
BASE_SYSCTLS = {
    "net.ipv6.conf.all.accept_dad": 0,
    "net.ipv6.conf.default.accept_dad": 0,
    "net.ipv6.conf.all.accept_ra": 0,
    "net.ipv6.conf.default.accept_ra": 0,
    "net.ipv6.conf.all.router_solicitations": 0,
    "net.ipv6.conf.default.router_solicitations": 0,
    "net.ipv4.conf.all.rp_filter": 0,
    "net.ipv4.conf.default.rp_filter": 0,
    "net.ipv4.icmp_ratelimit": 0,
    "net.ipv6.icmp.ratelimit": 0,
}
FORWARDING_SYSCTLS = {"net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 1}
PRODUCT_CLI = Path(__file__).resolve().parents[2] / "files/usr/sbin/wormhole"


@dataclass
class Link:
    a: str
    a_dev: str
    b: str
    b_dev: str


class Lab(TrafficApi, Fw4Api):
    """Namespaces + veth links + WireGuard + emulated fw4; see router_lab.py and
    gateway_lab.py. Traffic helpers: traffic_api.py; fw4 helpers: fw4_api.py."""

    KIND = "lab"
    HOSTS = ()
    FORWARDING_HOSTS = ()
    FW4_HOST = None           # default host of the fw4_* helpers

    def __init__(self, keep_tmp=False):
        self.id = None
        self.ns = {}
        self.tmp = None
        self.links = []
        self.addrs = {}       # (host, dev) -> ["192.0.2.2/28", "2001:db8:2::2/64"]
        self.aliases = {}     # (host, role) -> dev, e.g. ("router", "wan") -> "wan0"
        self.routes = {}      # host -> ["route add ...", ...] (ip batch lines)
        self.wg = {}          # host -> wireguard.WgInterface
        self.fw = {}          # host -> firewall.Fw4
        self.roots = {}       # host -> product root dir (WORMHOLE_ROOT)
        self.uplink_info = {} # host -> {uplink: {"device", "gateway", "gateway6"}}
        self._procs = []
        self._streams = []
        self._closed = False
        self._keep_tmp = keep_tmp or os.environ.get("WH_LAB_KEEP") == "1"
        self.setup_seconds = None
        state.cleanup_stale()
        atexit.register(self.close)
        started = time.monotonic()
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        self.setup_seconds = time.monotonic() - started

    # --- context manager / teardown ------------------------------------------

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Stop everything the lab started and delete its namespaces (idempotent)."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        for stream in self._streams:
            stream.stop()
        for proc in reversed(self._procs):
            netns.stop_process(proc)
        if self.id:
            tmp = None if self._keep_tmp else self.tmp
            state.remove_lab_leftovers(self.id, list(self.ns.values()),
                                       [w.name for w in self.wg.values()], tmp)
            state.remove_state(self.id)
        if self._keep_tmp and self.tmp:
            print(f"lab {self.id}: kept {self.tmp}", file=sys.stderr)

    # --- building ----------------------------------------------------------------

    def _create(self):
        self.id = state.new_lab_id()
        self.tmp = Path(tempfile.mkdtemp(prefix=f"wormhole-lab-{self.id}-"))
        self.ns = {host: f"{state.PREFIX}{self.id}-{host}" for host in self.HOSTS}
        self._plan()
        # Registered before anything exists, so a crash at any point is
        # recognisable garbage for cleanup_stale().
        state.write_state(self.id, {"kind": self.KIND, "namespaces": list(self.ns.values()),
                                    "wg": [w.name for w in self.wg.values()],
                                    "tmp": str(self.tmp)})
        for host, ns in self.ns.items():
            netns.create_ns(ns)
            sysctls = dict(BASE_SYSCTLS)
            if host in self.FORWARDING_HOSTS:
                sysctls.update(FORWARDING_SYSCTLS)
            netns.write_sysctls(ns, sysctls)
        self._create_links()
        for host in self.HOSTS:
            netns.ip_batch(self.ns[host], self._host_batch(host))
        for host, root in self.roots.items():
            firewall.ensure_root_dirs(root)
        self._configure()

    def _create_links(self):
        # Both ends are created directly inside their namespaces: nothing ever
        # appears in the root namespace, so names cannot collide between labs.
        lines = [f"link add {l.a_dev} netns {self.ns[l.a]} type veth "
                 f"peer name {l.b_dev} netns {self.ns[l.b]}" for l in self.links]
        try:
            netns.run(["ip", "-batch", "-"], input="\n".join(lines) + "\n")
        except netns.CommandError as err:
            raise netns.LabError(f"creating veth links failed:\n{err}") from None

    def _host_batch(self, host):
        lines = ["link set dev lo up"]
        for link in self.links:
            for h, dev in ((link.a, link.a_dev), (link.b, link.b_dev)):
                if h == host:
                    lines.append(f"link set dev {dev} up")
        for (h, dev), cidrs in self.addrs.items():
            if h == host and not self._is_wg(host, dev):
                lines += [f"addr add {c} dev {dev}" + (" nodad" if ":" in c else "")
                          for c in cidrs]
        return lines + self.routes.get(host, [])

    def _is_wg(self, host, dev):
        return host in self.wg and self.wg[host].name == dev

    def _plan(self):
        raise NotImplementedError

    def _configure(self):
        pass

    def _start_wireguard(self, host):
        iface = self.wg[host]
        keyfile = self.tmp / f"{host}.key"
        wireguard.write_key(keyfile, iface.private_key)
        wireguard.start(iface, keyfile, self.tmp / f"wireguard-{host}.log", self._popen)

    def _new_wg(self, host, suffix, addresses, listen_port=None, mtu=1420):
        private, public = wireguard.genkey()
        name = f"{state.PREFIX}{self.id}{suffix}"
        iface = wireguard.WgInterface(host, self.ns[host], name, private, public,
                                      listen_port, list(addresses), mtu)
        self.wg[host] = iface
        self.addrs[(host, name)] = list(addresses)
        self.aliases[(host, "wg")] = name
        return iface

    def _load_nft(self, host, text):
        netns.run(netns.ns_exec(self.ns[host], ["nft", "-f", "-"]), input=text)

    def _antispoof(self, host):
        """Strict reverse-path filter (BCP 38), as ISPs do: a packet whose source
        is not routed back out the link it came in on is dropped. This makes a
        reply that leaves by the wrong uplink fail, as it would in real life."""
        self._load_nft(host, "table inet labrpf {\n chain prerouting {\n"
                       "  type filter hook prerouting priority raw; policy accept;\n"
                       "  fib saddr . iif oif missing counter drop\n }\n}\n")

    # --- running things ---------------------------------------------------------

    def run(self, host, argv, check=True, timeout=10, env=None, input=None):
        """Run argv inside host's namespace; CompletedProcess (text) or CommandError."""
        return netns.run(netns.ns_exec(self.ns[host], argv), check=check, timeout=timeout,
                         env=env, input=input)

    def popen(self, host, argv, env=None, **kwargs):
        """Start argv inside host's namespace; the lab kills it on teardown."""
        return self._popen(netns.ns_exec(self.ns[host], argv), env=env, **kwargs)

    def _popen(self, argv, env=None, **kwargs):
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.Popen([str(a) for a in argv], start_new_session=True,
                                env=None if env is None else {**os.environ, **env}, **kwargs)
        self._procs.append(proc)
        return proc

    def wormhole(self, host, *args, check=True, timeout=30, env=None, cli=None):
        """Run the product CLI of this checkout (or `cli`) in host's namespace,
        with WORMHOLE_ROOT set to the host's root dir."""
        cli = Path(cli) if cli else PRODUCT_CLI
        if not cli.exists():
            raise netns.LabError(f"product CLI not found: {cli}")
        env = {"WORMHOLE_ROOT": str(self.roots[host]), **(env or {})}
        return self.run(host, [cli, *args], check=check, timeout=timeout, env=env)

    def uplinks(self, host=None):
        """The host's uplinks as the product's `config uplink` sections need them:
        {"wan": {"device": "wan0", "gateway": "192.0.2.1", "gateway6": "..."}}."""
        return self.uplink_info.get(host or self.FW4_HOST, {})

    def set_sysctl(self, host, key, value):
        netns.write_sysctls(self.ns[host], {key: value})

    def sysctl(self, host, key):
        return netns.read_sysctl(self.ns[host], key)

    # --- addresses ----------------------------------------------------------------

    def dev(self, host, ifname_or_role):
        """Device name for a role ("wan", "lan", "wg", ...) or a device name."""
        return self.aliases.get((host, ifname_or_role), ifname_or_role)

    def addr(self, host, ifname_or_role, family=4, prefix=False):
        """The host's IPv4 (family=4) or IPv6 address on a device/role."""
        dev = self.dev(host, ifname_or_role)
        for cidr in self.addrs.get((host, dev), []):
            if (":" in cidr) == (family == 6):
                return cidr if prefix else cidr.split("/")[0]
        raise KeyError(f"no IPv{family} address for {host}/{ifname_or_role}")

    # --- description -------------------------------------------------------------

    def describe(self):
        """A readable summary of the lab (for `make demo` and failing tests)."""
        lines = [f"{type(self).__name__} {self.id}  (scratch {self.tmp})"]
        width = max(len(h) for h in self.HOSTS)
        for host in self.HOSTS:
            lines.append(f"  {host:<{width}}  netns {self.ns[host]}")
            for (h, dev), cidrs in self.addrs.items():
                if h == host:
                    lines.append(f"  {'':<{width}}    {dev:<15} {'  '.join(cidrs)}")
            if host in self.roots:
                lines.append(f"  {'':<{width}}    root (WORMHOLE_ROOT) {self.roots[host]}")
        for host, iface in self.wg.items():
            lines.append(f"  wireguard {host}: {iface.name} mtu {self.mtu(host, iface.name)}"
                         + (f" listen {iface.listen_port}" if iface.listen_port else ""))
        lines += self._describe_extra()
        if self.setup_seconds is not None:
            lines.append(f"  setup took {self.setup_seconds:.2f}s")
        return "\n".join(lines)

    def _describe_extra(self):
        return []
