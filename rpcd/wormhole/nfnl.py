"""The element counters of our nftables maps, and the comments of fw4's rules, read from
the kernel (nfnetlink), in-process.

What `nft -j list table inet wormhole` tells `facts.nft_counters`, without starting nft:
nft spends its time building a full cache of the table and printing JSON (4 ms for a
small table, 65 ms with 1,000 entries on a desktop CPU), and a LuCI `list` needs only the
counters. Two requests here: the table's sets (name, flags, key type), then the elements
of each `in_*` / `dnat_*` map. Keys come back as the same text nft prints,
"443 . tcp . ipv4" (port first; a table loaded with the family first is read alike).

A table or map that does not exist is an answer (absent, as with nft); anything else
(no netlink, a key we do not know) raises Error and `facts` asks `nft` instead.
"""

import errno
import struct

from . import rtnl
from .rtnl import _attrs, _text

socket = rtnl.socket

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_GETCHAIN, NFT_MSG_NEWCHAIN = 4, 3
NFT_MSG_GETRULE, NFT_MSG_NEWRULE = 7, 6
NFT_MSG_GETSET, NFT_MSG_NEWSET = 10, 9
NFT_MSG_GETSETELEM, NFT_MSG_NEWSETELEM = 13, 12
NFPROTO_INET = 1
NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME = 1, 3
NFTA_RULE_TABLE, NFTA_RULE_CHAIN, NFTA_RULE_HANDLE, NFTA_RULE_USERDATA = 1, 2, 3, 7
NFTNL_UDATA_RULE_COMMENT = 0
NFTA_SET_TABLE, NFTA_SET_NAME, NFTA_SET_FLAGS, NFTA_SET_KEY_TYPE = 1, 2, 3, 4
NFT_SET_MAP = 0x8
NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_ELEMENTS = 1, 2, 3
NFTA_LIST_ELEM = 1
NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_FLAGS, NFTA_SET_ELEM_EXPR, NFTA_SET_ELEM_KEY_END = 1, 3, 7, 10
NFTA_SET_ELEM_EXPRESSIONS = 11
NFT_SET_ELEM_INTERVAL_END = 0x1
NFTA_DATA_VALUE = 1
NFTA_EXPR_NAME, NFTA_EXPR_DATA = 1, 2
NFTA_COUNTER_BYTES, NFTA_COUNTER_PACKETS = 1, 2

# nft's datatype numbers, and how it numbers a concatenation: 6 bits per field, first field highest
TYPE_NFPROTO, TYPE_INET_PROTOCOL, TYPE_INET_SERVICE = 2, 12, 13
PORT_FIRST = (TYPE_INET_SERVICE << 12) | (TYPE_INET_PROTOCOL << 6) | TYPE_NFPROTO
FAMILY_FIRST = (TYPE_NFPROTO << 12) | (TYPE_INET_PROTOCOL << 6) | TYPE_INET_SERVICE
NFPROTO_NAMES = {2: "ipv4", 10: "ipv6"}
L4PROTO_NAMES = {6: "tcp", 17: "udp"}

_NFGEN = struct.Struct("!BBH")


class Error(Exception):
    """nfnetlink is not usable here, or its answer made no sense: ask `nft` instead."""


def map_counters(table="wormhole", prefixes=("in_", "dnat_")):
    """{map: {"443 . tcp . ipv4": [packets, bytes]}} for the maps of `inet <table>` whose name
    starts with one of `prefixes`; {} when the table does not exist."""
    try:
        sets = _request(NFT_MSG_GETSET, [(NFTA_SET_TABLE, _name(table))])
    except _Absent:
        return {}
    out = {}
    for payload in sets:
        attrs = _attrs(payload, _NFGEN.size)
        name = _text(attrs.get(NFTA_SET_NAME, b""))
        flags = _be32(attrs.get(NFTA_SET_FLAGS, b"\0\0\0\0"))
        if not name.startswith(prefixes) or not flags & NFT_SET_MAP:
            continue
        key_type = _be32(attrs.get(NFTA_SET_KEY_TYPE, b"\0\0\0\0"))
        if key_type not in (PORT_FIRST, FAMILY_FIRST):
            raise Error("nfnetlink: map %s has a key type we do not read (%d)" % (name, key_type))
        try:
            elems = _request(NFT_MSG_GETSETELEM, [(NFTA_SET_ELEM_LIST_TABLE, _name(table)),
                                                  (NFTA_SET_ELEM_LIST_SET, _name(name))])
        except _Absent:
            continue                      # replaced between the two requests
        out[name] = _elements(elems, key_type == FAMILY_FIRST)
    return out


def rule_comments(table, chain):
    """{handle: comment} of the rules of `inet <table> <chain>` (what `nft -j -a list chain`
    shows of them); None when the chain does not exist."""
    names = [(NFTA_RULE_TABLE, _name(table)), (NFTA_RULE_CHAIN, _name(chain))]
    try:
        # a rule dump of a missing chain is empty, not an error: ask for the chain first
        _request(NFT_MSG_GETCHAIN, [(NFTA_CHAIN_TABLE, _name(table)), (NFTA_CHAIN_NAME, _name(chain))], dump=False)
        rules = _request(NFT_MSG_GETRULE, names)
    except _Absent:
        return None
    out = {}
    for payload in rules:
        attrs = _attrs(payload, _NFGEN.size)
        if NFTA_RULE_HANDLE not in attrs:
            raise Error("nfnetlink: rule without a handle")
        out[struct.unpack("!Q", attrs[NFTA_RULE_HANDLE][:8])[0]] = _comment(attrs.get(NFTA_RULE_USERDATA, b""))
    return out


def _comment(udata):
    """The comment in a rule's user data (type-length-value records), or None."""
    off = 0
    while off + 2 <= len(udata):
        kind, length = udata[off], udata[off + 1]
        if kind == NFTNL_UDATA_RULE_COMMENT:
            return _text(udata[off + 2:off + 2 + length])
        off += 2 + length
    return None


def _elements(payloads, family_first):
    out = {}
    for payload in payloads:
        attrs = _attrs(payload, _NFGEN.size)
        for elem in _list(attrs.get(NFTA_SET_ELEM_LIST_ELEMENTS, b"")):
            e = _attrs(elem, 0)
            if _be32(e.get(NFTA_SET_ELEM_FLAGS, b"\0\0\0\0")) & NFT_SET_ELEM_INTERVAL_END:
                continue
            key = _value(e.get(NFTA_SET_ELEM_KEY))
            end = _value(e.get(NFTA_SET_ELEM_KEY_END)) if NFTA_SET_ELEM_KEY_END in e else key
            out[_key_text(key, end, family_first)] = _counter(e)
    return out


def _key_text(key, end, family_first):
    """12 bytes, three 4-byte fields: port (2 bytes, network order), l4 protocol, family."""
    if len(key) != 12 or len(end) != 12:
        raise Error("nfnetlink: unexpected key length %d" % len(key))
    if family_first:
        key, end = _reorder(key), _reorder(end)
    lo, hi = struct.unpack("!H", key[:2])[0], struct.unpack("!H", end[:2])[0]
    proto, family = L4PROTO_NAMES.get(key[4]), NFPROTO_NAMES.get(key[8])
    if proto is None or family is None or key[4:] != end[4:]:
        raise Error("nfnetlink: unexpected key %s" % key.hex())
    return "%s . %s . %s" % (lo if lo == hi else "%d-%d" % (lo, hi), proto, family)


def _reorder(key):
    """family . proto . port -> port . proto . family (each field in its 4-byte slot)."""
    return key[8:12] + key[4:8] + key[0:4]


def _counter(e):
    exprs = []
    if NFTA_SET_ELEM_EXPR in e:
        exprs.append(e[NFTA_SET_ELEM_EXPR])
    exprs += _list(e.get(NFTA_SET_ELEM_EXPRESSIONS, b""))
    for expr in exprs:
        x = _attrs(expr, 0)
        if _text(x.get(NFTA_EXPR_NAME, b"")) == "counter":
            data = _attrs(x.get(NFTA_EXPR_DATA, b""), 0)
            return [_be64(data.get(NFTA_COUNTER_PACKETS)), _be64(data.get(NFTA_COUNTER_BYTES))]
    return [0, 0]


# --- the socket ---------------------------------------------------------------------------

class _Absent(Exception):
    pass


_seq = 0


def _request(msg, attrs, dump=True):
    """Request of nf_tables message `msg` for family inet; the payloads of the answers."""
    global _seq
    _seq += 1
    body = _NFGEN.pack(NFPROTO_INET, 0, 0) + b"".join(rtnl._attr(t, v) for t, v in attrs)
    header = rtnl._NLMSG.pack(rtnl._NLMSG.size + len(body), (NFNL_SUBSYS_NFTABLES << 8) | msg,
                              rtnl.NLM_F_REQUEST | (rtnl.NLM_F_DUMP if dump else 0), _seq, 0)
    s = None
    try:
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER)
        s.settimeout(rtnl.TIMEOUT)
        s.bind((0, 0))
        s.send(header + body)
        answers = rtnl._receive(s, _seq, dump=dump)
    except rtnl._Refused as e:
        if e.errno == errno.ENOENT:
            raise _Absent() from None
        raise Error("nfnetlink: %s" % errno.errorcode.get(e.errno, e.errno)) from None
    except (OSError, struct.error, ValueError, IndexError, rtnl.Error) as e:
        raise Error("nfnetlink: %s" % e) from None
    finally:
        if s is not None:
            s.close()
    return [payload for _type, payload in answers]


def _name(text):
    return text.encode() + b"\0"


def _list(data):
    """The payloads of a nested list of NFTA_LIST_ELEM attributes, in order."""
    out = []
    off = 0
    while off + 4 <= len(data):
        length, attr_type = struct.unpack_from("=HH", data, off)
        if length < 4:
            raise Error("nfnetlink: malformed list")
        if attr_type & 0x3fff == NFTA_LIST_ELEM:
            out.append(data[off + 4:off + length])
        off += (length + 3) & ~3
    return out


def _value(data):
    if data is None:
        raise Error("nfnetlink: element without a key")
    v = _attrs(data, 0).get(NFTA_DATA_VALUE)
    if v is None:
        raise Error("nfnetlink: key without a value")
    return v


def _be32(b):
    return struct.unpack("!I", b[:4])[0]


def _be64(b):
    return struct.unpack("!Q", b[:8])[0] if b and len(b) >= 8 else 0
