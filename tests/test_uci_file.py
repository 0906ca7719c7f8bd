"""The file backend's text handling: exact round trips, local edits, libuci's names."""

import pytest

from wormhole.uci import UciError
from wormhole.uci.filebackend import Document, FileBackend
from wormhole.uci.syntax import UciSyntaxError, anonymous_name, parse

MESSY = """# wormhole config, hand edited
package wormhole

config wormhole 'main'
	option enabled 1   # trailing comment
	option backend "fw4"

# LuCI on the router
config exemption 'luci'
	option proto 'tcp'
	option port '443'
	option label 'it'\\''s "LuCI"'
	# a comment inside the section
	list extra 'a b'
	list extra "c\\"d"

config zone
	option name lan
	list network 'lan'

config exemption
	option port 22
	option label 'multi
line'
"""


def test_round_trip_is_byte_identical():
    assert Document(MESSY, "x").text() == MESSY


def test_values_are_unquoted_like_libuci():
    secs = {s.name: s for s in Document(MESSY, "x").sections()}
    luci = secs["luci"]
    assert luci.options["label"] == 'it\'s "LuCI"'
    assert luci.options["extra"] == ["a b", 'c"d']
    assert secs["main"].options == {"enabled": "1", "backend": "fw4"}
    anon = [s for s in secs.values() if s.anonymous]
    assert [s.type for s in anon] == ["zone", "exemption"]
    assert anon[1].options["label"] == "multi\nline"


def test_anonymous_names_follow_libuci():
    # Well-known ids on every OpenWrt router: firewall.@defaults[0] is cfg01e63d,
    # the two default zones cfg02dc81 and cfg03dc81, dhcp.@dnsmasq[0] cfg01411c.
    assert anonymous_name(1, "defaults") == "cfg01e63d"
    assert anonymous_name(2, "zone") == "cfg02dc81"
    assert anonymous_name(3, "zone") == "cfg03dc81"
    assert anonymous_name(1, "dnsmasq") == "cfg01411c"
    names = [s.name for s in Document(MESSY, "x").sections()]
    assert names == ["main", "luci", anonymous_name(1, "zone"), anonymous_name(2, "exemption")]


def test_edit_touches_only_the_edited_lines():
    doc = Document(MESSY, "x")
    doc.set("luci", {"port": "8443"})
    out = doc.text()
    assert out == MESSY.replace("\toption port '443'\n", "\toption port '8443'\n")


def test_unchanged_value_keeps_original_spelling():
    doc = Document(MESSY, "x")
    doc.set("main", {"backend": "fw4", "enabled": "1"})
    assert doc.text() == MESSY


def test_add_delete_and_lists():
    doc = Document(MESSY, "x")
    doc.add("redirect", "rd_1", {"src_dport": "80", "src_ip": ["192.0.2.0/24", "198.51.100.7"]})
    doc.delete(anonymous_name(1, "zone"))
    doc.set("luci", {"extra": None, "label": None})
    text = doc.text()
    assert "config zone" not in text and "list network" not in text
    assert "# LuCI on the router" in text and "# a comment inside the section" in text
    assert text.endswith("config redirect 'rd_1'\n\toption src_dport '80'\n"
                         "\tlist src_ip '192.0.2.0/24'\n\tlist src_ip '198.51.100.7'\n")
    again = {s.name: s for s in Document(text, "x").sections()}
    assert again["rd_1"].options == {"src_dport": "80", "src_ip": ["192.0.2.0/24", "198.51.100.7"]}
    assert "extra" not in again["luci"].options and "label" not in again["luci"].options


def test_comments_directly_above_a_deleted_section_go_with_it():
    src = "config a 'x'\n\toption v '1'\n\n# about y\nconfig a 'y'\n\toption v '2'\n\n# about z\n\nconfig a 'z'\n"
    doc = Document(src, "x")
    doc.delete("y")
    assert doc.text() == "config a 'x'\n\toption v '1'\n\n# about z\n\nconfig a 'z'\n"


def test_quoting_round_trip():
    doc = Document("", "x")
    nasty = "a'b\"c\\d $(x) `y` ; } \t tab"
    doc.add("exemption", "e", {"label": nasty})
    assert Document(doc.text(), "x").sections()[0].options["label"] == nasty


@pytest.mark.parametrize("bad", [
    "config exemption 'bad-name'\n",
    "config 'ty pe'\n",
    "option port '1'\n",
    "config exemption 'x'\n\toption port '1\n",
    "config exemption 'x'\n\toption\n",
    "frobnicate x\n",
    "config exemption 'x'\n\toption bad-opt '1'\n",
])
def test_syntax_errors_are_reported_with_a_line(bad):
    with pytest.raises(UciSyntaxError) as e:
        Document(bad, "cfg").text()
    assert "cfg:" in str(e.value)


def test_parse_keeps_every_byte():
    stmts = parse(MESSY)
    assert "".join(s.text for s in stmts) == MESSY


def test_backend_refuses_to_write_an_unreadable_file(tmp_path):
    conf = tmp_path / "config"
    conf.mkdir()
    broken = "config exemption 'x'\n\toption port '1\n"
    (conf / "wormhole").write_text(broken)
    be = FileBackend(str(conf), str(tmp_path / "lock"))
    with pytest.raises(UciError):
        with be.edit("wormhole") as ed:
            ed.add("exemption", "y", {"port": "2"})
    assert (conf / "wormhole").read_text() == broken


def test_failed_session_writes_nothing(tmp_path):
    conf = tmp_path / "config"
    conf.mkdir()
    (conf / "wormhole").write_text(MESSY)
    be = FileBackend(str(conf), str(tmp_path / "lock"))
    with pytest.raises(RuntimeError):
        with be.edit("wormhole") as ed:
            ed.set("luci", {"port": "1"})
            raise RuntimeError("boom")
    assert (conf / "wormhole").read_text() == MESSY
