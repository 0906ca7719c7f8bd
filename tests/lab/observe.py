"""Read-only views of a namespace's kernel state: conntrack and route lookups."""

import json
from dataclasses import dataclass, field

from . import netns

_FAMILIES = {4: "ipv4", 6: "ipv6"}


@dataclass
class CtEntry:
    family: int
    proto: str
    state: str                                    # "" for protocols without one
    orig: dict = field(default_factory=dict)      # src, dst, sport, dport (or type/code/id)
    reply: dict = field(default_factory=dict)
    mark: int = 0
    flags: list = field(default_factory=list)     # ASSURED, UNREPLIED, ...
    line: str = ""


def parse_conntrack_line(line):
    """One line of `conntrack -L -o extended`."""
    tokens = line.split()
    # ipv4 2 tcp 6 431999 ESTABLISHED src=... | ipv4 2 udp 17 29 src=...
    family = 6 if tokens[0] == "ipv6" else 4
    entry = CtEntry(family=family, proto=tokens[2], state="", line=line)
    side = None
    for tok in tokens[5:]:
        if tok.startswith("[") and tok.endswith("]"):
            entry.flags.append(tok[1:-1])
        elif "=" not in tok:
            entry.state = tok
        else:
            key, _, value = tok.partition("=")
            if key == "src":
                side = entry.orig if side is None else entry.reply
            if key == "mark":
                entry.mark = int(value, 0)
            elif side is not None and key in ("src", "dst", "sport", "dport", "type", "code", "id"):
                side[key] = value if key in ("src", "dst") else int(value)
    return entry


def conntrack(ns, family=None):
    """All conntrack entries of namespace ns (both families unless `family`)."""
    entries = []
    for fam in (family,) if family else (4, 6):
        out = netns.run(netns.ns_exec(ns, ["conntrack", "-L", "-o", "extended",
                                           "-f", _FAMILIES[fam]]), timeout=10).stdout
        entries += [parse_conntrack_line(line) for line in out.splitlines() if line.strip()]
    return entries


def route_get(ns, dst, src=None, iif=None, oif=None, mark=None, ipproto=None, dport=None,
              sport=None):
    """`ip -j route get` as a dict (dst, dev, gateway, prefsrc, table, ...)."""
    argv = ["ip", "-n", ns, "-j", "route", "get", dst]
    for key, value in (("from", src), ("iif", iif), ("oif", oif), ("mark", mark),
                       ("ipproto", ipproto), ("sport", sport), ("dport", dport)):
        if value is not None:
            argv += [key, str(value)]
    return json.loads(netns.run(argv).stdout)[0]
