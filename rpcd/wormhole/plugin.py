"""The rpcd exec protocol: `list` prints signatures, `call <method>` answers one request.

As rpcd runs us (rpcd plugin.c / exec.c):
- `list` at start-up, synchronously, no timeout, stdin and stderr on /dev/null: print the
  signatures and nothing else. This path imports nothing beyond this module and
  `methods` (not even json, see methods.signatures_json).
- `call <method>` with the request on stdin (rpcd writes `blobmsg_format_json` of the
  ubus message, then closes stdin), killed with SIGKILL after rpcd's timeout (30 s on
  OpenWrt). rpcd parses the first JSON value on stdout and needs an object; it ignores
  the exit code and stderr. So exactly one JSON object goes to stdout whatever happens,
  failures included, and stray prints of lower layers are sent to stderr instead.
Unexpected failures are logged to syslog with their traceback and answered with an
`internal_error`, never a traceback on stdout. Write methods are logged to syslog too:
they change the router's firewall, and rpcd keeps no record of who did what.
"""

import sys

from . import methods

# A real request is a few hundred bytes; 64 KiB leaves room for a long allowlist.
# Anything bigger is a mistake or an attack, refused before parsing.
MAX_REQUEST = 64 * 1024
LOG_MAX = 300
INVALID = "invalid_argument"
USAGE = "usage: wormhole list | wormhole call <method> < request.json"


def main(argv):
    verb = argv[1] if len(argv) >= 2 else None
    if verb == "list":
        _write(methods.signatures_json())
        return 0
    if verb == "call" and len(argv) >= 3:
        return _call(argv[2])
    if verb == "call":
        what = "`call` needs a method name"
    elif verb:
        what = "unknown verb %r" % verb
    else:
        what = "no verb"
    sys.stderr.write(USAGE + "\n")
    _write(_dump(_error(INVALID, "argv: %s (%s)" % (what, USAGE), "argv")))
    return 2


# rpcd kills an exec plugin after 30 s (OpenWrt's default): finish, or fail cleanly, before.
CALL_BUDGET = 25


def _call(method):
    args, err = _read_request(sys.stdin.buffer)
    if err:
        _write(_dump(err))
        return 0
    stdout, sys.stdout = sys.stdout, sys.stderr  # only our reply may reach rpcd
    try:
        text = _run(method, args)
    finally:
        sys.stdout = stdout
    _write(text)
    return 0


def _run(method, args):
    """The reply as JSON text; a crash anywhere (serialising included) is an internal_error."""
    try:
        from . import api, system
        system.set_deadline(CALL_BUDGET)
        reply = api.call(method, args)
        text = _dump(reply)
    except Exception as e:  # noqa: BLE001 - the protocol demands a reply, never a traceback
        _log_crash(method)
        return _dump(_error("internal_error", "internal error in %s: %s: %s" % (method, type(e).__name__, e)))
    if method in methods.WRITE_METHODS:
        _log_write(method, args, reply)
    return text


# --- request and reply ---------------------------------------------------------------------

def _error(code, message, field=None):
    err = {"code": code, "message": message}
    if field:
        err["field"] = field
    return {"error": err}


def _read_request(stream):
    """(args, None) or (None, error reply). Empty input means {} (rpcd always sends an object)."""
    from .jsonio import loads
    data = stream.read(MAX_REQUEST + 1)
    if len(data) > MAX_REQUEST:
        return None, _error(INVALID, "request: larger than %d bytes" % MAX_REQUEST, "request")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, _error(INVALID, "request: not valid UTF-8 (byte %d)" % e.start, "request")
    if not text.strip():
        return {}, None
    try:
        args = loads(text)
    except ValueError as e:
        return None, _error(INVALID, "request: not valid JSON (%s)" % e, "request")
    except RecursionError:
        return None, _error(INVALID, "request: nested too deeply", "request")
    if not isinstance(args, dict):
        return None, _error(INVALID, "request: must be a JSON object, not %s" % _kind(args), "request")
    return args, None


def _kind(value):
    for t, name in ((bool, "a boolean"), (int, "a number"), (float, "a number"), (str, "a string"),
                    (list, "an array")):
        if isinstance(value, t):
            return name
    return "null" if value is None else type(value).__name__


def _dump(obj):
    """Compact, pure-ASCII JSON. Undecodable config bytes (lone surrogates) become \\udcXX
    escapes, which json-c turns into U+FFFD instead of failing the whole reply."""
    from .jsonio import dumps
    return dumps(obj)


def _write(text):
    out = sys.stdout.buffer
    out.write(text.encode("ascii") + b"\n")
    out.flush()


# --- syslog ----------------------------------------------------------------------------------

# Logging is best effort: it must never cost the caller the reply of a change that happened.

def _syslog(level, lines):
    try:
        import syslog
        syslog.openlog("wormhole", syslog.LOG_PID, syslog.LOG_DAEMON)
        for line in lines:
            syslog.syslog(getattr(syslog, level), line)
    except Exception:  # noqa: BLE001,S110 - no syslog (module or socket): nothing to do
        pass


def _log_crash(method):
    try:
        import traceback
        lines = traceback.format_exc().splitlines()
    except Exception:  # noqa: BLE001
        lines = ["(no traceback)"]
    _syslog("LOG_ERR", ["%s: %s" % (method, line) for line in lines])


def _log_write(method, args, reply):
    try:
        what = _dump({k: v for k, v in args.items() if k != "ubus_rpc_session"})
        what = what if len(what) <= LOG_MAX else what[:LOG_MAX] + "..."
        err = reply.get("error")
        if err:
            line = "ubus %s %s: %s: %s" % (method, what, err.get("code"), err.get("message"))
        else:
            line = "ubus %s %s: ok %s" % (method, what, _dump(reply))
    except Exception:  # noqa: BLE001
        return
    _syslog("LOG_WARNING" if err else "LOG_NOTICE", [line])
