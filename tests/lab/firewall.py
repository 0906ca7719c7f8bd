"""The lab's fw4 emulation, part 1: the config model (zones, rules, port
forwards, forwardings), its validation, and loading. fw4_render.py turns a
config into the `table inet fw4` ruleset.

Every value that reaches rule text is checked here: identifiers against an
allow-list, addresses through ipaddress, ports as bounded ints, names without
quotes or newlines.
"""

import dataclasses
import ipaddress
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import netns

VERDICTS = ("accept", "reject", "drop")
PROTOS = ("tcp", "udp", "tcpudp", "icmp", "any")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_SAFE_TEXT = re.compile(r'^[^"\\\n]*$')


@dataclass
class Zone:
    name: str
    devices: list
    subnets: list = field(default_factory=list)
    input: str = "reject"
    output: str = "accept"
    forward: str = "reject"
    masq: bool = False
    masq6: bool = False
    mtu_fix: bool = False


@dataclass
class Rule:
    """A fw4 `config rule`: src zone (None = from the router itself), dest zone
    (None = to the router itself, "*" = any zone)."""
    name: str
    src: str = None
    dest: str = None
    proto: str = "any"
    dest_port: str = None
    src_ip: str = None
    dest_ip: str = None
    family: str = None            # None (any) | "ipv4" | "ipv6"
    target: str = "accept"
    icmp: list = None             # ICMP types ("8") or "type . code" pairs ("4 . 1")
    limit: str = None             # "1000/second"


def openwrt_default_rules(zone="wan"):
    """The ICMP/DHCP rules of OpenWrt's default /etc/config/firewall, as fw4
    renders them. IPv6 neighbour discovery to the router needs them."""
    v6_in = ["128", "129", "1", "3", "133", "134"]
    v6_in_codes = ["2 . 0", "4 . 0", "4 . 1", "135 . 0", "136 . 0"]
    v6_fwd = ["128", "129", "1", "3"]
    v6_fwd_codes = ["2 . 0", "4 . 0", "4 . 1"]
    icmp6 = dict(src=zone, proto="icmp", family="ipv6", limit="1000/second")
    return [
        Rule("Allow-DHCP-Renew", src=zone, proto="udp", dest_port="68", family="ipv4"),
        Rule("Allow-Ping", src=zone, proto="icmp", family="ipv4", icmp=["8"]),
        Rule("Allow-DHCPv6", src=zone, proto="udp", dest_port="546", src_ip="fc00::/6",
             dest_ip="fc00::/6"),
        Rule("Allow-ICMPv6-Input", icmp=v6_in, **icmp6),
        Rule("Allow-ICMPv6-Input", icmp=v6_in_codes, **icmp6),
        Rule("Allow-ICMPv6-Forward", dest="*", icmp=v6_fwd, **icmp6),
        Rule("Allow-ICMPv6-Forward", dest="*", icmp=v6_fwd_codes, **icmp6),
    ]


@dataclass
class Redirect:
    """A fw4 `config redirect` with target DNAT."""
    name: str
    src: str
    proto: str
    src_dport: str
    dest_ip: str = None           # None: redirect to the router itself
    dest_port: str = None
    src_dip: str = None
    family: str = None            # derived from dest_ip / src_dip when None


@dataclass
class Fw4:
    zones: list
    forwardings: list = field(default_factory=list)   # [(src, dest)]
    rules: list = field(default_factory=list)
    redirects: list = field(default_factory=list)
    input: str = "reject"
    output: str = "accept"
    forward: str = "reject"

    def zone(self, name):
        for zone in self.zones:
            if zone.name == name:
                return zone
        raise ValueError(f"no fw4 zone {name!r} (have {[z.name for z in self.zones]})")

    def validate(self):
        """Raise ValueError naming the first bad value."""
        for value in (self.input, self.output, self.forward):
            _verdict(value)
        for zone in self.zones:
            _ident(zone.name)
            for dev in zone.devices:
                _ident(dev)
            for subnet in zone.subnets:
                check_addr(subnet)
            for value in (zone.input, zone.output, zone.forward):
                _verdict(value)
        for src, dest in self.forwardings:
            self.zone(src), self.zone(dest)
        for rule in self.rules:
            _check_rule(self, rule)
        for red in self.redirects:
            _check_redirect(self, red)


# --- validation: everything that reaches rule text is checked -----------------

def _ident(value):
    if not _IDENT.match(str(value)):
        raise ValueError(f"bad identifier {value!r}")
    return value


def _verdict(value):
    if value not in VERDICTS:
        raise ValueError(f"bad verdict {value!r}")
    return value


def check_port(value):
    """"N" or "N-M", 1..65535, N <= M."""
    text = str(value)
    m = re.match(r"^(\d{1,5})(?:-(\d{1,5}))?$", text)
    lo, hi = (int(m.group(1)), int(m.group(2) or m.group(1))) if m else (0, 0)
    if not 0 < lo <= hi < 65536:
        raise ValueError(f"bad port {value!r}")
    return text


def check_addr(value):
    return str(ipaddress.ip_network(value, strict=False)
               if "/" in str(value) else ipaddress.ip_address(value))


def _text(value):
    if not _SAFE_TEXT.match(value):
        raise ValueError(f"bad text {value!r}")
    return value


def _check_rule(fw, rule):
    _text(rule.name)
    if rule.src:
        fw.zone(rule.src)
    if rule.dest and rule.dest != "*":
        fw.zone(rule.dest)
    for item in rule.icmp or []:
        if not re.match(r"^\d{1,3}( \. \d{1,3})?$", item):
            raise ValueError(f"bad icmp type {item!r}")
    if rule.limit and not re.match(r"^\d+/(second|minute|hour|day)$", rule.limit):
        raise ValueError(f"bad limit {rule.limit!r}")
    if rule.proto not in PROTOS:
        raise ValueError(f"bad proto {rule.proto!r}")
    if rule.dest_port is not None:
        check_port(rule.dest_port)
    for a in (rule.src_ip, rule.dest_ip):
        if a:
            check_addr(a)
    if rule.target not in VERDICTS:
        raise ValueError(f"bad target {rule.target!r}")


def _check_redirect(fw, red):
    _text(red.name)
    fw.zone(red.src)
    if red.proto not in ("tcp", "udp", "tcpudp"):
        raise ValueError(f"bad redirect proto {red.proto!r}")
    check_port(red.src_dport)
    if red.dest_port is not None:
        check_port(red.dest_port)
    for a in (red.dest_ip, red.src_dip):
        if a:
            check_addr(a)


# --- other forms of the config -------------------------------------------------

def to_json(fw):
    return json.dumps(dataclasses.asdict(fw), indent=1)


def from_json(text):
    data = json.loads(text)
    return Fw4(zones=[Zone(**z) for z in data.pop("zones")],
               rules=[Rule(**r) for r in data.pop("rules")],
               redirects=[Redirect(**r) for r in data.pop("redirects")],
               forwardings=[tuple(f) for f in data.pop("forwardings")], **data)


def to_uci(fw):
    """The config as OpenWrt's /etc/config/firewall, so a product that reads
    the firewall config (diagnostics: rules, redirects) sees what is loaded."""
    out = [_uci_section("defaults", None, [
        ("input", fw.input.upper()), ("output", fw.output.upper()),
        ("forward", fw.forward.upper())])]
    for z in fw.zones:
        out.append(_uci_section("zone", None, [
            ("name", z.name), *[("device", d, "list") for d in z.devices],
            *[("subnet", s, "list") for s in z.subnets],
            ("input", z.input.upper()), ("output", z.output.upper()),
            ("forward", z.forward.upper()), ("masq", "1" if z.masq else None),
            ("masq6", "1" if z.masq6 else None), ("mtu_fix", "1" if z.mtu_fix else None)]))
    for src, dest in fw.forwardings:
        out.append(_uci_section("forwarding", None, [("src", src), ("dest", dest)]))
    for r in fw.rules:
        out.append(_uci_section("rule", None, [
            ("name", r.name), ("src", r.src), ("dest", r.dest), ("family", r.family),
            ("proto", None if r.proto == "any" else r.proto), ("src_ip", r.src_ip),
            ("dest_ip", r.dest_ip), ("dest_port", r.dest_port),
            *[("icmp_type", i.replace(" . ", "/"), "list") for i in r.icmp or []],
            ("limit", r.limit), ("target", r.target.upper())]))
    for r in fw.redirects:
        out.append(_uci_section("redirect", None, [
            ("name", r.name), ("src", r.src), ("proto", r.proto), ("src_dip", r.src_dip),
            ("src_dport", r.src_dport), ("dest_ip", r.dest_ip), ("dest_port", r.dest_port),
            ("family", r.family), ("target", "DNAT")]))
    return "\n".join(out)


def _uci_section(kind, name, options):
    lines = [f"config {kind}" + (f" '{name}'" if name else "")]
    for key, value, *how in options:
        if value is not None:
            quoted = str(value).replace("'", "'\\''")
            lines.append(f"\t{how[0] if how else 'option'} {key} '{quoted}'")
    return "\n".join(lines) + "\n"


def load(ns, text, path):
    """Write the ruleset to `path` (kept for debugging) and load it in one transaction."""
    Path(path).write_text(text)
    netns.run(netns.ns_exec(ns, ["nft", "-f", str(path)]), timeout=15)


def ensure_root_dirs(root):
    """Create the include dirs a product expects to exist on OpenWrt."""
    base = Path(root) / "usr/share/nftables.d"
    for sub in ("ruleset-pre", "ruleset-post", "table-pre", "table-post",
                "chain-pre", "chain-post"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    (Path(root) / "etc/nftables.d").mkdir(parents=True, exist_ok=True)
    (Path(root) / "etc/config").mkdir(parents=True, exist_ok=True)
