"""Route, rule, link and address facts straight from the kernel (rtnetlink), in-process.

The same questions `ip -j ...` answers, asked over a NETLINK_ROUTE socket instead of
starting `ip` (about 1.5 ms each on a desktop CPU, several times that on a router; a
LuCI `list` asked up to ten of them). The answers have the shape of `ip -j` output for
the fields wormhole reads, so callers treat both alike, and `system.ip_json` falls back
to running `ip` on any error here. stdlib only (socket, struct): no ctypes.

A kernel refusal (no such device, no route) is an answer, None or [] like a failing
`ip`; anything else (no netlink, a message we cannot parse) raises Error.
"""

import _socket as socket       # the C module: `socket` would also import selectors and enum tables (2 ms)
import errno
import struct

NETLINK_ROUTE = 0
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWLINK, RTM_GETLINK = 16, 18
RTM_NEWADDR, RTM_GETADDR = 20, 22
RTM_NEWROUTE, RTM_GETROUTE = 24, 26
RTM_NEWRULE, RTM_GETRULE = 32, 34
IFLA_IFNAME, IFLA_MTU = 3, 4
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_SRC, RTA_IIF, RTA_OIF, RTA_GATEWAY, RTA_PREFSRC, RTA_METRICS, RTA_TABLE, RTA_MARK = 1, 2, 3, 4, 5, 7, 8, 15, 16
RTAX_MTU = 2
FRA_SRC, FRA_IIFNAME, FRA_PRIORITY, FRA_FWMARK, FRA_TABLE, FRA_FWMASK = 2, 3, 6, 10, 15, 16
RTM_F_CLONED = 0x200
RTN_UNICAST = 1

_NLMSG = struct.Struct("=IHHII")
_RTA = struct.Struct("=HH")
_IFINFO = struct.Struct("=BxHiII")
_IFADDR = struct.Struct("=BBBBI")
_RTMSG = struct.Struct("=BBBBBBBBI")       # also the fib_rule_hdr of rules: same layout

FAMILIES = {"ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}
HOST_LEN = {socket.AF_INET: 32, socket.AF_INET6: 128}
TABLE_NAMES = {253: "default", 254: "main", 255: "local"}
ROUTE_TYPES = ("unspec", "unicast", "local", "broadcast", "anycast", "multicast", "blackhole",
               "unreachable", "prohibit", "throw", "nat", "xresolve")
# (bit, name) in the order `ip link` prints them
LINK_FLAGS = ((0x8, "LOOPBACK"), (0x2, "BROADCAST"), (0x10, "POINTOPOINT"), (0x1000, "MULTICAST"),
              (0x80, "NOARP"), (0x200, "ALLMULTI"), (0x100, "PROMISC"), (0x400, "MASTER"), (0x800, "SLAVE"),
              (0x4, "DEBUG"), (0x8000, "DYNAMIC"), (0x1, "UP"), (0x10000, "LOWER_UP"), (0x20000, "DORMANT"),
              (0x40000, "ECHO"))
RECV_BUFFER = 1 << 18
TIMEOUT = 3.0


class Error(Exception):
    """rtnetlink is not usable here, or its answer made no sense: ask `ip` instead."""


class _Refused(Exception):
    def __init__(self, code):
        super().__init__(code)
        self.errno = code


# --- the socket ---------------------------------------------------------------------------

_seq = 0


def _request(msg_type, flags, header, attrs=()):
    """Send one request; the list of (type, payload) answers (a dump: all of them)."""
    global _seq
    _seq += 1
    body = header + b"".join(_attr(t, v) for t, v in attrs)
    packet = _NLMSG.pack(_NLMSG.size + len(body), msg_type, NLM_F_REQUEST | flags, _seq, 0) + body
    s = None
    try:
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        s.settimeout(TIMEOUT)
        s.bind((0, 0))
        s.send(packet)
        return _receive(s, _seq, dump=bool(flags & NLM_F_DUMP))
    except (OSError, struct.error, ValueError, IndexError) as e:
        raise Error("rtnetlink: %s" % e) from None
    finally:
        if s is not None:
            s.close()


def _receive(s, seq, dump):
    out = []
    while True:
        data, _anc, flags, _addr = s.recvmsg(RECV_BUFFER)
        if flags & socket.MSG_TRUNC:
            raise Error("rtnetlink: answer larger than %d bytes" % RECV_BUFFER)
        for msg_type, msg_seq, payload in _messages(data):
            if msg_seq != seq:
                continue
            if msg_type == NLMSG_ERROR:
                code = -struct.unpack_from("=i", payload)[0]
                if code:
                    raise _Refused(code)
                return out                      # an ACK
            if msg_type == NLMSG_DONE:
                return out
            out.append((msg_type, payload))
            if not dump:
                return out


def _messages(data):
    off = 0
    while off + _NLMSG.size <= len(data):
        length, msg_type, _flags, seq, _pid = _NLMSG.unpack_from(data, off)
        if length < _NLMSG.size or off + length > len(data):
            raise Error("rtnetlink: malformed message")
        yield msg_type, seq, data[off + _NLMSG.size:off + length]
        off += (length + 3) & ~3


def _attr(attr_type, value):
    length = _RTA.size + len(value)
    return _RTA.pack(length, attr_type) + value + b"\0" * (((length + 3) & ~3) - length)


def _attrs(data, off):
    """{type: payload} of the attributes from `off` on (the last one wins, as in iproute2)."""
    out = {}
    while off + _RTA.size <= len(data):
        length, attr_type = _RTA.unpack_from(data, off)
        if length < _RTA.size:
            raise Error("rtnetlink: malformed attribute")
        out[attr_type & 0x3fff] = data[off + _RTA.size:off + length]
        off += (length + 3) & ~3
    return out


def _u32(b):
    return struct.unpack("=I", b[:4])[0]


def _text(b):
    return b.split(b"\0", 1)[0].decode("utf-8", "replace")


def _addr(family, b):
    return socket.inet_ntop(family, b)


def _ifname(index, cache):
    if index not in cache:
        try:
            cache[index] = socket.if_indextoname(index)
        except OSError:
            cache[index] = None
    return cache[index]


def _hex(v):
    """As iproute2 prints marks (C's %#x): 0x1000000, but 0 for zero."""
    return "0x%x" % v if v else "0"


def _table(number):
    return TABLE_NAMES.get(number, str(number))


# --- links and addresses ------------------------------------------------------------------

def _link_view(payload):
    _family, _type, index, flags, _change = _IFINFO.unpack_from(payload)
    attrs = _attrs(payload, _IFINFO.size)
    view = {"ifindex": index, "ifname": _text(attrs.get(IFLA_IFNAME, b"")),
            "flags": [name for bit, name in LINK_FLAGS if flags & bit]}
    if IFLA_MTU in attrs:
        view["mtu"] = _u32(attrs[IFLA_MTU])
    return view


def link(dev):
    """`ip -j link show dev DEV` -> [link] ([] when there is no such device)."""
    header = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    try:
        answers = _request(RTM_GETLINK, 0, header, [(IFLA_IFNAME, dev.encode() + b"\0")])
    except _Refused as e:
        if e.errno in (errno.ENODEV, errno.EINVAL, errno.ERANGE):
            return []
        raise Error("rtnetlink: link %s: %s" % (dev, errno.errorcode.get(e.errno, e.errno))) from None
    return [_link_view(p) for t, p in answers if t == RTM_NEWLINK]


def links():
    """`ip -j link show` -> [link], by index."""
    header = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    return [_link_view(p) for t, p in _dump(RTM_GETLINK, header) if t == RTM_NEWLINK]


def addresses(family="ipv4"):
    """`ip -j -4 addr show` -> [link with addr_info [{family, local, prefixlen}]], links that
    have an address of the family only, by index."""
    fam = FAMILIES[family]
    per_link = {}
    for t, p in _dump(RTM_GETADDR, _IFADDR.pack(fam, 0, 0, 0, 0)):
        if t != RTM_NEWADDR:
            continue
        afam, prefixlen, _flags, _scope, index = _IFADDR.unpack_from(p)
        if afam != fam:
            continue
        attrs = _attrs(p, _IFADDR.size)
        local = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
        if local:
            per_link.setdefault(index, []).append({"family": "inet" if fam == socket.AF_INET else "inet6",
                                                   "local": _addr(fam, local), "prefixlen": prefixlen})
    out = []
    for view in links():
        if view["ifindex"] in per_link:
            view["addr_info"] = per_link[view["ifindex"]]
            out.append(view)
    return out


def _dump(msg_type, header):
    try:
        return _request(msg_type, NLM_F_DUMP, header)
    except _Refused as e:
        raise Error("rtnetlink: dump refused: %s" % errno.errorcode.get(e.errno, e.errno)) from None


# --- routes -------------------------------------------------------------------------------

def _route_view(payload, names):
    fam, dst_len, _src_len, _tos, table, _proto, _scope, rtype, flags = _RTMSG.unpack_from(payload)
    attrs = _attrs(payload, _RTMSG.size)
    view = {}
    if rtype != RTN_UNICAST:
        view["type"] = ROUTE_TYPES[rtype] if rtype < len(ROUTE_TYPES) else str(rtype)
    if RTA_DST in attrs:
        dst = _addr(fam, attrs[RTA_DST])
        view["dst"] = dst if dst_len == HOST_LEN[fam] else "%s/%d" % (dst, dst_len)
    else:
        view["dst"] = "default" if dst_len == 0 else "0/%d" % dst_len
    if RTA_GATEWAY in attrs:
        view["gateway"] = _addr(fam, attrs[RTA_GATEWAY])
    if RTA_OIF in attrs:
        view["dev"] = _ifname(_u32(attrs[RTA_OIF]), names)
    number = _u32(attrs[RTA_TABLE]) if RTA_TABLE in attrs else table
    if number != 254:
        view["table"] = _table(number)
    if RTA_PREFSRC in attrs:
        view["prefsrc"] = _addr(fam, attrs[RTA_PREFSRC])
    if RTA_METRICS in attrs:
        metrics = _attrs(attrs[RTA_METRICS], 0)
        if RTAX_MTU in metrics:
            view["metrics"] = [{"mtu": _u32(metrics[RTAX_MTU])}]
    view["_flags"] = flags
    return view


def route_get(dest, src=None, iif=None, mark=None):
    """`ip -j route get DEST [from SRC iif DEV] [mark M]` -> [route] ([] when the kernel has no route)."""
    fam = socket.AF_INET6 if ":" in dest else socket.AF_INET
    attrs = [(RTA_DST, socket.inet_pton(fam, dest))]
    src_len = 0
    if src:
        attrs.append((RTA_SRC, socket.inet_pton(fam, src)))
        src_len = HOST_LEN[fam]
    if iif:
        try:
            attrs.append((RTA_IIF, struct.pack("=I", socket.if_nametoindex(iif))))
        except OSError:
            return []                               # `ip`: Cannot find device
    if mark is not None:
        attrs.append((RTA_MARK, struct.pack("=I", int(mark, 0) if isinstance(mark, str) else mark)))
    header = _RTMSG.pack(fam, HOST_LEN[fam], src_len, 0, 0, 0, 0, 0, 0)
    try:
        answers = _request(RTM_GETROUTE, 0, header, attrs)
    except _Refused:
        return []                                   # unreachable, prohibited, no route
    names = {}
    out = []
    for t, p in answers:
        if t == RTM_NEWROUTE:
            view = _route_view(p, names)
            view.pop("_flags")
            out.append(view)
    return out


def routes(family="ipv4"):
    """`ip -j -4 route show table all` -> [route]: every table, no cached clones."""
    fam = FAMILIES[family]
    names = {}
    out = []
    for t, p in _dump(RTM_GETROUTE, _RTMSG.pack(fam, 0, 0, 0, 0, 0, 0, 0, 0)):
        if t != RTM_NEWROUTE or p[0] != fam:
            continue
        view = _route_view(p, names)
        if view.pop("_flags") & RTM_F_CLONED:
            continue
        out.append(view)
    return out


def default_routes(dev, family="ipv4"):
    """`ip -j -4 route show default dev DEV` (table main) -> [route]."""
    return [r for r in routes(family) if r["dst"] == "default" and r.get("dev") == dev and "table" not in r
            and "type" not in r]


# --- rules --------------------------------------------------------------------------------

def rules(family="ipv4"):
    """`ip -j -4 rule show` -> [rule] with priority, src[/srclen], fwmark/fwmask, iif, table."""
    fam = FAMILIES[family]
    out = []
    for t, p in _dump(RTM_GETRULE, _RTMSG.pack(fam, 0, 0, 0, 0, 0, 0, 0, 0)):
        if t != RTM_NEWRULE or p[0] != fam:
            continue
        _fam, _dst_len, src_len, _tos, table, _r1, _r2, _action, _flags = _RTMSG.unpack_from(p)
        attrs = _attrs(p, _RTMSG.size)
        view = {"priority": _u32(attrs[FRA_PRIORITY]) if FRA_PRIORITY in attrs else 0}
        if FRA_SRC in attrs:
            view["src"] = _addr(fam, attrs[FRA_SRC])
            if src_len != HOST_LEN[fam]:
                view["srclen"] = src_len
        elif src_len:
            view["src"], view["srclen"] = "0", src_len
        else:
            view["src"] = "all"
        if FRA_FWMARK in attrs or FRA_FWMASK in attrs:
            mark = _u32(attrs[FRA_FWMARK]) if FRA_FWMARK in attrs else 0
            mask = _u32(attrs[FRA_FWMASK]) if FRA_FWMASK in attrs else 0
            view["fwmark"] = _hex(mark)
            if mask != 0xFFFFFFFF:
                view["fwmask"] = _hex(mask)
        if FRA_IIFNAME in attrs:
            view["iif"] = _text(attrs[FRA_IIFNAME])
        number = _u32(attrs[FRA_TABLE]) if FRA_TABLE in attrs else table
        if number:
            view["table"] = _table(number)
        out.append(view)
    return out
