"""What the LuCI page reads (issue 15): one `list {status: true}` per poll gives the page
everything `status` and `list` give, from the same facts, and `status.settings` holds the
options of `main` as the `settings` method takes them. Run as rpcd runs the plugin."""

import pytest

from tests import support


def call(root, method, request=None, ns=None):
    return support.plugin(root, method, request, ns=ns)[0]

CONFIG = support.UPLINK_WAN + """
config wormhole 'main'
	option mark_mask '0x00ff0000'
	option priority '120'

config exemption 'ex_https'
	option port '443'
	option label 'LuCI'

config redirect 'rd_web'
	option src_dport '8080'
	option dest_ip '192.168.1.20'
"""


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "root"
    support.write_config(r, CONFIG)
    return r


def _without_volatile(status):
    return {k: v for k, v in status.items() if k != "last_apply"}


def test_list_with_status_is_list_and_status_in_one_reply(root, netns):
    call(root, "apply", ns=netns)
    both = call(root, "list", {"status": True}, ns=netns)
    alone = call(root, "list", ns=netns)
    assert {k: both[k] for k in ("exemptions", "redirects")} == alone
    assert _without_volatile(both["status"]) == _without_volatile(call(root, "status", ns=netns))
    assert [e["id"] for e in both["exemptions"]] == ["ex_https"]
    assert [e["id"] for e in both["redirects"]] == ["rd_web"]


def test_list_without_status_says_nothing_of_it(root):
    assert "status" not in call(root, "list")
    assert "status" not in call(root, "list", {"status": False})


def test_status_settings_are_the_options_of_main_as_settings_takes_them(root):
    settings = call(root, "status")["settings"]
    assert settings == {"enabled": True, "backend": "fw4", "mark_mask": "0x00ff0000", "priority": "120",
                        "table_base": "4090", "fwmark_accept": True}


def test_a_bad_main_option_shows_the_default_in_use(tmp_path):
    r = tmp_path / "root"
    support.write_config(r, support.UPLINK_WAN + "\nconfig wormhole 'main'\n\toption priority 'soon'\n")
    st = call(r, "status")
    assert st["settings"]["priority"] == "90"
    assert any("main.priority" in w for w in st["warnings"]), st["warnings"]


def test_an_unreadable_config_still_gives_the_page_its_status(tmp_path):
    r = tmp_path / "root"
    support.write_config(r, "config exemption\n\toption port '443\n")     # unterminated quote
    assert call(r, "list")["error"]["code"] == "config_error"
    both = call(r, "list", {"status": True})
    assert both["exemptions"] == [] and both["redirects"] == []
    assert any(w.startswith("config: ") for w in both["status"]["warnings"]), both["status"]["warnings"]


@pytest.mark.parametrize("bad", ["maybe", [], {}])
def test_a_bad_status_argument_is_named(root, bad):
    before = support.read_config(root)
    reply = call(root, "list", {"status": bad})
    assert reply["error"]["field"] == "status", reply
    assert support.read_config(root) == before


def test_settings_write_a_mask_in_hex_as_it_reads(root, netns):
    reply = call(root, "settings", {"mark_mask": "0x0000ff00"}, ns=netns)
    assert reply.get("applied") is True, reply
    text = support.read_config(root).decode()
    assert "option mark_mask '0x0000ff00'" in text, text
    assert call(root, "status")["settings"]["mark_mask"] == "0x0000ff00"
