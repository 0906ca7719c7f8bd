"""`make demo`: the problem and the product's fix, shown with real packets.

Builds the lab's namespaces, proves that inbound services die under a VPN
kill-switch, runs the product CLI from this checkout inside the router
namespace (`wormhole inbound add ...`) and proves they work again; then
publishes services of a host behind NAT through a WireGuard gateway.
Exits non-zero if any expectation fails.
"""

import sys

from .gateway_lab import GatewayLab
from .netns import lab_unavailable_reason
from .router_lab import RouterLab
from .state import cleanup_stale


class Demo:
    def __init__(self):
        self.failures = 0

    def heading(self, text):
        print(f"\n== {text}")

    def expect(self, label, ok, detail=""):
        print(f"  [{' ok ' if ok else 'FAIL'}] {label}" + (f"  ({detail})" if detail else ""))
        self.failures += 0 if ok else 1

    def connects(self, lab, host, dst, port, want_peer=None, want_local=None, timeout=2.0):
        """Expect a TCP request to succeed (with the given peer/local as the server sees it)."""
        reply = lab.tcp_request(host, dst, port, timeout=timeout)
        ok = reply is not None and want_peer in (None, reply.peer_ip) \
            and want_local in (None, reply.local_ip)
        seen = f"server saw {reply.peer_ip} -> {reply.local_ip}" if reply else "no answer"
        self.expect(f"{host} -> {dst} port {port}", ok, seen)

    def fails(self, lab, host, dst, port):
        reply = lab.tcp_request(host, dst, port, timeout=1.5)
        self.expect(f"{host} -> {dst} port {port} fails", reply is None,
                    "no answer" if reply is None else f"answered: {reply}")

    def wormhole(self, lab, host, *args):
        print(f"  $ wormhole {' '.join(args)}   (in {host}, WORMHOLE_ROOT={lab.roots[host]})")
        result = lab.wormhole(host, *args, check=False)
        for line in (result.stdout + result.stderr).strip().splitlines():
            print(f"      {line}")
        self.expect(f"wormhole {args[0]} {args[1] if len(args) > 1 else ''} exit status",
                    result.returncode == 0, f"rc={result.returncode}")


    def show(self, lab, host, *args):
        print(f"  $ wormhole {' '.join(args)}")
        result = lab.wormhole(host, *args, check=False)
        for line in result.stdout.strip().splitlines():
            print(f"      {line}")


def write_config(root, uplinks):
    """A minimal /etc/config/wormhole: backend auto-detected, uplinks as in the lab."""
    lines = ["config wormhole 'main'", "\toption enabled '1'", "\toption backend 'auto'", ""]
    for name, opts in uplinks.items():
        lines.append(f"config uplink '{name}'")
        lines += [f"\toption {key} '{value}'" for key, value in opts.items()]
        lines.append("")
    (root / "etc/config").mkdir(parents=True, exist_ok=True)
    (root / "etc/config/wormhole").write_text("\n".join(lines))


def router_part(demo):
    with RouterLab(killswitch="metric") as lab:
        print(lab.describe())
        write_config(lab.root, lab.uplinks())
        lab.fw4_accept_input(zone="wan", proto="tcp", port=443, name="Allow-LuCI")
        lab.fw4_redirect(src="wan", proto="tcp", src_dport=8443, dest_ip=lab.lan4,
                         dest_port=443, name="NAS")
        for host, name in (("router", "luci"), ("lan", "nas")):
            lab.tcp_server(host, 443, name=name)
        lab.tcp_server("client", 80, name="internet")

        demo.heading("Kill-switch on, no wormhole: replies to inbound connections go into the tunnel")
        demo.fails(lab, "client", lab.wan4, 443)
        demo.fails(lab, "client", lab.wan6, 443)
        demo.fails(lab, "client", lab.wan4, 8443)

        demo.heading("wormhole inbound add: replies leave by the uplink they came in on")
        demo.wormhole(lab, "router", "inbound", "add", "tcp:443", "--label", "LuCI")
        demo.wormhole(lab, "router", "inbound", "add", "tcp:8443", "--label", "NAS")
        demo.connects(lab, "client", lab.wan4, 443, want_peer=lab.client4)
        demo.connects(lab, "client", lab.wan6, 443, want_peer=lab.client6)
        demo.connects(lab, "client", lab.wan4, 8443, want_local=lab.lan4)

        demo.heading("No leak: traffic the router and LAN start still goes through the tunnel")
        demo.connects(lab, "router", lab.client4, 80, want_peer=lab.provider4)
        demo.connects(lab, "lan", lab.client4, 80, want_peer=lab.provider4)

        demo.heading("A firewall reload (fw4 reload) keeps it working")
        lab.run("router", [lab.root / "sbin/fw4", "reload"])
        demo.connects(lab, "client", lab.wan4, 443, want_peer=lab.client4)

        demo.heading("What wormhole reports and what it put into the kernel")
        demo.show(lab, "router", "status")
        demo.show(lab, "router", "inbound", "list")
        print("  $ nft list table inet wormhole   (the mark and restore rules)")
        ruleset = lab.run("router", ["nft", "list", "table", "inet", "wormhole"]).stdout
        for line in ruleset.splitlines():
            if "!wormhole:" in line and ("vmap" in line or "set" in line):
                print("      " + line.strip())
        for fam in ("-4", "-6"):
            print(f"  $ ip {fam} rule | grep fwmark")
            for line in lab.run("router", ["ip", fam, "rule"]).stdout.splitlines():
                if "fwmark" in line:
                    print("      " + line.strip())


def gateway_part(demo):
    with GatewayLab() as lab:
        print(lab.describe())
        write_config(lab.gateway_root, lab.uplinks("gateway"))
        write_config(lab.backend_root, lab.uplinks("backend"))
        for port in (8080, 8081):
            lab.fw4_accept_input(zone="vpn", proto="tcp", port=port, host="backend")
            lab.tcp_server("backend", port, name="backend")

        demo.heading("Publish a service of the host behind NAT through the VPS")
        demo.fails(lab, "client", lab.gateway4, 8080)
        demo.wormhole(lab, "gateway", "forward", "add", "tcp:8080",
                      f"{lab.tun_backend4}:8080", "--snat", "--label", "web")
        demo.connects(lab, "client", lab.gateway4, 8080, want_peer=lab.tun_gateway4)

        demo.heading("... preserving the client's address (the backend routes replies back)")
        demo.wormhole(lab, "gateway", "forward", "add", "tcp:8081",
                      f"{lab.tun_backend4}:8081", "--label", "web-real-ip")
        demo.wormhole(lab, "backend", "inbound", "add", "tcp:8081", "--interface", "vpn",
                      "--label", "web-real-ip")
        demo.connects(lab, "client", lab.gateway4, 8081, want_peer=lab.client4)


def main():
    reason = lab_unavailable_reason()
    if reason:
        print(f"demo: {reason}", file=sys.stderr)
        return 1
    cleanup_stale()
    demo = Demo()
    router_part(demo)
    gateway_part(demo)
    print(f"\n{'all expectations met' if not demo.failures else f'{demo.failures} FAILED'}")
    return 1 if demo.failures else 0


if __name__ == "__main__":
    sys.exit(main())
