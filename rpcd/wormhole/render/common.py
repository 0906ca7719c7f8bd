"""What both firewall renderers share: quoting, and the normalised model.

`build_model(cfg, facts)` resolves everything render needs into plain data (uplinks with
their numbers and devices, the elements each entry contributes, skipped entries with
their reasons); the nft and iptables renderers only format that model.
"""

from .. import chars, schema
from ..layout import Marks

# Characters that may appear inside a quoted comment in both nft and iptables-restore.
# nft has no escape for '"' inside a string and iptables-restore treats '\' specially,
# so those two (and control characters) are replaced, never passed through.
# nft refuses a comment longer than 128 bytes (NFTNL_UDATA_COMMENT_MAXLEN) and fails the
# whole load: a 64-character label of two-byte letters did that (issue 9). The cap counts
# the text between the quotes, in bytes, and cuts at a character boundary.
_COMMENT_MAX_BYTES = 128


def quote(text):
    """The one way free text (labels, ids) reaches rule text: a double-quoted, inert comment."""
    text = str(text)
    if text.isprintable() and '"' not in text and "\\" not in text and len(text.encode("utf-8")) <= _COMMENT_MAX_BYTES:
        return '"' + text + '"'     # nothing to replace or cut (the common case, 2 per entry)
    out = []
    size = 0
    for ch in text:
        if ch == '"':
            ch = "'"
        elif ch == "\\":
            ch = "/"
        elif not ch.isprintable():
            ch = " "
        n = len(ch.encode("utf-8"))
        if size + n > _COMMENT_MAX_BYTES:
            break
        out.append(ch)
        size += n
    return '"' + "".join(out) + '"'


def entry_tag(entry):
    """How rules name the entry they come from: its id, then its label."""
    label = entry.rec.get("label")
    return "%s %s" % (entry.id, label) if label else entry.id


def ident(name):
    """Identifiers (section ids, uplink names) used in chain/set names must match an allow-list."""
    if not chars.only(name, chars.WORD, 1, 64):
        raise ValueError("not a safe identifier: %r" % name)
    return name


def ifname(name):
    """Device names go into rule text quoted; build_model let only [A-Za-z0-9_.-]{1,15} in."""
    return '"' + name + '"'


class Uplink:
    __slots__ = ("name", "index", "device", "gateway", "gateway6", "p2p", "addresses", "addresses4", "mark", "mtu",
                 "mtu6")

    def __init__(self, name, index, fact, marks):
        self.name = name
        self.index = index
        self.device = fact["device"]
        self.gateway = fact.get("gateway")
        self.gateway6 = fact.get("gateway6")
        self.p2p = bool(fact.get("p2p"))
        self.addresses = list(fact.get("addresses") or [])
        self.addresses4 = list(fact.get("addresses4") or [])     # public IPv4 addresses, for NAT loopback
        self.mark = marks.of(index)
        self.mtu = fact.get("mtu") if isinstance(fact.get("mtu"), int) else None
        self.mtu6 = fact.get("mtu6") if isinstance(fact.get("mtu6"), int) else None


class Element:
    """One public (family, proto, ports) key of an entry on an uplink."""

    __slots__ = ("family", "proto", "ports", "entry")

    def __init__(self, family, proto, ports, entry):
        self.family = family
        self.proto = proto
        self.ports = ports
        self.entry = entry

    def nft_key(self):
        return schema.map_key(self.ports, self.proto, self.family)


class Model:
    def __init__(self, cfg, facts):
        self.main = cfg.main
        self.marks = Marks(cfg.main["mark_mask"])
        self.priority = cfg.main["priority"]
        self.table_base = cfg.main["table_base"]
        self.uplinks = []           # [Uplink] with at least one entry, by index
        self.inbound = {}           # uplink name -> [Element] marked on arrival
        self.opened = {}            # uplink name -> set of entry ids with open=1
        self.redirects = {}         # uplink name -> [Entry]
        self.reflected = {}         # uplink name -> [Entry] with NAT loopback (IPv4, an address known)
        self.skipped = {}           # entry id -> reason
        self.warnings = []
        self.counters = facts.get("counters", {})
        self.dest_mtus = facts.get("dest_mtus", {})   # redirect dest_ip -> route MTU toward it


def build_model(cfg, facts):
    m = Model(cfg, facts)
    if not cfg.main["enabled"]:
        return m
    known = facts.get("uplinks", {})
    indices = facts.get("uplink_index", {})
    used = {}
    bad_devices = _bad_devices(m, known)
    for e in cfg.active():
        name = e.uplink
        fact = known.get(name)
        if not fact or not fact.get("device"):
            m.skipped[e.id] = "uplink %r is unknown (declare `config uplink '%s'` with its device, or check the network name)" % (name, name)
            continue
        if name in bad_devices:
            m.skipped[e.id] = bad_devices[name]
            continue
        if name not in indices:
            m.skipped[e.id] = "uplink %r has no mark number (more than 15 uplinks?)" % name
            continue
        if name not in used:
            used[name] = Uplink(name, indices[name], fact, m.marks)
        _add_entry(m, e, name)
    m.uplinks = sorted(used.values(), key=lambda u: u.index)
    for u in m.uplinks:
        _warn_missing_gateways(m, u)
        m.reflected[u.name] = _reflected_entries(m, u)
    return m


def _reflected_entries(m, u):
    """Redirects on uplink `u` that LAN clients may also reach by its public IPv4 address
    (NAT loopback, fw4's `reflection`): IPv4 (no NAT66, as fw4), and only where the uplink
    has an address (a down or address-less uplink has nothing to reflect), that address
    the one `src_dip` names when it names one."""
    out = []
    for e in m.redirects.get(u.name, []):
        r = e.rec
        if r["reflection"] and r["dest_ip"].version == 4 and reflect_addresses(u, e):
            out.append(e)
    return out


def reflect_addresses(u, e):
    dip = e.rec["src_dip"]
    return [a for a in u.addresses4 if dip is None or a == str(dip)]


def _bad_devices(m, known):
    """{uplink: reason} for uplinks whose device name cannot go into a rule: the facts are
    checked here, once, for both renderers (a `config uplink` device is checked by its
    parser; netifd's names are not ours)."""
    out = {}
    for name, fact in sorted(known.items()):
        if not fact or not fact.get("device"):
            continue
        try:
            schema.parse_ifname(fact["device"])
        except ValueError as e:
            out[name] = "uplink %r has an unusable device name: %s" % (name, e)
            m.warnings.append("uplink %s skipped: device %s" % (name, e))
    return out


def _add_entry(m, e, uplink):
    r = e.rec
    if e.type == "exemption":
        for fam in client_families(r):
            for proto in schema.protocols(r["proto"]):
                m.inbound.setdefault(uplink, []).append(Element(fam, proto, r["port"], e))
        if r["open"]:
            m.opened.setdefault(uplink, set()).add(e.id)
        return
    m.redirects.setdefault(uplink, []).append(e)
    if r["reply"]:
        fam = r["dest_ip"].version
        for proto in schema.protocols(r["proto"]):
            m.inbound.setdefault(uplink, []).append(Element(fam, proto, r["src_dport"], e))


def router_tcp_services(m):
    """Whether some exemption admits TCP to the router itself (an accepted socket then takes
    its SYN's mark under net.ipv4.tcp_fwmark_accept, which wormhole sets, or a user did)."""
    return any(el.proto == "tcp" and el.entry.type == "exemption" for els in m.inbound.values() for el in els)


def client_families(r):
    """The IP versions an exemption's elements cover: its family, narrowed by an allowlist
    to the versions the allowlist names (an IPv4-only allowlist admits no IPv6 client)."""
    fams = schema.FAMILY_VERSIONS[r["family"]]
    if r["src_ip"]:
        fams = tuple(f for f in fams if any(n.version == f for n in r["src_ip"]))
    return fams


def allowlist(r, version):
    """An entry's allowlist prefixes of one IP version, as text, duplicates dropped."""
    return list(dict.fromkeys(str(n) for n in r["src_ip"] if n.version == version))


def _warn_missing_gateways(m, u):
    if u.p2p:
        return
    fams = {el.family for el in m.inbound.get(u.name, [])}
    if 4 in fams and not u.gateway:
        m.warnings.append("uplink %s (%s) has no IPv4 gateway: IPv4 replies cannot be routed back through it" % (u.name, u.device))
    if 6 in fams and not u.gateway6:
        m.warnings.append("uplink %s (%s) has no IPv6 gateway: IPv6 replies cannot be routed back through it" % (u.name, u.device))


# The MSS of a client's SYN is what the server may send back to it, so it must fit the
# path of the replies: the uplink the connection arrived by. `rt mtu` (nft_rt's
# get_tcpmss, like xt_TCPMSS --clamp-mss-to-pmtu) takes the smaller of the route toward the
# packet's destination and the route back toward its source, but looks the latter up
# *without the packet's mark*: under a VPN default route it finds the tunnel, and every
# inbound connection got the tunnel's MSS (1380 for 1420) although its replies leave by
# the uplink (5 % more packets, 13 % less LAN throughput in bench/conn_rate.py). So a SYN
# that arrived on an uplink is clamped to that uplink's MTU instead, and fw4's own ingress
# `mtu_fix` rule is skipped for it (chain-pre/mangle_forward). The SYN-ACK keeps `rt mtu`:
# its route is the uplink's (the mark is restored) and the route back toward its source
# (the LAN host, the backend's tunnel) is one main knows.
MSS_HEADERS = {4: 40, 6: 60}     # IP and TCP headers: MTU - headers = MSS


def uplink_mss(u, family):
    """The MSS a SYN arriving on uplink `u` is clamped to, or None when its MTU is unknown.
    IPv6 takes the smaller of the link MTU and the device's IPv6 MTU (a router advertisement
    may lower the latter, on DS-Lite or PPPoE lines)."""
    mtu = min(u.mtu, u.mtu6) if family == 6 and u.mtu and u.mtu6 else u.mtu
    return mtu - MSS_HEADERS[family] if mtu else None


def mss_for(m, entry):
    """A fixed MSS for a redirect's SYN and SYN-ACK by destination, or None.

    Its SYN must also fit the hop toward the destination when that is narrower than the
    uplink (a host behind a tunnel peer would otherwise send segments that only PMTUD can
    save): the route MTU toward dest_ip, read at apply time. `rt mtu` on the SYN-ACK
    already covers a tunnel narrower on one side only (proven in tests/test_lab_redirects.py).
    An explicit `mss` is for what no route here can see: a tunnel nested further down.
    """
    r = entry.rec
    if r["proto"] == "udp":
        return None
    fam = r["dest_ip"].version
    route = m.dest_mtus.get(str(r["dest_ip"]))
    toward = route - MSS_HEADERS[fam] if isinstance(route, int) else None
    uplink = next((u for u in m.uplinks if u.name == r["src"]), None)
    inbound = uplink_mss(uplink, fam) if uplink and r["reply"] else None
    if toward is not None and inbound is not None and toward >= inbound:
        toward = None               # the uplink's clamp is the smaller one already
    values = [v for v in (r["mss"], toward) if v]
    return min(values) if values else None
