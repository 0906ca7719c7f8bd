"""The service layer: one function per ubus method; the plugin and the CLI only wrap these.

Every method returns a JSON-able dict. Failures raise WormholeError, which `call()`
turns into `{"error": {...}}`. Writers hold one lock shared by plugin, CLI, init and
hotplug for the whole read-validate-write-apply sequence, so concurrent writers queue
instead of losing each other's changes; a writer that cannot get it in time gets `busy`.
"""

import os

from . import config, facts, fsutil, methods, paths, schema, state, system
from .errors import (
    APPLY_FAILED, BUSY, CONFLICT, NOT_FOUND, WormholeError, invalid,
)
from .uci import UciError

LOCK_TIMEOUT = float(os.environ.get("WORMHOLE_LOCK_TIMEOUT", "5"))
IGNORED_ARGS = ("ubus_rpc_session",)


def call(method, args):
    """Run a method; always returns a reply dict (errors included)."""
    try:
        if method not in methods.METHODS:
            raise invalid("method", "unknown method %s (known: %s)" % (schema.shown(method), ", ".join(methods.METHODS)))
        if not isinstance(args, dict):
            raise invalid("request", "must be a JSON object")
        args = check_args(method, args)
        return HANDLERS[method](args)
    except WormholeError as e:
        return e.to_reply()


# --- arguments ---------------------------------------------------------------------------

def _json_type(v):
    """The JSON name of a decoded value's type, as methods.ARG_TYPES spells them."""
    for t, name in ((bool, methods.BOOLEAN), (int, methods.INTEGER), (str, methods.STRING),
                    (list, methods.ARRAY), (float, "number"), (dict, "object")):
        if isinstance(v, t):
            return name
    return "null" if v is None else type(v).__name__


def check_args(method, args):
    """Drop rpcd's session, reject unknown or mistyped arguments, normalise to UCI text."""
    allowed = methods.METHODS[method]
    out = {}
    for name, value in args.items():
        if name in IGNORED_ARGS:
            continue
        if name not in allowed:
            raise invalid(name, "unknown argument for %s" % method)
        kind = _json_type(value)
        if kind not in methods.ARG_TYPES[name]:
            raise invalid(name, "must be %s, not %s" % (" or ".join(methods.ARG_TYPES[name]), kind))
        out[name] = _to_text(name, value)
    return out


def _to_text(name, value):
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise invalid(name, "item %d must be a string, not %s" % (i, _json_type(item)))
            if "\x00" in item:
                raise invalid(name, "item %d contains a NUL character" % i)
        return list(value)
    if "\x00" in value:
        raise invalid(name, "contains a NUL character")
    return value


# --- locking and config access ---------------------------------------------------------------

class _Locked:
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


def locked():
    return _Locked()


def _load_for_write():
    cfg = config.load()
    if cfg.error:
        raise WormholeError(CONFLICT, "the config file cannot be read, so nothing was changed: %s" % cfg.error,
                            field="config")
    return cfg


def _entry_type(args):
    stype = args.pop("type", "exemption")
    if stype not in config.SECTION_TYPES:
        raise invalid("type", "%s is not one of %s" % (schema.shown(stype), ", ".join(config.SECTION_TYPES)))
    return stype


def _only_options_of(stype, args):
    for name in args:
        if name not in methods.ENTRY_OPTIONS[stype]:
            raise invalid(name, "is not an option of %s %s" % ("an" if stype[0] in "aeiou" else "a", stype))


def _validate(entry, cfg):
    for field, msg in entry.errors:
        raise invalid(field, msg)
    if entry.enabled:
        other = config.find_conflict(entry, cfg.active())
        if other is not None:
            field = "port" if entry.type == "exemption" else "src_dport"
            raise WormholeError(CONFLICT, "%s: %s" % (field, config.conflict_message(entry, other)), field=field)
    _check_uplink(entry, cfg)


def _check_uplink(entry, cfg):
    name = config.uplink_of(entry)
    if name in cfg.uplinks:
        return
    known = facts.netifd_interfaces()
    if known is not None and name in known:
        return
    field = "interface" if entry.type == "exemption" else "src"
    hint = ("known networks: %s" % ", ".join(sorted(known))) if known else \
        "declare it with `config uplink '%s'` and its device" % name
    raise invalid(field, "unknown uplink %r (%s)" % (name, hint))


def _changes(stype, entry, given):
    return config.canonical_options(stype, entry.rec, given)


# --- write methods ---------------------------------------------------------------------------

def add(args):
    stype = _entry_type(dict(args))
    args = {k: v for k, v in args.items() if k != "type"}
    _only_options_of(stype, args)
    with locked():
        with _Session() as s:
            sid = config.new_id(stype, {e.id for e in s.cfg.entries})
            entry = config.parse_entry(sid, stype, args)
            _validate(entry, s.cfg)
            given = list(args)
            if "proto" not in given:
                given.insert(0, "proto")
            options = {k: v for k, v in _changes(stype, entry, given).items() if v is not None}
            s.ed.add(stype, sid, options)
        _apply_locked(sid, s.written())
        return {"id": sid, "applied": True}


def update(args):
    sid = args.pop("id", None)
    if not sid:
        raise invalid("id", "is required")
    with locked():
        with _Session() as s:
            cfg = s.cfg
            current = cfg.find(sid)
            if current is None:
                raise WormholeError(NOT_FOUND, "id: no exemption or redirect %s" % schema.shown(sid), field="id")
            _only_options_of(current.type, args)
            merged = dict(current.raw)
            for k, v in args.items():
                merged[k] = v if v not in ("", []) else None
            merged = {k: v for k, v in merged.items() if v is not None}
            entry = config.parse_entry(sid, current.type, merged, current.index)
            cfg.entries = [e for e in cfg.entries if e.id != sid]
            _validate(entry, cfg)
            changes = _changes(current.type, entry, [k for k in args if args[k] not in ("", [])])
            changes.update({k: None for k in args if args[k] in ("", [])})
            s.ed.set(sid, changes)
        _apply_locked(sid, s.written())
        return {"id": sid, "applied": True}


def delete(args):
    with locked():
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
    stype = _entry_type(args)
    proto = args.get("proto", "tcp")
    _parse_arg("proto", schema.enum(*schema.PROTOS), proto)
    port = _parse_arg("port", schema.parse_port_range, args["port"])
    key = "port" if stype == "exemption" else "src_dport"
    uplink_key = "interface" if stype == "exemption" else "src"
    ids = [e.id for e in cfg.entries if e.type == stype and e.valid and e.rec["proto"] == proto
           and e.rec[key] == port and ("interface" not in args or e.rec[uplink_key] == args["interface"])]
    if not ids:
        raise WormholeError(NOT_FOUND, "port: no %s for %s/%s" % (stype, proto, args["port"]), field="port")
    return ids


def _parse_arg(field, parse, raw):
    try:
        return parse(raw)
    except ValueError as e:
        raise invalid(field, str(e)) from None


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
    with locked():
        warnings = _apply_locked(cfg=_load_for_write())
        return {"applied": True, "warnings": warnings}


def _apply_locked(sid=None, cfg=None):
    """Apply the config (as just written, or as on disk) and record the outcome; returns warnings.

    The caller holds the lock. Raises apply_failed (with `id` when a change triggered it).
    """
    from . import apply as applier, render, sysctls     # writers only: `list`/`status` load none
    cfg = cfg or config.load()
    fw = facts.backend(cfg)
    previous = state.applied()
    warnings = []
    try:
        if not cfg.main["enabled"]:
            errors = applier.remove_everything(cfg.main)
            if errors:
                raise applier.ApplyError("; ".join(errors))
            record = {"backend": fw, "uplink_index": {}, "rules": [], "tables": []}
        else:
            if previous.get("backend") and previous.get("backend") != fw:
                applier.remove_everything(cfg.main)
            f = facts.gather(cfg)
            plan = render.render(cfg, f, fw)
            warnings = plan["warnings"] + applier.apply(plan, fw, cfg.main)
            record = {"backend": fw, "uplink_index": f["uplink_index"],
                      "rules": plan["routing"]["rules"],
                      "tables": sorted({r["table"] for r in plan["routing"]["rules"] if isinstance(r["table"], int)}),
                      "mark_mask": cfg.main["mark_mask"], "priority": cfg.main["priority"]}
            saved, tuned = sysctls.sync_fwmark_accept(sysctls.fwmark_accept_wanted(cfg),
                                                      previous.get(sysctls.STATE_KEY))
            warnings += tuned
            if saved is not None:
                record[sysctls.STATE_KEY] = saved
    except (applier.ApplyError, system.ToolError, OSError) as e:
        try:
            state.save_last_apply({"ok": False, "time": applier.now(), "error": str(e), "backend": fw})
        except OSError:
            pass    # the disk that failed the apply may refuse this record too; the reply still tells
        extra = {"id": sid} if sid else {}
        raise WormholeError(APPLY_FAILED, "apply failed, previous rules kept (the change is saved): %s" % e,
                            **extra) from None
    try:
        state.save_applied(record)
        state.save_last_apply({"ok": True, "time": applier.now(), "error": None, "backend": fw})
    except OSError as e:
        # The kernel took the rules: do not call that a failure. Without the record the next
        # apply may renumber uplinks and `status` shows the previous outcome.
        warnings.append("applied, but the record of it could not be saved: %s" % e)
    return warnings


# --- read methods ----------------------------------------------------------------------------

def _entry_view(e):
    """An entry as `list` shows it: typed options, or the raw text of a broken section."""
    view = {"id": e.id}
    if e.valid:
        for name in methods.ENTRY_OPTIONS[e.type]:
            v = e.rec.get(name)
            if isinstance(v, bool) or v is None or isinstance(v, int):
                view[name] = v
            else:
                view[name] = config.format_value(v)
    else:
        view.update({k: v for k, v in e.raw.items()})
    return view


def _hits(e, counters, uplink):
    """(connections counted, present in the kernel) from the live map element counters."""
    elements = counters.get(("in_" if e.type == "exemption" else "dnat_") + uplink)
    if elements is None:
        return 0, False
    found = [elements[k] for k in _element_keys(e) if k in elements]
    return sum(c[0] for c in found), bool(found)


def _element_keys(e):
    keys = []
    for (_u, proto, fam, ports) in config.entry_keys(e):
        keys.append("%s . %s . %s" % (schema.format_port_range(ports), proto, "ipv4" if fam == 4 else "ipv6"))
    return keys


def list_entries(args):
    cfg = config.load()
    if cfg.error:
        raise WormholeError(CONFLICT, "config: %s" % cfg.error, field="config")
    fw = facts.backend(cfg)
    counters = facts.nft_counters() if fw == "fw4" and cfg.main["enabled"] else {}
    ups = facts.uplinks(cfg) if cfg.active() else {}
    ks = facts.killswitch(ups) if ups else {"active": False}
    last = state.last_apply()
    out = {"exemptions": [], "redirects": []}
    for e in cfg.entries:
        view = _entry_view(e)
        view["status"], reason = _status(e, cfg, ups, ks, counters, fw, last)
        if reason:
            view["error"] = reason
        view["hits"] = _hits(e, counters, config.uplink_of(e))[0] if e.valid else 0
        if e.type == "redirect":
            # what the UI's "Via" column shows: lan, tunnel, uplink (hairpin) or None
            view["via"] = facts.reached_by(e.rec["dest_ip"], {u["device"] for u in ups.values()}) \
                if e.active and cfg.main["enabled"] else None
        out["exemptions" if e.type == "exemption" else "redirects"].append(view)
    return out


def _status(e, cfg, ups, ks, counters, fw, last):
    if not e.valid:
        field, msg = e.errors[0]
        return "error", "%s: %s" % (field, msg)
    if not cfg.main["enabled"]:
        return "disabled", "wormhole is disabled"
    if not e.enabled:
        return "disabled", None
    uplink = config.uplink_of(e)
    if uplink not in ups:
        return "error", "uplink %r is unknown" % uplink
    if not ups[uplink].get("up"):
        return "error", "uplink %s (%s) is down" % (uplink, ups[uplink]["device"])
    applied = bool(last and last.get("ok"))
    if applied and fw == "fw4":
        applied = _hits(e, counters, uplink)[1]
    if not applied:
        if writer_active():
            return "pending", "a change is being applied"
        if last and not last.get("ok"):
            return "error", last.get("error")
        return "error", "not in the kernel's rules (run wormhole apply)"
    # A forward works whatever the kill-switch does; an exemption only matters under one.
    if e.type == "redirect" or ks.get("active"):
        return "active", None
    return "inert", None


def writer_active():
    """Whether a writer holds the lock right now (probed, never waited for)."""
    import fcntl
    try:
        fd = os.open(paths.under_root(paths.LOCK_FILE), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def status(args):
    cfg = config.load()
    fw = facts.backend(cfg)
    ups = facts.uplinks(cfg)
    ks = facts.killswitch(ups)
    previous = state.applied().get("uplink_index", {})
    last = state.last_apply() or {"ok": None, "time": None, "error": None}
    warnings = _config_warnings(cfg) + _sysctl_warnings(cfg, ups) + _redirect_warnings(cfg, ups)
    uplinks = []
    for name, u in sorted(ups.items()):
        rpf, svm = facts.rp_filter(u["device"])
        uplinks.append({"name": name, "device": u["device"], "gateway": u.get("gateway"),
                        "gateway6": u.get("gateway6"), "up": u.get("up"), "index": previous.get(name),
                        "rp_filter": rpf, "src_valid_mark": svm})
    return {
        "enabled": bool(cfg.main["enabled"]),
        "backend": fw,
        "killswitch": ks,
        "uplinks": uplinks,
        "last_apply": {"ok": last.get("ok"), "time": last.get("time"), "error": last.get("error")},
        "counts": {"exemptions": len(cfg.exemptions()), "redirects": len(cfg.redirects()),
                   "active": len(cfg.active()), "errors": len([e for e in cfg.entries if not e.valid])},
        "warnings": warnings,
    }


def _config_warnings(cfg):
    out = []
    if cfg.error:
        out.append("config: %s" % cfg.error)
    out += ["main.%s: %s" % p for p in cfg.main_problems]
    out += cfg.problems
    for e in cfg.entries:
        out += ["%s: %s: %s" % (e.id, f, m) for f, m in e.errors + e.warnings]
    return out


def _sysctl_warnings(cfg, ups):
    out = []
    used = {config.uplink_of(e) for e in cfg.active()}
    for name in sorted(used & set(ups)):
        dev = ups[name]["device"]
        rpf, svm = facts.rp_filter(dev)
        if rpf == 1 and not svm:
            out.append("uplink %s: strict reverse-path filtering drops inbound connections while the kill-switch "
                       "routes elsewhere; run `sysctl -w net.ipv4.conf.%s.src_valid_mark=1` (keeps strict rp_filter) "
                       "or `sysctl -w net.ipv4.conf.%s.rp_filter=2` (OpenWrt's default)" % (name, dev, dev))
    return out


def _redirect_warnings(cfg, ups):
    """Port forwards that cannot work as configured: no route to the destination (or a route
    back out of the uplink), forwarding off, an mss larger than the tunnel allows, a
    firewall `config redirect` on the same public port. The same findings as `check`."""
    if cfg.error or not cfg.main["enabled"] or not cfg.active("redirect"):
        return []
    from . import diagnostics
    return [msg for _e, _level, _check, msg in diagnostics.redirect_problems(cfg, ups)]


def render_method(args):
    cfg = config.load()
    if cfg.error:
        raise WormholeError(CONFLICT, "config: %s" % cfg.error, field="config")
    fw = args.get("backend") or facts.backend(cfg)
    if fw not in ("fw4", "fw3"):
        raise invalid("backend", "%s is not one of fw4, fw3" % schema.shown(fw))
    from . import render
    f = facts.gather(cfg)
    plan = render.render(cfg, f, fw)
    return {"files": plan["files"], "routing": plan["routing"], "warnings": plan["warnings"],
            "skipped": plan["skipped"]}


def check(args):
    from . import diagnostics
    return diagnostics.run(config.load())


HANDLERS = {
    "list": list_entries,
    "status": status,
    "add": add,
    "update": update,
    "del": delete,
    "apply": apply_method,
    "render": render_method,
    "check": check,
}
