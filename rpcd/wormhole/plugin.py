"""The rpcd exec protocol: `list` prints signatures, `call <method>` answers one request.

Exactly one JSON object goes to stdout whatever happens: rpcd reads nothing else.
Unexpected failures are logged to syslog with their traceback and answered with an
`internal_error`, never a traceback on stdout.
"""

import json
import sys

MAX_REQUEST = 4 * 1024 * 1024


def _reply(obj):
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _error(code, message, field=None):
    err = {"code": code, "message": message}
    if field:
        err["field"] = field
    return {"error": err}


def _read_request():
    data = sys.stdin.buffer.read(MAX_REQUEST + 1)
    if len(data) > MAX_REQUEST:
        return None, _error("invalid_argument", "request: larger than %d bytes" % MAX_REQUEST, "request")
    text = data.decode("utf-8", "replace").strip()
    if not text:
        return {}, None
    try:
        args = json.loads(text)
    except ValueError as e:
        return None, _error("invalid_argument", "request: not valid JSON (%s)" % e, "request")
    if not isinstance(args, dict):
        return None, _error("invalid_argument", "request: must be a JSON object", "request")
    return args, None


def _log_crash(method):
    import syslog
    import traceback
    syslog.openlog("wormhole", syslog.LOG_PID, syslog.LOG_DAEMON)
    for line in traceback.format_exc().splitlines():
        syslog.syslog(syslog.LOG_ERR, "%s: %s" % (method, line))


def main(argv):
    if len(argv) >= 2 and argv[1] == "list":
        from .methods import signatures
        _reply(signatures())
        return 0
    if len(argv) >= 3 and argv[1] == "call":
        method = argv[2]
        args, err = _read_request()
        if err:
            _reply(err)
            return 0
        try:
            from . import api
            _reply(api.call(method, args))
        except Exception as e:  # noqa: BLE001 - the protocol demands a reply, never a traceback
            _log_crash(method)
            _reply(_error("internal_error", "internal error in %s: %s: %s" % (method, type(e).__name__, e)))
        return 0
    sys.stderr.write("usage: wormhole list | wormhole call <method> < request.json\n")
    _reply(_error("invalid_argument", "usage: list | call <method>", "argv"))
    return 2
