"""One contract, every importable UCI backend: the file backend here, euci (pyuci) where
libuci exists (on a router or an OpenWrt SDK host); euci cases are skipped elsewhere."""

import os

import pytest

from wormhole.uci import UciError, available_backends

BACKENDS = ["file", pytest.param("euci", marks=pytest.mark.euci)]


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path, monkeypatch):
    name = request.param
    if name not in available_backends():
        pytest.skip("pyuci (python3-uci) is not importable here")
    monkeypatch.setenv("WORMHOLE_ROOT", str(tmp_path))
    (tmp_path / "etc" / "config").mkdir(parents=True)
    from wormhole.uci import open_backend
    return open_backend(name)


def _conf(tmp_path):
    return tmp_path / "etc" / "config" / "wormhole"


def test_missing_file_is_empty(backend):
    assert backend.load("wormhole") == []


def test_add_then_load(backend):
    with backend.edit("wormhole") as ed:
        ed.add("exemption", "ex_1", {"proto": "tcp", "port": "443", "label": "it's"})
        ed.add("redirect", "rd_1", {"src_dport": "80", "src_ip": ["192.0.2.0/24", "198.51.100.1"]})
    secs = backend.load("wormhole")
    assert [(s.name, s.type, s.anonymous) for s in secs] == [("ex_1", "exemption", False), ("rd_1", "redirect", False)]
    assert secs[0].options == {"proto": "tcp", "port": "443", "label": "it's"}
    assert secs[1].options == {"src_dport": "80", "src_ip": ["192.0.2.0/24", "198.51.100.1"]}


def test_set_and_delete_options(backend):
    with backend.edit("wormhole") as ed:
        ed.add("exemption", "ex_1", {"proto": "tcp", "port": "443", "label": "x"})
    with backend.edit("wormhole") as ed:
        ed.set("ex_1", {"port": "8443", "label": None, "open": "1"})
    assert backend.load("wormhole")[0].options == {"proto": "tcp", "port": "8443", "open": "1"}


def test_edit_sees_its_own_changes(backend):
    with backend.edit("wormhole") as ed:
        ed.add("exemption", "a", {"port": "1"})
        assert [s.name for s in ed.sections()] == ["a"]
        ed.delete("a")
        assert ed.sections() == []


def test_delete_section_and_errors(backend):
    with backend.edit("wormhole") as ed:
        ed.add("exemption", "a", {"port": "1"})
        ed.add("exemption", "b", {"port": "2"})
    with backend.edit("wormhole") as ed:
        ed.delete("a")
        with pytest.raises(UciError):
            ed.delete("nope")
        with pytest.raises(UciError):
            ed.add("exemption", "b", {"port": "3"})
    assert [s.name for s in backend.load("wormhole")] == ["b"]


def test_exception_discards_the_session(backend, tmp_path):
    with backend.edit("wormhole") as ed:
        ed.add("exemption", "a", {"port": "1"})
    before = _conf(tmp_path).read_bytes()
    with pytest.raises(ValueError):
        with backend.edit("wormhole") as ed:
            ed.add("exemption", "b", {"port": "2"})
            raise ValueError("abort")
    assert _conf(tmp_path).read_bytes() == before


def test_foreign_sections_survive(backend, tmp_path):
    _conf(tmp_path).write_text("config zone\n\toption name 'lan'\n\tlist network 'lan'\n\nconfig exemption 'a'\n\toption port '1'\n")
    with backend.edit("wormhole") as ed:
        ed.set("a", {"port": "2"})
    secs = backend.load("wormhole")
    assert secs[0].type == "zone" and secs[0].anonymous and secs[0].options == {"name": "lan", "network": ["lan"]}
    assert secs[0].name == "cfg01dc81"
    assert secs[1].options == {"port": "2"}


def test_write_is_atomic_rename(backend, tmp_path):
    with backend.edit("wormhole") as ed:
        ed.add("exemption", "a", {"port": "1"})
    ino = os.stat(_conf(tmp_path)).st_ino
    with backend.edit("wormhole") as ed:
        ed.set("a", {"port": "2"})
    assert os.stat(_conf(tmp_path)).st_ino != ino
    leftovers = [p for p in os.listdir(_conf(tmp_path).parent) if p != "wormhole"]
    assert leftovers == []
