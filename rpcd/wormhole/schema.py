"""Typed option tables, one per UCI section type, and the parsers behind them.

Every parser takes the raw UCI value (str, or list of str for list options) and returns
a normalised value or raises ValueError with a message meant for people. `parse_section`
turns a whole section into a record or a list of (field, message) problems; it never
guesses: a value it cannot read is an error, an option it does not know is a warning.
"""

import ipaddress

from . import chars

# The boolean words of UCI configs, as fw4 reads them (parse_bool in fw4.uc).
TRUE_WORDS = ("1", "yes", "on", "true", "enabled")
FALSE_WORDS = ("0", "no", "off", "false", "disabled")

LABEL_MAX = 64
LIST_MAX = 1024     # allowlist entries: bounded work per apply and per rule text
PROTOS = ("tcp", "udp", "tcpudp")
FAMILIES = ("any", "ipv4", "ipv6")
BACKENDS = ("auto", "fw4", "fw3")
MASK_MIN_BITS = 7   # 4 bits of uplink number + forward, input and masquerade flags
MSS_MIN, MSS_MAX = 536, 65495


# --- value parsers -------------------------------------------------------------------

SHOWN_MAX = 40


def shown(raw):
    """A value quoted for an error message, shortened: a megabyte of input must not come
    back as a megabyte of message (replies, the LuCI notification, syslog; issue 9)."""
    text = str(raw)
    if len(text) <= SHOWN_MAX:
        return repr(text)
    return "%r... (%d characters)" % (text[:SHOWN_MAX - 8], len(text))


def parse_bool(raw):
    v = raw.strip().lower()
    if v in TRUE_WORDS:
        return True
    if v in FALSE_WORDS:
        return False
    raise ValueError("%s is not a boolean (use 1 or 0)" % shown(raw))


def enum(*values):
    def parse(raw):
        if raw not in values:
            raise ValueError("%s is not one of %s" % (shown(raw), ", ".join(values)))
        return raw
    parse.values = values
    return parse


def parse_port_range(raw):
    """'N' or 'N-M' with 1 <= N <= M <= 65535, canonical decimal (no sign, no leading zero)."""
    parts = raw.split("-", 1) if isinstance(raw, str) else []
    if not parts or not all(chars.only(p, chars.DIGITS, 1, 5) for p in parts):
        raise ValueError("%s is not a port or a range N-M" % shown(raw))
    for p in parts:
        if len(p) > 1 and p.startswith("0"):
            raise ValueError("%s has a leading zero" % shown(raw))
    lo = int(parts[0])
    hi = int(parts[-1])
    if not 1 <= lo <= 65535 or not 1 <= hi <= 65535:
        raise ValueError("%s is out of range (ports are 1 to 65535)" % shown(raw))
    if lo > hi:
        raise ValueError("%s is a reversed range (write %d-%d)" % (shown(raw), hi, lo))
    return (lo, hi)


def format_port_range(pr):
    lo, hi = pr
    return str(lo) if lo == hi else "%d-%d" % (lo, hi)


def parse_ifname(raw):
    if not chars.only(raw, chars.IFNAME, 1, 15):
        raise ValueError("%s is not an interface name (1 to 15 of A-Z a-z 0-9 _ . -)" % shown(raw))
    return raw


def parse_network(raw):
    """A logical uplink name: a netifd interface or an `uplink` section (UCI names: no . or -)."""
    if not chars.only(raw, chars.WORD, 1, 15):
        raise ValueError("%s is not a network name (1 to 15 of A-Z a-z 0-9 _)" % shown(raw))
    return raw


def parse_label(raw):
    if len(raw) > LABEL_MAX:
        raise ValueError("is %d characters long (at most %d)" % (len(raw), LABEL_MAX))
    if not raw.isprintable():
        raise ValueError("contains control or unprintable characters")
    return raw


def _address(raw):
    if "%" in raw:
        raise ValueError("%s has a scope id; scoped addresses are not supported" % shown(raw))
    try:
        addr = ipaddress.ip_address(raw)
    except ValueError:
        raise ValueError("%s is not an IPv4 or IPv6 address" % shown(raw)) from None
    if addr.version == 6 and addr.ipv4_mapped is not None:
        raise ValueError("%s is an IPv4-mapped IPv6 address; write %s" % (shown(raw), addr.ipv4_mapped))
    return addr


def parse_host(raw):
    """A unicast host address someone can connect to (DNAT target, public address)."""
    addr = _address(raw)
    if addr.is_unspecified or addr.is_multicast or addr.is_loopback or addr.is_link_local:
        raise ValueError("%s is not a routable unicast address" % shown(raw))
    if addr.version == 4 and addr == ipaddress.IPv4Address("255.255.255.255"):
        raise ValueError("%s is the broadcast address" % shown(raw))
    return addr


def parse_gateway4(raw):
    addr = _address(raw)
    if addr.version != 4:
        raise ValueError("%s is not an IPv4 address" % shown(raw))
    return addr


def parse_gateway6(raw):
    addr = _address(raw)
    if addr.version != 6:
        raise ValueError("%s is not an IPv6 address" % shown(raw))
    return addr


def parse_prefix(raw):
    if "%" in raw:
        raise ValueError("%s has a scope id" % shown(raw))
    try:
        net = ipaddress.ip_network(raw, strict=True)
    except ValueError as e:
        if "host bits set" in str(e):
            fixed = ipaddress.ip_network(raw, strict=False)
            raise ValueError("%s has host bits set (did you mean %s?)" % (shown(raw), fixed)) from None
        raise ValueError("%s is not an address or prefix" % shown(raw)) from None
    if net.version == 6 and net.network_address.ipv4_mapped is not None:
        raise ValueError("%s is IPv4-mapped; write the IPv4 prefix" % shown(raw))
    return net


def parse_mss(raw):
    # ASCII digits only: str.isdigit() also takes '¹⁴⁰⁰', on which int() then fails with
    # Python's own message instead of ours (issue 9).
    if not chars.only(raw, chars.DIGITS) or (len(raw) > 1 and raw.startswith("0")):
        raise ValueError("%s is not a number" % shown(raw))
    v = int(raw)
    if not MSS_MIN <= v <= MSS_MAX:
        raise ValueError("%d is out of range (%d to %d)" % (v, MSS_MIN, MSS_MAX))
    return v


def int_range(lo, hi):
    def parse(raw):
        s = raw.strip()
        if not chars.only(s, chars.DIGITS):
            raise ValueError("%s is not a number" % shown(raw))
        v = int(s)
        if not lo <= v <= hi:
            raise ValueError("%d is out of range (%d to %d)" % (v, lo, hi))
        return v
    parse.json_types = ("string", "integer")
    return parse


def parse_mask(raw):
    try:
        v = int(raw, 16) if raw.lower().startswith("0x") else int(raw, 10)
    except ValueError:
        raise ValueError("%s is not a number (write it as 0x...)" % shown(raw)) from None
    if not 0 < v <= 0xFFFFFFFF:
        raise ValueError("%s is not a 32-bit mask" % shown(raw))
    low = v & -v
    if (v + low) & v:
        raise ValueError("%#010x is not one contiguous run of bits" % v)
    if bin(v).count("1") < MASK_MIN_BITS:
        raise ValueError("%#010x has fewer than %d bits" % (v, MASK_MIN_BITS))
    return v


# --- option tables -------------------------------------------------------------------

class Opt:
    """One option: its parser, its default (raw UCI text), whether it is a list, and how a
    parsed value is written back when it is not the plain text of the value (`text`)."""

    __slots__ = ("parse", "default", "required", "is_list", "doc", "text")

    def __init__(self, parse, default=None, required=False, is_list=False, doc="", text=None):
        self.parse = parse
        self.default = default
        self.required = required
        self.is_list = is_list
        self.doc = doc
        self.text = text


MAIN = {
    "enabled": Opt(parse_bool, "1", doc="0 removes every rule, route and table wormhole added"),
    "backend": Opt(enum(*BACKENDS), "auto", doc="auto | fw4 | fw3 (fw4 when /sbin/fw4 exists)"),
    "mark_mask": Opt(parse_mask, "0xff000000", doc="firewall mark bits wormhole owns",
                     text=lambda v: "0x%08x" % v),     # a mask reads as hex, as it was written
    "priority": Opt(int_range(2, 32765), "90", doc="ip rule priority of the reply-routing rules"),
    "table_base": Opt(int_range(256, 0x7FFFFF00), "4090", doc="routing tables wormhole owns start above this"),
    "fwmark_accept": Opt(parse_bool, "1", doc="1: set net.ipv4.tcp_fwmark_accept while a TCP exemption "
                         "exists (router services route their replies right from the first packet); "
                         "0: leave the sysctl alone"),
}

UPLINK = {
    "device": Opt(parse_ifname, doc="device override (hosts without netifd)"),
    "gateway": Opt(parse_gateway4, doc="IPv4 gateway override"),
    "gateway6": Opt(parse_gateway6, doc="IPv6 gateway override"),
}

EXEMPTION = {
    "proto": Opt(enum(*PROTOS), "tcp", doc="tcp | udp | tcpudp"),
    "port": Opt(parse_port_range, required=True, doc="N or N-M"),
    "label": Opt(parse_label, "", doc="free text, at most 64 characters"),
    "interface": Opt(parse_network, "wan", doc="uplink whose inbound connections are covered"),
    "family": Opt(enum(*FAMILIES), "any", doc="any | ipv4 | ipv6"),
    "src_ip": Opt(parse_prefix, is_list=True, doc="allowlist of client addresses/prefixes (empty: anyone); "
                  "only these clients are marked, and accepted with open=1"),
    "open": Opt(parse_bool, "0", doc="also accept the port in the firewall input"),
    "enabled": Opt(parse_bool, "1"),
}

REDIRECT = {
    "label": Opt(parse_label, "", doc="free text, at most 64 characters"),
    "proto": Opt(enum(*PROTOS), "tcp", doc="tcp | udp | tcpudp"),
    "src": Opt(parse_network, "wan", doc="uplink the connection arrives on"),
    "src_dport": Opt(parse_port_range, required=True, doc="public port, N or N-M"),
    "src_dip": Opt(parse_host, doc="only this public destination address"),
    "src_ip": Opt(parse_prefix, is_list=True, doc="allowlist of client addresses/prefixes"),
    "dest_ip": Opt(parse_host, required=True, doc="destination host"),
    "dest_port": Opt(parse_port_range, doc="destination port; default src_dport; a range maps 1:1"),
    "snat": Opt(parse_bool, "0", doc="1: masquerade toward dest_ip"),
    "mss": Opt(parse_mss, doc="'' clamps to the route MTU; or a number"),
    "reply": Opt(parse_bool, "1", doc="route replies out of the uplink they came in on"),
    "reflection": Opt(parse_bool, "1", doc="NAT loopback: LAN clients reach it by the uplink's public IPv4 "
                      "address too (as fw4's redirects do by default); 0 turns it off"),
    "enabled": Opt(parse_bool, "1"),
}

TABLES = {"wormhole": MAIN, "uplink": UPLINK, "exemption": EXEMPTION, "redirect": REDIRECT}


# --- what each entry type is, beyond its options ----------------------------------------
#
# Everything that differs between an exemption and a redirect, other than its option
# table, is said here once; config, render, api and check ask this instead of testing
# the type themselves.

class EntryType:
    """An entry section type: its options, id prefix, and which options say what."""

    __slots__ = ("name", "options", "id_prefix", "port_field", "uplink_field", "noun", "plural")

    def __init__(self, name, options, id_prefix, port_field, uplink_field, noun, plural):
        self.name = name
        self.options = options          # the option table
        self.id_prefix = id_prefix      # named sections: stable ids across reloads
        self.port_field = port_field    # the public port (range) the entry claims
        self.uplink_field = uplink_field    # the uplink it is bound to
        self.noun = noun                # "an exemption": for messages
        self.plural = plural            # the key of `list`'s reply that holds them


ENTRY_TYPES = {
    "exemption": EntryType("exemption", EXEMPTION, "ex_", "port", "interface", "an exemption", "exemptions"),
    "redirect": EntryType("redirect", REDIRECT, "rd_", "src_dport", "src", "a redirect", "redirects"),
}


def protocols(proto):
    """The kernel protocols an entry's `proto` stands for: tcpudp is both."""
    return ("tcp", "udp") if proto == "tcpudp" else (proto,)


FAMILY_VERSIONS = {"any": (4, 6), "ipv4": (4,), "ipv6": (6,)}
NFPROTO = {4: "ipv4", 6: "ipv6"}


def map_key(ports, proto, version):
    """A public key as nft writes a map element: port first, then protocol and family
    (render/nft.py KEY_TYPE); the live counters (facts, nfnl) are read back by this text."""
    return "%s . %s . %s" % (format_port_range(ports), proto, NFPROTO[version])


# The JSON types a caller may send for an option (preferred first), as ubus callers send
# them: the plugin's method table (methods.ARG_TYPES) must say the same (tests/test_layers.py).
JSON_FLAG = ("boolean", "string", "integer")
JSON_PORT = ("string", "integer")


def json_types(opt):
    if opt.is_list:
        return ("array", "string")
    if opt.parse is parse_bool:
        return JSON_FLAG
    if opt.parse in (parse_port_range, parse_mss):
        return JSON_PORT
    return getattr(opt.parse, "json_types", ("string",))


def _raw_values(opt, raw):
    """Lists may be written as `list` lines or as one whitespace-separated `option`."""
    if raw is None:
        return None
    if opt.is_list:
        items = raw if isinstance(raw, list) else raw.split()
        if len(items) > LIST_MAX:
            raise ValueError("has %d entries (at most %d; use wider prefixes)" % (len(items), LIST_MAX))
        return items
    if isinstance(raw, list):
        raise ValueError("is given as a list; it takes one value")
    return raw


def parse_section(table, options):
    """Parse a section's raw options against its table.

    Returns (record, errors, warnings): record maps every known option to its normalised
    value (None when unset and without default); errors and warnings are (field, message).
    """
    record, errors, warnings = {}, [], []
    for name in options:
        if name not in table:
            warnings.append((name, "unknown option ignored"))
    for name, opt in table.items():
        raw = options.get(name)
        if raw == "" or raw == []:
            raw = None
        if raw is None:
            raw = opt.default
        if raw is None:
            if opt.required:
                errors.append((name, "is required"))
            record[name] = [] if opt.is_list else None
            continue
        try:
            values = _raw_values(opt, raw)
            record[name] = [opt.parse(v) for v in values] if opt.is_list else opt.parse(values)
        except ValueError as e:
            errors.append((name, str(e)))
    return record, errors, warnings
