"""The methods that change something: add, update, del, apply, and the CLI's cleanup.

Writers hold one lock shared by plugin, CLI, init and hotplug for the whole
read-validate-write-apply sequence, so concurrent writers queue instead of losing each
other's changes; a writer that cannot get it in time gets `busy`.
"""

import os

from .. import config, facts, fsutil, paths, schema
from ..errors import APPLY_FAILED, BUSY, CONFLICT, NOT_FOUND, WormholeError, invalid
from ..uci import UciError
from .args import entry_type, only_options_of, parse_arg

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
        raise WormholeError(CONFLICT, "the config file cannot be read, so nothing was changed: %s" % cfg.error,
                            field="config")
    return cfg


def _validate(entry, cfg):
    for field, msg in entry.errors:
        raise invalid(field, msg)
    if entry.enabled:
        other = config.find_conflict(entry, cfg.active())
        if other is not None:
            field = entry.kind.port_field
            raise WormholeError(CONFLICT, "%s: overlaps %s" % (field, other.describe()), field=field)
    _check_uplink(entry, cfg)


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
        _apply_locked(sid, s.written())
        return {"id": sid, "applied": True}


def update(args):
    sid = args.pop("id", None)
    if not sid:
        raise invalid("id", "is required")
    with WriterLock():
        with _Session() as s:
            cfg = s.cfg
            current = cfg.find(sid)
            if current is None:
                raise WormholeError(NOT_FOUND, "id: no exemption or redirect %s" % schema.shown(sid), field="id")
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
        _apply_locked(sid, s.written())
        return {"id": sid, "applied": True}


def delete(args):
    with WriterLock():
        with _Session() as s:
            ids = _select_for_delete(s.cfg, args)
            for sid in ids:
                s.ed.delete(sid)
        _apply_locked(cfg=s.written())
        return {"deleted": ids, "applied": True}


def _select_for_delete(cfg, args):
    if "id" in args:
        if set(args) - {"id"}:
            raise invalid(sorted(set(args) - {"id"})[0], "give either id, or proto and port")
        if cfg.find(args["id"]) is None:
            raise WormholeError(NOT_FOUND, "id: no exemption or redirect %s" % schema.shown(args["id"]), field="id")
        return [args["id"]]
    if "port" not in args:
        if args:  # deleting by proto and port, but the port is missing
            raise invalid("port", "is required to delete by proto and port (or give id)")
        raise invalid("id", "give an id, or proto and port")
    kind = entry_type(args)
    proto = args.get("proto", "tcp")
    parse_arg("proto", schema.enum(*schema.PROTOS), proto)
    port = parse_arg("port", schema.parse_port_range, args["port"])
    ids = [e.id for e in cfg.entries if e.type == kind.name and e.valid and e.rec["proto"] == proto
           and e.ports == port and ("interface" not in args or e.uplink == args["interface"])]
    if not ids:
        raise WormholeError(NOT_FOUND, "port: no %s for %s/%s" % (kind.name, proto, args["port"]), field="port")
    return ids


class _Session:
    """One locked UCI session for read-validate-write: the config is parsed once, here, and
    the sections as written feed the apply that follows (no second parse of the file).

    An unreadable file refuses the change before anything is touched; a failed write (a full
    disk, a read-only overlay) leaves the file as it was (atomic replace) and says so, rather
    than a traceback (CLI) or an internal_error (plugin).
    """

    def __enter__(self):
        self._cm = config.edit()
        try:
            self.ed = self._cm.__enter__()
        except (UciError, OSError) as e:
            raise WormholeError(CONFLICT, "config: cannot be read, so nothing was changed: %s" % e,
                                field="config") from None
        self.cfg = config.build(self.ed.sections())
        self._after = None
        return self

    def __exit__(self, et, ev, tb):
        if et is None:
            self._after = self.ed.sections()
        try:
            self._cm.__exit__(et, ev, tb)
        except UciError as e:
            raise WormholeError(CONFLICT, "config: %s" % e, field="config") from None
        except OSError as e:
            raise WormholeError(CONFLICT, "config: cannot be written, so nothing was changed: %s" % e,
                                field="config") from None
        if isinstance(ev, UciError):
            raise WormholeError(CONFLICT, "config: %s" % ev, field="config") from None
        return False

    def written(self):
        return config.build(self._after)


def apply_method(args):
    with WriterLock():
        warnings = _apply_locked(cfg=_load_for_write())
        return {"applied": True, "warnings": warnings}


def _apply_locked(sid=None, cfg=None):
    """Apply the config (as just written, or as on disk); returns warnings.

    The caller holds the lock. Raises apply_failed (with `id` when a change triggered it).
    """
    from .. import apply as applier, render     # writers only: `list`/`status` load neither
    cfg = cfg or config.load()
    fw = facts.backend(cfg)

    def make_plan():
        f = facts.gather(cfg)
        return f, render.render(cfg, f, fw)

    try:
        return applier.install(cfg, fw, make_plan)
    except applier.ApplyError as e:
        extra = {"id": sid} if sid else {}
        raise WormholeError(APPLY_FAILED, "apply failed, previous rules kept (the change is saved): %s" % e,
                            **extra) from None


def cleanup():
    """Remove every rule, route, ip rule and file wormhole installed (the uninstall path);
    {"errors": [...]}: what could not be removed, an empty list when everything went."""
    from .. import apply as applier
    with WriterLock():
        return {"errors": applier.remove_everything(config.load().main)}
