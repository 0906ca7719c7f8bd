"""A LuCI-shaped HTTP host for the wormhole views, answering ubus by running the real plugin.

What a browser sees, as on a router with uhttpd + LuCI:
  GET  /cgi-bin/luci/<menu path>?user=<name>  a page shell for the view the app's menu.d
                                              names there (403 without the menu's ACL
                                              groups, 404 without its UCI config)
  GET  /luci-static/resources/...             the app's htdocs, then the stand-in runtime
  POST /ubus (and /cgi-bin/luci/admin/ubus)   ubus JSON-RPC 2.0, single or batch

The JSON-RPC side follows LuCI's ubus endpoint: `call` params are [sid, object, method,
args]; an args object holding `ubus_rpc_session` is refused; a call the session's ACL
does not grant gets error -32002 "Access denied"; otherwise the reply is
`result: [status, data]` or `result: [status]`. `wormhole` calls run the plugin as rpcd
does (argv [plugin, "call", method], the arguments plus ubus_rpc_session as JSON on
stdin, a bare environment, cwd /), optionally inside a network namespace, and map its
output as rpcd's plugin.c does: a JSON object -> status 0 with it; other JSON or garbage
-> 2 (invalid argument); no output -> 5 (no data); a method missing from `list` -> 3;
too slow -> 7.
"""

import collections
import http.server
import json
import os
import secrets
import subprocess
import threading
import urllib.parse

from tests import support
from tests.luci_host import acl

HERE = os.path.dirname(os.path.abspath(__file__))
WWW = os.path.join(HERE, "www")
# WORMHOLE_LUCI_RUNTIME=<dir laid out as a router's /www> serves LuCI's own runtime
# (luci-static/resources/{cbi,luci,ui,form,rpc,uci,validation,fs}.js and a theme's
# luci-static/<theme>/cascade.css) in place of the stand-in, to check the stand-in's fidelity
# against the real thing by hand: CI has no copy of LuCI, and none is committed here.
RUNTIME = os.environ.get("WORMHOLE_LUCI_RUNTIME") or None
RUNTIME_THEME = os.environ.get("WORMHOLE_LUCI_THEME", "bootstrap")
# What LuCI's runtime itself asks at start-up (luci-base's ACL, which every LuCI login
# holds), answered as an empty router would: no pending uci changes, no features, no
# preload classes.
RUNTIME_GRANTS = [("ubus", "uci", "changes"), ("ubus", "luci", "getFeatures"), ("ubus", "file", "list")]
RUNTIME_REPLIES = {("uci", "changes"): {"changes": {}}, ("luci", "getFeatures"): {},
                   ("file", "list"): {"entries": []}}
APP = os.path.join(support.REPO, "luci-app-wormhole")
APP_HTDOCS = os.path.join(APP, "htdocs")
ACL_DIR = os.path.join(APP, "root", "usr", "share", "rpcd", "acl.d")
MENU_DIR = os.path.join(APP, "root", "usr", "share", "luci", "menu.d")
INCLUDE_DIR = os.path.join(APP_HTDOCS, "luci-static", "resources", "view", "status", "include")

UBUS_OK, UBUS_INVALID_ARGUMENT, UBUS_METHOD_NOT_FOUND, UBUS_NOT_FOUND, UBUS_NO_DATA, UBUS_TIMEOUT = 0, 2, 3, 4, 5, 7
PLUGIN_TIMEOUT = 30

# Logins as rpcd's `config login` sections would list them.
USERS = {
    "root": {"read": ["*"], "write": ["*"]},
    "viewer": {"read": ["luci-app-wormhole"], "write": []},
    "stranger": {"read": [], "write": []},
}

# The Status -> Overview page is luci-mod-status's; the stand-in lives in www/.
BUILTIN_MENU = {
    "admin/status/overview": {"action": {"type": "view", "path": "status/index"}, "depends": {}},
}

MIME = {".js": "application/javascript", ".css": "text/css", ".html": "text/html", ".png": "image/png",
        ".json": "application/json"}


class Session:
    def __init__(self, user, groups):
        self.user = user
        self.sid = secrets.token_hex(16)
        self.grants = acl.grants_for(USERS[user], groups) + (RUNTIME_GRANTS if RUNTIME else [])

    def allowed(self, scope, obj, fn):
        return acl.allowed(self.grants, scope, obj, fn)


class Ubus:
    """The ubus objects behind the endpoint: `session` (emulated) and `wormhole` (the plugin)."""

    def __init__(self, root, ns=None, sessions=None):
        self.root = root
        self.ns = ns
        self.sessions = sessions or {}
        self.calls = collections.Counter()
        self.log = []       # (object.method, arguments) of every call, in order
        self.lock = threading.Condition()
        self.signatures = self._plugin_list()

    def _argv(self, *args):
        argv = [support.PLUGIN] + list(args)
        return (["ip", "netns", "exec", self.ns.name] + argv) if self.ns is not None else argv

    def _plugin_list(self):
        p = subprocess.run(self._argv("list"), capture_output=True, text=True, timeout=PLUGIN_TIMEOUT,
                           cwd="/", env=support.clean_env(self.root))
        return support.first_json(p.stdout)

    def call(self, sid, obj, method, args):
        """(status, data or None) for one ubus call."""
        try:
            if obj == "session":
                return self._session(sid, method, args)
            if RUNTIME and (obj, method) in RUNTIME_REPLIES:
                return UBUS_OK, RUNTIME_REPLIES[(obj, method)]
            if obj != "wormhole":
                return UBUS_NOT_FOUND, None
            if method not in self.signatures:
                return UBUS_METHOD_NOT_FOUND, None
            return self._plugin(method, args)
        finally:
            with self.lock:
                self.calls["%s.%s" % (obj, method)] += 1
                self.log.append(("%s.%s" % (obj, method),
                                 {k: v for k, v in args.items() if k != "ubus_rpc_session"}))
                self.lock.notify_all()

    def _session(self, sid, method, args):
        if method != "access":
            return UBUS_METHOD_NOT_FOUND, None
        ses = self.sessions.get(sid)
        ok = bool(ses and ses.allowed(args.get("scope", "ubus"), args.get("object", ""), args.get("function", "")))
        return UBUS_OK, {"access": ok}

    def _plugin(self, method, args):
        try:
            p = subprocess.run(self._argv("call", method), input=json.dumps(args), capture_output=True, text=True,
                               timeout=PLUGIN_TIMEOUT, cwd="/", env=support.clean_env(self.root))
        except subprocess.TimeoutExpired:
            return UBUS_TIMEOUT, None
        text = p.stdout.lstrip()
        if not text:
            return UBUS_NO_DATA, None
        try:
            obj, _end = json.JSONDecoder().raw_decode(text)
        except ValueError:
            return UBUS_INVALID_ARGUMENT, None
        return (UBUS_OK, obj) if isinstance(obj, dict) else (UBUS_INVALID_ARGUMENT, None)

    def count(self, name):
        with self.lock:
            return self.calls[name]

    def requests(self, name):
        """The arguments of every `name` call so far, oldest first."""
        with self.lock:
            return [args for called, args in self.log if called == name]

    def wait_count(self, name, at_least, timeout):
        with self.lock:
            return self.lock.wait_for(lambda: self.calls[name] >= at_least, timeout)

    def list_signatures(self, objects):
        names = {str: "string", bool: "boolean", list: "array", int: "number", dict: "object"}
        if "wormhole" not in objects:
            return {}
        return {"wormhole": {m: {a: names.get(type(v), "unknown") for a, v in sig.items()}
                             for m, sig in self.signatures.items()}}


def jsonrpc_reply(rid, data=None, code=0, errmsg=None):
    reply = {"jsonrpc": "2.0", "id": rid}
    if errmsg:
        reply["error"] = {"code": code, "message": errmsg}
    elif isinstance(code, dict):
        reply["result"] = code
    elif data is not None:
        reply["result"] = [code, data]
    else:
        reply["result"] = [code]
    return reply


def jsonrpc_request(ubus, req):
    """One JSON-RPC request object -> its reply object (LuCI's ubus endpoint semantics)."""
    if not isinstance(req, dict) or not isinstance(req.get("method"), str) or req.get("jsonrpc") != "2.0" \
            or req.get("id") is None:
        return jsonrpc_reply(None, code=-32600, errmsg="Invalid request")
    if req["method"] == "call":
        params = req.get("params")
        if not isinstance(params, list) or len(params) < 3:
            return jsonrpc_reply(None, code=-32600, errmsg="Invalid parameters")
        sid, obj, fn = params[0], params[1], params[2]
        args = params[3] if len(params) > 3 and params[3] is not None else {}
        if not isinstance(args, dict) or "ubus_rpc_session" in args:
            return jsonrpc_reply(req["id"], code=-32602, errmsg="Invalid parameters")
        ses = ubus.sessions.get(sid)
        if ses is None or not ses.allowed("ubus", str(obj), str(fn)):
            return jsonrpc_reply(req["id"], code=-32002, errmsg="Access denied")
        args = dict(args, ubus_rpc_session=sid)
        status, data = ubus.call(sid, obj, fn, args)
        return jsonrpc_reply(req["id"], data, status)
    if req["method"] == "list":
        params = req.get("params") or []
        if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
            return jsonrpc_reply(req["id"], code=-32602, errmsg="Invalid parameters")
        if not params:
            return jsonrpc_reply(req["id"], code=["session", "wormhole"])
        return jsonrpc_reply(req["id"], code=ubus.list_signatures(params))
    return jsonrpc_reply(req["id"], code=-32601, errmsg="Method not found")


def _script_json(obj):
    """JSON safe to put inside a <script> element."""
    return json.dumps(obj).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>%(title)s - LuCI</title>
%(theme)s
<script>
/* test instrumentation: record dialogs and uncaught errors instead of blocking on them */
window.__alerts = []; window.__errors = [];
window.alert = window.confirm = window.prompt = function(m) { window.__alerts.push(String(m)); };
window.addEventListener('error', function(e) { window.__errors.push(String(e.message)); });
window.addEventListener('unhandledrejection', function(e) {
	window.__errors.push(String(e.reason && e.reason.message || e.reason));
});
</script>
<script src="/luci-static/resources/luci.js"></script>
<script>L = new LuCI(%(env)s);</script>
</head>
<body>
<header><span class="brand">OpenWrt</span><span class="crumb">%(crumb)s</span></header>
<div id="maincontent"><div id="view"></div></div>
<script>
document.addEventListener('luci-loaded', function() {
	L.require('ui').then(function(ui) { ui.instantiateView(%(view)s); });
});
</script>
</body>
</html>
"""


class Host:
    """The HTTP host. start() -> base URL; page_url(menu path, user) -> a page to open."""

    def __init__(self, root, ns=None, pollinterval=1):
        self.root = str(root)
        self.pollinterval = pollinterval
        self.groups = acl.load_groups([ACL_DIR])
        self.sessions = {}
        self.users = {}
        for user in USERS:
            ses = Session(user, self.groups)
            self.sessions[ses.sid] = ses
            self.users[user] = ses
        self.ubus = Ubus(self.root, ns, self.sessions)
        self.menu = dict(BUILTIN_MENU)
        self.menu.update(_load_menu(MENU_DIR))
        self.httpd = None
        self.thread = None

    def start(self):
        host = self

        class Handler(_Handler):
            pass
        Handler.host = host
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="luci-host", daemon=True)
        self.thread.start()
        return self.url

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.httpd.server_address[1]

    def page_url(self, path="admin/network/wormhole", user="root"):
        return "%s/cgi-bin/luci/%s?%s" % (self.url, path, urllib.parse.urlencode({"user": user}))

    def stop(self):
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    # -- pages -------------------------------------------------------------------------

    def page(self, path, user):
        """(http status, html) for a menu path as this user."""
        node = self.menu.get(path)
        ses = self.users.get(user)
        if node is None or node.get("action", {}).get("type") != "view" or ses is None:
            return 404, "no such page"
        depends = node.get("depends", {})
        for group in depends.get("acl", []):
            if not ses.allowed("access-group", group, "read"):
                return 403, "no access to %s" % group
        for config in depends.get("uci", {}):
            if not os.path.exists(os.path.join(self.root, "etc", "config", config)):
                return 404, "no /etc/config/%s" % config
        env = {
            "sessionid": ses.sid, "base_url": "/luci-static/resources", "resource": "/luci-static/resources",
            "scriptname": "/cgi-bin/luci", "requestpath": path.split("/"), "ubuspath": "/ubus/",
            "pollinterval": self.pollinterval, "rpctimeout": PLUGIN_TIMEOUT + 5,
            "includes": sorted(n[:-3] for n in os.listdir(INCLUDE_DIR) if n.endswith(".js"))
            if os.path.isdir(INCLUDE_DIR) else [],
        }
        title = node.get("title", path)
        theme = '<link rel="stylesheet" href="/luci-static/resources/cascade.css">'
        if RUNTIME:     # LuCI's theme, and cbi.js: the globals (E, _, cbi_init...) its runtime uses
            theme = ('<link rel="stylesheet" href="/luci-static/%s/cascade.css">\n'
                     '<script src="/luci-static/resources/cbi.js"></script>' % RUNTIME_THEME)
        html = PAGE % {"title": _html_text(title), "env": _script_json(env), "theme": theme,
                       "crumb": _html_text(" › ".join(p.capitalize() for p in path.split("/")[1:-1]) + " › " + title),
                       "view": _script_json(node["action"]["path"])}
        return 200, html


def _html_text(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _load_menu(menu_dir):
    menu = {}
    if os.path.isdir(menu_dir):
        for name in sorted(os.listdir(menu_dir)):
            if name.endswith(".json"):
                with open(os.path.join(menu_dir, name)) as f:
                    menu.update(json.load(f))
    return menu


def _resource(rel):
    """The file serving /luci-static/resources/<rel>: the app's own, else the runtime's (the
    stand-in, or LuCI's own with WORMHOLE_LUCI_RUNTIME)."""
    bases = [os.path.join(APP_HTDOCS, "luci-static", "resources")]
    if RUNTIME:     # LuCI's own files; the stand-in's Status page (luci-mod-status's) stays
        bases.append(os.path.join(RUNTIME, "luci-static", "resources"))
    bases.append(os.path.join(WWW, "luci-static", "resources"))
    for base in bases:
        path = os.path.realpath(os.path.join(base, rel))
        if path.startswith(os.path.realpath(base) + os.sep) and os.path.isfile(path):
            return path
    return None


class _Handler(http.server.BaseHTTPRequestHandler):
    host = None
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet: pytest shows failures, not access logs
        pass

    def _send(self, status, body, ctype):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser went away (a test ended mid-poll)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path.startswith("/luci-static/resources/"):
            path = _resource(urllib.parse.unquote(url.path[len("/luci-static/resources/"):]))
            if path is None:
                return self._send(404, "not found", "text/plain")
            with open(path, "rb") as f:
                return self._send(200, f.read(), MIME.get(os.path.splitext(path)[1], "application/octet-stream"))
        if RUNTIME and url.path.startswith("/luci-static/"):     # the real theme's files
            base = os.path.realpath(os.path.join(RUNTIME, "luci-static"))
            path = os.path.realpath(os.path.join(base, urllib.parse.unquote(url.path[len("/luci-static/"):])))
            if path.startswith(base + os.sep) and os.path.isfile(path):
                with open(path, "rb") as f:
                    return self._send(200, f.read(), MIME.get(os.path.splitext(path)[1], "application/octet-stream"))
            return self._send(404, "not found", "text/plain")
        if url.path.startswith("/cgi-bin/luci/"):
            user = urllib.parse.parse_qs(url.query).get("user", ["root"])[0]
            status, html = self.host.page(url.path[len("/cgi-bin/luci/"):].strip("/"), user)
            return self._send(status, html, "text/html; charset=utf-8")
        return self._send(404, "not found", "text/plain")

    def do_POST(self):
        url = urllib.parse.urlsplit(self.path)
        if not (url.path.startswith("/ubus") or url.path.startswith("/cgi-bin/luci/admin/ubus")):
            return self._send(404, "not found", "text/plain")
        length = int(self.headers.get("Content-Length") or 0)
        try:
            req = json.loads(self.rfile.read(length) or b"null")
        except ValueError:
            req = None
        if isinstance(req, dict):
            reply = jsonrpc_request(self.host.ubus, req)
        elif isinstance(req, list):
            reply = [jsonrpc_request(self.host.ubus, r) for r in req]
        else:
            reply = jsonrpc_reply(None, code=-32700, errmsg="Parse error")
        return self._send(200, json.dumps(reply), "application/json; charset=UTF-8")
