"""The router's neighbours: pbr, mwan3 and Tailscale, installed into a lab router the way
the real packages install themselves (same text, same marks, same priorities).

Every ruleset here is copied from /work/notes/neighbours.md, which quotes the packages'
sources (openwrt/packages net/pbr 1.2.2-20 and net/mwan3 2.12.2 @ 0521bb56, tailscale
v1.102.2 util/linuxfw + wgengine/router/osrouter/router_linux.go); the section numbers in
the docstrings point there. Only device names, addresses and table contents differ: they
are the lab's (wan0, wan1, lan0, the lab's WireGuard names), where the packages read them
from netifd.

- pbr (fw4 only): `/usr/share/nftables.d/ruleset-post/30-pbr.nft` in the router's root,
  loaded by a fw4 reload as fw4 does, plus its ip rules 30000, 29999, ... and the
  suppress_prefixlength rule below them, tables 256, 257, ...
- mwan3 (iptables: iptables-nft beside fw4, or beside fw3): its ipsets, the mangle chains
  of `mwan3_set_general_iptables()` and friends (CONNMARK save/restore under 0x3f00,
  `statistic` balancing), ip rules 1001+/2001+/3001+ and 2061/2062, tables copied from main
  as mwan3rtmon does.
- Tailscale: ip rules 5210/5230/5250/5270 and table 52, its nft tables (nftables mode,
  OpenWrt's default) or its iptables chains (iptables mode). Its tunnel is a real
  WireGuard tunnel (wireguard-go, like tailscaled's tun) to an exit node on the lab's
  provider host (`TailnetLab`), whose socket carries the bypass mark 0x80000 as
  tailscaled's do (`wg set ... fwmark`, the SO_MARK of netns_linux.go).
"""

from pathlib import Path

from . import netns, state, wireguard
from .router_lab import RouterLab

# --- pbr (note, section 1) -------------------------------------------------------------------

PBR_MASK = 0x00ff0000
PBR_FIRST_MARK = 0x010000
PBR_FIRST_PRIORITY = 30000
PBR_FIRST_TABLE = 256
PBR_NFT = "usr/share/nftables.d/ruleset-post/30-pbr.nft"


def pbr_interfaces(lab):
    """pbr's supported interfaces of the lab router in netifd order (loopback and lan are
    skipped, wan6 too with ipv6 off): wan, then the WireGuard client. Each gets the next mark,
    priority and table (init.d/pbr process_interface(), note 1.2)."""
    ifaces = [("wan", lab.dev("router", "wan"), lab.wan_gw4)]
    if lab.has_wan1:
        ifaces.append(("wan1", lab.wan1_dev, lab.wan1_gw4))
    ifaces.append(("wg0", lab.wg_router, None))
    out = []
    for i, (name, dev, gw) in enumerate(ifaces):
        out.append({"name": name, "dev": dev, "gateway": gw, "mark": PBR_FIRST_MARK * (i + 1),
                    "priority": PBR_FIRST_PRIORITY - i, "table": PBR_FIRST_TABLE + i})
    return out


def pbr_nft(ifaces, policies):
    """The text of pbr's 30-pbr.nft (nft_file() create:main, interface_routing(),
    policy_routing(); note 1.4-1.5). policies: [(name, src_addr, interface name)]."""
    inverse = PBR_MASK ^ 0xffffffff
    lines = ["#!/usr/sbin/nft -f", ""]
    lines += [f"add chain inet fw4 pbr_{c} {{}}" for c in ("dstnat", "forward", "output", "prerouting")]
    lines += ["", "insert rule inet fw4 dstnat jump pbr_dstnat",
              "add rule inet fw4 mangle_prerouting jump pbr_prerouting",
              "add rule inet fw4 mangle_output jump pbr_output",
              "add rule inet fw4 mangle_forward jump pbr_forward", ""]
    lines += [f"add rule inet fw4 pbr_{c} meta mark & 0x00ff0000 != 0 return"
              for c in ("forward", "output", "prerouting")]
    for iface in ifaces:
        chain = "pbr_mark_0x%06x" % iface["mark"]
        lines += [f"add chain inet fw4 {chain}",
                  f"add rule inet fw4 {chain}  meta mark set (meta mark & {inverse:#x}) | 0x%06x" % iface["mark"],
                  f"add rule inet fw4 {chain} return"]
    marks = {i["name"]: i["mark"] for i in ifaces}
    for name, src, iface in policies:
        lines.append(f'add rule inet fw4 pbr_prerouting ip saddr {{ {src} }}  goto pbr_mark_0x%06x '
                     f'comment "{name}"' % marks[iface])
    return "\n".join(lines) + "\n"


def pbr_ip_rules(ifaces):
    """interface_routing() create per interface, then create_global_rules' suppress rule at
    the next lower priority (note 1.3). pbr's own ip() wrapper turns `rule replace` into
    `rule del priority P` + `rule add`."""
    lines = []
    for iface in ifaces:
        t = iface["table"]
        lines += [f"-4 rule flush table {t}", f"-4 route flush table {t}"]
        if iface["gateway"]:
            lines.append(f"-4 route replace default via {iface['gateway']} dev {iface['dev']} table {t}")
        else:   # POINTOPOINT device without a gateway
            lines.append(f"-4 route replace default dev {iface['dev']} table {t}")
        lines.append(f"-4 rule add fwmark 0x%06x/0x00ff0000 table {t} pref {iface['priority']}" % iface["mark"])
    lines.append(f"-4 rule add lookup main suppress_prefixlength 1 priority {ifaces[-1]['priority'] - 1}")
    return lines


def install_pbr(lab, policies):
    """pbr on the lab router with `policies` [(name, src_addr, interface)]: the nft file in
    fw4's ruleset-post include dir, a fw4 reload (pbr runs `fw4 -q reload`), its ip rules.
    Returns the interfaces (name, dev, mark, priority, table)."""
    ifaces = pbr_interfaces(lab)
    path = Path(lab.root) / PBR_NFT
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(pbr_nft(ifaces, policies))
    lab.fw4_reload()
    _ip_lines(lab, "router", pbr_ip_rules(ifaces))
    return ifaces


# --- mwan3 (note, section 2) ------------------------------------------------------------------

MWAN3_MASK = 0x3f00


def mwan3_interfaces(lab):
    """mwan3's interface ids are the 1-based order of its `config interface` sections, disabled
    or IPv6 ones included (mwan3_update_iface_to_table(), note 2.1). The lab's config has
    `wan`, `wan6` (IPv6, not brought up here) and `wan2` (the lab's wan1 device), so wan2 is
    id 3: mark 0x300, table 3, rules 1003/2003/3003."""
    return [{"name": "wan", "id": 1, "dev": lab.wan_dev},
            {"name": "wan2", "id": 3, "dev": lab.wan1_dev}]


def mwan3_mark(iface_id):
    return iface_id << 8          # mwan3_id2mask with the default mmx_mask 0x3F00


def mwan3_iptables(ifaces, lan_subnet):
    """`iptables-restore -w -n` input of mwan3 after start, both ifups, the policy `balanced`
    (both members metric 1, weight 1) and one rule `lan_balanced` (src_ip lan_subnet,
    use_policy balanced): note 2.4-2.5, the rule from mwan3_set_user_iptables_rule()."""
    lines = ["*mangle", "-N mwan3_ifaces_in"]
    for s in ("custom", "connected", "dynamic"):
        lines += [f"-N mwan3_{s}_ipv4",
                  f"-A mwan3_{s}_ipv4 -m set --match-set mwan3_{s}_ipv4 dst -j MARK --set-xmark 0x3f00/0x3f00"]
    lines += ["-N mwan3_rules", "-N mwan3_hook",
              "-A mwan3_hook -m mark --mark 0x0/0x3f00 -j CONNMARK --restore-mark --nfmask 0x3f00 --ctmask 0x3f00",
              "-A mwan3_hook -m mark --mark 0x0/0x3f00 -j mwan3_ifaces_in"]
    lines += [f"-A mwan3_hook -m mark --mark 0x0/0x3f00 -j mwan3_{s}_ipv4" for s in ("custom", "connected", "dynamic")]
    lines += ["-A mwan3_hook -m mark --mark 0x0/0x3f00 -j mwan3_rules",
              "-A mwan3_hook -j CONNMARK --save-mark --nfmask 0x3f00 --ctmask 0x3f00"]
    lines += [f"-A mwan3_hook -m mark ! --mark 0x3f00/0x3f00 -j mwan3_{s}_ipv4" for s in ("custom", "connected", "dynamic")]
    lines += ["-A PREROUTING -j mwan3_hook", "-A OUTPUT -j mwan3_hook"]
    for i in ifaces:
        chain = f"mwan3_iface_in_{i['name']}"
        lines.append(f"-N {chain}")
        lines += [f"-A {chain} -i {i['dev']} -m set --match-set mwan3_{s}_ipv4 src -m mark --mark 0x0/0x3f00 "
                  f'-m comment --comment "default" -j MARK --set-xmark 0x3f00/0x3f00' for s in ("custom", "connected", "dynamic")]
        lines += [f"-A {chain} -i {i['dev']} -m mark --mark 0x0/0x3f00 -m comment --comment \"{i['name']}\" "
                  f"-j MARK --set-xmark {mwan3_mark(i['id']):#x}/0x3f00",
                  f"-A mwan3_ifaces_in -m mark --mark 0x0/0x3f00 -j {chain}"]
    # the first online member flushes the chain and is appended; each further equal member is
    # inserted at the top with probability weight/cumulative weight (mwan3_set_policy())
    first, second = ifaces
    lines += ["-N mwan3_policy_balanced",
              f"-A mwan3_policy_balanced -m mark --mark 0x0/0x3f00 -m statistic --mode random --probability 0.500 "
              f"-m comment --comment \"{second['name']} 1 2\" -j MARK --set-xmark {mwan3_mark(second['id']):#x}/0x3f00",
              f"-A mwan3_policy_balanced -m mark --mark 0x0/0x3f00 -m comment --comment \"{first['name']} 1 1\" "
              f"-j MARK --set-xmark {mwan3_mark(first['id']):#x}/0x3f00",
              f"-A mwan3_rules -p all -s {lan_subnet} -d 0.0.0.0/0 -m mark --mark 0/0x3f00 -j mwan3_policy_balanced",
              "COMMIT"]
    return "\n".join(lines) + "\n"


def mwan3_ip_rules(ifaces):
    """mwan3_create_iface_rules() per interface and mwan3_set_general_rules() (note 2.2)."""
    lines = []
    for i in ifaces:
        n, m = i["id"], mwan3_mark(i["id"])
        lines += [f"-4 rule add pref {1000 + n} iif {i['dev']} lookup {n}",
                  f"-4 rule add pref {2000 + n} fwmark {m:#x}/0x3f00 lookup {n}",
                  f"-4 rule add pref {3000 + n} fwmark {m:#x}/0x3f00 unreachable"]
    return lines + ["-4 rule add pref 2061 fwmark 0x3d00/0x3f00 blackhole",
                    "-4 rule add pref 2062 fwmark 0x3e00/0x3f00 unreachable"]


_ROUTE_DROP = ("linkdown", "offload")


def mwan3_tables(lab, ifaces):
    """Tables 1..N copied from main as mwan3_create_iface_route() / mwan3rtmon do (note 2.3):
    a route on an mwan3 interface's device goes to that interface's table only (its default
    too); a route on any other device goes to every table, except default routes."""
    main = lab.run("router", ["ip", "-4", "route", "show", "table", "main"]).stdout.splitlines()
    by_dev = {i["dev"]: i["id"] for i in ifaces}
    lines = []
    for route in main:
        words = [w for w in route.split() if w not in _ROUTE_DROP]
        dev = words[words.index("dev") + 1] if "dev" in words else None
        text = " ".join(words)
        if dev in by_dev:
            lines.append(f"-4 route add table {by_dev[dev]} {text}")
        elif words[0] != "default":
            lines += [f"-4 route add table {i['id']} {text}" for i in ifaces]
    return lines


def install_mwan3(lab, lan_subnet="192.168.1.0/24"):
    """mwan3 on the lab router (needs wan1=True): ipsets, the mangle chains in one
    iptables-restore (IPT4R: `-w -n`, so fw4's or fw3's own mangle rules stay), ip rules and
    tables. Returns the interfaces (name, id, dev)."""
    ifaces = mwan3_interfaces(lab)
    # mwan3_set_connected_ipset() / mwan3_set_custom_ipset() / mwan3_set_dynamic_ipset()
    connected = ["127.0.0.0/8", "224.0.0.0/3"]
    for route in lab.run("router", ["ip", "-4", "route", "show"]).stdout.splitlines():
        dst = route.split()[0]
        if dst != "default" and "/" in dst:
            connected.append(dst)
    sets = ["create mwan3_connected_ipv4 hash:net", "create mwan3_custom_ipv4 hash:net",
            "create mwan3_dynamic_ipv4 list:set"]
    sets += [f"add mwan3_connected_ipv4 {n}" for n in connected]
    lab.run("router", ["ipset", "-!", "restore"], input="\n".join(sets) + "\n")
    lab.run("router", ["iptables-restore", "-w", "-n"], input=mwan3_iptables(ifaces, lan_subnet))
    _ip_lines(lab, "router", mwan3_ip_rules(ifaces) + mwan3_tables(lab, ifaces))
    return ifaces


# --- Tailscale (note, section 3) --------------------------------------------------------------

TS_MASK = 0xff0000
TS_SUBNET_ROUTE_MARK = 0x40000
TS_BYPASS_MARK = 0x80000
TS_TABLE = 52
TS_PORT = 41641


def tailscale_ip_rules():
    """baseIPRules at ipPolicyPrefBase 5200, for IPv4 and IPv6 (note 3.2)."""
    lines = []
    for fam in ("-4", "-6"):
        lines += [f"{fam} rule add pref 5210 fwmark 0x80000/0xff0000 table main",
                  f"{fam} rule add pref 5230 fwmark 0x80000/0xff0000 table default",
                  f"{fam} rule add pref 5250 fwmark 0x80000/0xff0000 type unreachable",
                  f"{fam} rule add pref 5270 table 52"]
    return lines


def tailscale_nft(dev, own_addr):
    """tailscaled's nftables mode (OpenWrt's default, note 3.4), IPv4 tables; the tun name is
    the lab's (tailscaled's --tun option names it)."""
    return f"""#!/usr/sbin/nft -f
table ip filter {{
	chain FORWARD {{
		type filter hook forward priority filter; policy accept;
		counter jump ts-forward
	}}
	chain INPUT {{
		type filter hook input priority filter; policy accept;
		counter jump ts-input
	}}
	chain ts-forward {{
		iifname "{dev}*" counter meta mark set meta mark & 0xff00ffff | 0x00040000
		meta mark & 0x00ff0000 == 0x00040000 counter accept
		oifname "{dev}*" ip saddr 100.64.0.0/10 counter drop
		oifname "{dev}*" counter accept
	}}
	chain ts-input {{
		iifname "lo*" ip saddr {own_addr} counter accept
		iifname "{dev}*" counter accept
		meta l4proto udp udp dport {TS_PORT} counter accept
		iifname != "{dev}*" ip saddr 100.115.92.0/23 counter return
		iifname != "{dev}*" ip saddr 100.64.0.0/10 counter drop
	}}
}}
table ip nat {{
	chain POSTROUTING {{
		type nat hook postrouting priority srcnat; policy accept;
		counter jump ts-postrouting
	}}
	chain ts-postrouting {{
		meta mark & 0x00ff0000 == 0x00040000 counter masquerade
	}}
}}
table ip mangle {{
	chain PREROUTING {{
		type filter hook prerouting priority mangle; policy accept;
		ct state established,related ct mark & 0x00ff0000 != 0 meta mark set ct mark & 0x00ff0000
	}}
	chain OUTPUT {{
		type filter hook output priority mangle; policy accept;
		ct state new meta mark & 0x00ff0000 != 0 ct mark set meta mark & 0x00ff0000
	}}
}}
"""


def tailscale_iptables(dev, own_addr):
    """tailscaled's iptables mode (util/linuxfw/iptables_runner.go), in the order it runs
    them (note 3.3): argv lists for `iptables`."""
    script = f"""-N ts-input
-N ts-forward
-t nat -N ts-postrouting
-I INPUT 1 -j ts-input
-I FORWARD 1 -j ts-forward
-t nat -I POSTROUTING 1 -j ts-postrouting
-A ts-input -i {dev} -j ACCEPT
-A ts-forward -i {dev} -j MARK --set-mark 0x40000/0xff0000
-A ts-forward -m mark --mark 0x40000/0xff0000 -j ACCEPT
-A ts-forward -o {dev} -s 100.64.0.0/10 -j DROP
-A ts-forward -o {dev} -j ACCEPT
-I ts-input 1 -i lo -s {own_addr} -j ACCEPT
-A ts-input -p udp --dport {TS_PORT} -j ACCEPT
-t nat -A ts-postrouting -m mark --mark 0x40000/0xff0000 -j MASQUERADE
-t mangle -I PREROUTING 1 -m conntrack --ctstate ESTABLISHED,RELATED -m connmark ! --mark 0x0/0xff0000 -j CONNMARK --restore-mark --nfmask 0xff0000 --ctmask 0xff0000
-t mangle -I OUTPUT 1 -m conntrack --ctstate NEW -m mark ! --mark 0x0/0xff0000 -j CONNMARK --save-mark --nfmask 0xff0000 --ctmask 0xff0000
-A ts-input ! -i {dev} -s 100.115.92.0/23 -j RETURN
-A ts-input ! -i {dev} -s 100.64.0.0/10 -j DROP"""
    return [line.split() for line in script.splitlines()]


def install_tailscale(lab, mode="nft", exit_node=True, lan_access=("192.168.1.0/24",)):
    """Tailscale on a TailnetLab router: `mode` "nft" (nftables tables) or "iptables"; its ip
    rules; table 52 with the exit node's /32, 100.100.100.100 and, when using the exit node,
    0.0.0.0/0 (router_linux.go addRoute()); `lan_access`: the LocalRoutes of
    --exit-node-allow-lan-access as throw routes (addThrowRoute()); src_valid_mark=1."""
    dev = lab.ts_router.name
    own = lab.ts_router4
    if mode == "nft":
        lab.run("router", ["nft", "-f", "-"], input=tailscale_nft(dev, own))
    elif mode == "iptables":
        for argv in tailscale_iptables(dev, own):
            lab.run("router", ["iptables", "-w"] + argv)
    else:
        raise ValueError(f"mode must be nft or iptables, not {mode!r}")
    routes = [f"-4 route add {lab.ts_exit4}/32 dev {dev} table 52",
              f"-4 route add 100.100.100.100/32 dev {dev} table 52"]
    if exit_node:
        routes.append(f"-4 route add 0.0.0.0/0 dev {dev} table 52")
        routes += [f"-4 route add throw {prefix} table 52" for prefix in lan_access]
    _ip_lines(lab, "router", tailscale_ip_rules() + routes)
    lab.set_sysctl("router", "net.ipv4.conf.all.src_valid_mark", 1)


class TailnetLab(RouterLab):
    """RouterLab plus a tailnet: the router's Tailscale tunnel (wireguard-go, as tailscaled's
    own tun) to an exit node on the provider host, which masquerades the tailnet to the
    internet. The tunnel's UDP socket carries Tailscale's bypass mark 0x80000, so with table
    52 routing everything into the tunnel its own packets still leave by main (rule 5210).

        router  ts_router 100.101.102.104/32  ==wg==>  vpn ts_exit 100.64.0.1/32 :41641
    """

    ts_router4, ts_exit4 = "100.101.102.104", "100.64.0.1"

    def __init__(self, killswitch="off", **kw):
        self.ts_router = self.ts_exit = None
        super().__init__(killswitch=killswitch, **kw)

    def _plan(self):
        super()._plan()
        self.ts_router = self._extra_wg("router", "t", None)
        self.ts_exit = self._extra_wg("vpn", "x", TS_PORT)

    def _extra_wg(self, host, suffix, port):
        private, public = wireguard.genkey()
        return wireguard.WgInterface(host, self.ns[host], f"{state.PREFIX}{self.id}{suffix}",
                                     private, public, port, [], 1280)

    def _configure(self):
        super()._configure()
        for iface, addr in ((self.ts_router, self.ts_router4), (self.ts_exit, self.ts_exit4)):
            keyfile = self.tmp / f"{iface.name}.key"
            wireguard.write_key(keyfile, iface.private_key)
            iface.addresses = [f"{addr}/32"]
            wireguard.start(iface, keyfile, self.tmp / f"wireguard-{iface.name}.log", self._popen)
        wireguard.add_peer(self.ts_exit, wireguard.Peer(self.ts_router.public_key, [f"{self.ts_router4}/32"]))
        wireguard.add_peer(self.ts_router, wireguard.Peer(
            self.ts_exit.public_key, ["0.0.0.0/0"], endpoint=f"{self.provider4}:{TS_PORT}", keepalive=25))
        self.run("router", ["wg", "set", self.ts_router.name, "fwmark", hex(TS_BYPASS_MARK)])
        netns.ip_batch(self.ns["vpn"], [f"route add {self.ts_router4}/32 dev {self.ts_exit.name}"])
        self._load_nft("vpn", "table ip tsexit {\n chain postrouting {\n"
                       "  type nat hook postrouting priority srcnat; policy accept;\n"
                       '  oifname "eth0" ip saddr 100.64.0.0/10 masquerade\n }\n}\n')

    def ts_handshake(self):
        wireguard.wait_handshake(self.ts_router, self.ts_exit.public_key, kick=lambda: self.run(
            "router", ["ping", "-c1", "-W1", self.ts_exit4], check=False))

    def close(self):
        extra = [w for w in (self.ts_router, self.ts_exit) if w]
        super().close()
        for iface in extra:
            iface.socket.unlink(missing_ok=True)


# --- helpers -----------------------------------------------------------------------------------

def _ip_lines(lab, host, lines):
    """ip commands with their family flag (`-4 rule add ...`): one `ip` per line, since the
    family is an option of the command line, not of a batch line. A flush of a table that does
    not exist yet fails, and the packages ignore that, as here."""
    for line in lines:
        lab.run(host, ["ip"] + line.split(), check=" flush " not in line)


def foreign_marks(entries, mask):
    """{(proto, orig src, orig dst, orig dport): sorted mark bits outside `mask`} of conntrack
    entries (lab.conntrack()): what other packages' bits are on each kind of connection."""
    out = {}
    for e in entries:
        if e.proto not in ("tcp", "udp"):
            continue
        key = (e.proto, e.orig.get("src"), e.orig.get("dst"), e.orig.get("dport"))
        out.setdefault(key, set()).add(e.mark & ~mask & 0xffffffff)
    return {k: sorted(v) for k, v in out.items()}


class MarkCensus:
    """Packets matching `match` (nft text) counted by `meta mark & mask` value at a hook, in
    a table of its own: what mark bits the packets of a flow carry."""

    _serial = 0

    def __init__(self, lab, host, match, mask, values, hook="postrouting", priority=0):
        MarkCensus._serial += 1
        self.lab, self.host = lab, host
        self.table = f"labmarks{MarkCensus._serial}"
        self.values = list(values)
        rules = [f"{match} meta mark & {mask:#010x} == {v:#010x} counter" for v in self.values]
        rules.append(f"{match} counter")
        body = "\n".join(f"  {r}" for r in rules)
        lab.run(host, ["nft", "-f", "-"], input=(
            f"table inet {self.table} {{\n chain c {{\n  type filter hook {hook} priority {priority}; "
            f"policy accept;\n{body}\n }}\n}}\n"))

    def read(self):
        """{value: packets, "all": packets}."""
        text = self.lab.run(self.host, ["nft", "list", "table", "inet", self.table]).stdout
        counts = [int(line.split("packets ")[1].split()[0]) for line in text.splitlines() if "packets " in line]
        return dict(zip(self.values + ["all"], counts))

    def stop(self):
        self.lab.run(self.host, ["nft", "delete", "table", "inet", self.table], check=False)
