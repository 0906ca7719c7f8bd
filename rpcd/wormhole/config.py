"""UCI <-> typed records: the only module that reads or writes /etc/config/wormhole.

`load()` parses every section against its option table, checks the relations between
options and between sections (families, port ranges, conflicts), and keeps the bad
sections with their reasons instead of failing: a bad section is skipped, never the
config. Writers go through `edit()`, which hands out a locked UCI session.
"""

import bisect
import os

from . import paths, schema
from .uci import UciError, open_backend

SECTION_TYPES = tuple(schema.ENTRY_TYPES)


class Entry:
    """One exemption or redirect section: raw options, parsed record, and what is wrong."""

    __slots__ = ("id", "type", "raw", "rec", "errors", "warnings", "index")

    def __init__(self, sid, stype, raw, rec, errors, warnings, index):
        self.id = sid
        self.type = stype
        self.raw = raw
        self.rec = rec
        self.errors = errors        # [(field, message)]: the entry is skipped
        self.warnings = warnings    # [(field, message)]: reported, entry still used
        self.index = index          # position among sections of its type

    @property
    def valid(self):
        return not self.errors

    @property
    def enabled(self):
        return bool(self.rec.get("enabled", True))

    @property
    def active(self):
        """Takes part in rendering: valid and enabled."""
        return self.valid and self.enabled

    @property
    def kind(self):
        return schema.ENTRY_TYPES[self.type]

    @property
    def uplink(self):
        """The uplink name the entry is bound to (`interface` or `src`)."""
        return self.rec[self.kind.uplink_field]

    @property
    def ports(self):
        """The public port range it claims (`port` or `src_dport`)."""
        return self.rec[self.kind.port_field]

    def describe(self):
        k = self.kind
        return "%s %s (%s/%s on %s)" % (self.type, self.id, self._shown("proto"), self._shown(k.port_field),
                                        self._shown(k.uplink_field))

    def _shown(self, name):
        """An option as people read it: the parsed value, else what the section says."""
        value = self.rec.get(name)
        if value is not None:
            return format_value(value)
        raw = self.raw.get(name)
        if raw is None or raw == "":
            return "?"
        return " ".join(raw) if isinstance(raw, list) else raw

    def reason(self):
        """Why the entry is skipped, all of it ('port: ...; proto: ...')."""
        return "; ".join("%s: %s" % e for e in self.errors)


def _ports(pr):
    return schema.format_port_range(pr) if pr else "?"


class Config:
    def __init__(self):
        self.main = {}
        self.main_problems = []     # [(field, message)]
        self.uplinks = {}           # name -> record from `uplink` sections
        self.entries = []           # [Entry] exemptions and redirects in file order
        self.problems = []          # [str] other sections that were skipped
        self.error = None           # the whole file could not be read

    def exemptions(self):
        return [e for e in self.entries if e.type == "exemption"]

    def redirects(self):
        return [e for e in self.entries if e.type == "redirect"]

    def active(self, stype=None):
        return [e for e in self.entries if e.active and (stype is None or e.type == stype)]

    def find(self, sid):
        for e in self.entries:
            if e.id == sid:
                return e
        return None

    def skipped(self):
        """{id: reason} of the entry sections left out for what they hold."""
        return {e.id: e.reason() for e in self.entries if e.errors}

    def notes(self):
        """What is wrong without skipping an entry: main options on their defaults, options
        nothing reads (fw4-style tolerance for foreign options, but said), other sections
        ignored. Shown by apply, render, status and the LuCI page."""
        out = ["main.%s: %s" % p for p in self.main_problems]
        out += self.problems
        out += ["%s: %s: %s" % (e.id, f, m) for e in self.entries for f, m in e.warnings]
        return out

    def main_refused(self):
        """(field, message) when `main.enabled` does not parse: neither on nor off is safe to guess."""
        for field, msg in self.main_problems:
            if field == "enabled":
                return "main.enabled", msg
        return None

    def uplink_names(self):
        """Uplinks the config speaks of: declared sections and those entries refer to."""
        names = list(self.uplinks)
        for e in self.active():
            if e.uplink not in names:
                names.append(e.uplink)
        return names


def load(backend=None):
    """Read and validate the whole config; never raises for bad content."""
    backend = backend or open_backend()
    cfg = Config()
    try:
        sections = backend.load(paths.PACKAGE)
    except UciError as e:
        cfg.error = str(e)
        sections = []
    return build(sections, cfg)


def build(sections, cfg=None):
    """Turn UCI sections into a validated Config (pure; used by load and by tests)."""
    cfg = cfg or Config()
    main_raw = {}
    counters = {t: 0 for t in SECTION_TYPES}
    for sec in sections:
        if sec.type == "wormhole":
            if sec.name == "main":
                main_raw = sec.options
            else:
                cfg.problems.append("section %s of type wormhole ignored (only 'main' is read)" % sec.name)
        elif sec.type == "uplink":
            _add_uplink(cfg, sec)
        elif sec.type in SECTION_TYPES:
            cfg.entries.append(parse_entry(sec.name, sec.type, sec.options, counters[sec.type]))
            counters[sec.type] += 1
        else:
            cfg.problems.append("section %s of unknown type %r ignored" % (sec.name, sec.type))
    cfg.main = _parse_main(main_raw, cfg.main_problems)
    mark_conflicts(cfg.entries)
    return cfg


def _parse_main(raw, problems):
    rec, errors, warnings = schema.parse_section(schema.MAIN, raw)
    for field, msg in errors:
        default = schema.MAIN[field].default
        if field == "enabled":      # not guessed: see Config.main_refused
            problems.append((field, "%s; nothing is applied until it reads 1 or 0" % msg))
        else:
            problems.append((field, "%s; using the default %s" % (msg, default)))
        rec[field] = schema.MAIN[field].parse(default)
    for field, msg in warnings:
        problems.append((field, msg))
    return rec


def _add_uplink(cfg, sec):
    if sec.anonymous:
        cfg.problems.append("uplink section %s skipped: uplink sections must be named after the network (config uplink 'wan')" % sec.name)
        return
    rec, errors, _warnings = schema.parse_section(schema.UPLINK, sec.options)
    if errors:
        cfg.problems.append("uplink %s skipped: %s" % (sec.name, "; ".join("%s: %s" % e for e in errors)))
        return
    cfg.uplinks[sec.name] = rec


def parse_entry(sid, stype, options, index=0):
    table = schema.TABLES[stype]
    rec, errors, warnings = schema.parse_section(table, options)
    if not errors and stype == "redirect":
        _check_redirect(rec, errors, warnings)
    if not errors and stype == "exemption":
        _check_exemption(rec, errors)
    return Entry(sid, stype, dict(options), rec, errors, warnings, index)


def _check_exemption(rec, errors):
    wanted = schema.FAMILY_VERSIONS[rec["family"]]
    for net in rec["src_ip"]:
        if net.version not in wanted:
            errors.append(("src_ip", "%s is IPv%d but family is %s" % (net, net.version, rec["family"])))


def _check_redirect(rec, errors, warnings):
    family = rec["dest_ip"].version
    if rec["src_dip"] is not None and rec["src_dip"].version != family:
        errors.append(("src_dip", "%s is IPv%d but dest_ip is IPv%d" % (rec["src_dip"], rec["src_dip"].version, family)))
    for net in rec["src_ip"]:
        if net.version != family:
            errors.append(("src_ip", "%s is IPv%d but dest_ip is IPv%d" % (net, net.version, family)))
    src, dst = rec["src_dport"], rec["dest_port"] or rec["src_dport"]
    if dst[0] != dst[1] and dst[1] - dst[0] != src[1] - src[0]:
        errors.append(("dest_port", "range %s has %d ports but src_dport %s has %d; a range maps 1:1"
                       % (_ports(dst), dst[1] - dst[0] + 1, _ports(src), src[1] - src[0] + 1)))
    if rec["mss"] is not None and rec["proto"] == "udp":
        warnings.append(("mss", "ignored: MSS clamping applies to TCP only"))
    rec["dest_port"] = dst


# --- conflicts -----------------------------------------------------------------------

def entry_keys(entry):
    """(uplink, proto, family, (lo, hi)) tuples an entry claims on the public side."""
    r = entry.rec
    fams = schema.FAMILY_VERSIONS[r["family"]] if entry.type == "exemption" else (r["dest_ip"].version,)
    return [(entry.uplink, p, f, entry.ports) for p in schema.protocols(r["proto"]) for f in fams]


def _overlap(a, b):
    return a[0] == b[0] and a[1] == b[1] and a[2] == b[2] and a[3][0] <= b[3][1] and b[3][0] <= a[3][1]


def find_conflict(entry, others):
    """The first of `others` whose public (uplink, proto, family, ports) overlaps `entry`."""
    mine = entry_keys(entry)
    for other in others:
        if other is entry or other.id == entry.id or not other.active:
            continue
        theirs = entry_keys(other)
        if any(_overlap(a, b) for a in mine for b in theirs):
            return other
    return None


def mark_conflicts(entries):
    """Later sections that overlap an earlier active one are skipped with the reason.

    Same answer as `find_conflict(e, <earlier accepted entries>)` for each entry, without
    comparing every pair: accepted port ranges never overlap within one (uplink, proto,
    family), so each such key keeps them sorted and a lookup is a bisection. Pairwise,
    a thousand entries took seconds on every config load.
    """
    if len({e.id for e in entries}) != len(entries):
        return _mark_conflicts_pairwise(entries)    # duplicate ids (never from UCI) break the invariant
    index = {}     # (uplink, proto, family) -> ([lo, ...], [(lo, hi, position, entry), ...]), sorted
    accepted = 0
    for e in entries:
        if not e.active:
            continue
        keys = entry_keys(e)
        other = _first_overlap(e, keys, index)
        if other is not None:
            e.errors.append((e.kind.port_field, "overlaps %s" % other.describe()))
            continue
        for key in keys:
            starts, ranges = index.setdefault(key[:3], ([], []))
            at = bisect.bisect_left(starts, key[3][0])
            starts.insert(at, key[3][0])
            ranges.insert(at, (key[3][0], key[3][1], accepted, e))
        accepted += 1


def _mark_conflicts_pairwise(entries):
    seen = []
    for e in entries:
        if not e.active:
            continue
        other = find_conflict(e, seen)
        if other is not None:
            e.errors.append((e.kind.port_field, "overlaps %s" % other.describe()))
            continue
        seen.append(e)


def _first_overlap(entry, keys, index):
    """The earliest accepted entry (in file order) overlapping any of `keys`, or None."""
    best = None
    for key in keys:
        starts, ranges = index.get(key[:3], ((), ()))
        lo, hi = key[3]
        at = bisect.bisect_right(starts, hi) - 1
        # disjoint and sorted: walking left, the ranges end ever lower
        while at >= 0 and ranges[at][1] >= lo:
            _lo, _hi, position, other = ranges[at]
            if other.id != entry.id and (best is None or position < best[0]):
                best = (position, other)
            at -= 1
    return best[1] if best else None


# --- formatting for UCI and replies -----------------------------------------------------

def format_value(value):
    """A normalised value back to its canonical UCI text."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, tuple):
        return schema.format_port_range(value)
    if isinstance(value, list):
        return [format_value(v) for v in value]
    return str(value)


def canonical_options(stype, rec, given):
    """UCI text for the options in `given` (names), from the parsed record."""
    out = {}
    for name in given:
        v = format_value(rec.get(name))
        out[name] = v if v not in ("", []) else None
    return out


def new_id(stype, taken):
    """A fresh named-section id: stable across reloads, unlike libuci's anonymous cfgXXXXXX."""
    while True:
        sid = schema.ENTRY_TYPES[stype].id_prefix + os.urandom(3).hex()
        if sid not in taken:
            return sid


def edit(backend=None):
    """A locked UCI editing session on the wormhole package."""
    backend = backend or open_backend()
    return backend.edit(paths.PACKAGE)

