"""The rpcd exec protocol, tested the way rpcd runs the plugin (rpcd plugin.c, exec.c).

- `list`: argv [path, "list"], stdin and stderr on /dev/null; the first JSON value on
  stdout must be an object {method: {argument: example}} whose examples rpcd turns into
  blobmsg policy types.
- `call`: argv [path, "call", method], the request JSON on stdin, stdin then closed, a
  nearly empty environment; rpcd parses the first JSON value on stdout and needs an
  object; exit code and stderr are ignored.
Every run happens from a working directory holding decoy `wormhole` and `json` modules,
so the plugin cannot lean on the caller's directory. Error paths must leave every file
under the root byte-identical. Tests outside a scratch namespace set WORMHOLE_PATH to an
empty directory: should a bad request slip through, its apply finds no tool instead of
touching this host's firewall.
"""

import json
import os
import subprocess

import pytest

from tests import support
from wormhole import api, methods, plugin
from wormhole.errors import WormholeError

ENTRIES = """
config exemption 'ex_a'
	option proto 'tcp'
	option port '443'
	option label 'LuCI'

config redirect 'rd_b'
	option proto 'tcp'
	option src_dport '8443'
	option dest_ip '192.168.1.20'
	option dest_port '443'
"""

RPCD_TYPES = {"string": "STRING", "boolean": "BOOL", "array": "ARRAY"}


def _interpreter():
    with open(support.PLUGIN) as f:
        return f.readline()[2:].split()[0]


@pytest.fixture
def decoy(tmp_path):
    """A working directory whose `wormhole` and `json` would break any import from it."""
    d = tmp_path / "cwd"
    (d / "wormhole").mkdir(parents=True)
    (d / "wormhole" / "__init__.py").write_text("raise ImportError('imported wormhole from the cwd')\n")
    (d / "json.py").write_text("raise ImportError('imported json from the cwd')\n")
    return str(d)


@pytest.fixture
def proot(tmp_path):
    r = tmp_path / "root"
    support.write_config(r, support.UPLINK_WAN + ENTRIES)
    return r


@pytest.fixture
def no_tools(tmp_path):
    d = tmp_path / "no-tools"
    d.mkdir()
    return {"WORMHOLE_PATH": str(d)}


def rpcd_call(root, method, data=b"{}", cwd="/", ns=None, flags=(), extra_env=None, argv=None):
    """Run `call <method>` as rpcd does; returns (reply, completed process)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    argv = argv or [support.PLUGIN, "call", method]
    if flags:
        argv = [_interpreter()] + list(flags) + argv
    if ns is not None:
        argv = ["ip", "netns", "exec", ns.name] + argv
    p = subprocess.run(argv, input=data, capture_output=True, timeout=60, cwd=cwd,
                       env=support.clean_env(root, extra_env))
    return parse_stdout(p.stdout), p


def parse_stdout(raw):
    """rpcd's reading: the first JSON value, which must be an object. We also demand nothing else."""
    text = raw.decode("utf-8")
    value, end = json.JSONDecoder().raw_decode(text)
    assert isinstance(value, dict), text
    assert text[end:] == "\n", "stdout holds more than one JSON value: %r" % text
    return value


def snapshot(root):
    """Every file under the root with its bytes; lock files excluded (taking a lock creates them)."""
    out = {}
    for d, _dirs, files in os.walk(str(root)):
        for name in files:
            path = os.path.join(d, name)
            rel = os.path.relpath(path, str(root))
            if rel.startswith(os.path.join("var", "lock")):
                continue
            with open(path, "rb") as f:
                out[rel] = f.read()
    return out


def assert_error(reply, code, field):
    assert set(reply) == {"error"}, reply
    err = reply["error"]
    assert err["code"] == code, reply
    assert err["field"] == field, reply
    assert field in err["message"], reply
    assert set(err) <= {"code", "field", "message", "id"}, reply


# --- the `list` verb -----------------------------------------------------------------------

def _rpcd_list(root, cwd, flags=()):
    argv = [support.PLUGIN, "list"]
    if flags:
        argv = [_interpreter()] + list(flags) + argv
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                       timeout=30, cwd=cwd, env=support.clean_env(root))
    return parse_stdout(p.stdout)


def _rpcd_policy_type(example):
    """rpcd_plugin_parse_signature: the blobmsg type rpcd derives from an example value."""
    if isinstance(example, bool):
        return "BOOL"
    if isinstance(example, int):
        return {8: "INT8", 16: "INT16", 64: "INT64"}.get(example, "INT32")
    for t, name in ((str, "STRING"), (list, "ARRAY"), (dict, "TABLE"), (float, "DOUBLE")):
        if isinstance(example, t):
            return name
    return "UNSPEC"


def test_list_prints_every_method_with_its_arguments(tmp_path, decoy):
    # No root and no config: `list` must not read anything.
    sigs = _rpcd_list(tmp_path / "absent", decoy)
    assert sigs == methods.signatures()
    assert set(sigs) == set(methods.METHODS)
    for name, args in sigs.items():
        assert list(args) == list(methods.METHODS[name]), name


def test_list_examples_give_rpcd_the_types_callers_send(tmp_path, decoy):
    for name, args in _rpcd_list(tmp_path, decoy).items():
        for arg, example in args.items():
            assert _rpcd_policy_type(example) == RPCD_TYPES[methods.ARG_TYPES[arg][0]], (name, arg, example)
            assert not isinstance(example, int) or isinstance(example, bool), "integer example for %s" % arg


def test_list_under_a_bare_interpreter(tmp_path, decoy):
    assert _rpcd_list(tmp_path, decoy, flags=("-S", "-I")) == methods.signatures()


def test_signature_examples_pass_the_type_check():
    """What `list` advertises, api accepts: no argument whose example is rejected for its type."""
    for name, args in methods.signatures().items():
        for arg, example in args.items():
            assert api.check_args(name, {arg: example}) is not None


# --- read methods, anywhere ----------------------------------------------------------------

def test_read_methods_answer(proot, decoy, no_tools):
    before = snapshot(proot)
    reply, _ = rpcd_call(proot, "list", b'{"ubus_rpc_session":"0123456789abcdef"}', cwd=decoy, extra_env=no_tools)
    assert [e["id"] for e in reply["exemptions"]] == ["ex_a"]
    assert [e["id"] for e in reply["redirects"]] == ["rd_b"]
    ex = reply["exemptions"][0]
    assert (ex["proto"], ex["port"], ex["label"], ex["interface"]) == ("tcp", "443", "LuCI", "wan")
    assert ex["status"] in ("active", "inert", "disabled", "error") and ex["hits"] == 0

    reply, _ = rpcd_call(proot, "status", cwd=decoy, extra_env=no_tools)
    assert {"backend", "killswitch", "uplinks", "last_apply", "warnings"} <= set(reply)
    assert reply["backend"] == "fw4" and [u["name"] for u in reply["uplinks"]] == ["wan"]

    reply, _ = rpcd_call(proot, "render", b'{"backend":"fw3"}', cwd=decoy, extra_env=no_tools)
    assert set(reply) >= {"files", "routing"} and any("fw3-ipv4" in path for path in reply["files"])
    reply, _ = rpcd_call(proot, "render", b"", cwd=decoy, extra_env=no_tools)
    assert "/usr/share/nftables.d/ruleset-post/50-wormhole.nft" in reply["files"]

    reply, _ = rpcd_call(proot, "check", cwd=decoy, extra_env=no_tools)
    assert isinstance(reply["ok"], bool) and isinstance(reply["findings"], list)
    assert snapshot(proot) == before


def test_bare_interpreter_gives_the_same_replies(proot, decoy, no_tools):
    for method, data in (("list", b"{}"), ("render", b'{"backend":"fw4"}'), ("add", b"{}")):
        plain, _ = rpcd_call(proot, method, data, cwd=decoy, extra_env=no_tools)
        bare, _ = rpcd_call(proot, method, data, cwd=decoy, flags=("-S", "-I"), extra_env=no_tools)
        assert bare == plain, method


# --- error paths: every one names its field and changes nothing --------------------------------

LONG = "x" * 50000  # too long a label, in a request below MAX_REQUEST
NESTED = '{"label":' + "[" * 100000 + "]" * 100000 + "}"

ERRORS = [
    # unknown method, unknown argument
    ("frobnicate", "{}", "invalid_argument", "method"),
    ("add", '{"port":"80","bogus":"1"}', "invalid_argument", "bogus"),
    ("list", '{"verbose":true}', "invalid_argument", "verbose"),
    ("del", '{"id":"ex_a","label":"x"}', "invalid_argument", "label"),
    ("render", '{"backend":"fw4","port":"1"}', "invalid_argument", "port"),
    ("add", '{"port":"80","src":"wan"}', "invalid_argument", "src"),
    ("add", '{"type":"redirect","port":"80","dest_ip":"192.168.1.5"}', "invalid_argument", "port"),
    ("update", '{"id":"ex_a","dest_ip":"192.168.1.5"}', "invalid_argument", "dest_ip"),
    ("update", '{"id":"ex_a","type":"redirect"}', "not_found", "id"),
    ("update", '{"id":"ex_a","type":"bogus"}', "invalid_argument", "type"),
    ("del", '{"id":"ex_a","type":"redirect"}', "not_found", "id"),
    ("del", '{"type":"redirect","port":"443"}', "invalid_argument", "port"),
    ("del", '{"type":"redirect","interface":"wan","src_dport":"443"}', "invalid_argument", "interface"),
    ("del", '{"src_dport":"443"}', "invalid_argument", "src_dport"),
    # wrong JSON type per argument
    ("add", '{"port":{}}', "invalid_argument", "port"),
    ("add", '{"port":[443]}', "invalid_argument", "port"),
    ("add", '{"port":true}', "invalid_argument", "port"),
    ("add", '{"port":443.5}', "invalid_argument", "port"),
    ("add", '{"port":null}', "invalid_argument", "port"),
    ("add", '{"port":"80","label":5}', "invalid_argument", "label"),
    ("add", '{"port":"80","open":{}}', "invalid_argument", "open"),
    ("add", '{"port":"80","enabled":[]}', "invalid_argument", "enabled"),
    ("add", '{"type":["redirect"],"port":"80"}', "invalid_argument", "type"),
    ("add", '{"type":"redirect","src_dport":"80","dest_ip":"192.168.1.5","src_ip":[1]}', "invalid_argument", "src_ip"),
    ("add", '{"type":"redirect","src_dport":"80","dest_ip":"192.168.1.5","src_ip":{"a":1}}', "invalid_argument",
     "src_ip"),
    ("add", '{"type":"redirect","src_dport":"80","dest_ip":"192.168.1.5","src_ip":"x"}', "invalid_argument", "src_ip"),
    ("update", '{"id":5}', "invalid_argument", "id"),
    ("del", '{"id":["ex_a"]}', "invalid_argument", "id"),
    ("render", '{"backend":4}', "invalid_argument", "backend"),
    # missing required arguments (an empty stdin is {})
    ("add", "{}", "invalid_argument", "port"),
    ("add", "", "invalid_argument", "port"),
    ("add", '{"label":"no port"}', "invalid_argument", "port"),
    ("add", '{"type":"redirect","dest_ip":"192.168.1.5"}', "invalid_argument", "src_dport"),
    ("add", '{"type":"redirect","src_dport":"80"}', "invalid_argument", "dest_ip"),
    ("update", "{}", "invalid_argument", "id"),
    ("update", "", "invalid_argument", "id"),
    ("update", '{"label":"x"}', "invalid_argument", "id"),
    ("update", '{"id":""}', "invalid_argument", "id"),
    ("del", "{}", "invalid_argument", "id"),
    ("del", '{"proto":"tcp"}', "invalid_argument", "port"),
    # bad values
    ("add", '{"port":"99999"}', "invalid_argument", "port"),
    ("add", '{"port":0}', "invalid_argument", "port"),
    ("add", '{"proto":"icmp","port":"80"}', "invalid_argument", "proto"),
    ("add", '{"port":"80","family":"ipv5"}', "invalid_argument", "family"),
    ("add", '{"port":"80","enabled":"maybe"}', "invalid_argument", "enabled"),
    ("add", '{"port":"80","interface":"nosuch"}', "invalid_argument", "interface"),
    ("add", '{"port":"80","label":"two\\nlines"}', "invalid_argument", "label"),
    ("add", '{"type":"vpn","port":"80"}', "invalid_argument", "type"),
    ("add", '{"type":"redirect","src_dport":"80","dest_ip":"not-an-ip"}', "invalid_argument", "dest_ip"),
    ("update", '{"id":"ex_a","port":"1-"}', "invalid_argument", "port"),
    ("del", '{"proto":"icmp","port":"443"}', "invalid_argument", "proto"),
    ("del", '{"port":"x"}', "invalid_argument", "port"),
    ("del", '{"type":"vpn","port":"443"}', "invalid_argument", "type"),
    ("del", '{"id":"ex_a","port":"443"}', "invalid_argument", "port"),
    ("render", '{"backend":"pf"}', "invalid_argument", "backend"),
    # NUL characters
    ("add", '{"port":"80","label":"a\\u0000b"}', "invalid_argument", "label"),
    ("add", '{"type":"redirect","src_dport":"80","dest_ip":"192.168.1.5","src_ip":["10.0.0.0/8\\u0000"]}',
     "invalid_argument", "src_ip"),
    ("update", '{"id":"ex_a\\u0000"}', "invalid_argument", "id"),
    # not found, conflict
    ("update", '{"id":"ex_nope","label":"x"}', "not_found", "id"),
    ("del", '{"id":"ex_nope"}', "not_found", "id"),
    ("del", '{"proto":"udp","port":"443"}', "not_found", "port"),
    ("add", '{"port":"400-500"}', "conflict", "port"),
    ("add", '{"type":"redirect","src_dport":"8443","dest_ip":"192.168.1.9"}', "conflict", "src_dport"),
    # the request itself
    ("list", "{", "invalid_argument", "request"),
    ("list", "{'port': 1}", "invalid_argument", "request"),
    ("list", "{} {}", "invalid_argument", "request"),
    ("list", "[]", "invalid_argument", "request"),
    ("list", '"list"', "invalid_argument", "request"),
    ("list", "42", "invalid_argument", "request"),
    ("list", "null", "invalid_argument", "request"),
    ("list", "true", "invalid_argument", "request"),
    ("add", "[{\"port\":\"80\"}]", "invalid_argument", "request"),
    ("add", b'{"port":"80","label":"\xff"}', "invalid_argument", "request"),
    ("add", NESTED, "invalid_argument", "request"),
    ("add", '{"port":"80","label":"%s"}' % LONG, "invalid_argument", "label"),
    ("add", '{"port":"80","label":"%s"}' % ("x" * (plugin.MAX_REQUEST + 1)), "invalid_argument", "request"),
]


@pytest.mark.parametrize("method,data,code,field", ERRORS,
                         ids=["%s-%d" % (e[0], i) for i, e in enumerate(ERRORS)])
def test_errors_name_the_field_and_change_nothing(proot, decoy, no_tools, method, data, code, field):
    before = snapshot(proot)
    reply, _ = rpcd_call(proot, method, data, cwd=decoy, extra_env=no_tools)
    assert_error(reply, code, field)
    assert snapshot(proot) == before


@pytest.mark.parametrize("tail", [[], ["call"], ["frobnicate"], ["LIST"]])
def test_argv_errors(proot, decoy, tail):
    reply, p = rpcd_call(proot, None, b"{}", cwd=decoy, argv=[support.PLUGIN] + tail)
    assert_error(reply, "invalid_argument", "argv")
    assert p.returncode == 2 and b"usage" in p.stderr


def test_session_is_ignored_whatever_its_type(proot, decoy, no_tools):
    for session in ('"0123456789abcdef"', "5", "null", "{}"):
        reply, _ = rpcd_call(proot, "list", '{"ubus_rpc_session":%s}' % session, cwd=decoy, extra_env=no_tools)
        assert "error" not in reply, reply


def test_a_crash_is_an_internal_error_object(proot, decoy, no_tools):
    # last-apply.json as a directory: reading it raises IsADirectoryError deep inside status.
    os.makedirs(os.path.join(str(proot), "var", "run", "wormhole", "last-apply.json"))
    reply, p = rpcd_call(proot, "status", cwd=decoy, extra_env=no_tools)
    assert reply["error"]["code"] == "internal_error"
    assert "IsADirectoryError" in reply["error"]["message"]
    assert b"Traceback" not in p.stdout


def _in_process(monkeypatch, method, fake_call, data=b"{}"):
    """Run plugin.main in this process with api.call replaced; returns the parsed stdout."""
    import io
    import sys

    monkeypatch.setattr(api, "call", fake_call)
    out = io.TextIOWrapper(io.BytesIO())
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert plugin.main(["wormhole", "call", method]) == 0
    out.flush()
    return parse_stdout(out.buffer.getvalue())


def test_stray_prints_never_reach_rpcd(monkeypatch):
    """Lower layers printing to stdout would put a second value before our reply."""
    def noisy(method, args):
        print("noise")
        return {"exemptions": [], "redirects": []}

    assert _in_process(monkeypatch, "list", noisy) == {"exemptions": [], "redirects": []}


def test_a_reply_that_cannot_be_serialised_is_an_internal_error(monkeypatch):
    monkeypatch.setattr(plugin, "_syslog", lambda level, lines: None)
    reply = _in_process(monkeypatch, "list", lambda method, args: {"when": object()})
    assert reply["error"]["code"] == "internal_error" and "TypeError" in reply["error"]["message"]


def test_a_change_is_reported_even_when_syslog_is_missing(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "syslog", None)  # `import syslog` raises ImportError
    reply = _in_process(monkeypatch, "add", lambda method, args: {"id": "ex_1", "applied": True},
                        b'{"port":"80"}')
    assert reply == {"id": "ex_1", "applied": True}


def test_undecodable_config_bytes_still_give_valid_json(tmp_path, decoy, no_tools):
    """A label with bytes that are not UTF-8 still gives a reply (json-c maps lone \\udcXX to U+FFFD)."""
    r = tmp_path / "root"
    path = support.write_config(r, support.UPLINK_WAN + ENTRIES)
    with open(path, "rb") as f:
        data = f.read().replace(b"'LuCI'", b"'Lu\xffCI'")
    with open(path, "wb") as f:
        f.write(data)
    reply, p = rpcd_call(r, "list", cwd=decoy, extra_env=no_tools)
    assert p.stdout.isascii()
    assert reply["exemptions"][0]["label"] == "Lu\udcffCI"


# --- write methods, in a scratch namespace ---------------------------------------------------

def _nft_table(ns):
    p = ns.exec(["nft", "list", "table", "inet", "wormhole"], check=False)
    return p.stdout if p.returncode == 0 else ""


def test_round_trip_add_list_del_through_nft(netns, tmp_path, decoy):
    """add -> list -> del through the plugin; the rule appears in and vanishes from the kernel."""
    r = tmp_path / "root"
    support.write_config(r, support.UPLINK_WAN)
    assert "2222" not in _nft_table(netns)

    # An integer port, as `ubus call wormhole add '{"port":2222}'` sends it.
    reply, _ = rpcd_call(r, "add", '{"proto":"tcp","port":2222,"label":"ssh","ubus_rpc_session":"x"}',
                         cwd=decoy, ns=netns)
    assert set(reply) == {"id", "applied", "warnings", "skipped"} and reply["applied"] is True, reply
    assert (reply["warnings"], reply["skipped"]) == ([], {})
    sid = reply["id"]
    table = _nft_table(netns)
    assert " 2222 . tcp . " in table and sid in table

    reply, _ = rpcd_call(r, "list", cwd=decoy, ns=netns)
    (entry,) = reply["exemptions"]
    assert (entry["id"], entry["port"], entry["label"]) == (sid, "2222", "ssh")
    assert entry["status"] == "inert"  # applied and in the kernel; no kill-switch in the namespace

    reply, _ = rpcd_call(r, "del", '{"proto":"tcp","port":"2222"}', cwd=decoy, ns=netns)
    assert reply == {"deleted": [sid], "applied": True, "warnings": [], "skipped": {}}
    assert "2222" not in _nft_table(netns)
    reply, _ = rpcd_call(r, "list", cwd=decoy, ns=netns)
    assert reply["exemptions"] == []


def test_update_and_apply_reach_the_kernel(netns, tmp_path, decoy):
    r = tmp_path / "root"
    support.write_config(r, support.UPLINK_WAN)
    sid = rpcd_call(r, "add", '{"port":"2222"}', cwd=decoy, ns=netns)[0]["id"]

    reply, _ = rpcd_call(r, "update", '{"id":"%s","port":"2223","enabled":true}' % sid, cwd=decoy, ns=netns)
    assert reply == {"id": sid, "applied": True, "warnings": [], "skipped": {}}
    table = _nft_table(netns)
    assert " 2223 . tcp . " in table and " 2222 . tcp . " not in table

    reply, _ = rpcd_call(r, "update", '{"id":"%s","enabled":"0"}' % sid, cwd=decoy, ns=netns)
    assert reply == {"id": sid, "applied": True, "warnings": [], "skipped": {}}
    assert "2223" not in _nft_table(netns)

    reply, _ = rpcd_call(r, "update", '{"id":"%s","enabled":1}' % sid, cwd=decoy, ns=netns)
    assert reply == {"id": sid, "applied": True, "warnings": [], "skipped": {}}
    assert " 2223 . tcp . " in _nft_table(netns)

    # Someone flushed our table: `apply` puts it back.
    netns.exec(["nft", "delete", "table", "inet", "wormhole"])
    reply, _ = rpcd_call(r, "apply", cwd=decoy, ns=netns)
    assert reply["applied"] is True and isinstance(reply["warnings"], list)
    assert " 2223 . tcp . " in _nft_table(netns)

    reply, _ = rpcd_call(r, "del", '{"id":"%s"}' % sid, cwd=decoy, ns=netns)
    assert reply == {"deleted": [sid], "applied": True, "warnings": [], "skipped": {}}
    assert "2223" not in _nft_table(netns)


def test_redirect_round_trip(netns, tmp_path, decoy):
    r = tmp_path / "root"
    support.write_config(r, support.UPLINK_WAN)
    reply, _ = rpcd_call(r, "add", json.dumps({"type": "redirect", "proto": "tcp", "src_dport": "8443",
                                               "dest_ip": "192.168.1.20", "dest_port": 443, "snat": True,
                                               "src_ip": ["198.51.100.0/24"], "label": "HA"}), cwd=decoy, ns=netns)
    sid = reply["id"]
    assert sid.startswith("rd_") and reply["applied"] is True
    assert "8443" in _nft_table(netns)
    (entry,) = rpcd_call(r, "list", cwd=decoy, ns=netns)[0]["redirects"]
    assert (entry["dest_port"], entry["snat"], entry["src_ip"]) == ("443", True, ["198.51.100.0/24"])
    reply, _ = rpcd_call(r, "del", '{"type":"redirect","proto":"tcp","src_dport":"8443"}', cwd=decoy, ns=netns)
    assert reply == {"deleted": [sid], "applied": True, "warnings": [], "skipped": {}}
    assert "8443" not in _nft_table(netns)


# --- docs/API.md ---------------------------------------------------------------------------

def test_api_doc_examples_are_copy_paste_requests():
    """Every `ubus call wormhole ...` line in docs/API.md is valid JSON of known arguments,
    and every method has at least one example that is accepted by the type check."""
    import re
    with open(os.path.join(support.REPO, "docs", "API.md")) as f:
        lines = [line.rstrip("\n") for line in f if line.startswith("ubus call wormhole ")]
    seen = set()
    for line in lines:
        m = re.match(r"^ubus call wormhole (\w+)(?: '([^']*)')?$", line)
        assert m, line
        method, args = m.group(1), json.loads(m.group(2) or "{}")
        assert method in methods.METHODS, line
        assert isinstance(args, dict), line
        try:
            api.check_args(method, args)
        except WormholeError:
            continue  # the doc's own error examples
        seen.add(method)
    assert seen == set(methods.METHODS)
