"""The rpcd ACL and the LuCI menu entry agree with the method table.

Least privilege: reading methods in the `read` grant, changing ones in the `write` grant,
every method in exactly one, so a new method cannot ship without a deliberate grant.
"""

import glob
import json
import os
import re
import subprocess

import pytest

from tests import support
from wormhole import methods

APP = os.path.join(support.REPO, "luci-app-wormhole")
ACL = os.path.join(APP, "root", "usr", "share", "rpcd", "acl.d", "luci-app-wormhole.json")
MENU = os.path.join(APP, "root", "usr", "share", "luci", "menu.d", "luci-app-wormhole.json")
VIEWS = os.path.join(APP, "htdocs", "luci-static", "resources", "view")
GROUP = "luci-app-wormhole"


def _load(path):
    with open(path) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def acl():
    return _load(ACL)


def test_method_lists_partition_the_method_table():
    read, write = set(methods.READ_METHODS), set(methods.WRITE_METHODS)
    assert not read & write
    assert read | write == set(methods.METHODS)


def test_one_group_with_read_and_write_grants(acl):
    assert list(acl) == [GROUP]
    assert set(acl[GROUP]) == {"description", "read", "write"}
    assert acl[GROUP]["description"]


def test_read_grant_holds_exactly_the_reading_methods(acl):
    read = acl[GROUP]["read"]
    assert set(read) == {"ubus", "uci"}
    assert list(read["ubus"]) == ["wormhole"]
    assert sorted(read["ubus"]["wormhole"]) == sorted(methods.READ_METHODS)
    assert read["uci"] == ["wormhole"]


def _views_calls():
    """{method} every `rpc.declare({object: 'wormhole', method: ...})` of the views names."""
    pattern = re.compile(r"object\s*:\s*['\"]wormhole['\"]\s*,\s*method\s*:\s*['\"](\w+)['\"]")
    called = set()
    for view in _all_views():
        with open(view) as f:
            called |= set(pattern.findall(f.read()))
    return called


# Changing methods no LuCI session needs: `apply` re-applies the config as it is, which the
# hotplug hook and the init script do (as root); every write of the page applies anyway.
NOT_FOR_LUCI = {"apply"}


def test_write_grant_holds_exactly_the_changing_methods_the_page_calls(acl):
    """Least privilege (issue 15): ubus only, no `uci` write (it would let an ACL holder
    write the config past the backend's validation), and only the methods the views call."""
    write = acl[GROUP]["write"]
    assert set(write) == {"ubus"}
    assert list(write["ubus"]) == ["wormhole"]
    granted = set(write["ubus"]["wormhole"])
    assert granted == _views_calls() & set(methods.WRITE_METHODS)
    assert granted == set(methods.WRITE_METHODS) - NOT_FOR_LUCI


def test_every_granted_method_is_one_the_plugin_lists(acl):
    p = subprocess.run([support.PLUGIN, "list"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=30, cwd="/", env={"PATH": support.CLEAN_PATH})
    listed = set(json.loads(p.stdout))
    granted = set(acl[GROUP]["read"]["ubus"]["wormhole"]) | set(acl[GROUP]["write"]["ubus"]["wormhole"])
    assert granted == listed - NOT_FOR_LUCI


def test_menu_entry(acl):
    menu = _load(MENU)
    assert list(menu) == ["admin/network/wormhole"]
    node = menu["admin/network/wormhole"]
    assert node["title"] == "Inbound Services"
    assert node["action"] == {"type": "view", "path": "wormhole/inbound"}
    assert node["depends"]["acl"] == [GROUP]
    assert all(g in acl for g in node["depends"]["acl"])
    assert node["depends"]["uci"] == {"wormhole": True}
    assert isinstance(node["order"], int)


def _views():
    return sorted(glob.glob(os.path.join(VIEWS, "wormhole", "*.js")))


def _all_views():
    """The app's views and its Status → Overview include: everything that may call us."""
    return sorted(glob.glob(os.path.join(VIEWS, "**", "*.js"), recursive=True))


def test_menu_points_at_an_existing_view():
    if not _views():
        pytest.skip("no view written yet under %s" % os.path.relpath(VIEWS, support.REPO))
    path = _load(MENU)["admin/network/wormhole"]["action"]["path"]
    assert os.path.isfile(os.path.join(VIEWS, path + ".js"))


def test_views_call_only_granted_methods(acl):
    """Every `rpc.declare({object: 'wormhole', method: ...})` in the views is in the ACL."""
    views = _all_views()
    if not views:
        pytest.skip("no view written yet")
    granted = set(acl[GROUP]["read"]["ubus"]["wormhole"]) | set(acl[GROUP]["write"]["ubus"]["wormhole"])
    pattern = re.compile(r"object\s*:\s*['\"]wormhole['\"]\s*,\s*method\s*:\s*['\"](\w+)['\"]")
    called_anywhere = set()
    for view in views:
        with open(view) as f:
            called = set(pattern.findall(f.read()))
        assert called <= granted, (view, called - granted)
        called_anywhere |= called
    assert called_anywhere, "the pattern found no rpc.declare of object wormhole"


def test_read_grant_methods_write_nothing_and_write_grant_methods_do(root, monkeypatch, tmp_path):
    """The grants follow what the methods do, not only their names: every method of the read
    grant runs with every write path trapped and changes no byte under the root; every
    method of the write grant reaches one. A writing method filed under READ_METHODS (or a
    new write method left out of WRITE_METHODS and so of the write grant) fails here."""
    from wormhole import api, config, fsutil

    support.write_config(root, support.UPLINK_WAN + "\nconfig exemption 'ex_a'\n\toption port '443'\n")
    empty = tmp_path / "no-tools"
    empty.mkdir()
    monkeypatch.setenv("WORMHOLE_PATH", str(empty))    # no tool, so no kernel change either
    writes = []

    def trap(name):
        def record(*args, **kwargs):
            writes.append(name)
            raise RuntimeError("write path %s reached" % name)
        return record

    monkeypatch.setattr(api.write, "_apply_locked", trap("apply"))
    monkeypatch.setattr(config, "edit", trap("config.edit"))
    monkeypatch.setattr(fsutil, "atomic_write", trap("atomic_write"))
    monkeypatch.setattr(fsutil, "remove_file", trap("remove_file"))

    def snapshot():
        return {str(p): p.read_bytes() for p in root.rglob("*") if p.is_file() and "lock" not in p.name}

    before = snapshot()
    for method in methods.READ_METHODS:
        reply = api.call(method, {})
        assert writes == [], (method, writes)
        assert "error" not in reply or reply["error"]["code"] != "internal_error", (method, reply)
    assert snapshot() == before

    requests = {"add": {"port": "80"}, "update": {"id": "ex_a", "label": "x"}, "del": {"id": "ex_a"}, "apply": {},
                "settings": {"enabled": True}}
    assert set(requests) == set(methods.WRITE_METHODS)
    for method, request in requests.items():
        del writes[:]
        with pytest.raises(RuntimeError):
            api.call(method, dict(request))
        assert writes, method
