"""netifd's lifecycle around wormhole, proven with real packets: the OpenVPN router lab's
router made an OpenWrt device.

The product is installed at its real paths in an openwrt_sim scratch root (overlays on
/etc, /usr, /run, /tmp inside the router's namespace): /usr/sbin/wormhole,
/usr/lib/wormhole, /etc/init.d/wormhole (enabled: /etc/rc.d/S99wormhole), the hotplug hook
/etc/hotplug.d/iface/95-wormhole and /etc/config/wormhole. The lab's fw4 emulation reads
that root's include files, so a "firewall start/reload" carries what wormhole wrote to
/usr/share/nftables.d. There is no netifd here: each event is done to the kernel as netifd
does it (links, addresses, routes, ip rules) and followed by the hotplug events netifd
sends, run as procd runs them (ACTION, INTERFACE, DEVICE in the environment; the hook puts
its apply in the background). No test calls wormhole itself after the event.

After each event the router service (an exemption) and the LAN service (a forward) are
polled with a deadline until the client reaches them with replies from the WAN address;
a connection established before the event is an echo stream that must still answer
afterwards, where the event leaves it able to (same addresses). The kill-switch is
OpenVPN's pushed routes; every test starts with the failure without wormhole's rules.

Both firewalls: on fw4 the lab's fw4 emulation loads the whole table with the include files;
on fw3 the firewall is fw3's shape in iptables (tests/test_lab_redirects.fw3_firewall) and a
start or reload then runs the `restore` includes the package's uci-defaults adds
(/usr/share/wormhole/fw3-ipv4.rules / -ipv6.rules, `iptables-restore --noflush`), after
deleting every rule of the built-in chains that carries fw3's `!fw3` comment tag, as fw3
does on reload (wormhole's jumps carry `!fw3: wormhole`).
"""

import contextlib
import shutil
import time
from pathlib import Path

import pytest

from tests.lab import openvpn
from tests.lab import netns
from tests.lab.netns import LabError
from tests.openwrt_sim import Router as SimRouter
from tests.test_lab_openvpn import require_openvpn
from tests.test_lab_redirects import fw3_firewall

REPO = Path(__file__).resolve().parents[1]
DEADLINE = 20.0          # seconds for the hook's background apply to land; polled, not asserted
BACKENDS = ["fw4", "fw3"]
CONFIG = """config wormhole 'main'
\toption backend '%s'

config uplink 'wan'
\toption device 'wan0'

config exemption
\toption proto 'tcp'
\toption port '443'
\toption label 'LuCI'
\toption open '1'

config redirect
\toption label 'Jellyfin'
\toption proto 'tcp'
\toption src 'wan'
\toption src_dport '8096'
\toption dest_ip '192.168.1.10'
\toption dest_port '8096'
"""


class Device:
    """The lab's router as an OpenWrt device with the product installed (see the module text).
    root: the scratch root of a previous boot (its flash); /run and /tmp start empty."""

    def __init__(self, lab, backend="fw4", root=None):
        self.lab = lab
        self.backend = backend
        if root is not None:
            for tmpfs in ("run", "tmp"):
                shutil.rmtree(Path(root) / tmpfs, ignore_errors=True)
        self.sim = SimRouter(lab.ns["router"], backend, root=root)
        if root is None:
            self._install()

    @property
    def root(self):
        return self.sim.root

    def _install(self):
        r = self.sim.root
        for rel in ("usr/sbin/wormhole", "etc/init.d/wormhole", "etc/hotplug.d/iface/95-wormhole"):
            (r / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / "files" / rel, r / rel)
        shutil.copytree(REPO / "rpcd/wormhole", r / "usr/lib/wormhole/wormhole",
                        ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
        (r / "etc/config/wormhole").write_text(CONFIG % self.backend)
        self.run("/etc/init.d/wormhole", "enable")

    def run(self, *argv, env=None):
        return self.sim.run(list(argv), env=env)

    def firewall_start(self):
        """A firewall start or reload: fw4, the whole fw4 table with this root's include
        files; fw3, its rules tagged `!fw3` removed, its shape loaded, then the includes."""
        if self.backend == "fw4":
            self.lab.fw4_reload(root=self.root)
            return
        for save, restore in (("iptables-save", "iptables-restore"), ("ip6tables-save", "ip6tables-restore")):
            kept = [line for line in self.lab.run("router", [save]).stdout.splitlines()
                    if not (line.startswith("-A ") and '"!fw3' in line)]
            self.lab.run("router", [restore], input="\n".join(kept) + "\n")
        fw3_firewall(self.lab, "router", trusted=[self.lab.dev("router", "lan")], mtu_fix=self.lab.mtu_fix)
        for family, restore in (("ipv4", "iptables-restore"), ("ipv6", "ip6tables-restore")):
            rules = self.root / ("usr/share/wormhole/fw3-%s.rules" % family)
            if rules.exists():
                self.lab.run("router", [restore, "--noflush"], input=rules.read_text())

    def init(self, action):
        self.run("/etc/init.d/wormhole", action)

    def hotplug(self, action, interface, device):
        self.run("sh", "/etc/hotplug.d/iface/95-wormhole",
                 env={"ACTION": action, "INTERFACE": interface, "DEVICE": device})

    def settle(self):
        """Until no hotplug job or apply runs in the router's namespace (the hook's background
        apply starts a second after its event: an event test must not be rescued by the
        apply of an earlier one)."""
        def idle():
            for pid in self.lab.run("router", ["ip", "netns", "pids", self.lab.ns["router"]]).stdout.split():
                try:
                    cmdline = Path("/proc/%s/cmdline" % pid).read_bytes()
                except OSError:
                    continue
                if b"95-wormhole" in cmdline or b"/usr/sbin/wormhole" in cmdline:
                    return False
            return not (self.root / "run/wormhole/hotplug-pending").exists()
        netns.wait_for(idle, DEADLINE, interval=0.1, what="wormhole's hotplug jobs to finish")

    def netifd_up(self):
        """What netifd sends once its interfaces are up: ifup of wan, wan6 and the VPN."""
        for iface, dev in (("wan", "wan0"), ("wan6", "wan0"), ("vpn", self.lab.wg_router)):
            self.hotplug("ifup", iface, dev)


def reachable(lab):
    """Both services reached from the client, replies from the addresses it dialled."""
    a = lab.tcp_request("client", lab.wan4, 443, timeout=1.0)
    b = lab.tcp_request("client", lab.wan4, 8096, timeout=1.0)
    return bool(a and a.peer_ip == lab.client4 and b and b.peer_ip == lab.client4 and b.local_ip == lab.lan4)


def wait_reachable(lab, what):
    deadline = time.monotonic() + DEADLINE
    while not reachable(lab):
        if time.monotonic() > deadline:
            raise AssertionError("services not reachable %.0fs after %s, with no user action\n%s\n%s" % (
                DEADLINE, what, lab.run("router", ["ip", "rule"]).stdout, lab.describe()))
        time.sleep(0.2)


def unreachable(lab):
    return lab.tcp_request("client", lab.wan4, 443, timeout=1.0) is None


@contextlib.contextmanager
def device_lab(backend="fw4"):
    require_openvpn()
    with openvpn.OpenVpnRouterLab() as lab:
        lab.tcp_server("router", 443, name="luci")
        lab.tcp_server("lan", 8096, name="jellyfin")
        dev = Device(lab, backend)
        if backend == "fw3":
            dev.firewall_start()            # fw3's shape replaces the lab's fw4 table
            assert unreachable(lab), "OpenVPN's routes should break the service first"
        try:
            assert unreachable(lab), "OpenVPN's routes should break the service first"
            dev.firewall_start()            # boot: firewall (19), netifd (20), wormhole (99)
            dev.netifd_up()
            dev.init("start")
            wait_reachable(lab, "boot")
            dev.settle()
            yield lab, dev
        finally:
            dev.sim.close()


def streams(lab):
    """Connections established before an event: one to the router service, one forwarded."""
    out = [lab.stream("client", lab.wan4, 443, interval=0.05, op_timeout=DEADLINE),
           lab.stream("client", lab.wan4, 8096, interval=0.05, op_timeout=DEADLINE)]
    for s in out:
        assert s.wait_replies(3), s.stats()
    return out


def assert_survived(stream_list):
    for s in stream_list:
        n = s.stats().received
        assert s.wait_replies(n + 5, timeout=DEADLINE), s.stats()
        stats = s.stop()
        assert stats.resets == 0 and stats.alive, stats


def _wan_down_up(lab, dev):
    lab.run("router", ["ip", "link", "set", "dev", "wan0", "down"])
    dev.hotplug("ifdown", "wan", "wan0")
    dev.hotplug("ifdown", "wan6", "wan0")
    assert unreachable(lab)
    lab.run("router", ["ip", "link", "set", "dev", "wan0", "up"])
    lab.run("router", ["ip", "route", "replace", "default", "via", lab.wan_gw4, "dev", "wan0", "metric", "10"])
    # the kernel drops IPv6 addresses with the link (keep_addr_on_down 0): netifd adds them again
    lab.run("router", ["ip", "-6", "addr", "replace", lab.wan6 + "/64", "dev", "wan0", "nodad"])
    lab.run("router", ["ip", "-6", "route", "replace", "default", "via", lab.wan_gw6, "dev", "wan0", "metric", "10"])
    # OpenVPN's /32 to the server went with the link; its keepalive restarts it (ping-restart)
    lab.run("router", ["ip", "route", "replace", lab.provider4, "via", lab.wan_gw4, "dev", "wan0"])
    dev.hotplug("ifup", "wan", "wan0")
    dev.hotplug("ifup", "wan6", "wan0")


def _vpn_down_up(lab, dev):
    lab.vpn_down()
    dev.hotplug("ifdown", "vpn", lab.wg_router)
    lab.vpn_up()
    dev.hotplug("ifup", "vpn", lab.wg_router)


def _netifd_restart(lab, dev):
    """netifd restarting drops the ip rules and routing tables it did not make; it then
    brings every interface up again."""
    for fam in ("-4", "-6"):
        out = lab.run("router", ["ip", fam, "rule", "show"]).stdout
        for line in out.splitlines():
            prio = line.split(":")[0]
            if prio not in ("0", "32766", "32767"):
                lab.run("router", ["ip", fam, "rule", "del", "priority", prio])
        lab.run("router", ["ip", fam, "route", "flush", "table", "4091"], )
    assert unreachable(lab)
    dev.netifd_up()


def _firewall_reload(lab, dev):
    dev.firewall_start()


def _firewall_restart(lab, dev):
    """fw4 restart: stop (fw4's table deleted; wormhole's ruleset-post table with it, as
    `fw4 flush` does), then start with the include files. fw3 restart: stop flushes and
    deletes every chain of every table (wormhole's too), then start."""
    if dev.backend == "fw4":
        lab.run("router", ["nft", "delete", "table", "inet", "fw4"])
        lab.run("router", ["nft", "delete", "table", "inet", "wormhole"])
    else:
        for tool in ("iptables", "ip6tables"):
            for table in ("filter", "nat", "mangle"):
                if tool == "ip6tables" and table == "nat":
                    continue
                lab.run("router", [tool, "-t", table, "-F"])
                lab.run("router", [tool, "-t", table, "-X"])
    assert unreachable(lab)
    dev.firewall_start()


def _conntrack_flush(lab, dev):
    lab.run("router", ["conntrack", "-F"], check=False)
    lab.run("router", ["conntrack", "-F", "-f", "ipv6"], check=False)


EVENTS = {
    # event: (what netifd/fw4/the user does, whether the established connections can survive)
    "wan-ifdown-ifup": (_wan_down_up, True),
    "vpn-ifdown-ifup": (_vpn_down_up, True),
    "netifd-restart": (_netifd_restart, True),
    "firewall-reload": (_firewall_reload, True),
    "firewall-restart": (_firewall_restart, True),
    "conntrack-flush": (_conntrack_flush, True),
}


@pytest.mark.lab
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("event", sorted(EVENTS))
def test_everything_works_again_after(event, backend):
    action, survives = EVENTS[event]
    with device_lab(backend) as (lab, dev):
        live = streams(lab)
        action(lab, dev)
        wait_reachable(lab, event)
        if survives:
            assert_survived(live)


@pytest.mark.lab
@pytest.mark.parametrize("backend", BACKENDS)
def test_dhcp_renew_with_a_new_gateway(backend):
    """The ISP moves the WAN gateway (DHCP renew: new router address, old one gone);
    netifd replaces the default route and sends ifupdate. wormhole's table 4091 must follow:
    its old gateway no longer answers."""
    with device_lab(backend) as (lab, dev):
        live = streams(lab)
        new_gw = "192.0.2.14"
        # (in this order: deleting a primary address takes its secondaries with it)
        lab.run("isp", ["ip", "addr", "del", lab.wan_gw4 + "/28", "dev", "to-wan0"])
        lab.run("isp", ["ip", "addr", "add", new_gw + "/28", "dev", "to-wan0"])
        lab.run("router", ["ip", "neigh", "flush", "dev", "wan0"])
        lab.run("router", ["ip", "route", "replace", "default", "via", new_gw, "dev", "wan0", "metric", "10"])
        lab.run("router", ["ip", "route", "replace", lab.provider4, "via", new_gw, "dev", "wan0"])
        dev.hotplug("ifupdate", "wan", "wan0")
        wait_reachable(lab, "a gateway change")
        assert lab.run("router", ["ip", "route", "show", "table", "4091"]).stdout.split()[:3] == \
            ["default", "via", new_gw]
        assert_survived(live)


@pytest.mark.lab
@pytest.mark.parametrize("backend", BACKENDS)
def test_reboot(backend):
    """A fresh boot: new namespaces, the flash (config, init links, include files) kept,
    /run and /tmp empty; the firewall starts with the include files, netifd's ifup events
    come before wormhole's init (START=99) runs, and the init runs too."""
    with device_lab(backend) as (lab, dev):
        flash = dev.root
        dev.sim.base = Path("/nonexistent")       # keep the flash past this boot's close()
    require_openvpn()
    try:
        with openvpn.OpenVpnRouterLab() as lab:
            lab.tcp_server("router", 443, name="luci")
            lab.tcp_server("lan", 8096, name="jellyfin")
            dev = Device(lab, backend, root=flash)
            if backend == "fw4":
                assert unreachable(lab)
            dev.firewall_start()
            dev.netifd_up()
            dev.init("boot")
            try:
                wait_reachable(lab, "a reboot")
            finally:
                dev.sim.close()
            if not (flash / "etc/rc.d/S99wormhole").exists():
                raise LabError("the init link went missing")
    finally:
        shutil.rmtree(flash.parent, ignore_errors=True)
