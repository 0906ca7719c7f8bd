"""The lab's fw4 emulation, part 2: render a firewall.Fw4 config as the
`table inet fw4` ruleset, the way firewall4's ruleset.uc template does.

Same base chains, hooks, priorities and rule order, the same per-zone chains
and comments, and fw4's automatic include directories under a root dir:

  <root>/usr/share/nftables.d/ruleset-pre/*.nft         after "flush table"
  <root>/usr/share/nftables.d/table-pre/*.nft           top of the table
  <root>/usr/share/nftables.d/chain-pre/<chain>/*.nft   start of <chain>
  <root>/usr/share/nftables.d/chain-post/<chain>/*.nft  end of <chain>
  <root>/usr/share/nftables.d/table-post/*.nft          end of the table
  <root>/usr/share/nftables.d/ruleset-post/*.nft        after the table

emitted as `include "<path>"` statements exactly where fw4 puts them.
Not emulated: flow offloading, ct helpers, ipsets, syn_flood, logging, NAT
reflection, time/mark/dscp matches.
"""

import re
from pathlib import Path

from .firewall import VERDICTS, check_addr, check_port

_SAFE_PATH = re.compile(r"^[A-Za-z0-9_./+-]+$")
_CT_VMAP = "ct state vmap { established : accept, related : accept }"
_MSS = "tcp flags syn / syn,fin,rst tcp option maxseg size set rt mtu"


def render(fw, root=None):
    """The whole fw4 ruleset as text, for one `nft -f`."""
    fw.validate()
    return _Renderer(fw, _Includes(root), root).text()


def _set(items, quote=False, braces=False):
    """fw4.set(): one item bare, several in braces."""
    items = [f'"{i}"' if quote else str(i) for i in items]
    if len(items) == 1 and not braces:
        return items[0]
    return "{ " + ", ".join(items) + " }"


def _hook(kind, hook, prio, policy="accept"):
    return f"type {kind} hook {hook} priority {prio}; policy {policy};"


def _family_of(*addrs):
    for a in addrs:
        if a:
            return "ipv6" if ":" in str(a) else "ipv4"
    return None


def _ipproto(family):
    return "ip6" if family == "ipv6" else "ip"


def _protos(proto):
    return ["tcp", "udp"] if proto == "tcpudp" else [proto]


class _Includes:
    """fw4's automatic includes found under <root>/usr/share/nftables.d."""

    def __init__(self, root):
        self.base = Path(root) / "usr/share/nftables.d" if root else None

    def _paths(self, position, chain=None):
        if not self.base:
            return []
        folder = self.base / position / chain if chain else self.base / position
        paths = sorted(str(p) for p in folder.glob("*.nft")) if folder.is_dir() else []
        for p in paths:
            if not _SAFE_PATH.match(p):
                raise ValueError(f"include path with unsafe characters: {p!r}")
        return paths

    def top(self, position):
        return "".join(f'\ninclude "{p}"\n' for p in self._paths(position))

    def table(self, position):
        paths = self._paths(position)
        return "\n" + "".join(f'\tinclude "{p}"\n' for p in paths) if paths else ""

    def chain(self, position, chain):
        return "".join(f'\t\tinclude "{p}"\n' for p in self._paths(position, chain))


class _Renderer:
    def __init__(self, fw, inc, root):
        self.fw, self.inc, self.root = fw, inc, root
        self.out = []
        self._flags()

    def _flags(self):
        """Which per-zone verdict chains exist and which zones DNAT/SNAT
        (fw4's sflags/dflags)."""
        self.sflags = {z.name: {z.input} for z in self.fw.zones}
        self.dflags = {z.name: {z.output, z.forward} for z in self.fw.zones}
        for _, dest in self.fw.forwardings:
            self.dflags[dest].add("accept")
        for rule in self.fw.rules:
            if rule.src and rule.dest and rule.dest != "*":
                self.dflags[rule.dest].add(rule.target)
        for red in self.fw.redirects:
            self.dflags[red.src].add("dnat")
        for zone in self.fw.zones:
            if zone.masq or zone.masq6:
                self.dflags[zone.name].add("snat")

    def w(self, line=""):
        self.out.append(line + "\n")

    def raw(self, text):
        self.out.append(text)

    def text(self):
        self.w("table inet fw4")
        self.w("flush table inet fw4")
        self.raw(self.inc.top("ruleset-pre"))
        self.w()
        self.w("table inet fw4 {")
        self._defines()
        self._filter_chains()
        for zone in self.fw.zones:
            self._zone_chains(zone)
        self._nat_chains()
        self._raw_chains()
        self._mangle_chains()
        self.raw(self.inc.table("table-post"))
        self.w("}")
        self.raw(self.inc.top("ruleset-post"))
        return "".join(self.out)

    def _section(self, title):
        self.w("\t#")
        self.w(f"\t# {title}")
        self.w("\t#")
        self.w()

    def _defines(self):
        self._section("Defines")
        for z in self.fw.zones:
            self.w(f"\tdefine {z.name}_devices = {_set(z.devices, quote=True, braces=True)}")
            subnets = [check_addr(s) for s in z.subnets]
            self.w(f"\tdefine {z.name}_subnets = {{ {', '.join(subnets)} }}")
            self.w()
        self.w()
        self._section("User includes")
        if self.root:
            # fw4 includes /etc/nftables.d; the lab's "/" is the product root.
            self.w(f'\tinclude "{Path(self.root) / "etc/nftables.d"}/*.nft"')
        self.raw(self.inc.table("table-pre"))
        self.w()
        self.w()

    def _chain(self, name, hook=None, body=(), includes=True, tail=()):
        """A chain: hook, chain-pre includes, body, chain-post includes, tail.
        includes="post": only chain-post (fw4's raw_prerouting)."""
        self.w(f"\tchain {name} {{")
        if hook:
            self.w(f"\t\t{hook}")
        if includes is True:
            self.raw(self.inc.chain("chain-pre", name))
        for line in body:
            self.w(f"\t\t{line}")
        if includes:
            self.raw(self.inc.chain("chain-post", name))
        for line in tail:
            self.w(f"\t\t{line}")
        self.w("\t}")
        self.w()

    def _jumps(self, direction, egress=False, zones=None):
        dev = "oifname" if egress else "iifname"
        return [f'{dev} {_set(z.devices, True)} jump {direction}_{z.name} '
                f'comment "!fw4: Handle {z.name} IPv4/IPv6 {direction} traffic"'
                for z in (zones if zones is not None else self.fw.zones)]

    def _filter_chains(self):
        self._section("Filter rules")
        self._base_filter("input", "Accept traffic from loopback", "Handle inbound flows",
                          self._jumps("input"), self.fw.input, reject_last=False)
        self._base_filter("forward", None, "Handle forwarded flows",
                          self._jumps("forward"), self.fw.forward)
        self._base_filter("output", "Accept traffic towards loopback", "Handle outbound flows",
                          self._jumps("output", egress=True), self.fw.output)
        self._chain("prerouting", _hook("filter", "prerouting", "filter"), includes=False)
        self._chain("handle_reject", includes=False, body=[
            'meta l4proto tcp reject with tcp reset comment "!fw4: Reject TCP traffic"',
            'reject with icmpx type port-unreachable comment "!fw4: Reject any other traffic"',
        ])

    def _base_filter(self, name, loopback, ct_comment, jumps, policy, reject_last=True):
        """input/forward/output. In input fw4 puts chain-post includes after
        the final reject; in forward and output before it."""
        self.w(f"\tchain {name} {{")
        self.w(f"\t\t{_hook('filter', name, 'filter', 'accept' if policy == 'accept' else 'drop')}")
        self.w()
        if loopback:
            lo = "oif" if name == "output" else "iif"
            self.w(f'\t\t{lo} "lo" accept comment "!fw4: {loopback}"')
            self.w()
        self.raw(self.inc.chain("chain-pre", name))
        self.w(f'\t\t{_CT_VMAP} comment "!fw4: {ct_comment}"')
        for line in jumps:
            self.w(f"\t\t{line}")
        reject = ["\t\tjump handle_reject\n"] if policy == "reject" else []
        post = [self.inc.chain("chain-post", name)]
        for text in (post + reject if reject_last else reject + post):
            self.raw(text)
        self.w("\t}")
        self.w()

    def _zone_chains(self, z):
        dnat = "dnat" in self.dflags[z.name]
        self._chain(f"input_{z.name}", body=[
            *self._rules(f"input_{z.name}"),
            *(['ct status dnat accept comment "!fw4: Accept port redirections"'] if dnat else []),
        ], tail=[f"jump {z.input}_from_{z.name}"])
        self._chain(f"output_{z.name}", body=self._rules(f"output_{z.name}"),
                    tail=[f"jump {z.output}_to_{z.name}"])
        self._chain(f"forward_{z.name}", body=[
            *self._rules(f"forward_{z.name}"),
            *(['ct status dnat accept comment "!fw4: Accept port forwards"'] if dnat else []),
        ], tail=[f"jump {z.forward}_to_{z.name}"])
        for verdict in VERDICTS:
            if verdict in self.sflags[z.name]:
                self._chain(f"{verdict}_from_{z.name}", includes=False,
                            body=[self._zone_verdict(z, verdict, egress=False)])
            if verdict in self.dflags[z.name]:
                body = []
                if verdict == "accept" and (z.masq or z.masq6):
                    body.append(self._drop_invalid(z))
                body.append(self._zone_verdict(z, verdict, egress=True))
                self._chain(f"{verdict}_to_{z.name}", includes=False, body=body)

    def _zone_verdict(self, z, verdict, egress):
        dev = f'{"oifname" if egress else "iifname"} {_set(z.devices, True)}'
        action = "jump handle_reject" if verdict == "reject" else verdict
        return f'{dev} counter {action} comment "!fw4: {verdict} {z.name} IPv4/IPv6 traffic"'

    def _drop_invalid(self, z):
        nfproto = ""
        if z.masq != z.masq6:
            nfproto = f"meta nfproto {'ipv4' if z.masq else 'ipv6'} "
        return (f'{nfproto}oifname {_set(z.devices, True)} ct state invalid counter drop '
                f'comment "!fw4: Prevent NAT leakage"')

    def _rules(self, chain):
        lines = []
        for rule in self.fw.rules:
            if _rule_chain(rule) == chain:
                lines.extend(_render_rule(rule))
        for src, dest in self.fw.forwardings:
            if f"forward_{src}" == chain:
                lines.append(f'jump accept_to_{dest} '
                             f'comment "!fw4: Accept {src} to {dest} forwarding"')
        return lines

    def _nat_chains(self):
        self.w()
        self._section("NAT rules")
        dnat_zones = [z for z in self.fw.zones if "dnat" in self.dflags[z.name]]
        snat_zones = [z for z in self.fw.zones if "snat" in self.dflags[z.name]]
        self._chain("dstnat", _hook("nat", "prerouting", "dstnat"),
                    body=self._jumps("dstnat", zones=dnat_zones))
        self._chain("srcnat", _hook("nat", "postrouting", "srcnat"),
                    body=self._jumps("srcnat", egress=True, zones=snat_zones))
        for z in self.fw.zones:
            if z in dnat_zones:
                body = [line for red in self.fw.redirects if red.src == z.name
                        for line in _render_redirect(red)]
                self._chain(f"dstnat_{z.name}", body=body)
            if z in snat_zones:
                body = [f'meta nfproto ipv{v} masquerade '
                        f'comment "!fw4: Masquerade IPv{v} {z.name} traffic"'
                        for v, on in ((4, z.masq), (6, z.masq6)) if on]
                self._chain(f"srcnat_{z.name}", body=body)

    def _raw_chains(self):
        self.w()
        self._section("Raw rules (notrack)")
        self._chain("raw_prerouting", _hook("filter", "prerouting", "raw"), includes="post")
        self._chain("raw_output", _hook("filter", "output", "raw"))

    def _mangle_chains(self):
        self.w()
        self._section("Mangle rules")
        fix = [z for z in self.fw.zones if z.mtu_fix]
        self._chain("mangle_prerouting", _hook("filter", "prerouting", "mangle"))
        self._chain("mangle_postrouting", _hook("filter", "postrouting", "mangle"),
                    body=[f'oifname {_set(z.devices, True)} {_MSS} '
                          f'comment "!fw4: Zone {z.name} IPv4/IPv6 egress MTU fixing"'
                          for z in fix])
        self._chain("mangle_input", _hook("filter", "input", "mangle"))
        self._chain("mangle_output", _hook("route", "output", "mangle"))
        self._chain("mangle_forward", _hook("filter", "forward", "mangle"),
                    body=[f'iifname {_set(z.devices, True)} {_MSS} '
                          f'comment "!fw4: Zone {z.name} IPv4/IPv6 ingress MTU fixing"'
                          for z in fix])
        # the last chain is not followed by a blank line before the table's "}"
        if self.out and self.out[-1] == "\n":
            self.out.pop()


def _rule_chain(rule):
    if rule.src and rule.dest:  # dest "*" included: fw4 puts it in forward_<src> too
        return f"forward_{rule.src}"
    if rule.src:
        return f"input_{rule.src}"
    if rule.dest:
        return f"output_{rule.dest}"
    return "output"


def _render_rule(rule):
    """rule.uc for our subset; proto tcpudp becomes one rule per protocol."""
    family = rule.family or _family_of(rule.src_ip, rule.dest_ip)
    if rule.src and rule.dest and rule.dest != "*":
        action = f"jump {rule.target}_to_{rule.dest}"
    else:
        action = "jump handle_reject" if rule.target == "reject" else rule.target
    return [" ".join(_rule_parts(rule, proto, family) + [
        "counter", action, f'comment "!fw4: {rule.name}"']) for proto in _protos(rule.proto)]


def _rule_parts(rule, proto, family):
    parts = []
    if family and not (rule.src_ip or rule.dest_ip):
        parts.append(f"meta nfproto {family}")
    if proto != "any" and not rule.dest_port and not rule.icmp:
        l4 = "ipv6-icmp" if proto == "icmp" and family == "ipv6" else proto
        parts.append(f"meta l4proto {l4}")
    if rule.src_ip:
        parts.append(f"{_ipproto(family)} saddr {check_addr(rule.src_ip)}")
    if rule.dest_ip:
        parts.append(f"{_ipproto(family)} daddr {check_addr(rule.dest_ip)}")
    if rule.dest_port:
        parts.append(f"{proto} dport {check_port(rule.dest_port)}")
    if rule.icmp:
        parts.append(_icmp_match(family, rule.icmp))
    if rule.limit:
        parts.append(f"limit rate {rule.limit}")
    return parts


def _icmp_match(family, items):
    icmp = "icmpv6" if family == "ipv6" else "icmp"
    if any("." in i for i in items):
        return f"{icmp} type . {icmp} code {{ {', '.join(items)} }}"
    return f"{icmp} type {_set(items)}"


def _render_redirect(red):
    """redirect.uc for DNAT port forwards (no reflection)."""
    family = red.family or _family_of(red.dest_ip, red.src_dip) or "ipv4"
    # like fw4: the internal port defaults to the public one
    port = check_port(red.dest_port or red.src_dport)
    lines = []
    for proto in _protos(red.proto):
        parts = [f"{_ipproto(family)} daddr {check_addr(red.src_dip)}" if red.src_dip
                 else f"meta nfproto {family}",
                 f"{proto} dport {check_port(red.src_dport)}", "counter"]
        if red.dest_ip:
            host = check_addr(red.dest_ip)
            parts.append(f"dnat [{host}]:{port}" if family == "ipv6" else f"dnat {host}:{port}")
        else:
            parts.append(f"redirect to {port}")
        parts.append(f'comment "!fw4: {red.name}"')
        lines.append(" ".join(parts))
    return lines
