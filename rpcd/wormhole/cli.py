"""`wormhole`: the same API as ubus, for people. Argument parsing and output formatting only.

`--json` prints exactly the ubus reply of the matching method. Exit status: 0 done; 1 the
reply holds an error; 2 a usage error; 3 done, but sections of the config were skipped
(each one is named, with its reason, on stderr and in the reply's `skipped`).
"""

import argparse
import ipaddress
import os
import sys

from . import VERSION, api

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_SKIPPED = 3

# `json` is imported where --json output is written: the hotplug hook and the init script
# run `wormhole apply` without it (1.5 ms of every run here, several on a router).


def _columns():
    """The terminal width as shutil.get_terminal_size() finds it, 80 without a terminal."""
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 80
    except (AttributeError, ValueError, OSError):
        return 80


class _Formatter(argparse.HelpFormatter):
    """argparse's own help layout, given its width: left to itself, it imports shutil (and
    with it bz2, lzma and fnmatch, 1.7 ms) for every parser, on every run, help or not."""

    def __init__(self, prog, **kwargs):
        kwargs.setdefault("width", max(_columns() - 2, 20))
        super().__init__(prog, **kwargs)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.print_usage(sys.stderr)
        sys.stderr.write("wormhole: %s\n" % message)
        sys.exit(EXIT_USAGE)


def _proto_port(text):
    """'tcp:443' -> ('tcp', '443'); a bare '443' means tcp."""
    if ":" in text:
        proto, port = text.split(":", 1)
    else:
        proto, port = "tcp", text
    return proto.lower(), port


class SpecError(ValueError):
    """A command-line spec that cannot be read unambiguously: a usage error."""


def _host_port(text):
    """'192.168.1.20:443', '[2001:db8::1]:443', '192.168.1.20' or '2001:db8::1' -> (host, port|None).

    An unbracketed IPv6 address whose last group could be a port ('2001:db8:1::20:443') is
    refused: it is itself a valid address, so reading it either way would guess.
    """
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, (rest[1:] if rest.startswith(":") else None)
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, port
    head, _, tail = text.rpartition(":")
    if text.count(":") > 1 and tail.isdigit() and len(tail) <= 5 and _is_ipv6(head) and _is_ipv6(text):
        raise SpecError("%s is ambiguous: write [%s]:%s for port %s on %s, or [%s] for the address itself"
                        % (text, head, tail, tail, head, text))
    return text, None


def _is_ipv6(text):
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _is_port_spec(text):
    """'tcp:443', '443', '8000-8010': what `add` takes; anything else names an id."""
    if ":" in text:
        return True
    lo, dash, hi = text.partition("-")
    return lo.isdigit() and (hi.isdigit() or not dash)


def build_parser():
    p = _Parser(prog="wormhole", description="Inbound services under a VPN kill-switch, and port forwards.")
    p.add_argument("--version", action="version", version="wormhole %s" % VERSION)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    inbound = sub.add_parser("inbound", help="exemptions: reply-path routing for inbound services")
    isub = inbound.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    isub.required = True
    _json(isub.add_parser("list", help="list exemptions"))
    a = isub.add_parser("add", help="add an exemption, e.g. tcp:443")
    a.add_argument("spec", metavar="PROTO:PORT", help="tcp|udp|tcpudp : N or N-M")
    a.add_argument("--label", help="free text shown in lists and rule comments")
    a.add_argument("--interface", help="uplink whose inbound connections are covered (default wan)")
    a.add_argument("--family", choices=("any", "ipv4", "ipv6"))
    a.add_argument("--allow", action="append", metavar="CIDR",
                   help="only this client address/prefix (repeatable); default: anyone on the internet")
    a.add_argument("--open", action="store_true",
                   help="also accept the port in the firewall input (to the clients of --allow, or to everyone)")
    a.add_argument("--disabled", action="store_true", help="add it switched off")
    _json(a)
    _by_id_commands(isub, "exemption", "exemptions", "--interface")

    forward = sub.add_parser("forward", help="redirects: port forwards to a LAN host or over a tunnel")
    fsub = forward.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    fsub.required = True
    _json(fsub.add_parser("list", help="list forwards"))
    f = fsub.add_parser("add", help="add a forward, e.g. tcp:8443 192.168.1.20:443")
    f.add_argument("spec", metavar="PROTO:PORT", help="public side: tcp|udp|tcpudp : N or N-M")
    f.add_argument("dest", metavar="HOST[:PORT]", help="destination; [v6]:port for IPv6")
    f.add_argument("--label")
    f.add_argument("--src", help="uplink the connection arrives on (default wan)")
    f.add_argument("--src-dip", help="only this public destination address")
    f.add_argument("--allow", action="append", metavar="CIDR", help="allowed client address/prefix (repeatable)")
    f.add_argument("--snat", action="store_true", help="masquerade: the destination sees this router")
    f.add_argument("--mss", help="also clamp TCP MSS to this value (always: to the path MTU)")
    f.add_argument("--no-reply", action="store_true", help="do not route replies back out of the uplink")
    f.add_argument("--no-reflection", action="store_true",
                   help="no NAT loopback: LAN clients cannot use the public address (IPv4) to reach it")
    f.add_argument("--disabled", action="store_true")
    _json(f)
    _by_id_commands(fsub, "forward", "forwards", "--src")

    r = sub.add_parser("render", help="print the generated rules without applying them")
    g = r.add_mutually_exclusive_group()
    g.add_argument("--fw4", dest="backend", action="store_const", const="fw4")
    g.add_argument("--fw3", dest="backend", action="store_const", const="fw3")
    _json(r)
    for name, text in (("status", "firewall backend, kill-switch, last apply, warnings"),
                       ("check", "diagnose rules, routes, listeners and forwards"),
                       ("list", "list exemptions and forwards"),
                       ("enable", "switch wormhole on (main.enabled 1) and apply"),
                       ("disable", "switch wormhole off (main.enabled 0): every rule, route and table removed")):
        _json(sub.add_parser(name, help=text))
    a = sub.add_parser("apply", help="apply the configuration now (after editing /etc/config/wormhole)")
    a.add_argument("--unless-stopped", action="store_true",
                   help="do nothing while the service is stopped (the hotplug hook)")
    _json(a)
    _json(sub.add_parser("cleanup", help="remove every rule, route and file wormhole installed (uninstall)"))
    return p


def _by_id_commands(sub, noun, nouns, uplink_flag):
    """`del PROTO:PORT|ID [--uplink]`, `enable ID`, `disable ID` for exemptions and forwards."""
    d = sub.add_parser("del", help="delete %s by PROTO:PORT or by id" % nouns)
    d.add_argument("spec", metavar="PROTO:PORT|ID", help="the spec it was added with (tcp:443, 8000-8010) or its id")
    d.add_argument(uplink_flag)
    _json(d)
    for verb in ("enable", "disable"):
        x = sub.add_parser(verb, help="%s %s %s by id" % (verb, "an" if noun[0] in "aeiou" else "a", noun))
        x.add_argument("id")
        _json(x)


def _json(p):
    p.add_argument("--json", action="store_true", help="print the ubus reply as JSON")


def _to_request(ns):
    """(method, args) for a parsed command line."""
    cmd, action = ns.command, getattr(ns, "action", None)
    if cmd in ("status", "check", "list"):
        return cmd, {}
    if cmd == "apply":
        return "apply", ({"unless_stopped": True} if ns.unless_stopped else {})
    if cmd in ("enable", "disable"):
        return "settings", {"enabled": cmd == "enable"}
    if cmd == "render":
        return "render", ({"backend": ns.backend} if ns.backend else {})
    stype = "exemption" if cmd == "inbound" else "redirect"
    if action == "list":
        return "list", {}
    if action in ("enable", "disable"):
        return "update", {"id": ns.id, "type": stype, "enabled": action == "enable"}
    if action == "del":
        if not _is_port_spec(ns.spec):
            return "del", {"id": ns.spec, "type": stype}
        proto, port = _proto_port(ns.spec)
        if cmd == "inbound":
            args = {"type": stype, "proto": proto, "port": port}
            _put(args, interface=ns.interface)
        else:
            args = {"type": stype, "proto": proto, "src_dport": port}
            _put(args, src=ns.src)
        return "del", args
    proto, port = _proto_port(ns.spec)
    if cmd == "inbound":
        args = {"proto": proto, "port": port}
        _put(args, label=ns.label, interface=ns.interface, family=ns.family)
        if ns.allow:
            args["src_ip"] = ns.allow
        if ns.open:
            args["open"] = True
    else:
        host, dport = _host_port(ns.dest)
        args = {"type": "redirect", "proto": proto, "src_dport": port, "dest_ip": host}
        _put(args, dest_port=dport, label=ns.label, src=ns.src, src_dip=ns.src_dip, mss=ns.mss)
        if ns.allow:
            args["src_ip"] = ns.allow
        if ns.snat:
            args["snat"] = True
        if ns.no_reply:
            args["reply"] = False
        if ns.no_reflection:
            args["reflection"] = False
    if ns.disabled:
        args["enabled"] = False
    return "add", args


def _put(args, **kw):
    args.update({k: v for k, v in kw.items() if v is not None})


# --- human output ------------------------------------------------------------------------

def printable(text):
    """Text from the config as a terminal may show it: control characters (ESC sequences
    in a hand-edited label) become visible escapes instead of acting on the terminal."""
    return "".join(c if c.isprintable() or c == "\n" else "\\x%02x" % ord(c) if ord(c) < 256
                   else "\\u%04x" % ord(c) for c in str(text))


def cell(value):
    """A value of a reply as a table shows it: no Python spelling (None, ['a', 'b'], True)."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return " ".join(cell(v) for v in value) or "-"
    return str(value)


def _table(rows, headers):
    rows = [[printable(cell(c)) for c in r] for r in rows]
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(headers, widths)).rstrip()]
    for r in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
    return "\n".join(lines)


def _show_list(reply, which):
    out = []
    if which in ("exemption", None):
        rows = [(e["id"], e.get("proto"), e.get("port"), e.get("interface"), e.get("family"),
                 "yes" if e.get("open") else "", e.get("src_ip") or "anyone", _entry_status(e), e.get("hits", 0),
                 e.get("label")) for e in reply["exemptions"]]
        out.append(_table(rows, ("ID", "PROTO", "PORT", "UPLINK", "FAMILY", "OPEN", "CLIENTS", "STATUS", "HITS", "LABEL"))
                   if rows else "no exemptions")
    if which in ("redirect", None):
        rows = []
        for e in reply["redirects"]:
            dest = cell(e.get("dest_ip"))
            dest = "[%s]" % dest if ":" in dest else dest
            rows.append((e["id"], e.get("proto"), e.get("src_dport"), e.get("src"),
                         "%s:%s" % (dest, cell(e.get("dest_port"))), "snat" if e.get("snat") else "client",
                         _entry_status(e), e.get("hits", 0), e.get("label")))
        out.append(_table(rows, ("ID", "PROTO", "PUBLIC", "UPLINK", "DESTINATION", "SOURCE", "STATUS", "HITS", "LABEL"))
                   if rows else "no forwards")
    return "\n\n".join(out)


def _entry_status(e):
    text = e["status"] + (": " + e["error"] if e.get("error") else "")
    return text + "".join(" (warning: %s)" % w for w in e.get("warnings", []))


def _show_status(r):
    ks = r["killswitch"]
    last = r["last_apply"]
    lines = [
        "wormhole:    %s (firewall backend %s)" % ("enabled" if r["enabled"] else "disabled", r["backend"]),
        "kill-switch: %s" % (("active via %s" % ks.get("via")) if ks.get("active") else "off") + " - " + ks.get("reason", ""),
        "last apply:  %s" % ("never" if last["ok"] is None else ("ok at %s" % last["time"]) if last["ok"]
                             else "FAILED at %s: %s" % (last["time"], last["error"])),
        "entries:     %(exemptions)d exemptions, %(redirects)d forwards, %(active)d active, %(errors)d with errors" % r["counts"],
    ]
    for u in r["uplinks"]:
        lines.append("uplink %s: device %s, gateway %s%s, %s, rp_filter %s%s" % (
            u["name"], u["device"], u.get("gateway") or "-", (" / %s" % u["gateway6"]) if u.get("gateway6") else "",
            "up" if u.get("up") else "DOWN", u.get("rp_filter"), " (src_valid_mark)" if u.get("src_valid_mark") else ""))
    for w in r["warnings"]:
        lines.append("warning: %s" % w)
    return "\n".join(lines)


def _show_check(r):
    marks = {"ok": "ok   ", "warn": "WARN ", "error": "ERROR"}
    lines = ["%s %s" % (marks.get(f["level"], f["level"]), f["message"]) for f in r.get("findings", [])]
    lines.append("check: %s" % ("all good" if r.get("ok") else "problems found"))
    return "\n".join(lines)


def _show_render(r):
    out = []
    for path, text in sorted(r["files"].items()):
        out.append("# ==> %s <==" % path)
        out.append(text.rstrip("\n") if text is not None else "# (removed)")
    out.append("# ==> routing <==")
    for rule in r["routing"]["rules"]:
        out.append("ip %s rule add priority %s%s%s fwmark %s lookup %s" % (
            "-4" if rule["family"] == "ipv4" else "-6", rule["priority"],
            (" iif %s" % rule["iif"]) if rule.get("iif") else "",
            (" from %s" % rule["src"]) if rule.get("src") else "", rule["fwmark"], rule["table"]))
    for route in r["routing"]["routes"]:
        out.append("ip %s route replace default%s dev %s table %s" % (
            "-4" if route["family"] == "ipv4" else "-6", (" via %s" % route["via"]) if route.get("via") else "",
            route["dev"], route["table"]))
    for w in r.get("warnings", []):
        out.append("# warning: %s" % w)
    for sid, why in sorted(r.get("skipped", {}).items()):
        out.append("# skipped %s: %s" % (sid, why))
    return "\n".join(out)


def _show(method, ns, reply):
    if method == "list":
        return _show_list(reply, {"inbound": "exemption", "forward": "redirect"}.get(ns.command))
    if method == "status":
        return _show_status(reply)
    if method == "check":
        return _show_check(reply)
    if method == "render":
        return _show_render(reply)
    if method == "add":
        head = "added %s" % reply["id"]
    elif method == "update":
        head = "updated %s" % reply["id"]
    elif method == "del":
        head = "deleted %s" % ", ".join(reply["deleted"])
    elif method == "apply":
        head = "stopped: nothing applied (start the service, or run wormhole apply)" if reply.get("stopped") \
            else "applied"
    elif method == "settings":
        head = "applied" if ns.command != "disable" else "disabled: every rule, route and table removed"
    else:
        import json
        return json.dumps(reply, indent=1)
    return "\n".join([head] + ["warning: %s" % w for w in reply.get("warnings", [])])


def _skipped_lines(reply):
    """Every section the apply or render left out, with why: on stderr, for people and logs."""
    return ["wormhole: skipped %s: %s\n" % (sid, printable(why)) for sid, why in sorted(reply.get("skipped", {}).items())]


def main(argv=None):
    parser = build_parser()
    ns = parser.parse_args(argv)
    if ns.command == "cleanup":
        return _cleanup(ns.json)
    try:
        method, args = _to_request(ns)
    except SpecError as e:
        parser.error("%s: %s" % ("dest" if ns.command == "forward" else "spec", e))
    reply = api.call(method, args)
    if getattr(ns, "json", False):
        _print_json(reply)
    elif "error" in reply:
        err = reply["error"]
        sys.stderr.write("wormhole: %s (%s)\n" % (printable(err["message"]), err["code"]))
    else:
        text = _show(method, ns, reply)
        sys.stdout.write((text if method == "render" else printable(text)) + "\n")
        if method != "render":
            sys.stderr.writelines(_skipped_lines(reply))
    if "error" in reply:
        return EXIT_ERROR
    return EXIT_SKIPPED if reply.get("skipped") else 0


def _print_json(reply):
    import json
    sys.stdout.write(json.dumps(reply, indent=1, sort_keys=True) + "\n")


def _cleanup(as_json):
    reply = api.run_cleanup()
    if as_json:
        _print_json(reply)
    elif "error" in reply:
        err = reply["error"]
        sys.stderr.write("wormhole: %s (%s)\n" % (printable(err["message"]), err["code"]))
    else:
        for e in reply["errors"]:
            sys.stderr.write("wormhole: cleanup: %s\n" % printable(e))
    return EXIT_ERROR if "error" in reply or reply["errors"] else 0
