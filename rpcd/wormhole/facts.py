"""System facts: uplinks, firewall backend, kill-switch state, live counters, sysctls,
the live rules and routes of ours, the firewall's own sections, conntrack.

With `config` (which reads /etc/config/wormhole) this is the only reader of the system:
api, check and apply ask here. Facts are plain JSON-able data so
render stays pure and tests can pin them. The kernel is asked, never guessed at: the
kill-switch is whatever `ip route get` says a public destination uses.

Route, link and address questions go to the kernel in-process (rtnl), and so do the map
counters (nfnl); each falls back to running `ip` or `nft` if that fails, and answers
exactly as the tool would (system.kernel_json). A LuCI `list` or `status` starts no tool.
"""

import ipaddress
import os

from . import nfnl, paths, rtnl, state, system
from .layout import RULE_KEYS, Marks, assign_uplink_indices, fallback_priority
from .uci import UciError, open_backend

# Documentation addresses: routed by the default route everywhere, never contacted
# (a route lookup sends nothing).
PROBE4 = "198.51.100.254"
PROBE6 = "2001:db8:ffff::1"


def backend(cfg):
    configured = cfg.main.get("backend", "auto")
    if configured != "auto":
        return configured
    return "fw4" if os.path.exists(paths.under_root(paths.FW4_BIN)) else "fw3"


def gather(cfg, with_counters=True):
    """Everything render and status need, as plain data."""
    fw = backend(cfg)
    ups = uplinks(cfg)
    previous = state.applied().get("uplink_index", {})
    names = [n for n in cfg.uplink_names() if n in ups]
    facts = {
        "backend": fw,
        "uplinks": ups,
        "uplink_index": assign_uplink_indices(names, previous),
        "counters": {},
        "dest_mtus": dest_mtus(cfg),
    }
    if with_counters:
        facts["counters"] = nft_counters() if fw == "fw4" else {}
    return facts


# --- uplinks ---------------------------------------------------------------------------

UBUS_TIMEOUT_MS = 5000


def netifd_interfaces():
    """`network.interface dump` through python3-ubus; None where there is no netifd."""
    try:
        import ubus
    except ImportError:
        return None
    try:
        ubus.connect()
        try:
            # python3-ubus waits forever by default (timeout 0); rpcd would SIGKILL us at 30 s.
            reply = ubus.call("network.interface", "dump", {}, timeout=UBUS_TIMEOUT_MS)
        finally:
            ubus.disconnect()
    except Exception:  # noqa: BLE001 - ubus raises bare RuntimeError/IOError variants
        return None
    dump = reply[0] if isinstance(reply, list) and reply else reply
    return parse_netifd_dump(dump or {})


def parse_netifd_dump(dump):
    """{name: {device, gateway, gateway6, up}} from a netifd interface dump.

    OpenWrt keeps IPv6 on a sibling interface (wan6 on the same device), so an interface
    without an IPv6 default route borrows the gateway of a sibling on its device.
    """
    out = {}
    for itf in dump.get("interface", []):
        name = itf.get("interface")
        if not name:
            continue
        dev = itf.get("l3_device") or itf.get("device")
        gw4 = gw6 = None
        for route in itf.get("route", []) + itf.get("inactive", {}).get("route", []):
            if route.get("mask") == 0 and route.get("nexthop"):
                if ":" in route.get("target", ""):
                    gw6 = gw6 or route["nexthop"]
                else:
                    gw4 = gw4 or route["nexthop"]
        out[name] = {"device": dev, "gateway": gw4, "gateway6": gw6, "up": bool(itf.get("up"))}
    for name, fact in out.items():
        if not fact["gateway6"]:
            for other in out.values():
                if other is not fact and other["device"] == fact["device"] and other["gateway6"]:
                    fact["gateway6"] = other["gateway6"]
                    break
    return out


_UNREAD = object()


def network_names(cfg, netifd=_UNREAD):
    """The netifd interfaces an entry could be bound to (what a page offers as uplinks),
    plus the ones the config names: sorted, without loopback. `netifd`: a dump already
    read (netifd_interfaces()), so one poll asks netifd once."""
    names = set((netifd_interfaces() if netifd is _UNREAD else netifd) or {}) | set(cfg.uplink_names())
    return sorted(names - {"loopback"})


def uplinks(cfg, netifd=_UNREAD):
    netifd = (netifd_interfaces() if netifd is _UNREAD else netifd) or {}
    reflected = {e.uplink for e in cfg.active("redirect") if e.rec["reflection"] and e.rec["dest_ip"].version == 4}
    out = {}
    for name in cfg.uplink_names():
        fact = dict(netifd.get(name, {}))
        override = cfg.uplinks.get(name, {})
        for key in ("device", "gateway", "gateway6"):
            if override.get(key) is not None:
                fact[key] = str(override[key])
        if not fact.get("device"):
            continue
        link = _link(fact["device"])
        fact["up"] = bool(link) and fact.get("up", True) and "UP" in link.get("flags", [])
        fact["p2p"] = bool(link) and "POINTOPOINT" in link.get("flags", [])
        fact["mtu"] = link.get("mtu") if link else None
        fact["mtu6"] = _ipv6_mtu(fact["device"])
        if fact["p2p"]:
            # A tunnel's own addresses: routing.plan gives replies sourced from them a
            # fallback route where main has none for their family (see routing.py).
            fact["addresses"] = _addresses(fact["device"])
        if name in reflected:
            # NAT loopback matches LAN traffic to the uplink's own public addresses
            fact["addresses4"] = _ipv4_addresses(fact["device"])
        if not fact.get("gateway"):
            fact["gateway"] = _kernel_gateway(fact["device"], "-4")
        if not fact.get("gateway6"):
            fact["gateway6"] = _kernel_gateway(fact["device"], "-6")
        out[name] = fact
    return out


def _ipv6_mtu(dev):
    """The device's IPv6 MTU, which a router advertisement may set below the link MTU."""
    try:
        return int(system.read_sys("/proc/sys/net/ipv6/conf/%s/mtu" % dev, ""))
    except ValueError:
        return None


def _ip(argv, ask):
    """`ip -j ...` output, from the kernel in-process when possible (see the module docstring)."""
    return system.kernel_json(argv, ask, rtnl.Error)


def _link(dev):
    data = _ip(["ip", "-j", "link", "show", "dev", dev], lambda: rtnl.link(dev))
    return data[0] if data else None


def _addresses(dev):
    """Global-scope addresses on a device (no link-local), sorted for a stable plan."""
    data = system.run_json(["ip", "-j", "addr", "show", "dev", dev]) or []
    found = set()
    for link in data:
        for a in link.get("addr_info", []):
            if a.get("scope") == "global" and a.get("local"):
                found.add(a["local"])
    return sorted(found)


def _ipv4_addresses(dev):
    """The IPv4 addresses on a device, sorted: one rtnetlink dump, no `ip` started."""
    data = _ip(["ip", "-j", "-4", "addr", "show"], lambda: rtnl.addresses("ipv4")) or []
    return sorted({a["local"] for link in data if link.get("ifname") == dev
                   for a in link.get("addr_info", []) if a.get("local")})


def _kernel_gateway(dev, fam):
    """The gateway of a default route through `dev` in the main table, if any."""
    family = "ipv4" if fam == "-4" else "ipv6"
    data = _ip(["ip", "-j", fam, "route", "show", "default", "dev", dev],
               lambda: rtnl.default_routes(dev, family)) or []
    for route in data:
        if route.get("gateway"):
            return route["gateway"]
    return None


def dest_mtus(cfg):
    """Route MTU toward each redirect destination (the SYN's clamp, and check's mss advice)."""
    out = {}
    for e in cfg.active("redirect"):
        dest = str(e.rec["dest_ip"])
        if dest in out:
            continue
        route = route_get(dest)
        if not route:
            continue
        mtu = route.get("mtu") or (_link(route["dev"]) or {}).get("mtu") if route.get("dev") else None
        if mtu:
            out[dest] = int(mtu)
    return out


def route_get(dest, extra=()):
    """`ip route get DEST [from SRC iif DEV]` as a dict, or None when there is no route."""
    argv = ["ip", "-j", "route", "get", dest] + list(extra)
    opts = dict(zip(extra[::2], extra[1::2]))
    if set(opts) - {"from", "iif", "mark"} or len(extra) % 2:
        data = system.run_json(argv)
    else:
        data = _ip(argv, lambda: rtnl.route_get(dest, src=opts.get("from"), iif=opts.get("iif"), mark=opts.get("mark")))
    return data[0] if data else None


def is_local_address(addr):
    """Whether `addr` (an ipaddress address) is configured on one of this host's interfaces."""
    fam = "ipv4" if addr.version == 4 else "ipv6"
    data = _ip(["ip", "-j", "-4" if addr.version == 4 else "-6", "addr", "show"], lambda: rtnl.addresses(fam)) or []
    text = str(addr)
    return any(a.get("local") == text for link in data for a in link.get("addr_info", []))


def reached_by(dest, uplink_devices):
    """How the router reaches `dest`: "uplink" (a hairpin), "tunnel" (a point-to-point
    device such as WireGuard), "lan", or None when it is not routable."""
    dev = (route_get(str(dest)) or {}).get("dev")
    if not dev:
        return None
    if dev in uplink_devices:
        return "uplink"
    link = _link(dev)
    return "tunnel" if link and "POINTOPOINT" in link.get("flags", []) else "lan"


# --- kill-switch -----------------------------------------------------------------------

def killswitch(ups):
    """{active, via, reason}: active when public destinations are not routed out of an uplink."""
    devices = {u["device"] for u in ups.values() if u.get("device")}
    if not devices:
        return {"active": False, "via": None, "reason": "no uplink is known"}
    checks = [("the router", PROBE4, ()), ("the router (IPv6)", PROBE6, ())]
    for dev, src in lan_sources(devices):
        checks.append(("LAN %s" % dev, PROBE4, ("from", src, "iif", dev)))
    for who, probe, extra in checks:
        route = route_get(probe, extra)
        if not route or not route.get("dev"):
            continue
        if route["dev"] not in devices:
            return {"active": True, "via": route["dev"],
                    "reason": "traffic from %s to the internet leaves by %s, not by an uplink" % (who, route["dev"])}
    return _marked_capture(devices) or \
        {"active": False, "via": None, "reason": "traffic to the internet leaves by the uplink"}


def _marked_capture(devices):
    """A VPN that takes traffic by firewall mark and ip rule instead of the default route
    (pbr's policies, mwan3, a Tailscale exit node's marks, WireGuard's own fwmark rule):
    unmarked probes leave by the uplink, but traffic the firewall marks does not. Ask the
    kernel where each fwmark rule's traffic goes, with that mark."""
    for fam, probe in (("ipv4", PROBE4), ("ipv6", PROBE6)):
        for rule in ip_rules(fam):
            if "fwmark" not in rule or rule.get("iif") or rule.get("src", "all") != "all":
                continue
            mark = int(rule["fwmark"], 16)
            if not mark:
                continue
            route = route_get(probe, ("mark", rule["fwmark"]))
            dev = (route or {}).get("dev")
            if dev and dev not in devices:
                shown = rule["fwmark"] + ("/" + rule["fwmask"] if rule.get("fwmask") else "")
                return {"active": True, "via": dev, "marked": True,
                        "reason": "traffic with firewall mark %s (ip rule %s, table %s: a policy router such as "
                                  "pbr, mwan3 or Tailscale) leaves by %s, not by an uplink"
                                  % (shown, rule.get("priority"), rule.get("table"), dev)}
    return None


def lan_sources(uplink_devices):
    """(device, a neighbour address) for private IPv4 subnets on non-uplink devices."""
    data = _ip(["ip", "-j", "-4", "addr", "show"], lambda: rtnl.addresses("ipv4")) or []
    out = []
    for link in data:
        dev = link.get("ifname")
        if not dev or dev in uplink_devices or dev == "lo" or "POINTOPOINT" in link.get("flags", []):
            continue
        for a in link.get("addr_info", []):
            try:
                itf = ipaddress.ip_interface("%s/%s" % (a["local"], a["prefixlen"]))
            except (KeyError, ValueError):
                continue
            if not itf.ip.is_private or itf.network.prefixlen > 30:
                continue
            neighbour = itf.ip + 1 if itf.ip + 1 in itf.network and itf.ip + 1 != itf.network.broadcast_address else itf.ip - 1
            out.append((dev, str(neighbour)))
            break
    return out


# --- counters --------------------------------------------------------------------------

def nft_counters():
    """{map: {element key text: [packets, bytes]}} from the live `table inet wormhole`."""
    if system.installed("nft"):
        try:
            return nfnl.map_counters()
        except nfnl.Error:
            pass                         # ask nft itself
    data = system.run_json(["nft", "-j", "list", "table", "inet", "wormhole"])
    out = {}
    for obj in (data or {}).get("nftables", []):
        m = obj.get("map")
        if not m or not (m.get("name", "").startswith("in_") or m.get("name", "").startswith("dnat_")):
            continue
        elems = {}
        for item in m.get("elem", []):
            key, counter = _element(item)
            if key is not None:
                elems[key] = counter
        out[m["name"]] = elems
    return out


def _element(item):
    """One JSON map element -> ("443 . tcp . ipv4", [packets, bytes]): port first, as
    render writes the keys (render/nft.py KEY_TYPE)."""
    if isinstance(item, list) and item:
        item = item[0]
    elem = item.get("elem", item) if isinstance(item, dict) else None
    if not isinstance(elem, dict):
        return None, None
    val = elem.get("val")
    parts = val.get("concat") if isinstance(val, dict) else None
    if not parts:
        return None, None
    text = []
    for p in parts:
        if isinstance(p, dict) and "range" in p:
            text.append("%s-%s" % tuple(p["range"]))
        else:
            text.append(str(p))
    if text[0] in ("ipv4", "ipv6"):
        text.reverse()       # a table loaded by a version that put the family first: same element
    counter = elem.get("counter") or {}
    return " . ".join(text), [int(counter.get("packets", 0)), int(counter.get("bytes", 0))]


# --- sysctls ----------------------------------------------------------------------------

def rp_filter(dev):
    """(effective rp_filter, src_valid_mark) for a device: the kernel uses max(all, dev)."""
    base = "/proc/sys/net/ipv4/conf/%s/"
    vals = []
    for d in ("all", dev):
        vals.append(int(system.read_sys(base % d + "rp_filter", "0") or 0))
    svm = max(int(system.read_sys(base % d + "src_valid_mark", "0") or 0) for d in ("all", dev))
    return max(vals), svm


def fwmark_accept():
    """net.ipv4.tcp_fwmark_accept as text ("0" where this kernel has no such setting)."""
    return system.read_sys(paths.FWMARK_ACCEPT, "0")


def forwarding():
    """{4: "1"|"0", 6: ...}: whether the kernel forwards each family (1 where unreadable)."""
    return {4: system.read_sys("/proc/sys/net/ipv4/ip_forward", "1"),
            6: system.read_sys("/proc/sys/net/ipv6/conf/all/forwarding", "1")}


# --- sockets, conntrack, WireGuard ------------------------------------------------------

def listening():
    """{(proto, port)} of sockets listening on the router (TCP LISTEN, bound UDP)."""
    found = set()
    for proto, files in (("tcp", ("tcp", "tcp6")), ("udp", ("udp", "udp6"))):
        for name in files:
            text = system.read_sys("/proc/net/%s" % name, "") or ""
            for line in text.splitlines()[1:]:
                cols = line.split()
                if len(cols) < 4:
                    continue
                if proto == "tcp" and cols[3] != "0A":
                    continue
                try:
                    found.add((proto, int(cols[1].rsplit(":", 1)[1], 16)))
                except (IndexError, ValueError):
                    continue
    return found


def conntrack_table():
    """Parsed /proc/net/nf_conntrack: [(proto, reply src address, reply sport, mark, replied)], or None."""
    text = system.read_sys("/proc/net/nf_conntrack")
    if text is None:
        return None
    out = []
    for line in text.splitlines():
        entry = _conntrack_line(line.split())
        if entry:
            out.append(entry)
    return out


def _conntrack_line(cols):
    if len(cols) < 6 or cols[2] not in ("tcp", "udp"):
        return None
    src, sport = [], []
    mark = 0
    for col in cols:
        key, _, value = col.partition("=")
        if key == "src":
            src.append(value)
        elif key == "sport":
            sport.append(value)
        elif key == "mark":
            mark = int(value) if value.isdigit() else 0
    if len(src) < 2 or len(sport) < 2:
        return None
    try:
        return cols[2], ipaddress.ip_address(src[1]), int(sport[1]), mark, "[UNREPLIED]" not in cols
    except ValueError:
        return None


def wireguard_peers(dev):
    """[[allowed prefixes] per peer] of a WireGuard device, or None if it is not one."""
    if not dev:
        return None
    try:
        rc, out, _ = system.run(["wg", "show", dev, "allowed-ips"], check=False, timeout=5)
    except system.ToolError:
        return None
    if rc != 0:
        return None
    peers = []
    for line in out.splitlines():
        nets = []
        for p in line.split()[1:]:
            try:
                nets.append(ipaddress.ip_network(p, strict=False))
            except ValueError:
                continue
        peers.append(nets)
    return peers


# --- the firewall: its config, and what of ours is loaded ----------------------------------

def firewall_sections():
    """The sections of /etc/config/firewall ([] where it cannot be read)."""
    try:
        return open_backend().load(paths.FIREWALL_PACKAGE)
    except UciError:
        return []


def nft_usable():
    """Whether nft answers at all (a kernel and a tool with nftables)."""
    return system.run_json(["nft", "-j", "list", "tables"]) is not None


# iptables-nft keeps fw3's (and Debian's iptables') rules in these tables: not a VPN's.
_XTABLES = {"filter", "nat", "mangle", "raw", "security"}
_FILTER_HOOKS = ("input", "forward", "output")
_QUIET = {"counter", "log", "limit"}


def foreign_filter_chains():
    """Base filter chains at input/forward/output in nft tables that are neither fw4's,
    ours nor iptables-nft's: a VPN client's own kill-switch (NymVPN, Mullvad-style `table
    inet nym`). [{family, table, chain, hook, prio, policy, drops, accepts}], where `drops`:
    policy drop or a last rule that drops or rejects unconditionally, and `accepts`: the ct
    mark masks of its accept rules (`ct mark & MASK ... accept`), to compare with ours."""
    data = system.run_json(["nft", "-j", "list", "ruleset"]) if system.installed("nft") else None
    chains, rules = {}, {}
    for obj in (data or {}).get("nftables", []):
        c, r = obj.get("chain"), obj.get("rule")
        if c and c.get("type") == "filter" and c.get("hook") in _FILTER_HOOKS:
            fam, table = c.get("family"), c.get("table")
            if table in ("fw4", "wormhole") or (fam in ("ip", "ip6") and table in _XTABLES):
                continue
            chains[(fam, table, c.get("name"))] = c
        elif r:
            rules.setdefault((r.get("family"), r.get("table"), r.get("chain")), []).append(r.get("expr") or [])
    out = []
    for key, c in chains.items():
        exprs = rules.get(key, [])
        last = exprs[-1] if exprs else []
        verdicts = [k for e in last for k in e if k not in _QUIET]
        drop_rule = bool(verdicts) and all(k in ("drop", "reject") for k in verdicts)
        # what may accept before the drop: every rule under a drop policy, all but the last
        # rule when that rule is the drop
        before = exprs[:-1] if drop_rule else exprs
        out.append({"family": key[0], "table": key[1], "chain": key[2], "hook": c.get("hook"),
                    "prio": c.get("prio"), "policy": c.get("policy", "accept"),
                    "drops": c.get("policy") == "drop" or drop_rule,
                    "accepts": [m for e in before if {"accept": None} in e for m in _ct_mark_masks(e)]})
    return sorted(out, key=lambda x: (x["family"], x["table"], x["chain"]))


def _ct_mark_masks(expr):
    """The masks of `ct mark & MASK` matches in one rule's expressions."""
    masks = []
    for e in expr:
        left = (e.get("match") or {}).get("left") or {}
        operands = left.get("&") if isinstance(left, dict) else None
        if operands and len(operands) == 2 and operands[0] == {"ct": {"key": "mark"}} \
                and isinstance(operands[1], int):
            masks.append(operands[1])
    return masks


def nft_table_loaded():
    """Whether `table inet wormhole` is in the kernel."""
    return system.run_json(["nft", "-j", "list", "table", "inet", "wormhole"]) is not None


def fw4_snippet_rules(chain):
    """{handle: comment} of our rules inside fw4's `chain`; None when fw4 is not loaded.

    Asked of the kernel in-process (nfnl); `nft` lists the chain only if that fails.
    """
    if system.installed("nft"):
        try:
            found = nfnl.rule_comments("fw4", chain)
        except nfnl.Error:
            pass
        else:
            return None if found is None else {
                h: c for h, c in found.items() if c is not None and c.startswith("!wormhole:")}
    data = system.run_json(["nft", "-j", "-a", "list", "chain", "inet", "fw4", chain])
    if data is None:
        return None
    out = {}
    for obj in data.get("nftables", []):
        rule = obj.get("rule")
        if rule and str(rule.get("comment", "")).startswith("!wormhole:"):
            out[rule["handle"]] = rule["comment"]
    return out


def iptables_save(family, table=None):
    """`iptables-save` (ip6tables-save for ipv6) output, "" where it fails."""
    argv = ["iptables-save" if family == "ipv4" else "ip6tables-save"] + (["-t", table] if table else [])
    return system.run(argv, check=False)[1]


def fw3_jumps(family):
    """(built-in chain, our chain) jumps of ours present in the live tables."""
    found = set()
    for line in iptables_save(family).splitlines():
        if "!fw3: wormhole" in line and line.startswith("-A "):
            parts = line.split()
            found.add((parts[1], parts[-1]))
    return found


# --- our ip rules and routing tables -----------------------------------------------------

def families():
    """The IP families this kernel routes ("ipv6" only where it has IPv6)."""
    fams = ["ipv4"]
    if os.path.exists("/proc/sys/net/ipv6"):
        fams.append("ipv6")
    return fams


def _flag(fam):
    return "-4" if fam == "ipv4" else "-6"


def ip_rules(fam):
    """Every ip rule of a family, by priority: in-process over rtnetlink, `ip -j rule show`
    only if that fails (4 tools fewer per apply)."""
    rules = _ip(["ip", "-j", _flag(fam), "rule", "show"], lambda: rtnl.rules(fam)) or []
    return sorted(rules, key=lambda r: r.get("priority", 0))


def is_own_rule(rule, main):
    """Whether a kernel ip rule is one of wormhole's (priority and uplink mask)."""
    return _is_ours(rule, main, Marks(main["mark_mask"]))


def _is_ours(rule, main, marks):
    pr = rule.get("priority")
    if pr not in (main["priority"] - 1, main["priority"], fallback_priority(main["priority"])):
        return False
    try:
        mask = int(rule.get("fwmask", "0"), 16)
    except ValueError:
        return False
    return mask == marks.uplink


def routing_snapshot(main):
    """Our ip rules and routing tables as they are now (for rollback, reconcile and check)."""
    marks = Marks(main["mark_mask"])
    snap = {"rules": [], "routes": []}
    recorded = state.applied()
    tables = set(range(main["table_base"] + 1, main["table_base"] + 16))
    tables.update(t for t in recorded.get("tables", []) if isinstance(t, int))
    recorded_rules = [{k: r[k] for k in RULE_KEYS if k in r} for r in recorded.get("rules", [])]
    for fam in families():
        for rule in ip_rules(fam):
            if _is_ours(rule, main, marks) or _rule_from_kernel(rule, fam) in recorded_rules:
                snap["rules"].append(_rule_from_kernel(rule, fam))
        routes = _ip(["ip", "-j", _flag(fam), "route", "show", "table", "all"], lambda: rtnl.routes(fam))
        for route in routes or []:
            table = _table_value(route.get("table", "main"))
            if table in tables and route.get("type", "unicast") == "unicast":
                snap["routes"].append(_route_from_kernel(route, fam, table))
    return snap


def _rule_from_kernel(rule, fam):
    mark = int(rule.get("fwmark", "0"), 16)
    mask = int(rule.get("fwmask", "0xffffffff"), 16)
    out = {"family": fam, "priority": rule["priority"], "fwmark": "0x%08x/0x%08x" % (mark, mask),
           "table": _table_value(rule.get("table", "main"))}
    if rule.get("iif"):
        out["iif"] = rule["iif"]
    if rule.get("src") and rule["src"] != "all":
        out["src"] = rule["src"] + ("/%s" % rule["srclen"] if "srclen" in rule else "")
    return out


def _table_value(t):
    return int(t) if str(t).isdigit() else t


def _route_from_kernel(route, fam, table):
    out = {"family": fam, "table": table, "dst": route.get("dst", "default"), "dev": route.get("dev")}
    if route.get("gateway"):
        out["via"] = route["gateway"]
    return out
