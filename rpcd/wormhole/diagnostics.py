"""`check`: compare what the config asks for with what the kernel and the firewall do.

Each finding is {"check", "level" (ok | warn | error), "message", optional "id"}: the
message says what is wrong and the exact fix, never just that something failed.
"""

import ipaddress

from . import facts, schema
from .layout import RULE_KEYS, Marks, hexmark

# `status` uses redirect_problems() on every LuCI poll: render and apply (the writers'
# modules) are imported only by the full `check`, in the functions that need them.


def _f(check, level, message, **extra):
    d = {"check": check, "level": level, "message": message}
    d.update(extra)
    return d


def run(cfg):
    from . import render
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
        findings += offload_findings(facts.firewall_sections(), fw)
        findings += foreign_drop_findings(facts.foreign_filter_chains(), Marks(cfg.main["mark_mask"]))
        if not any(x["check"] in ("ip-rule", "route") and x["level"] == "error" for x in findings):
            findings += neighbour_findings(cfg.main, plan["routing"])
    ok = not any(x["level"] == "error" for x in findings)
    return {"ok": ok, "backend": fw, "killswitch": facts.killswitch(ups), "findings": findings}


def offload_findings(fw_sections, fw):
    """What is known of fw4's flow offloading with wormhole's marks (docs/DESIGN-NOTES.md,
    "Flow offloading, on paper"): worked through from the kernel source, not shown here."""
    on = {}
    for sec in fw_sections:
        if sec.type == "defaults":
            for opt in ("flow_offloading", "flow_offloading_hw"):
                if opt in sec.options:
                    on[opt] = str(sec.options[opt]).strip().lower() in schema.TRUE_WORDS
    if not on.get("flow_offloading"):
        return []
    if fw != "fw4":
        return [_f("offload", "warn", "fw3 software flow offloading is on: offloaded connections bypass "
                   "wormhole's iptables rules after their first packets; this combination is not analysed "
                   "(docs/DESIGN-NOTES.md, Flow offloading)")]
    hw = " and hardware offloading (flow_offloading_hw) is on too: the NIC is given the same routes, not verified " \
         "on hardware" if on.get("flow_offloading_hw") else ""
    return [_f("offload", "ok", "fw4 flow offloading is on%s. Offloaded forwards keep the reply route their first "
               "established packet computed with wormhole's restored mark, so replies still leave by their uplink "
               "(docs/DESIGN-NOTES.md, Flow offloading, on paper); router services are never offloaded" % hw)]


def foreign_drop_findings(chains, marks):
    """A VPN that brings its own reject-all chains (NymVPN's `table inet nym`, Mullvad-style):
    a drop in any base chain is final, whatever fw4's or wormhole's chains accept, so the
    inbound connections and replies wormhole routes die there unless that chain accepts
    wormhole's connection mark. The rule to add is named exactly (docs/RECIPES.md)."""
    bits = marks.uplink | marks.published
    out = []
    for c in chains:
        if not c["drops"]:
            continue
        where = "table %s %s chain %s (hook %s, priority %s)" % (c["family"], c["table"], c["chain"], c["hook"], c["prio"])
        if any(m & bits == bits for m in c["accepts"]):
            out.append(_f("foreign-firewall", "ok", "%s drops what it does not accept, and accepts wormhole's "
                          "connections by their ct mark" % where))
            continue
        out.append(_f("foreign-firewall", "error",
                      "%s drops everything it does not accept itself (a VPN's own kill-switch?): the inbound "
                      "connections and replies wormhole routes die there, whatever wormhole's and the firewall's "
                      "rules accept. Add to that chain, before its drop, `nft insert rule %s %s %s ct mark & %s != 0 "
                      "accept` (only connections that came in by an uplink or a forward carry these bits), and "
                      "have the VPN re-add it whenever it rewrites its table (its up/connect hook)"
                      % (where, c["family"], c["table"], c["chain"], hexmark(bits))))
    return out


# --- other policy routers: pbr, mwan3, Tailscale, wg-quick ... ----------------------------
#
# They own mark bits, ip rules and tables too (docs/RECIPES.md, "Beside pbr/mwan3/Tailscale").
# Two things break wormhole's replies: mark bits shared with another package (its marks then
# pick wormhole's tables, or ours theirs), and a rule of theirs before ours that takes a
# reply carrying our mark (Tailscale's `lookup 52` with an exit node, a pbr policy rule when
# the reply carries that policy's mark too). The kernel is asked where such a reply goes.

KERNEL_RULES = ((0, "local"), (32766, "main"), (32767, "default"))
PROBES = {"ipv4": facts.PROBE4, "ipv6": facts.PROBE6}
NEIGHBOUR_MASK_FIX = ("set main.mark_mask to bits no other package uses (`uci set wormhole.@wormhole[0].mark_mask="
                      "0xff000000; uci commit wormhole; wormhole apply`: the default is clear of pbr's 0x00ff0000, "
                      "mwan3's 0x3f00 and Tailscale's 0xff0000), or move the other package's mask")


def _foreign_rules(main):
    out = []
    for fam in facts.families():
        for rule in facts.ip_rules(fam):
            if (rule.get("priority"), rule.get("table")) in KERNEL_RULES and not set(rule) - {"priority", "src", "table"}:
                continue
            if not facts.is_own_rule(rule, main):
                out.append((fam, rule))
    return out


def _rule_bits(rule):
    """(mark, mask) of a fwmark rule, None without one; no mask means the whole mark."""
    if "fwmark" not in rule:
        return None
    try:
        return int(rule["fwmark"], 16), int(rule.get("fwmask", "0xffffffff"), 16)
    except ValueError:
        return None


def _rule_text(fam, rule):
    parts = ["%s %s:" % (fam, rule.get("priority"))]
    if rule.get("src", "all") != "all":
        parts.append("from %s%s" % (rule["src"], "/%s" % rule["srclen"] if "srclen" in rule else ""))
    if rule.get("iif"):
        parts.append("iif %s" % rule["iif"])
    if "fwmark" in rule:
        parts.append("fwmark %s%s" % (rule["fwmark"], "/%s" % rule["fwmask"] if rule.get("fwmask") else ""))
    parts.append("lookup %s" % rule["table"] if rule.get("table") else rule.get("action", "(no lookup)"))
    return " ".join(parts)


def neighbour_findings(main, routing):
    """Other packages' ip rules: their mark bits against main.mark_mask, and where the kernel
    sends a reply that carries wormhole's uplink mark (alone, and with each foreign mark of a
    rule before ours) compared with wormhole's own table for that uplink."""
    foreign = _foreign_rules(main)
    if not foreign:
        return []
    mask = main["mark_mask"]
    out = []
    for fam, rule in foreign:
        bits = _rule_bits(rule)
        if not bits:
            continue
        used = bits[0] if bits[1] == 0xFFFFFFFF else bits[1]
        if used & mask:
            out.append(_f("neighbours", "error", "ip rule %s of another package (pbr, mwan3, Tailscale, ...) uses "
                          "mark bits %#010x, inside wormhole's main.mark_mask %#010x: its marks pick wormhole's "
                          "reply routes and wormhole's marks pick its policies; %s" % (
                              _rule_text(fam, rule), used & mask, mask, NEIGHBOUR_MASK_FIX), setting="mark_mask"))
    routes = {(r["family"], r.get("uplink")): r for r in routing["routes"]}
    for rule in routing["rules"]:
        route = routes.get((rule["family"], rule.get("uplink")))
        if rule.get("iif") or rule.get("src") or rule["table"] == "main" or not route:
            continue
        ours = int(rule["fwmark"].split("/")[0], 16)
        before = [r for f, r in foreign if f == rule["family"] and r.get("priority", 0) < rule["priority"] - 1]
        probes = [(ours, None)]
        for r in before:
            bits = _rule_bits(r)
            if bits and bits[0] and not bits[0] & mask:
                probes.append((ours | bits[0], r))
        for mark, theirs in probes:
            got = (facts.route_get(PROBES[rule["family"]], ("mark", "0x%x" % mark)) or {}).get("dev")
            if got == route["dev"]:
                continue
            culprits = [theirs] if theirs else before
            lowest = min(r.get("priority", 0) for r in culprits) if culprits else main["priority"]
            out.append(_f("neighbours", "error", "replies of connections that came in by %s (mark %#010x%s) are "
                          "routed to %s, not out of %s: ip rule%s %s of another package come%s before wormhole's "
                          "(main.priority %d) and take%s them; set main.priority below %d "
                          "(`uci set wormhole.@wormhole[0].priority=%d; uci commit wormhole; wormhole apply`)" % (
                              rule.get("uplink"), mark, " with that rule's mark" if theirs else "", got or "nowhere",
                              route["dev"], "" if len(culprits) == 1 else "s",
                              ", ".join(_rule_text(rule["family"], r) for r in culprits[:3]) or "(none listed)",
                              "s" if len(culprits) == 1 else "", main["priority"],
                              "s" if len(culprits) == 1 else "", lowest, max(2, min(90, lowest - 2))),
                          setting="priority"))
            break
    if not any(x["level"] == "error" for x in out):
        prios = sorted({r.get("priority", 0) for _, r in foreign})
        shown = ", ".join(str(p) for p in prios[:12]) + (", ..." if len(prios) > 12 else "")
        out.append(_f("neighbours", "ok", "ip rules of other packages (priorities %s) leave wormhole's replies alone: "
                      "no mark bits inside main.mark_mask %#010x, and a reply with wormhole's mark leaves by its "
                      "uplink" % (shown, mask)))
    return out


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
    from .render import nft as nft_render
    out = []
    if fw == "fw4":
        if not facts.nft_table_loaded():
            out.append(_f("rules", "error", "table inet wormhole is not loaded; run `wormhole apply`"))
        else:
            out.append(_f("rules", "ok", "table inet wormhole is loaded"))
        for chain in nft_render.SNIPPET_CHAINS:
            live = facts.fw4_snippet_rules(chain)
            if live is None and chain == nft_render.SNIPPET_CHAINS[0]:
                out.append(_f("fw4", "warn", "fw4's table is not loaded: nothing accepts opened ports or forwards "
                                             "until the firewall starts (`/etc/init.d/firewall start`)"))
                break
            if live is None:
                out.append(_f("fw4", "warn", "fw4 has no chain %s, so wormhole's rule for it is not in place "
                                             "(an older or modified fw4?)" % chain))
                continue
            if not live:
                out.append(_f("fw4", "error", "fw4 chain %s lacks wormhole's rule; run `wormhole apply` "
                                             "or `fw4 reload`" % chain))
    else:
        text = facts.iptables_save("ipv4", "mangle")
        level, msg = ("ok", "iptables chains are loaded") if "WORMHOLE_PRE" in text else \
            ("error", "iptables chain WORMHOLE_PRE is missing; run `wormhole apply` or `fw3 reload`")
        out.append(_f("rules", level, msg))
    current = facts.routing_snapshot(cfg.main)
    have = [{k: r[k] for k in RULE_KEYS if k in r} for r in current["rules"]]
    for rule in plan["routing"]["rules"]:
        want = {k: rule[k] for k in RULE_KEYS if k in rule}
        if want not in have:
            out.append(_f("ip-rule", "error", "missing %s rule priority %s%s fwmark %s lookup %s (netifd restarted? "
                          "run `wormhole apply`)" % (rule["family"], rule["priority"],
                                                     (" from %s" % rule["src"]) if rule.get("src") else "",
                                                     rule["fwmark"], rule["table"])))
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
    for name in sorted({e.uplink for e in cfg.active()}):
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

def _fw_ports(sections, stype, port_opt, want_target):
    out = []
    for s in sections:
        if s.type != stype or s.options.get("enabled", "1") in schema.FALSE_WORDS:
            continue
        if want_target and str(s.options.get("target", "")).upper() != want_target:
            continue
        protos = [p for word in str(s.options.get("proto", "tcp udp")).split() for p in schema.protocols(word)]
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
    listening = facts.listening()
    fw_sections = facts.firewall_sections()
    forwards = _fw_ports(fw_sections, "redirect", "src_dport", None)
    accepts = _fw_ports(fw_sections, "rule", "dest_port", "ACCEPT")
    served_tcp = []
    for e in cfg.active("exemption"):
        r = e.rec
        for proto in schema.protocols(r["proto"]):
            lo, hi = r["port"]
            local = any((proto, p) in listening for p in range(lo, min(hi, lo + 1024) + 1))
            forwarded = _covers(forwards, proto, r["port"])
            label = "%s/%s" % (proto, schema.format_port_range(r["port"]))
            if local and proto == "tcp":
                served_tcp.append(label)
            if not local and not forwarded:
                out.append(_f("service", "warn", "%s (%s): nothing listens on the router and no port forward sends it to "
                              "a LAN host; add a forward (`wormhole forward add %s:%s <host>:<port>`)" % (
                                  label, e.id, proto, schema.format_port_range(r["port"])), id=e.id, fix="forward"))
            elif local and not forwarded and not r["open"] and not _covers(accepts, proto, r["port"]):
                out.append(_f("service", "warn", "%s (%s): a router service listens but no firewall rule accepts it "
                              "from %s; set open=1 (`wormhole inbound add %s:%s --open`)" % (
                                  label, e.id, r["interface"], proto, schema.format_port_range(r["port"])), id=e.id, fix="open"))
            else:
                out.append(_f("service", "ok", "%s (%s): %s" % (
                    label, e.id, "forwarded to a LAN host" if forwarded else "served by the router"), id=e.id))
    if served_tcp and facts.fwmark_accept() == "0":
        fix = FWMARK_ACCEPT_APPLY if cfg.main.get("fwmark_accept") else FWMARK_ACCEPT_OPTION
        out.append(_f("throughput", "warn", FWMARK_ACCEPT_ADVICE % (", ".join(served_tcp[:4]), fix)))
    return out


# Why this costs throughput and what the sysctl changes: sysctls.py.
FWMARK_ACCEPT_ADVICE = (
    "router services behind exemptions (%s) have every reply packet re-routed, which costs "
    "10-20 %% of their throughput, because net.ipv4.tcp_fwmark_accept is 0; %s")
FWMARK_ACCEPT_APPLY = "run `wormhole apply`, which sets it while TCP exemptions exist"
FWMARK_ACCEPT_OPTION = ("let wormhole set it while TCP exemptions exist (`uci set wormhole.@wormhole[0].fwmark_accept=1; "
                        "uci commit wormhole; wormhole apply`) or set it yourself "
                        "(`sysctl -w net.ipv4.tcp_fwmark_accept=1`, and a line in /etc/sysctl.d)")


# --- redirects --------------------------------------------------------------------------
#
# What goes wrong with a port forward, gateway side first: the destination has no route
# (or is routed back out of the uplink), forwarding is off, the tunnel's WireGuard peer
# does not accept the destination, an explicit mss does not fit the tunnel, a firewall
# redirect claims the same public port, or (snat 0) the backend does not send its
# replies back through the tunnel. Backend side: the gateway's peer there does not
# allow arbitrary destinations, so WireGuard drops the replies.

BACKEND_NEEDS = ("an exemption for %s on its tunnel interface (`wormhole inbound add %s "
                 "--interface <tunnel network> --open`) and, on its WireGuard peer for this gateway, "
                 "allowed_ips 0.0.0.0/0, ::/0 without routes (netifd: option route_allowed_ips '0'; "
                 "wg-quick: Table = off)")


def _spec(r, ports):
    return "%s:%s" % (r["proto"], schema.format_port_range(ports))


def _header_bytes(dest):
    return 40 if dest.version == 4 else 60


def redirect_problems(cfg, ups):
    """[(entry, level, check, message)] that need no tool but `ip`: shared by check and status."""
    out = []
    uplink_devs = {u["device"] for u in ups.values() if u.get("device")}
    mtus = None
    for e in cfg.active("redirect"):
        r = e.rec
        dest = r["dest_ip"]
        route = facts.route_get(str(dest))
        if not route or not route.get("dev") or route.get("type", "unicast") != "unicast":
            out.append((e, "error", "redirect", "%s: %s is not routable from here (no route to it: is the tunnel or "
                        "LAN it lives on up, and is dest_ip the host's address on it?)" % (e.id, dest)))
            continue
        if route["dev"] in uplink_devs:
            out.append((e, "error", "redirect", "%s: %s is reached through the uplink %s itself, so the forward would "
                        "send clients back out to the internet; point dest_ip at a LAN host or at the backend's "
                        "tunnel address" % (e.id, dest, route["dev"])))
            continue
        if r["mss"] and r["proto"] != "udp":
            mtus = facts.dest_mtus(cfg) if mtus is None else mtus
            mtu = mtus.get(str(dest))
            if mtu and r["mss"] > mtu - _header_bytes(dest):
                # the clamp only ever lowers the MSS and the route-MTU clamp runs first, so a
                # too-large mss is not harmful, only a sign of a wrong assumption about the path
                out.append((e, "warn", "mss", "%s: mss %d is larger than the path allows (%s has MTU %d, so at most "
                            "%d) and has no effect: the automatic clamp to the route MTU already goes lower. An "
                            "explicit mss is for a path narrower than the tunnel device (a tunnel inside a tunnel): "
                            "set it below %d, or leave it empty" % (
                                e.id, r["mss"], route["dev"], mtu, mtu - _header_bytes(dest), mtu - _header_bytes(dest))))
    out += _forwarding_problems(cfg)
    out += _firewall_redirect_problems(cfg)
    return out


def _forwarding_problems(cfg):
    out = []
    forwarding = None
    for fam, key in ((4, "net.ipv4.ip_forward"), (6, "net.ipv6.conf.all.forwarding")):
        entries = [e for e in cfg.active("redirect") if e.rec["dest_ip"].version == fam]
        if entries and forwarding is None:
            forwarding = facts.forwarding()
        if entries and forwarding[fam] == "0":
            out.append((entries[0], "error", "forwarding",
                        "IPv%d forwarding is off, so no port forward to an IPv%d destination (%s) can pass; run "
                        "`sysctl -w %s=1` and make it permanent (/etc/sysctl.d)" % (
                            fam, fam, ", ".join(e.id for e in entries), key)))
    return out


def _firewall_redirect_problems(cfg):
    """A firewall `config redirect` on a public port of ours: both DNAT, wormhole's runs first."""
    out = []
    forwards = _fw_ports(facts.firewall_sections(), "redirect", "src_dport", None)
    for e in cfg.active("redirect"):
        r = e.rec
        for protos, pr, s in forwards:
            if ((any(p in protos for p in schema.protocols(r["proto"])) or "all" in protos)
                    and pr[0] <= r["src_dport"][1] and r["src_dport"][0] <= pr[1]):
                name = s.options.get("name") or s.name
                out.append((e, "warn", "redirect", "%s: public port %s is also forwarded by the firewall's redirect "
                            "'%s' (/etc/config/firewall); wormhole's DNAT runs first, so that one never sees these "
                            "connections: delete one of the two" % (
                                e.id, schema.format_port_range(r["src_dport"]), name)))
    return out


def _redirect_findings(cfg, ups):
    out = [_f(check, level, msg, id=e.id) for e, level, check, msg in redirect_problems(cfg, ups)]
    broken = {x["id"] for x in out if x["level"] == "error" and x["check"] != "forwarding"}
    marks = Marks(cfg.main["mark_mask"])
    table = None
    for e in cfg.active("redirect"):
        if e.id in broken:
            continue
        r = e.rec
        route = facts.route_get(str(r["dest_ip"])) or {}
        peers = facts.wireguard_peers(route.get("dev"))
        if peers is not None and not any(r["dest_ip"] in net for nets in peers for net in nets):
            out.append(_f("wireguard", "error", "%s: no WireGuard peer on %s has %s in its allowed_ips, so WireGuard "
                          "drops the forwarded packets; add the backend's tunnel address to the allowed_ips of the "
                          "backend's peer here (netifd: list allowed_ips '%s/%d')" % (
                              e.id, route["dev"], r["dest_ip"], r["dest_ip"], r["dest_ip"].max_prefixlen), id=e.id))
            continue
        if r["snat"] or peers is None:
            continue
        if table is None:
            table = facts.conntrack_table()
        out.append(_preserve_finding(e, marks, table))
    out += _backend_tunnel_findings(cfg, ups)
    return out


def _preserve_finding(e, marks, table):
    """snat 0 toward a tunnel: the gateway cannot see the backend's routing, but conntrack can
    tell whether connections it forwarded there were ever answered."""
    r = e.rec
    needs = BACKEND_NEEDS % (_spec(r, r["dest_port"]), _spec(r, r["dest_port"]))
    if table is None:
        return _f("redirect", "warn", "%s: client addresses are preserved, so the backend must send its replies back "
                  "through the tunnel (conntrack is not readable here to confirm it); it needs %s" % (e.id, needs), id=e.id)
    answered, unanswered = _replies_seen(e, marks, table)
    if answered:
        return _f("redirect", "ok", "%s: client addresses are preserved and the backend answers through the tunnel "
                  "(%d answered connection%s)" % (e.id, answered, "" if answered == 1 else "s"), id=e.id)
    if unanswered:
        return _f("redirect", "error", "%s: %d connection%s forwarded to %s got no reply: with client addresses "
                  "preserved the backend sends its replies out of its own default route instead of the tunnel, or "
                  "WireGuard there drops them. The backend needs %s; or set snat 1 (the backend then sees this "
                  "gateway's address)" % (e.id, unanswered, "" if unanswered == 1 else "s", r["dest_ip"], needs), id=e.id)
    return _f("redirect", "warn", "%s: client addresses are preserved, so the backend must send its replies back "
              "through the tunnel; no forwarded connection has been seen yet to confirm it. The backend needs %s" % (
                  e.id, needs), id=e.id)


def _replies_seen(e, marks, table):
    r = e.rec
    protos = schema.protocols(r["proto"])
    lo, hi = r["dest_port"]
    answered = unanswered = 0
    for proto, addr, port, mark, replied in table:
        if proto in protos and addr == r["dest_ip"] and lo <= port <= hi and mark & marks.published:
            if replied:
                answered += 1
            else:
                unanswered += 1
    return answered, unanswered


def _backend_tunnel_findings(cfg, ups):
    """On a backend: clients keep their internet addresses through the tunnel (snat 0), and
    WireGuard accepts a packet from a peer only if its source is in that peer's allowed_ips,
    and sends one only to a peer whose allowed_ips cover its destination."""
    out = []
    for e in cfg.active("exemption"):
        u = ups.get(e.rec["interface"])
        if not u:
            continue
        peers = facts.wireguard_peers(u["device"])
        if peers is None:
            continue
        for fam, default in ((4, ipaddress.ip_network("0.0.0.0/0")), (6, ipaddress.ip_network("::/0"))):
            if e.rec["family"] not in ("any", "ipv%d" % fam):
                continue
            if not any(net == default for nets in peers for net in nets):
                # IPv4 is what nearly every gateway forwards; an IPv6 gap only matters with IPv6 forwards
                out.append(_f("wireguard", "error" if fam == 4 else "warn",
                              "%s: IPv%d clients reach this host through %s with their own internet addresses, but "
                              "no peer there has %s in its allowed_ips, so WireGuard drops their packets and the "
                              "replies to them; add %s to the allowed_ips of the gateway's peer without routing it "
                              "(netifd: option route_allowed_ips '0'; wg-quick: Table = off)" % (
                                  e.id, fam, u["device"], default, default), id=e.id))
    return out
