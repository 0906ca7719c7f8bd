"""The methods that change something: add, update, del, settings, apply, and the CLI's cleanup.

Writers hold one lock shared by plugin, CLI, init and hotplug for the whole
read-validate-write-apply sequence, so concurrent writers queue instead of losing each
other's changes; a writer that cannot get it in time gets `busy`.
"""

import os

from .. import config, facts, fsutil, paths, schema, state
from ..errors import APPLY_FAILED, BUSY, CONFIG_ERROR, CONFLICT, NOT_FOUND, WormholeError, invalid
from ..uci import UciError
from .args import entry_type, only_options_of, parse_arg
from .views import skipped_sections

LOCK_TIMEOUT = float(os.environ.get("WORMHOLE_LOCK_TIMEOUT", "5"))


class WriterLock:
    """The writer lock, as a context manager; `busy` when another writer keeps it too long."""

    def __init__(self):
        self.lock = fsutil.FileLock(paths.under_root(paths.LOCK_FILE), timeout=LOCK_TIMEOUT)

    def __enter__(self):
        try:
            self.lock.__enter__()
        except fsutil.LockTimeout:
            raise WormholeError(BUSY, "another wormhole change is in progress; try again") from None
        return self

    def __exit__(self, *exc):
        return self.lock.__exit__(*exc)


def _load_for_write():
    cfg = config.load()
    if cfg.error:
        raise WormholeError(CONFIG_ERROR, "config: cannot be read, so nothing was changed: %s" % cfg.error,
                            field="config")
    _refuse_unknown_state(cfg)
    return cfg


def _refuse_unknown_state(cfg):
    """`main.enabled` that reads neither on nor off: applying would guess (issue 14)."""
    refused = cfg.main_refused()
    if refused:
        field, msg = refused
        raise invalid(field, "%s (fix it with `wormhole enable` or `wormhole disable`); nothing was changed"
                      % msg)


def _validate(entry, cfg):
    for field, msg in entry.errors:
        raise invalid(field, msg)
    if entry.enabled:
        other = config.find_conflict(entry, cfg.active())
        if other is not None:
            field = entry.kind.port_field
            raise WormholeError(CONFLICT, "%s: overlaps %s" % (field, other.describe()), field=field)
    _check_uplink(entry, cfg)
    if entry.type == "redirect" and facts.is_local_address(entry.rec["dest_ip"]):
        port = schema.format_port_range(entry.ports)
        raise invalid("dest_ip", "%s is an address of this router: a service on the router needs no forward; "
                      "use an exemption (`wormhole inbound add %s:%s --open`)" % (entry.rec["dest_ip"],
                                                                                  entry.rec["proto"], port))


def _check_uplink(entry, cfg):
    name = entry.uplink
    if name in cfg.uplinks:
        return
    known = facts.netifd_interfaces()
    if known is not None and name in known:
        return
    hint = ("known networks: %s" % ", ".join(sorted(known))) if known else \
        "declare it with `config uplink '%s'` and its device" % name
    raise invalid(entry.kind.uplink_field, "unknown uplink %r (%s)" % (name, hint))


# --- the methods ------------------------------------------------------------------------------

def add(args):
    kind = entry_type(dict(args))
    args = {k: v for k, v in args.items() if k != "type"}
    only_options_of(kind, args)
    with WriterLock():
        with _Session() as s:
            sid = config.new_id(kind.name, {e.id for e in s.cfg.entries})
            entry = config.parse_entry(sid, kind.name, args)
            _validate(entry, s.cfg)
            given = list(args)
            if "proto" not in given:
                given.insert(0, "proto")
            options = {k: v for k, v in config.canonical_options(kind.name, entry.rec, given).items()
                       if v is not None}
            s.ed.add(kind.name, sid, options)
        return dict(_apply_locked(sid, s.written()), id=sid)


def update(args):
    sid = args.pop("id", None)
    if not sid:
        raise invalid("id", "is required")
    stype = args.pop("type", None)
    with WriterLock():
        with _Session() as s:
            cfg = s.cfg
            current = _find(cfg, sid, stype)
            only_options_of(current.kind, args)
            merged = dict(current.raw)
            for k, v in args.items():
                merged[k] = v if v not in ("", []) else None
            merged = {k: v for k, v in merged.items() if v is not None}
            entry = config.parse_entry(sid, current.type, merged, current.index)
            cfg.entries = [e for e in cfg.entries if e.id != sid]
            _validate(entry, cfg)
            changes = config.canonical_options(current.type, entry.rec, [k for k in args if args[k] not in ("", [])])
            changes.update({k: None for k in args if args[k] in ("", [])})
            s.ed.set(sid, changes)
        return dict(_apply_locked(sid, s.written()), id=sid)


def _find(cfg, sid, stype=None):
    """The entry `sid`; with `stype`, only an entry of that type (a verb of one type never
    touches the other: `forward del ex_1` is refused, not an exemption deleted)."""
    current = cfg.find(sid)
    if current is None:
        raise WormholeError(NOT_FOUND, "id: no exemption or redirect %s" % schema.shown(sid), field="id")
    wanted = entry_type({"type": stype}) if stype is not None else current.kind
    if wanted is not current.kind:
        raise WormholeError(NOT_FOUND, "id: %s is %s, not %s" % (schema.shown(sid), current.kind.noun, wanted.noun),
                            field="id")
    return current


def delete(args):
    with WriterLock():
        with _Session() as s:
            ids = _select_for_delete(s.cfg, args)
            for sid in ids:
                s.ed.delete(sid)
        return dict(_apply_locked(cfg=s.written()), deleted=ids)


def _select_for_delete(cfg, args):
    """By id, or by the spec `add` took: proto and the public port, on its uplink
    (an exemption's `port`/`interface`, a redirect's `src_dport`/`src`)."""
    if "id" in args:
        extra = set(args) - {"id", "type"}
        if extra:
            raise invalid(sorted(extra)[0], "give either id, or proto and port")
        return [_find(cfg, args["id"], args.get("type")).id]
    kind = entry_type(args)
    for name in args:
        if name not in ("proto", kind.port_field, kind.uplink_field):
            raise invalid(name, "is not how %s is deleted: give id, or proto, %s and %s"
                          % (kind.noun, kind.port_field, kind.uplink_field))
    if kind.port_field not in args:
        if args:  # deleting by proto and port, but the port is missing
            raise invalid(kind.port_field, "is required to delete by proto and port (or give id)")
        raise invalid("id", "give an id, or proto and port")
    proto = args.get("proto", "tcp")
    parse_arg("proto", schema.enum(*schema.PROTOS), proto)
    port = parse_arg(kind.port_field, schema.parse_port_range, args[kind.port_field])
    uplink = args.get(kind.uplink_field)
    ids = [e.id for e in cfg.entries if e.type == kind.name and e.valid and e.rec["proto"] == proto
           and e.ports == port and (uplink is None or e.uplink == uplink)]
    if not ids:
        raise WormholeError(NOT_FOUND, "%s: no %s for %s/%s%s" % (
            kind.port_field, kind.name, proto, args[kind.port_field], " on %s" % uplink if uplink else ""),
            field=kind.port_field)
    return ids


class _Session:
    """One locked UCI session for read-validate-write: the config is parsed once, here, and
    the sections as written feed the apply that follows (no second parse of the file).

    An unreadable file refuses the change before anything is touched; a failed write (a full
    disk, a read-only overlay) leaves the file as it was (atomic replace) and says so, rather
    than a traceback (CLI) or an internal_error (plugin).
    """

    def __init__(self, check_main=True):
        self.check_main = check_main    # settings may be the fix of a bad main.enabled

    def __enter__(self):
        self._cm = config.edit()
        try:
            self.ed = self._cm.__enter__()
        except (UciError, OSError) as e:
            raise WormholeError(CONFIG_ERROR, "config: cannot be read, so nothing was changed: %s" % e,
                                field="config") from None
        self.cfg = config.build(self.ed.sections())
        self._after = None
        if self.check_main:
            try:
                _refuse_unknown_state(self.cfg)
            except WormholeError as e:
                self._cm.__exit__(WormholeError, e, None)     # an exception: nothing is written
                raise
        return self

    def __exit__(self, et, ev, tb):
        if et is None:
            self._after = self.ed.sections()
        try:
            self._cm.__exit__(et, ev, tb)
        except UciError as e:
            raise WormholeError(CONFIG_ERROR, "config: %s" % e, field="config") from None
        except OSError as e:
            raise WormholeError(CONFIG_ERROR, "config: cannot be written, so nothing was changed: %s" % e,
                                field="config") from None
        if isinstance(ev, UciError):
            raise WormholeError(CONFIG_ERROR, "config: %s" % ev, field="config") from None
        return False

    def written(self):
        return config.build(self._after)


def apply_method(args):
    """Apply the config on disk. `unless_stopped` (the hotplug hook): do nothing while the
    service is stopped (`/etc/init.d/wormhole stop`, `wormhole cleanup`), so a DHCP renew or
    a VPN reconnect does not put back what the owner removed; checked under the lock."""
    with WriterLock():
        if parse_arg("unless_stopped", schema.parse_bool, args.get("unless_stopped", "0")) and state.stopped():
            return {"applied": False, "stopped": True, "warnings": [], "skipped": {}}
        return _apply_locked(cfg=_load_for_write())


MAIN_SETTINGS = tuple(schema.MAIN)


def settings(args):
    """Set options of `main` (`enabled`, `backend`, ...), then apply: `wormhole enable` /
    `disable`. The one write allowed while `main.enabled` does not parse: it is the fix."""
    if not args:
        raise invalid("enabled", "give at least one option of main (%s)" % ", ".join(MAIN_SETTINGS))
    rec, errors, _w = schema.parse_section({k: schema.MAIN[k] for k in args}, args)
    for field, msg in errors:
        raise invalid(field, msg)
    with WriterLock():
        with _Session(check_main="enabled" not in args) as s:
            if not any(sec.type == "wormhole" and sec.name == "main" for sec in s.ed.sections()):
                s.ed.add("wormhole", "main", {})
            s.ed.set("main", {k: (schema.MAIN[k].text or config.format_value)(rec[k]) for k in args})
        return _apply_locked(cfg=s.written())


def _apply_locked(sid=None, cfg=None):
    """Apply the config (as just written, or as on disk): {"applied", "warnings", "skipped"},
    where skipped names every entry left out and why.

    The caller holds the lock. Raises apply_failed (with `id` when a change triggered it).
    """
    from .. import apply as applier, render     # writers only: `list`/`status` load neither
    cfg = cfg or config.load()
    fw = facts.backend(cfg)
    plans = []

    def make_plan():
        f = facts.gather(cfg)
        plans.append(render.render(cfg, f, fw))
        return f, plans[-1]

    try:
        warnings = applier.install(cfg, fw, make_plan)
    except applier.ApplyError as e:
        extra = {"id": sid} if sid else {}
        raise WormholeError(APPLY_FAILED, "apply failed, previous rules kept (the change is saved): %s" % e,
                            **extra) from None
    return {"applied": True, "warnings": cfg.notes() + warnings,
            "skipped": skipped_sections(cfg, plans[-1] if plans else None)}


def cleanup():
    """Remove every rule, route, ip rule and file wormhole installed (the uninstall path);
    {"errors": [...]}: what could not be removed, an empty list when everything went."""
    from .. import apply as applier
    with WriterLock():
        return {"errors": applier.stop(config.load().main)}
