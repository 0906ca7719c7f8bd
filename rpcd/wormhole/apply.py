"""Apply a rendered plan to the kernel and the disk, or leave everything as it was.

Steps (DESIGN.md section 7): the caller holds the lock and has validated; here we
1. load our table in one `nft -f` transaction (or iptables-restore per table on fw3):
   the kernel takes all of it or none of it, so this is also the check;
2. make sure fw4's chains hold our static accept snippets (inserted live, once);
3. replace the include files atomically, so the next fw4/fw3 reload loads the same;
4. reconcile ip rules and our routing tables to the plan.
Any failure restores the previous files and kernel state and raises ApplyError with the
tool's message. No firewall reload and no tunnel restart: conntrack entries, and with
them established connections, are never touched.
"""

import os
import time

from . import facts, fsutil, paths, state, sysctls, system
from .layout import RULE_KEYS, Marks
from .render import iptables as ipt_render
from .render import nft as nft_render

NFT_TIMEOUT = 15


class ApplyError(Exception):
    pass


def install(cfg, fw, make_plan):
    """Make the kernel match `cfg` (its plan from `make_plan()`: (facts, plan)), set the
    sysctl it needs, and record the outcome; returns warnings. Raises ApplyError, with the
    failure recorded as the last apply's outcome and the previous rules in place.

    The caller holds the lock. Disabled means removed: no rule, route or file is left.
    """
    previous = state.applied()
    try:
        if not cfg.main["enabled"]:
            errors = remove_everything(cfg.main)
            if errors:
                raise ApplyError("; ".join(errors))
            warnings, record = [], {"backend": fw, "uplink_index": {}, "rules": [], "tables": []}
        else:
            if previous.get("backend") and previous.get("backend") != fw:
                remove_everything(cfg.main)
            f, plan = make_plan()
            warnings = plan["warnings"] + apply(plan, fw, cfg.main)
            record = {"backend": fw, "uplink_index": f["uplink_index"],
                      "rules": plan["routing"]["rules"],
                      "tables": sorted({r["table"] for r in plan["routing"]["rules"] if isinstance(r["table"], int)}),
                      "mark_mask": cfg.main["mark_mask"], "priority": cfg.main["priority"]}
            saved, tuned = sysctls.sync_fwmark_accept(sysctls.fwmark_accept_wanted(cfg),
                                                      previous.get(sysctls.STATE_KEY))
            warnings += tuned
            if saved is not None:
                record[sysctls.STATE_KEY] = saved
    except (ApplyError, system.ToolError, OSError) as e:
        try:
            state.save_last_apply({"ok": False, "time": now(), "error": str(e), "backend": fw})
        except OSError:
            pass    # the disk that failed the apply may refuse this record too; the reply still tells
        raise ApplyError(str(e)) from None
    try:
        state.save_applied(record)
        state.save_last_apply({"ok": True, "time": now(), "error": None, "backend": fw})
        state.set_stopped(False)       # an apply is a start
    except OSError as e:
        # The kernel took the rules: do not call that a failure. Without the record the next
        # apply may renumber uplinks and `status` shows the previous outcome.
        warnings.append("applied, but the record of it could not be saved: %s" % e)
    return warnings


def apply(plan, backend, main):
    """Make the kernel and the include files match `plan`. Raises ApplyError."""
    files = plan["files"]
    previous_files = {p: fsutil.read_text(paths.under_root(p)) for p in _all_files(files)}
    previous_routing = facts.routing_snapshot(main)
    marks = Marks(main["mark_mask"])
    try:
        if backend == "fw4":
            _nft_file(plan.get("live", {}).get(paths.NFT_RULESET) or files[paths.NFT_RULESET])
            _sync_fw4_snippets(marks, enabled=main["enabled"])
        else:
            _load_fw3(files, enabled=main["enabled"] and bool(plan["routing"]["rules"]))
        _write_files(files)
        warnings = reconcile_routing(plan["routing"], main, previous_routing)
    except (system.ToolError, OSError, ApplyError) as e:
        _rollback(backend, previous_files, previous_routing, main, marks)
        raise ApplyError(str(e)) from None
    return warnings


def _all_files(files):
    names = set(files)
    names.update([paths.NFT_RULESET] + [paths.NFT_CHAIN_PRE.format(chain=c) for c in nft_render.SNIPPET_CHAINS])
    names.update(paths.FW3_RULES.format(family=f) for f in ("ipv4", "ipv6"))
    return sorted(names)


def _write_files(files):
    for path, text in sorted(files.items()):
        target = paths.under_root(path)
        if text is None:
            fsutil.remove_file(target)
        elif fsutil.read_text(target) != text:
            fsutil.atomic_write(target, text)


# --- nftables -------------------------------------------------------------------------

def _nft_file(text):
    """nft -f from a private temp file (nft reads files, and stdin handling varies by version)."""
    tmpdir = paths.under_root(paths.STATE_DIR)
    os.makedirs(tmpdir, exist_ok=True)
    for prefix in (".load-", "..load-"):     # files (and their temps) of writers killed meanwhile (issue 9)
        fsutil.remove_stale(tmpdir, prefix)
    tmp = os.path.join(tmpdir, ".load-%d.nft" % os.getpid())
    fsutil.atomic_write(tmp, text, 0o600)
    try:
        system.run(["nft", "-f", tmp], timeout=NFT_TIMEOUT)
    finally:
        fsutil.remove_file(tmp)


def _sync_fw4_snippets(marks, enabled):
    """Insert (or remove, when disabled) our accepts in fw4's live chains without a reload.

    The chain-pre files make every later fw4 reload include them; this covers the time
    until then (first install, changed mark_mask). Snippet comments name their mark bits,
    so an equal comment means an equal rule.
    """
    cmds = []
    for chain, text in nft_render.chain_pre_snippets(marks).items():
        live = facts.fw4_snippet_rules(chain)
        if live is None:
            continue
        wanted = nft_render.snippet_comment(text)
        keep = [h for h, comment in sorted(live.items()) if enabled and comment == wanted][:1]
        cmds += ["delete rule inet fw4 %s handle %d" % (chain, h) for h in sorted(live) if h not in keep]
        if enabled and not keep:
            cmds.append("insert rule inet fw4 %s %s" % (chain, text.strip()))
    if cmds:
        _nft_file("\n".join(cmds) + "\n")


# --- fw3 / iptables ---------------------------------------------------------------------

def _restore_tool(family):
    return "iptables-restore" if family == "ipv4" else "ip6tables-restore"


def _load_fw3(files, enabled):
    for family in ("ipv4", "ipv6"):
        live = facts.fw3_jumps(family)
        if enabled:
            payload = _fw3_payload(files[paths.FW3_RULES.format(family=family)], live)
        else:
            payload = _fw3_removal(live)
        if payload:
            system.run([_restore_tool(family), "--noflush"], input=payload, timeout=NFT_TIMEOUT)
    if not enabled:
        _fw3_delete_chains()


def _fw3_payload(text, live):
    out = []
    for line in text.splitlines():
        if line.startswith("-I ") and "!fw3: wormhole" in line:
            parts = line.split()
            if (parts[1], parts[-1]) in live:
                continue
        out.append(line)
    return "\n".join(out) + "\n"


def _fw3_removal(live):
    out = []
    for table, chains in ipt_render.CHAINS.items():
        out.append("*%s" % table)
        for builtin, own in chains:
            if (builtin, own) in live:
                out.append("-D %s -m comment --comment \"!fw3: wormhole\" -j %s" % (builtin, own))
        out.append("COMMIT")
    body = [l for l in out if not l.startswith("*") and l != "COMMIT"]
    return "\n".join(out) + "\n" if body else ""


def _fw3_delete_chains():
    """Remove our (unreferenced) chains entirely; used on disable and uninstall."""
    for family in ("ipv4", "ipv6"):
        out = facts.iptables_save(family)
        for table in ipt_render.CHAINS:
            for own in ipt_render.own_chains(table):
                if (":%s " % own) in out:
                    tool = "iptables" if family == "ipv4" else "ip6tables"
                    system.run([tool, "-t", table, "-F", own], check=False)
                    system.run([tool, "-t", table, "-X", own], check=False)


# --- routing ----------------------------------------------------------------------------

def _flag(fam):
    return "-4" if fam == "ipv4" else "-6"


def _strip(rule):
    return {k: rule[k] for k in RULE_KEYS if k in rule}


def _rule_argv(rule, verb):
    argv = ["ip", _flag(rule["family"]), "rule", verb, "priority", str(rule["priority"])]
    if rule.get("iif"):
        argv += ["iif", rule["iif"]]
    if rule.get("src"):
        argv += ["from", rule["src"]]
    argv += ["fwmark", rule["fwmark"], "lookup", str(rule["table"])]
    return argv


def _route_argv(route, verb):
    argv = ["ip", _flag(route["family"]), "route", verb, route["dst"]]
    if route.get("via"):
        argv += ["via", route["via"]]
    argv += ["dev", route["dev"], "table", str(route["table"])]
    return argv


def reconcile_routing(plan, main, current=None):
    """Make our rules and tables equal to the plan. Route failures (uplink down) are warnings."""
    warnings = []
    current = current or facts.routing_snapshot(main)
    fams = facts.families()
    wanted_rules = [_strip(r) for r in plan["rules"] if r["family"] in fams]
    wanted_routes = [_route_key(r) for r in plan["routes"] if r["family"] in fams]
    have_routes = [_route_key(r) for r in current["routes"]]
    for route, full in zip(wanted_routes, [r for r in plan["routes"] if r["family"] in fams]):
        if route in have_routes:
            continue
        try:
            system.run(_route_argv(route, "replace"))
        except system.ToolError as e:
            warnings.append("uplink %s: cannot route replies (%s)" % (full.get("uplink"), e))
    for rule in wanted_rules:
        if rule not in current["rules"]:
            system.run(_rule_argv(rule, "add"))
    for rule in current["rules"]:
        if rule not in wanted_rules:
            system.run(_rule_argv(rule, "del"), check=False)
    wanted_dst = {(r["family"], r["table"], r["dst"]) for r in wanted_routes}
    for route in have_routes:
        if route not in wanted_routes and (route["family"], route["table"], route["dst"]) not in wanted_dst:
            system.run(_route_argv(route, "del"), check=False)
    return warnings


def _route_key(route):
    return {k: route[k] for k in ("family", "table", "dst", "via", "dev") if route.get(k) is not None}


def _restore_routing(snapshot, main):
    try:
        current = facts.routing_snapshot(main)
        for rule in current["rules"]:
            if rule not in snapshot["rules"]:
                system.run(_rule_argv(rule, "del"), check=False)
        for rule in snapshot["rules"]:
            if rule not in current["rules"]:
                system.run(_rule_argv(rule, "add"), check=False)
        # Routes the failed apply added (a new uplink's table) go too: without this the
        # rollback left them behind (issue 9, tests/test_faults.py). Deleted first: a
        # `del` without `via` would match the restored route as well.
        for route in current["routes"]:
            if route not in snapshot["routes"]:
                system.run(_route_argv(route, "del"), check=False)
        for route in snapshot["routes"]:
            system.run(_route_argv(route, "replace"), check=False)
    except system.ToolError:
        pass


# --- rollback and removal -------------------------------------------------------------

def _rollback(backend, previous_files, previous_routing, main, marks):
    """Put back the previous files and kernel state; best effort, never raises."""
    for path, text in previous_files.items():
        target = paths.under_root(path)
        try:
            if text is None:
                fsutil.remove_file(target)
            elif fsutil.read_text(target) != text:
                fsutil.atomic_write(target, text)
        except OSError:
            pass
    try:
        if backend == "fw4":
            old = previous_files.get(paths.NFT_RULESET)
            _nft_file(old if old else nft_render.RESET)
        else:
            for family in ("ipv4", "ipv6"):
                old = previous_files.get(paths.FW3_RULES.format(family=family))
                if old:
                    payload = _fw3_payload(old, facts.fw3_jumps(family))
                    system.run([_restore_tool(family), "--noflush"], input=payload, check=False)
    except (system.ToolError, OSError):
        pass
    _restore_routing(previous_routing, main)


def stop(main):
    """The init script's stop and `wormhole cleanup`: remove everything and stay stopped
    (the hotplug hook no longer re-applies) until the next apply, start or boot."""
    try:
        state.set_stopped(True)
    except OSError as e:
        return [str(e)] + remove_everything(main)
    return remove_everything(main)


def remove_everything(main):
    """Uninstall / disable path: no rule, route, ip rule, snippet or include left behind,
    and tcp_fwmark_accept back to what it was before wormhole set it."""
    marks = Marks(main["mark_mask"])
    errors = []
    try:
        if facts.nft_usable():
            _nft_file(nft_render.RESET)
            _sync_fw4_snippets(marks, enabled=False)
    except (system.ToolError, OSError) as e:
        errors.append(str(e))
    try:
        for family in ("ipv4", "ipv6"):
            payload = _fw3_removal(facts.fw3_jumps(family))
            if payload:
                system.run([_restore_tool(family), "--noflush"], input=payload, check=False)
        _fw3_delete_chains()
    except (system.ToolError, OSError) as e:
        errors.append(str(e))
    try:
        reconcile_routing({"rules": [], "routes": []}, main)
    except system.ToolError as e:
        errors.append(str(e))
    for path in _all_files({}):
        fsutil.remove_file(paths.under_root(path))
    return errors + _give_back_sysctls()


def _give_back_sysctls():
    record = state.applied()
    if sysctls.STATE_KEY not in record:
        return []
    errors = sysctls.give_back(record[sysctls.STATE_KEY])
    if errors:
        return errors                   # still on record: the next apply or cleanup tries again
    del record[sysctls.STATE_KEY]
    try:
        state.save_applied(record)      # given back: a later apply must not restore it again
    except OSError as e:
        errors.append("could not update the applied state: %s" % e)
    return errors


def now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
