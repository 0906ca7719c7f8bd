"""The CLI is the API for people: argument mapping, --json equals the ubus reply, exit codes."""

import json

import pytest

from tests import support
from wormhole import cli


@pytest.mark.parametrize("argv,method,args", [
    (["inbound", "add", "tcp:443", "--label", "LuCI"], "add", {"proto": "tcp", "port": "443", "label": "LuCI"}),
    (["inbound", "add", "443"], "add", {"proto": "tcp", "port": "443"}),
    (["inbound", "add", "udp:60000-61000", "--open", "--family", "ipv4", "--interface", "wan2", "--disabled"], "add",
     {"proto": "udp", "port": "60000-61000", "open": True, "family": "ipv4", "interface": "wan2", "enabled": False}),
    (["inbound", "del", "tcp:443"], "del", {"type": "exemption", "proto": "tcp", "port": "443"}),
    (["inbound", "del", "ex_12ab34"], "del", {"id": "ex_12ab34"}),
    (["inbound", "disable", "ex_1"], "update", {"id": "ex_1", "enabled": False}),
    (["inbound", "list"], "list", {}),
    (["forward", "add", "tcp:8443", "192.168.1.20:443", "--label", "HA", "--snat", "--allow", "198.51.100.0/24",
      "--allow", "203.0.113.7", "--mss", "1380"], "add",
     {"type": "redirect", "proto": "tcp", "src_dport": "8443", "dest_ip": "192.168.1.20", "dest_port": "443",
      "label": "HA", "snat": True, "src_ip": ["198.51.100.0/24", "203.0.113.7"], "mss": "1380"}),
    (["forward", "add", "tcp:8443", "[2001:db8::5]:443", "--no-reply", "--src", "wan6", "--src-dip", "2001:db8::1"], "add",
     {"type": "redirect", "proto": "tcp", "src_dport": "8443", "dest_ip": "2001:db8::5", "dest_port": "443",
      "reply": False, "src": "wan6", "src_dip": "2001:db8::1"}),
    (["forward", "add", "udp:27015", "2001:db8::5"], "add",
     {"type": "redirect", "proto": "udp", "src_dport": "27015", "dest_ip": "2001:db8::5"}),
    (["forward", "del", "tcp:8443", "--src", "wan"], "del", {"type": "redirect", "proto": "tcp", "port": "8443", "interface": "wan"}),
    (["render", "--fw3"], "render", {"backend": "fw3"}),
    (["status"], "status", {}),
    (["check"], "check", {}),
])
def test_argument_mapping(argv, method, args):
    ns = cli.build_parser().parse_args(argv)
    assert cli._to_request(ns) == (method, args)


@pytest.mark.parametrize("argv", [[], ["inbound"], ["inbound", "add"], ["forward", "add", "tcp:1"],
                                  ["render", "--fw3", "--fw4"], ["frobnicate"]])
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == cli.EXIT_USAGE


def test_json_output_is_the_plugin_reply(root):
    support.write_config(root, support.UPLINK_WAN + "\nconfig exemption 'ex_a'\n\toption port '443'\n\toption label 'a'\n")
    for args, method in ((["render", "--fw4"], "render"), (["inbound", "list"], "list")):
        p = support.cli(root, *(args + ["--json"]))
        assert p.returncode == 0, p.stderr
        reply, _ = support.plugin(root, method, {"backend": "fw4"} if method == "render" else {})
        assert json.loads(p.stdout) == reply


def test_error_reply_exits_1(root):
    support.write_config(root, support.UPLINK_WAN)
    p = support.cli(root, "inbound", "add", "tcp:99999", "--json")
    assert p.returncode == cli.EXIT_ERROR
    assert json.loads(p.stdout)["error"]["field"] == "port"
    p = support.cli(root, "inbound", "add", "tcp:99999")
    assert p.returncode == cli.EXIT_ERROR and "port" in p.stderr and p.stdout == ""


def test_human_render_shows_files_and_routing(root):
    support.write_config(root, support.UPLINK_WAN + "\nconfig exemption 'ex_a'\n\toption port '443'\n")
    p = support.cli(root, "render")
    assert p.returncode == 0, p.stderr
    assert "table inet wormhole {" in p.stdout
    assert "ip -4 rule add priority 90 fwmark 0x01000000/0x0f000000 lookup 4091" in p.stdout
    assert "ip -4 route replace default via 192.0.2.1 dev wan0 table 4091" in p.stdout


def test_control_characters_never_reach_the_terminal(root):
    """A hand-edited label with an ESC sequence is invalid, and shown raw: escaped, not acted on."""
    support.write_config(root, support.UPLINK_WAN + "\nconfig exemption 'ex_a'\n\toption port '443'\n"
                                                    "\toption label 'evil \x1b]0;pwned\x07 \x1b[2J'\n")
    for args in (["inbound", "list"], ["status"]):
        p = support.cli(root, *args)
        assert p.returncode == 0, p.stderr
        assert "\x1b" not in p.stdout and "\x07" not in p.stdout
    assert "\\x1b]0;pwned" in support.cli(root, "inbound", "list").stdout
