"""tcp_fwmark_accept: set while needed, the value found before given back, a user's value kept."""

import pytest

from wormhole import config, sysctls


@pytest.fixture
def knob(tmp_path):
    path = tmp_path / "tcp_fwmark_accept"

    def value(v=None):
        if v is not None:
            path.write_text(v + "\n")
        return path.read_text().strip()
    value.path = str(path)
    return value


def test_set_when_wanted_and_remember_what_was_there(knob):
    knob("0")
    assert sysctls.sync_fwmark_accept(True, None, knob.path) == ("0", [])
    assert knob() == "1"
    # later applies keep the first value found, not the 1 we wrote
    assert sysctls.sync_fwmark_accept(True, "0", knob.path) == ("0", [])
    assert sysctls.sync_fwmark_accept(False, "0", knob.path) == (None, [])
    assert knob() == "0"


def test_a_value_the_user_set_is_never_written(knob):
    knob("1")
    assert sysctls.sync_fwmark_accept(True, None, knob.path) == (None, [])
    assert sysctls.sync_fwmark_accept(False, None, knob.path) == (None, [])
    assert knob() == "1"


def test_not_given_back_over_a_later_change_by_someone_else(knob):
    knob("0")
    saved, _ = sysctls.sync_fwmark_accept(True, None, knob.path)
    knob("0")                       # the user (or /etc/init.d/sysctl) turned it off since
    assert sysctls.give_back(saved, knob.path) == []
    assert knob() == "0"


def test_missing_sysctl_is_not_an_error(tmp_path):
    assert sysctls.sync_fwmark_accept(True, None, str(tmp_path / "absent")) == (None, [])


def test_unwritable_sysctl_is_a_warning_not_a_failure(knob, monkeypatch):
    knob("0")

    def refuse(path, value):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(sysctls, "_write", refuse)
    saved, warnings = sysctls.sync_fwmark_accept(True, None, knob.path)
    assert saved is None and knob() == "0"
    assert len(warnings) == 1 and "Permission denied" in warnings[0]


@pytest.mark.parametrize("main, entries, wanted", [
    ("", "config exemption\n\toption proto 'tcp'\n\toption port '443'\n", True),
    ("", "config exemption\n\toption proto 'tcpudp'\n\toption port '443'\n", True),
    ("", "config exemption\n\toption proto 'udp'\n\toption port '443'\n", False),
    ("", "config exemption\n\toption port '443'\n\toption enabled '0'\n", False),
    ("\toption fwmark_accept '0'\n", "config exemption\n\toption port '443'\n", False),
    ("\toption enabled '0'\n", "config exemption\n\toption port '443'\n", False),
    ("", "config redirect\n\toption src_dport '80'\n\toption dest_ip '192.168.1.2'\n", False),
])
def test_wanted_only_for_active_tcp_exemptions(tmp_path, monkeypatch, main, entries, wanted):
    (tmp_path / "etc/config").mkdir(parents=True)
    (tmp_path / "etc/config/wormhole").write_text("config wormhole 'main'\n" + main + "\n" + entries)
    monkeypatch.setenv("WORMHOLE_ROOT", str(tmp_path))
    monkeypatch.setenv("WORMHOLE_UCI_BACKEND", "file")
    assert sysctls.fwmark_accept_wanted(config.load()) is wanted


def test_a_failed_give_back_stays_on_record(knob, monkeypatch):
    knob("0")
    saved, _ = sysctls.sync_fwmark_accept(True, None, knob.path)

    def refuse(path, value):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(sysctls, "_write", refuse)
    assert sysctls.sync_fwmark_accept(False, saved, knob.path) == ("0", [
        "could not restore net.ipv4.tcp_fwmark_accept=0: Permission denied"])
    monkeypatch.undo()
    assert sysctls.sync_fwmark_accept(False, "0", knob.path) == (None, [])
    assert knob() == "0"


def test_a_bad_option_is_named_and_the_default_used(tmp_path, monkeypatch):
    """fwmark_accept 'maybe': reported as main.fwmark_accept, the file untouched, 1 used."""
    from wormhole import api
    (tmp_path / "etc/config").mkdir(parents=True)
    text = "config wormhole 'main'\n\toption fwmark_accept 'maybe'\n\nconfig exemption\n\toption port '443'\n"
    (tmp_path / "etc/config/wormhole").write_text(text)
    monkeypatch.setenv("WORMHOLE_ROOT", str(tmp_path))
    monkeypatch.setenv("WORMHOLE_UCI_BACKEND", "file")
    cfg = config.load()
    assert cfg.main_problems == [("fwmark_accept", "'maybe' is not a boolean (use 1 or 0); using the default 1")]
    assert sysctls.fwmark_accept_wanted(cfg) is True
    assert "main.fwmark_accept: 'maybe' is not a boolean (use 1 or 0); using the default 1" in api.views.config_warnings(cfg)
    assert (tmp_path / "etc/config/wormhole").read_text() == text
