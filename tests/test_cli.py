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
    (["inbound", "add", "tcp:22", "--allow", "203.0.113.7", "--allow", "2001:db8:99::/48", "--open"], "add",
     {"proto": "tcp", "port": "22", "src_ip": ["203.0.113.7", "2001:db8:99::/48"], "open": True}),
    (["inbound", "del", "tcp:443"], "del", {"type": "exemption", "proto": "tcp", "port": "443"}),
    (["inbound", "del", "ex_12ab34"], "del", {"id": "ex_12ab34", "type": "exemption"}),
    (["inbound", "del", "8000-8010"], "del", {"type": "exemption", "proto": "tcp", "port": "8000-8010"}),
    (["inbound", "del", "443"], "del", {"type": "exemption", "proto": "tcp", "port": "443"}),
    (["inbound", "del", "udp:53", "--interface", "wan2"], "del",
     {"type": "exemption", "proto": "udp", "port": "53", "interface": "wan2"}),
    (["forward", "del", "ex_12ab34"], "del", {"id": "ex_12ab34", "type": "redirect"}),
    (["forward", "del", "8000-8010"], "del", {"type": "redirect", "proto": "tcp", "src_dport": "8000-8010"}),
    (["inbound", "disable", "ex_1"], "update", {"id": "ex_1", "type": "exemption", "enabled": False}),
    (["forward", "enable", "rd_1"], "update", {"id": "rd_1", "type": "redirect", "enabled": True}),
    (["enable"], "settings", {"enabled": True}),
    (["disable"], "settings", {"enabled": False}),
    (["apply"], "apply", {}),
    (["apply", "--unless-stopped"], "apply", {"unless_stopped": True}),
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
    (["forward", "del", "tcp:8443", "--src", "wan"], "del", {"type": "redirect", "proto": "tcp", "src_dport": "8443", "src": "wan"}),
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


@pytest.mark.parametrize("dest", ["2001:db8:1::20:443", "2001:db8::1:80"])
def test_an_unbracketed_ipv6_address_with_a_port_like_tail_is_refused(dest, capsys):
    """'2001:db8:1::20:443' is a valid address and also address + port: never guess."""
    with pytest.raises(SystemExit) as e:
        cli.main(["forward", "add", "tcp:8445", dest])
    assert e.value.code == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "dest: %s is ambiguous" % dest in err and "[%s]:" % dest.rpartition(":")[0] in err


@pytest.mark.parametrize("dest,host,port", [
    ("2001:db8::5", "2001:db8::5", None),                 # '2001:db8:' is no address: not ambiguous
    ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2:3:4:5:6", None),  # 8 groups: no room for a port
    ("[2001:db8:1::20]:443", "2001:db8:1::20", "443"),
    ("[2001:db8:1::20:443]", "2001:db8:1::20:443", None),
    ("192.168.1.20:443", "192.168.1.20", "443"),
])
def test_host_port_forms(dest, host, port):
    assert cli._host_port(dest) == (host, port)


@pytest.mark.parametrize("value,shown", [
    (None, "-"), ("", "-"), (True, "yes"), (False, "no"), (["8080", "8081"], "8080 8081"), ([], "-"), (0, "0"),
])
def test_table_cells_have_no_python_spelling(value, shown):
    assert cli.cell(value) == shown


def test_list_and_check_show_broken_sections_without_python_spelling(root):
    support.write_config(root, support.UPLINK_WAN + "\nconfig exemption 'ex_l'\n\tlist port '8080'\n\tlist port '8081'\n"
                         "\nconfig exemption 'ex_p'\n\toption proto 'sctp'\n\toption port '32400'\n")
    out = support.cli(root, "inbound", "list").stdout
    assert "8080 8081" in out and "[" not in out and "None" not in out
    out = support.cli(root, "check").stdout
    assert "exemption ex_p (sctp/32400 on wan)" in out and "None" not in out
    assert "exemption ex_l (tcp/8080 8081 on wan)" in out


def test_version(root):
    from wormhole import VERSION
    p = support.cli(root, "--version")
    assert p.returncode == 0 and p.stdout.strip() == "wormhole %s" % VERSION


def test_cleanup_takes_json_like_every_command(root, netns):
    support.write_config(root, support.UPLINK_WAN)
    p = support.cli(root, "cleanup", "--json", ns=netns)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == {"errors": []}
    assert (root / "var/run/wormhole/stopped").exists()


def test_the_version_is_the_package_version():
    from wormhole import VERSION
    import re
    with open(support.REPO + "/openwrt-feed/wormhole/Makefile") as f:
        assert re.search(r"^PKG_VERSION:=(.*)$", f.read(), re.M).group(1) == VERSION


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
