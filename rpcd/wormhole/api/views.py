"""The methods that only read: list, status, render, check. They take no lock and write
nothing; what they know of the system they ask of facts."""

from .. import config, facts, fsutil, paths, schema, state
from ..errors import CONFIG_ERROR, WormholeError, invalid
from .args import parse_arg


def _readable(cfg):
    if cfg.error:
        raise WormholeError(CONFIG_ERROR, "config: %s" % cfg.error, field="config")
    return cfg


# --- list ------------------------------------------------------------------------------------

def _entry_view(e):
    """An entry as `list` shows it: typed options, or the raw text of a broken section."""
    view = {"id": e.id}
    if e.valid:
        for name in e.kind.options:
            v = e.rec.get(name)
            if isinstance(v, bool) or v is None or isinstance(v, int):
                view[name] = v
            else:
                view[name] = config.format_value(v)
    else:
        view.update({k: v for k, v in e.raw.items()})
    return view


def _hits(e, counters):
    """(connections counted, present in the kernel) from the live map element counters."""
    elements = counters.get(("in_" if e.type == "exemption" else "dnat_") + e.uplink)
    if elements is None:
        return 0, False
    keys = [schema.map_key(ports, proto, fam) for (_u, proto, fam, ports) in config.entry_keys(e)]
    found = [elements[k] for k in keys if k in elements]
    return sum(c[0] for c in found), bool(found)


def list_entries(args):
    """Every entry with its status; with `status: true` also what `status` says, from the
    same facts: the one call a LuCI poll makes (each call is an interpreter start)."""
    with_status = parse_arg("status", schema.parse_bool, args.get("status", "0"))
    cfg = config.load()
    if not with_status:
        _readable(cfg)
    fw = facts.backend(cfg)
    uplinks_needed = bool(cfg.active()) or with_status
    netifd = facts.netifd_interfaces() if uplinks_needed else None
    ups = facts.uplinks(cfg, netifd) if uplinks_needed else {}
    ks = facts.killswitch(ups) if ups or with_status else {"active": False}
    last = state.last_apply()
    out = {"exemptions": [], "redirects": []}
    if not cfg.error:
        counters = facts.nft_counters() if fw == "fw4" and cfg.main["enabled"] else {}
        for e in cfg.entries:
            out[e.kind.plural].append(_listed(e, cfg, ups, ks, counters, fw, last))
    if with_status:
        out["status"] = _status_view(cfg, fw, ups, ks, last, facts.network_names(cfg, netifd))
    return out


def _listed(e, cfg, ups, ks, counters, fw, last):
    view = _entry_view(e)
    view["status"], reason = _status(e, cfg, ups, ks, counters, fw, last)
    if reason:
        view["error"] = reason
    view["hits"] = _hits(e, counters)[0] if e.valid else 0
    if e.warnings:
        view["warnings"] = ["%s: %s" % w for w in e.warnings]
    if e.type == "redirect":
        # what the UI's "Via" column shows: lan, tunnel, uplink (hairpin) or None
        view["via"] = facts.reached_by(e.rec["dest_ip"], {u["device"] for u in ups.values()}) \
            if e.active and cfg.main["enabled"] else None
    return view


def _status(e, cfg, ups, ks, counters, fw, last):
    if not e.valid:
        field, msg = e.errors[0]
        return "error", "%s: %s" % (field, msg)
    if not cfg.main["enabled"]:
        return "disabled", "wormhole is disabled"
    if not e.enabled:
        return "disabled", None
    uplink = e.uplink
    if uplink not in ups:
        return "error", "uplink %r is unknown" % uplink
    if not ups[uplink].get("up"):
        return "error", "uplink %s (%s) is down" % (uplink, ups[uplink]["device"])
    applied = bool(last and last.get("ok"))
    if applied and fw == "fw4":
        applied = _hits(e, counters)[1]
    if not applied:
        if fsutil.lock_held(paths.under_root(paths.LOCK_FILE)):
            return "pending", "a change is being applied"
        if last and not last.get("ok"):
            return "error", last.get("error")
        return "error", "not in the kernel's rules (run wormhole apply)"
    # A forward works whatever the kill-switch does; an exemption only matters under one.
    if e.type == "redirect" or ks.get("active"):
        return "active", None
    return "inert", None


# --- status ----------------------------------------------------------------------------------

def status(args):
    cfg = config.load()
    netifd = facts.netifd_interfaces()
    ups = facts.uplinks(cfg, netifd)
    return _status_view(cfg, facts.backend(cfg), ups, facts.killswitch(ups), state.last_apply(),
                        facts.network_names(cfg, netifd))


def _status_view(cfg, fw, ups, ks, last, networks):
    previous = state.applied().get("uplink_index", {})
    last = last or {"ok": None, "time": None, "error": None}
    warnings = config_warnings(cfg) + _sysctl_warnings(cfg, ups) + _redirect_warnings(cfg, ups)
    uplinks = []
    for name, u in sorted(ups.items()):
        rpf, svm = facts.rp_filter(u["device"])
        uplinks.append({"name": name, "device": u["device"], "gateway": u.get("gateway"),
                        "gateway6": u.get("gateway6"), "up": u.get("up"), "index": previous.get(name),
                        "rp_filter": rpf, "src_valid_mark": svm})
    return {
        "enabled": bool(cfg.main["enabled"]),
        "backend": fw,
        "settings": _settings_view(cfg.main),
        "killswitch": ks,
        "uplinks": uplinks,
        "networks": networks,
        "last_apply": {"ok": last.get("ok"), "time": last.get("time"), "error": last.get("error")},
        "counts": {"exemptions": len(cfg.exemptions()), "redirects": len(cfg.redirects()),
                   "active": len(cfg.active()), "errors": len([e for e in cfg.entries if not e.valid])},
        "warnings": warnings,
    }


def _settings_view(main):
    """The options of `main` as the `settings` method takes them (what a settings form
    starts from); an option that does not parse shows its default, as the load uses it."""
    out = {}
    for name, opt in schema.MAIN.items():
        v = main.get(name)
        out[name] = v if isinstance(v, bool) or v is None else (opt.text or str)(v)
    return out


def config_warnings(cfg):
    out = ["config: %s" % cfg.error] if cfg.error else []
    return out + ["%s: %s" % item for item in cfg.skipped().items()] + cfg.notes()


def _sysctl_warnings(cfg, ups):
    out = []
    used = {e.uplink for e in cfg.active()}
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
    from .. import diagnostics
    return [msg for _e, _level, _check, msg in diagnostics.redirect_problems(cfg, ups)]


# --- render and check ------------------------------------------------------------------------

def render_method(args):
    cfg = _readable(config.load())
    fw = args.get("backend") or facts.backend(cfg)
    if fw not in ("fw4", "fw3"):
        raise invalid("backend", "%s is not one of fw4, fw3" % schema.shown(fw))
    from .. import render
    f = facts.gather(cfg)
    plan = render.render(cfg, f, fw)
    return {"files": plan["files"], "routing": plan["routing"], "warnings": cfg.notes() + plan["warnings"],
            "skipped": skipped_sections(cfg, plan)}


def skipped_sections(cfg, plan=None):
    """{id: reason} of every entry a render leaves out: bad options, and what the render
    found (an unknown uplink, an unusable device). Disabled entries are not skipped."""
    out = cfg.skipped()
    out.update((plan or {}).get("skipped", {}))
    return out


def check(args):
    from .. import diagnostics
    return diagnostics.run(config.load())
