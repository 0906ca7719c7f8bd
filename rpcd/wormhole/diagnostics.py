"""`check`: compare what the config asks for with what the kernel and the firewall do.

Each finding is {"check", "level" (ok | warn | error), "message", optional "id"}: the
message says what is wrong and the exact fix, never just that something failed.
"""

import ipaddress

from . import config, facts, paths, render, schema, system
from .apply import fw4_snippet_rules, routing_snapshot
from .uci import UciError, open_backend


def _f(check, level, message, **extra):
    d = {"check": check, "level": level, "message": message}
    d.update(extra)
    return d


def run(cfg):
    findings = []
    if cfg.error:
        return {"ok": False, "findings": [_f("config", "error", "the config cannot be read: %s" % cfg.error)]}
    fw = facts.backend(cfg)
    ups = facts.uplinks(cfg)
    f = facts.gather(cfg, with_counters=False)
    plan = render.render(cfg, f, fw)
    findings += _config_findings(cfg, plan)
    if cfg.main["enabled"] and cfg.active():
        findings += _kernel_findings(cfg, fw, plan)
        findings += _uplink_findings(cfg, ups)
        findings += _service_findings(cfg, fw)
        findings += _redirect_findings(cfg, ups)
    ok = not any(x["level"] == "error" for x in findings)
    return {"ok": ok, "backend": fw, "killswitch": facts.killswitch(ups), "findings": findings}


def _config_findings(cfg, plan):
    out = []
    for e in cfg.entries:
        for field, msg in e.errors:
            out.append(_f("config", "error", "%s skipped: %s: %s" % (e.describe(), field, msg), id=e.id))
        for field, msg in e.warnings:
            out.append(_f("config", "warn", "%s: %s: %s" % (e.id, field, msg), id=e.id))
    for sid, reason in plan["skipped"].items():
        out.append(_f("uplink", "error", "%s skipped: %s" % (sid, reason), id=sid))
    out += [_f("config", "warn", p) for p in cfg.problems]
    out += [_f("config", "warn", "main.%s: %s" % p) for p in cfg.main_problems]
    out += [_f("uplink", "warn", w) for w in plan["warnings"]]
    return out


def _kernel_findings(cfg, fw, plan):
    out = []
    if fw == "fw4":
        data = system.run_json(["nft", "-j", "list", "table", "inet", "wormhole"])
        if data is None:
            out.append(_f("rules", "error", "table inet wormhole is not loaded; run `wormhole apply`"))
        else:
            out.append(_f("rules", "ok", "table inet wormhole is loaded"))
        for chain in ("input", "forward"):
            live = fw4_snippet_rules(chain)
            if live is None:
                out.append(_f("fw4", "warn", "fw4's table is not loaded: nothing accepts opened ports or forwards "
                                             "until the firewall starts (`/etc/init.d/firewall start`)"))
                break
            if not live:
                out.append(_f("fw4", "error", "fw4 chain %s lacks wormhole's accept rule; run `wormhole apply` "
                                             "or `fw4 reload`" % chain))
    else:
        rc, text, _ = system.run(["iptables-save", "-t", "mangle"], check=False)
        level, msg = ("ok", "iptables chains are loaded") if "WORMHOLE_PRE" in text else \
            ("error", "iptables chain WORMHOLE_PRE is missing; run `wormhole apply` or `fw3 reload`")
        out.append(_f("rules", level, msg))
    current = routing_snapshot(cfg.main)
    have = [{k: r[k] for k in ("family", "priority", "fwmark", "table", "iif") if k in r} for r in current["rules"]]
    for rule in plan["routing"]["rules"]:
        want = {k: rule[k] for k in ("family", "priority", "fwmark", "table", "iif") if k in rule}
        if want not in have:
            out.append(_f("ip-rule", "error", "missing %s rule priority %s fwmark %s lookup %s (netifd restarted? "
                          "run `wormhole apply`)" % (rule["family"], rule["priority"], rule["fwmark"], rule["table"])))
    routes = {(r["family"], r["table"]) for r in current["routes"] if r["dst"] == "default"}
    for route in plan["routing"]["routes"]:
        if (route["family"], route["table"]) not in routes:
            out.append(_f("route", "error", "table %s has no %s default route via %s (is the uplink %s up?)" % (
                route["table"], route["family"], route.get("via") or route["dev"], route.get("uplink"))))
    if not any(x["level"] == "error" for x in out):
        out.append(_f("routing", "ok", "ip rules and routing tables match the config"))
    return out


def _uplink_findings(cfg, ups):
    out = []
    for name in sorted({config.uplink_of(e) for e in cfg.active()}):
        u = ups.get(name)
        if not u:
            continue
        if not u.get("up"):
            out.append(_f("uplink", "warn", "uplink %s (%s) is down" % (name, u["device"])))
        rpf, svm = facts.rp_filter(u["device"])
        if rpf == 1 and not svm:
            out.append(_f("rp_filter", "error",
                          "uplink %s: strict rp_filter drops inbound connections while the VPN holds the default "
                          "route; run `sysctl -w net.ipv4.conf.%s.src_valid_mark=1` or "
                          "`sysctl -w net.ipv4.conf.%s.rp_filter=2`" % (name, u["device"], u["device"])))
    return out


# --- services behind exemptions --------------------------------------------------------

def _listening():
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


def _firewall_sections():
    try:
        return open_backend().load(paths.FIREWALL_PACKAGE)
    except UciError:
        return []


def _fw_ports(sections, stype, port_opt, want_target):
    out = []
    for s in sections:
        if s.type != stype or s.options.get("enabled", "1") in ("0", "no", "off", "false"):
            continue
        if want_target and str(s.options.get("target", "")).upper() != want_target:
            continue
        protos = str(s.options.get("proto", "tcp udp")).replace("tcpudp", "tcp udp").split()
        for raw in str(s.options.get(port_opt, "")).replace(":", "-").split():
            try:
                out.append((protos, schema.parse_port_range(raw), s))
            except ValueError:
                continue
    return out


def _covers(items, proto, ports):
    return [s for protos, pr, s in items if (proto in protos or "all" in protos) and pr[0] <= ports[0] and ports[1] <= pr[1]]


def _service_findings(cfg, fw):
    out = []
    listening = _listening()
    fw_sections = _firewall_sections()
    forwards = _fw_ports(fw_sections, "redirect", "src_dport", None)
    accepts = _fw_ports(fw_sections, "rule", "dest_port", "ACCEPT")
    for e in cfg.active("exemption"):
        r = e.rec
        for proto in ("tcp", "udp") if r["proto"] == "tcpudp" else (r["proto"],):
            lo, hi = r["port"]
            local = any((proto, p) in listening for p in range(lo, min(hi, lo + 1024) + 1))
            forwarded = _covers(forwards, proto, r["port"])
            label = "%s/%s" % (proto, schema.format_port_range(r["port"]))
            if not local and not forwarded:
                out.append(_f("service", "warn", "%s (%s): nothing listens on the router and no port forward sends it to "
                              "a LAN host; add a forward (`wormhole forward add %s:%s <host>:<port>`)" % (
                                  label, e.id, proto, schema.format_port_range(r["port"])), id=e.id))
            elif local and not forwarded and not r["open"] and not _covers(accepts, proto, r["port"]):
                out.append(_f("service", "warn", "%s (%s): a router service listens but no firewall rule accepts it "
                              "from %s; set open=1 (`wormhole inbound add %s:%s --open`)" % (
                                  label, e.id, r["interface"], proto, schema.format_port_range(r["port"])), id=e.id))
            else:
                out.append(_f("service", "ok", "%s (%s): %s" % (
                    label, e.id, "forwarded to a LAN host" if forwarded else "served by the router"), id=e.id))
    for e in cfg.active("redirect"):
        r = e.rec
        for protos, pr, s in forwards:
            if (r["proto"] in protos or r["proto"] == "tcpudp") and pr[0] <= r["src_dport"][1] and r["src_dport"][0] <= pr[1]:
                out.append(_f("redirect", "warn", "%s: public port %s is also forwarded by the firewall's redirect %s; "
                              "only the first DNAT wins (wormhole's)" % (e.id, schema.format_port_range(r["src_dport"]), s.name),
                              id=e.id))
    return out


# --- redirects --------------------------------------------------------------------------

def _wireguard_peers(dev):
    """[(allowed prefixes)] per peer of a WireGuard device, or None if it is not one."""
    try:
        rc, out, _ = system.run(["wg", "show", dev, "allowed-ips"], check=False, timeout=5)
    except system.ToolError:
        return None
    if rc != 0:
        return None
    peers = []
    for line in out.splitlines():
        parts = line.split()
        nets = []
        for p in parts[1:]:
            try:
                nets.append(ipaddress.ip_network(p, strict=False))
            except ValueError:
                continue
        peers.append(nets)
    return peers


def _redirect_findings(cfg, ups):
    out = []
    uplink_devs = {u["device"] for u in ups.values()}
    for e in cfg.active("redirect"):
        r = e.rec
        dest = r["dest_ip"]
        route = facts.route_get(str(dest))
        if not route or not route.get("dev"):
            out.append(_f("redirect", "error", "%s: %s is not routable from here" % (e.id, dest), id=e.id))
            continue
        if route["dev"] in uplink_devs:
            out.append(_f("redirect", "error", "%s: %s is reached through the uplink %s itself; the forward would "
                          "hairpin back to the internet" % (e.id, dest, route["dev"]), id=e.id))
            continue
        peers = _wireguard_peers(route["dev"])
        if peers is not None and not any(dest in net for nets in peers for net in nets):
            out.append(_f("wireguard", "error", "%s: no WireGuard peer on %s has %s in its allowed_ips; add the "
                          "backend's tunnel address to that peer's allowed_ips" % (e.id, route["dev"], dest), id=e.id))
        mtu = (facts.dest_mtus(cfg) or {}).get(str(dest))
        if r["mss"] and mtu and r["mss"] > mtu - (40 if dest.version == 4 else 60):
            out.append(_f("mss", "warn", "%s: mss %d is larger than the path allows (%s MTU %d -> at most %d)" % (
                e.id, r["mss"], route["dev"], mtu, mtu - (40 if dest.version == 4 else 60)), id=e.id))
        if not r["snat"] and peers is not None:
            out.append(_f("redirect", "ok", "%s: client addresses are preserved; the backend must route replies back "
                          "into the tunnel (wormhole on the backend with an exemption on its tunnel interface, and "
                          "allowed_ips 0.0.0.0/0, ::/0 on its peer for this gateway)" % e.id, id=e.id))
    out += _backend_tunnel_findings(cfg, ups)
    return out


def _backend_tunnel_findings(cfg, ups):
    """On a backend: exemptions on a WireGuard uplink need a peer that accepts any source."""
    out = []
    for e in cfg.active("exemption"):
        u = ups.get(e.rec["interface"])
        if not u:
            continue
        peers = _wireguard_peers(u["device"])
        if peers is None:
            continue
        for fam, default in ((4, ipaddress.ip_network("0.0.0.0/0")), (6, ipaddress.ip_network("::/0"))):
            if e.rec["family"] not in ("any", "ipv%d" % fam):
                continue
            if not any(net == default for nets in peers for net in nets):
                out.append(_f("wireguard", "error" if fam == 4 else "warn",
                              "%s: replies to internet clients leave by %s, but no peer there has %s in allowed_ips, "
                              "so WireGuard drops them; add %s to the gateway peer's allowed_ips (netifd: with "
                              "route_allowed_ips 0)" % (e.id, u["device"], default, default), id=e.id))
    return out
