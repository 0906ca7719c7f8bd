"""Bad input: every invalid value is rejected with a message naming the field, and the
config file is byte-identical afterwards. Valid input is stored in canonical form."""

import pytest

from tests import support
from wormhole import api, config, schema


DONE = {"applied": True, "warnings": [], "skipped": {}}


@pytest.fixture
def applied(monkeypatch):
    """In-process tests never touch the kernel: apply is recorded instead."""
    calls = []
    monkeypatch.setattr(api.write, "_apply_locked", lambda sid=None, cfg=None: calls.append(sid) or DONE)
    return calls


@pytest.fixture
def cfgroot(root, applied):
    support.write_config(root, support.UPLINK_WAN + "\nconfig exemption 'ex_web'\n\toption proto 'tcp'\n\toption port '443'\n"
                               "\nconfig redirect 'rd_ha'\n\toption src_dport '8443'\n\toption dest_ip '192.168.1.20'\n")
    return root


def _reject(root, method, args, field, code="invalid_argument"):
    before = support.read_config(root)
    reply = api.call(method, args)
    assert "error" in reply, reply
    err = reply["error"]
    assert err["code"] == code, reply
    assert err.get("field") == field, reply
    assert field in err["message"], reply
    assert support.read_config(root) == before
    return err


BAD_EXEMPTIONS = [
    ({"proto": "icmp", "port": "1"}, "proto"),
    ({"proto": "TCP", "port": "1"}, "proto"),
    ({"port": "0"}, "port"),
    ({"port": "65536"}, "port"),
    ({"port": "-1"}, "port"),
    ({"port": "1-"}, "port"),
    ({"port": "80-70"}, "port"),
    ({"port": "08"}, "port"),
    ({"port": "80,81"}, "port"),
    ({"port": " 80"}, "port"),
    ({"port": "1e3"}, "port"),
    ({"port": "８０"}, "port"),
    ({}, "port"),
    ({"port": "80", "family": "ipv5"}, "family"),
    ({"port": "80", "interface": "wan/x"}, "interface"),
    ({"port": "80", "interface": "a" * 16}, "interface"),
    ({"port": "80", "interface": "wan-2"}, "interface"),
    ({"port": "80", "interface": "wan9"}, "interface"),
    ({"port": "80", "label": "x" * 65}, "label"),
    ({"port": "80", "label": "line\nbreak"}, "label"),
    ({"port": "80", "label": "tab\there"}, "label"),
    ({"port": "80", "label": "nul\x00"}, "label"),
    ({"port": "80", "open": "maybe"}, "open"),
    ({"port": "80", "enabled": "2"}, "enabled"),
    ({"port": "80", "dest_ip": "1.2.3.4"}, "dest_ip"),
    ({"port": "80", "bogus": "1"}, "bogus"),
]


@pytest.mark.parametrize("args,field", BAD_EXEMPTIONS)
def test_bad_exemption_rejected(cfgroot, args, field):
    _reject(cfgroot, "add", args, field)


def _fwd(**kw):
    args = {"type": "redirect", "src_dport": "8080", "dest_ip": "192.168.1.50"}
    args.update(kw)
    return {k: v for k, v in args.items() if v is not None}


BAD_REDIRECTS = [
    (_fwd(dest_ip="999.1.1.1"), "dest_ip"),
    (_fwd(dest_ip="::ffff:1.2.3.4"), "dest_ip"),
    (_fwd(dest_ip="fe80::1%eth0"), "dest_ip"),
    (_fwd(dest_ip="127.0.0.1"), "dest_ip"),
    (_fwd(dest_ip="0.0.0.0"), "dest_ip"),
    (_fwd(dest_ip="224.0.0.1"), "dest_ip"),
    (_fwd(dest_ip="192.168.1.0/24"), "dest_ip"),
    (_fwd(dest_ip=None), "dest_ip"),
    (_fwd(src_dport=None), "src_dport"),
    (_fwd(src_dport="8000-8010", dest_port="9000-9005"), "dest_port"),
    (_fwd(dest_port="0"), "dest_port"),
    (_fwd(src_ip=["10.0.0.0/33"]), "src_ip"),
    (_fwd(src_ip=["10.0.0.1/24"]), "src_ip"),
    (_fwd(src_ip=["2001:db8::/32"]), "src_ip"),
    (_fwd(src_ip=["not-an-ip"]), "src_ip"),
    (_fwd(src_dip="2001:db8::1"), "src_dip"),
    (_fwd(mss="100"), "mss"),
    (_fwd(mss="70000"), "mss"),
    (_fwd(mss="12a"), "mss"),
    (_fwd(snat="sometimes"), "snat"),
    (_fwd(reply="x"), "reply"),
    (_fwd(src="wan9"), "src"),
    (_fwd(port="80"), "port"),
    (_fwd(type="rule"), "type"),
]


@pytest.mark.parametrize("args,field", BAD_REDIRECTS)
def test_bad_redirect_rejected(cfgroot, args, field):
    _reject(cfgroot, "add", args, field)


@pytest.mark.parametrize("args,field", [
    ({"port": "443"}, "port"),                                   # same as ex_web
    ({"port": "400-500", "proto": "tcpudp"}, "port"),             # range covering it
    ({"port": "443", "family": "ipv6"}, "port"),                  # family any covers ipv6
    ({"port": "8443"}, "port"),                                   # the redirect's public port
    ({"type": "redirect", "src_dport": "443", "dest_ip": "192.168.1.9"}, "src_dport"),
    ({"type": "redirect", "src_dport": "8440-8450", "dest_ip": "192.168.1.9"}, "src_dport"),
])
def test_conflicts_rejected(cfgroot, args, field):
    err = _reject(cfgroot, "add", args, field, code="conflict")
    assert "overlaps" in err["message"]


def test_no_conflict_across_protocols_or_families(cfgroot):
    assert "id" in api.call("add", {"proto": "udp", "port": "443"})
    assert "id" in api.call("add", {"type": "redirect", "src_dport": "8443", "dest_ip": "2001:db8:1::5"})


def test_valid_input_is_stored_canonically(cfgroot, applied):
    reply = api.call("add", {"type": "redirect", "proto": "tcpudp", "src_dport": 9000, "dest_ip": "2001:DB8:1::0005",
                             "dest_port": "10000", "src_ip": ["2001:db8:100::/48"], "snat": True, "label": "NAS"})
    sid = reply["id"]
    sec = [s for s in config.load().entries if s.id == sid][0]
    assert sec.raw == {"proto": "tcpudp", "src_dport": "9000", "dest_ip": "2001:db8:1::5", "dest_port": "10000",
                       "src_ip": ["2001:db8:100::/48"], "snat": "1", "label": "NAS"}
    assert applied == [sid]


def test_update_validates_the_merged_section(cfgroot):
    _reject(cfgroot, "update", {"id": "ex_web", "port": "8443"}, "port", code="conflict")
    _reject(cfgroot, "update", {"id": "ex_web", "port": "x"}, "port")
    _reject(cfgroot, "update", {"id": "ex_web", "dest_ip": "1.2.3.4"}, "dest_ip")
    _reject(cfgroot, "update", {"id": "nope", "port": "1"}, "id", code="not_found")
    assert api.call("update", {"id": "ex_web", "label": "Web", "open": True}) == dict(DONE, id="ex_web")
    assert config.load().find("ex_web").raw == {"proto": "tcp", "port": "443", "label": "Web", "open": "1"}
    assert api.call("update", {"id": "ex_web", "label": ""})["applied"]
    assert "label" not in config.load().find("ex_web").raw


def test_delete_by_id_and_by_port(cfgroot):
    _reject(cfgroot, "del", {"id": "nope"}, "id", code="not_found")
    _reject(cfgroot, "del", {"proto": "tcp", "port": "444"}, "port", code="not_found")
    _reject(cfgroot, "del", {"proto": "tcp", "port": "99999"}, "port")
    assert api.call("del", {"proto": "tcp", "port": "443"}) == dict(DONE, deleted=["ex_web"])
    assert api.call("del", {"id": "rd_ha"}) == dict(DONE, deleted=["rd_ha"])
    assert config.load().entries == []


def test_unreadable_config_is_never_overwritten(root, monkeypatch):
    monkeypatch.setattr(api.write, "_apply_locked", lambda sid=None, cfg=None: DONE)
    path = support.write_config(root, "config exemption 'x'\n\toption port '1\n")
    before = open(path, "rb").read()
    reply = api.call("add", {"port": "80"})
    # its own code: the UI tells "fix the file" from "the entry overlaps another" (conflict)
    assert reply["error"]["code"] == "config_error" and reply["error"]["field"] == "config"
    assert open(path, "rb").read() == before


@pytest.mark.parametrize("raw,ok", [("1", True), ("443", True), ("1-65535", True), ("65535", True),
                                    ("0", False), ("65536", False), ("01", False), ("2-1", False), ("", False)])
def test_port_parser(raw, ok):
    if ok:
        lo, hi = schema.parse_port_range(raw)
        assert schema.format_port_range((lo, hi)) == raw
    else:
        with pytest.raises(ValueError):
            schema.parse_port_range(raw)


@pytest.mark.parametrize("raw,ok", [("0xff000000", True), ("0x00ff0000", True), ("0x7f00", True),
                                    ("0x3f00", False), ("0xf0f00000", False), ("0", False), ("0x1ffffffff", False),
                                    ("zz", False)])
def test_mark_mask_parser(raw, ok):
    if ok:
        assert schema.parse_mask(raw) > 0
    else:
        with pytest.raises(ValueError):
            schema.parse_mask(raw)


def test_allowlist_is_bounded(cfgroot):
    nets = ["10.%d.%d.0/24" % (i // 256, i % 256) for i in range(1025)]
    err = _reject(cfgroot, "add", _fwd(src_ip=nets), "src_ip")
    assert "at most 1024" in err["message"]
    assert "id" in api.call("add", _fwd(src_ip=nets[:1024]))
