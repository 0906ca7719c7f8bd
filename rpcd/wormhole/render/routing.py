"""The policy-routing plan: per uplink a mark, a routing table and its default routes.

Two rules per uplink and family:
  priority P-1: packets of marked connections that arrive *from* the uplink keep normal
                routing (lookup main), so a DNAT'd request still reaches the LAN host;
  priority P:   everything else carrying the mark (the replies) uses the uplink's table,
                whose only route is the uplink's default. The reverse-path check of an
                arriving packet runs as if from `lo`, so with src_valid_mark=1 it sees P
                and strict rp_filter passes.
Never `lookup main` for replies: with a split (0/1 + 128/1) or low-metric VPN default,
main points at the tunnel.

Point-to-point uplinks (a backend's WireGuard tunnel) get one more rule per address of
the device, *after* main:
  priority 32767+P: from <tunnel address> fwmark 0/<uplink bits> lookup the uplink's table.
A local reply (a SYN-ACK, a UDP answer) is routed once *before* netfilter restores its
mark, and that first lookup must succeed: on a backend without an IPv6 default route
(IPv4-only behind CGNAT, or defaults restricted to other source prefixes) it fails with
"network unreachable" and the reply to an IPv6 client that arrived through the tunnel
is never sent (seen in the gateway lab). The rule sits after main, so it only answers
lookups main cannot: nothing that routes today changes.
"""

import ipaddress

from ..layout import fallback_priority, hexmark


def plan(m):
    rules, routes = [], []
    if not m.main["enabled"]:
        return {"rules": rules, "routes": routes}
    for u in m.uplinks:
        table = m.table_base + u.index
        fwmark = "%s/%s" % (hexmark(u.mark), hexmark(m.marks.uplink))
        for fam in ("ipv4", "ipv6"):
            rules.append({"family": fam, "priority": m.priority - 1, "fwmark": fwmark, "iif": u.device,
                          "table": "main", "uplink": u.name})
            rules.append({"family": fam, "priority": m.priority, "fwmark": fwmark, "table": table,
                          "uplink": u.name})
        rules.extend(_fallback_rules(m, u, table))
        route4 = _default(u, u.gateway, "ipv4", table)
        route6 = _default(u, u.gateway6, "ipv6", table)
        routes.extend(r for r in (route4, route6) if r)
    return {"rules": rules, "routes": routes}


def _default(u, gateway, fam, table):
    if gateway:
        return {"family": fam, "table": table, "dst": "default", "via": str(gateway), "dev": u.device, "uplink": u.name}
    if u.p2p:
        return {"family": fam, "table": table, "dst": "default", "dev": u.device, "uplink": u.name}
    return None


def _fallback_rules(m, u, table):
    if not u.p2p:
        return []
    out = []
    for text in u.addresses:
        addr = ipaddress.ip_address(text)
        out.append({"family": "ipv%d" % addr.version, "priority": fallback_priority(m.priority),
                    "src": str(addr), "fwmark": "%s/%s" % (hexmark(0), hexmark(m.marks.uplink)),
                    "table": table, "uplink": u.name})
    return out
