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

from . import fsutil, nfnl, paths, rtnl, state, sysctls, system
from .render import iptables as ipt_render
from .render import nft as nft_render
from .render.common import Marks
from .render.routing import fallback_priority

NFT_TIMEOUT = 15


class ApplyError(Exception):
    pass


def apply(plan, backend, main):
    """Make the kernel and the include files match `plan`. Raises ApplyError."""
    files = plan["files"]
    previous_files = {p: fsutil.read_text(paths.under_root(p)) for p in _all_files(files)}
    previous_routing = routing_snapshot(main)
    marks = Marks(main["mark_mask"])
    try:
        if backend == "fw4":
            _load_nft(plan.get("live", {}).get(paths.NFT_RULESET) or files[paths.NFT_RULESET])
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


def _load_nft(text):
    _nft_file(text)


def fw4_snippet_rules(chain):
    """{handle: comment} of our rules inside fw4's `chain`; None when fw4 is not loaded.

    Asked of the kernel in-process (nfnl); `nft` lists the chain only if that fails.
    """
    if system.installed("nft"):
        try:
            found = nfnl.rule_comments("fw4", chain)
        except nfnl.Error:
            pass
        else:
            return None if found is None else {
                h: c for h, c in found.items() if c is not None and c.startswith("!wormhole:")}
    data = system.run_json(["nft", "-j", "-a", "list", "chain", "inet", "fw4", chain])
    if data is None:
        return None
    out = {}
    for obj in data.get("nftables", []):
        rule = obj.get("rule")
        if rule and str(rule.get("comment", "")).startswith("!wormhole:"):
            out[rule["handle"]] = rule["comment"]
    return out


def _sync_fw4_snippets(marks, enabled):
    """Insert (or remove, when disabled) our accepts in fw4's live chains without a reload.

    The chain-pre files make every later fw4 reload include them; this covers the time
    until then (first install, changed mark_mask). Snippet comments name their mark bits,
    so an equal comment means an equal rule.
    """
    cmds = []
    for chain, text in nft_render.chain_pre_snippets(marks).items():
        live = fw4_snippet_rules(chain)
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


def _save_tool(family):
    return "iptables-save" if family == "ipv4" else "ip6tables-save"


def _live_jumps(family):
    """Jump lines of ours already present in built-in chains (so we never add them twice)."""
    rc, out, _ = system.run([_save_tool(family)], check=False)
    found = set()
    for line in out.splitlines():
        if "!fw3: wormhole" in line and line.startswith("-A "):
            parts = line.split()
            found.add((parts[1], parts[-1]))
    return found


def _load_fw3(files, enabled):
    for family in ("ipv4", "ipv6"):
        live = _live_jumps(family)
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
        rc, out, _ = system.run([_save_tool(family)], check=False)
        for table in ipt_render.CHAINS:
            for own in ipt_render.own_chains(table):
                if (":%s " % own) in out:
                    tool = "iptables" if family == "ipv4" else "ip6tables"
                    system.run([tool, "-t", table, "-F", own], check=False)
                    system.run([tool, "-t", table, "-X", own], check=False)


# --- routing ----------------------------------------------------------------------------

def _fams():
    fams = ["ipv4"]
    if os.path.exists("/proc/sys/net/ipv6"):
        fams.append("ipv6")
    return fams


def _flag(fam):
    return "-4" if fam == "ipv4" else "-6"


def _is_ours(rule, main, marks):
    pr = rule.get("priority")
    if pr not in (main["priority"] - 1, main["priority"], fallback_priority(main["priority"])):
        return False
    try:
        mask = int(rule.get("fwmask", "0"), 16)
    except ValueError:
        return False
    return mask == marks.uplink


def routing_snapshot(main):
    """Our ip rules and routing tables as they are now (for rollback and reconcile)."""
    marks = Marks(main["mark_mask"])
    snap = {"rules": [], "routes": []}
    recorded = state.applied()
    tables = set(range(main["table_base"] + 1, main["table_base"] + 16))
    tables.update(t for t in recorded.get("tables", []) if isinstance(t, int))
    for fam in _fams():
        # in-process over rtnetlink, `ip -j` only if that fails (facts._ip): 4 tools fewer per apply
        rules = system.kernel_json(["ip", "-j", _flag(fam), "rule", "show"], lambda: rtnl.rules(fam), rtnl.Error)
        for rule in rules or []:
            if _is_ours(rule, main, marks) or _recorded_rule(rule, fam, recorded):
                snap["rules"].append(_rule_from_kernel(rule, fam))
        routes = system.kernel_json(["ip", "-j", _flag(fam), "route", "show", "table", "all"],
                                    lambda: rtnl.routes(fam), rtnl.Error)
        for route in routes or []:
            table = _table_value(route.get("table", "main"))
            if table in tables and route.get("type", "unicast") == "unicast":
                snap["routes"].append(_route_from_kernel(route, fam, table))
    return snap


def _recorded_rule(rule, fam, recorded):
    return _rule_from_kernel(rule, fam) in [_strip(r) for r in recorded.get("rules", [])]


def _strip(rule):
    return {k: rule[k] for k in RULE_KEYS if k in rule}


# What identifies an ip rule of ours ("src": the after-main rules of point-to-point uplinks).
RULE_KEYS = ("family", "priority", "src", "fwmark", "table", "iif")


def _rule_from_kernel(rule, fam):
    mark = int(rule.get("fwmark", "0"), 16)
    mask = int(rule.get("fwmask", "0xffffffff"), 16)
    out = {"family": fam, "priority": rule["priority"], "fwmark": "0x%08x/0x%08x" % (mark, mask),
           "table": _table_value(rule.get("table", "main"))}
    if rule.get("iif"):
        out["iif"] = rule["iif"]
    if rule.get("src") and rule["src"] != "all":
        out["src"] = rule["src"] + ("/%s" % rule["srclen"] if "srclen" in rule else "")
    return out


def _table_value(t):
    return int(t) if str(t).isdigit() else t


def _route_from_kernel(route, fam, table):
    out = {"family": fam, "table": table, "dst": route.get("dst", "default"), "dev": route.get("dev")}
    if route.get("gateway"):
        out["via"] = route["gateway"]
    return out


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
    current = current or routing_snapshot(main)
    fams = _fams()
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
        current = routing_snapshot(main)
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
                    payload = _fw3_payload(old, _live_jumps(family))
                    system.run([_restore_tool(family), "--noflush"], input=payload, check=False)
    except (system.ToolError, OSError):
        pass
    _restore_routing(previous_routing, main)


def remove_everything(main):
    """Uninstall / disable path: no rule, route, ip rule, snippet or include left behind,
    and tcp_fwmark_accept back to what it was before wormhole set it."""
    marks = Marks(main["mark_mask"])
    errors = []
    try:
        if system.run_json(["nft", "-j", "list", "tables"]) is not None:
            _nft_file(nft_render.RESET)
            _sync_fw4_snippets(marks, enabled=False)
    except (system.ToolError, OSError) as e:
        errors.append(str(e))
    try:
        for family in ("ipv4", "ipv6"):
            payload = _fw3_removal(_live_jumps(family))
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
