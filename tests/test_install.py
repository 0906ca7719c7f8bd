"""Install, upgrade and remove the built .ipk files the way opkg does, and the .apk files the
way apk-tools 3 does (OpenWrt 25.12), then use the installed copy (never the checkout): the
rpcd plugin, the CLI, the init script, the hotplug script.

tests/openwrt_sim plays opkg and the OpenWrt pieces a Debian host lacks; the maintainer
scripts run as on a router (IPKG_INSTROOT empty) in a sandbox whose kernel is a scratch
network namespace, or as in an image build (IPKG_INSTROOT set). "Nothing left behind" is
checked against the namespace's nft ruleset, ip rules and routes before install.
"""

import io
import json
import os
import re
import sys
import tarfile
import time

import pytest

from tests import support
from tests import apkv3
from tests.openwrt_sim import Router, SimError, control_fields, read_ipk
from tests.openwrt_sim.apk import Apk
from tests.test_apply import FW4_BASE

DEFAULT_CONFIG = os.path.join(support.REPO, "files/etc/config/wormhole")
UPLINK = """
config uplink 'wan'
	option device 'wan0'
	option gateway '192.0.2.1'
	option gateway6 '2001:db8:2::1'
"""
HOTPLUG_WAIT = 20


def built(tmp_path_factory, tool, name_and_version):
    """{(package, release): path}: release 2 is the 'newer build' of the upgrade tests."""
    out = tmp_path_factory.mktemp("dist")
    for release in ("1", "2"):
        support.run([sys.executable, os.path.join(support.REPO, "tools", tool), "--out", str(out), "--release", release])
    found = {}
    for path in out.iterdir():
        name, version = name_and_version(path)
        found[(name, version.rsplit("-r", 1)[1])] = path
    return found


@pytest.fixture(scope="module")
def ipks(tmp_path_factory):
    def name_and_version(path):
        fields = control_fields(read_ipk(path)[0]["control"])
        return fields["Package"], fields["Version"]
    return built(tmp_path_factory, "mkipk.py", name_and_version)


@pytest.fixture(scope="module")
def apks(tmp_path_factory):
    """Read back with the independent reader (tests/apkv3.py)."""
    def name_and_version(path):
        info = apkv3.read(path).info
        return info["name"], info["version"]
    return built(tmp_path_factory, "mkapk.py", name_and_version)


@pytest.fixture
def sim(netns):
    """A factory of Routers on the scratch namespace; skips when overlay mounts are refused."""
    support.require_root_tools("unshare", "mount", "iptables-save")
    made = []

    def make(firewall="fw4", root=None):
        r = Router(netns.name, firewall, root=root)
        made.append(r)
        if root is None:
            try:
                r.run(["true"])
            except SimError as e:
                support.unavailable("overlay mounts in a private mount namespace: %s" % e)
        return r

    yield make
    for r in made:
        r.close()


def kernel(ns):
    """Everything wormhole could have touched in the namespace, as text. Without the routes
    the kernel adds by itself a moment after a link comes up (IPv6 link-local, table local)."""
    parts = [ns.exec(["nft", "list", "ruleset"]).stdout]
    for fam in ("-4", "-6"):
        parts.append(ns.exec(["ip", fam, "rule", "show"]).stdout)
        routes = ns.exec(["ip", fam, "route", "show", "table", "all"]).stdout.splitlines()
        parts.extend(l for l in routes if "table local" not in l and "fe80::" not in l)
    return "\n".join(parts)


def wait_for(predicate, what, explain=lambda: ""):
    deadline = time.monotonic() + HOTPLUG_WAIT
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("gave up waiting for %s\n%s" % (what, explain()))


def firewall_includes(r):
    """{name: options} of the wormhole include sections in the scratch /etc/config/firewall."""
    from wormhole.uci.filebackend import FileBackend
    sections = FileBackend(str(r.path("/etc/config")), str(r.path("/tmp"))).load("firewall")
    return {s.name: (s.type, s.options) for s in sections if "wormhole" in s.name}


def plugin_call(r, method, request=None):
    p = r.run(["/usr/libexec/rpcd/wormhole", "call", method], input=json.dumps(request or {}))
    return support.first_json(p.stdout)


def add_user_config(r):
    """What a user does after installing: declare the uplink (no netifd here)."""
    with open(r.path("/etc/config/wormhole"), "a") as f:
        f.write(UPLINK)


# --- image build: IPKG_INSTROOT set, then the installed copy used through WORMHOLE_ROOT ----------

def test_image_build_install_then_the_installed_copy_works(ipks, sim, netns):
    r = sim("fw4", root=None)
    r.install(ipks[("wormhole", "1")], image=True)
    rcd = r.path("/etc/rc.d")
    assert sorted(os.listdir(rcd)) == ["K10wormhole", "S99wormhole"]
    assert os.readlink(rcd / "S99wormhole") == "../init.d/wormhole"
    # An image build touches nothing live: no rpcd reload, no start; uci-defaults wait for first boot.
    assert r.calls() == []
    assert r.path("/etc/uci-defaults/90-wormhole").exists()

    root = r.root
    add_user_config(r)
    netns.exec(["nft", "-f", "-"], input=FW4_BASE)
    before = kernel(netns)
    env = support.clean_env(root)
    plugin = str(root / "usr/libexec/rpcd/wormhole")
    listed = support.run(["ip", "netns", "exec", netns.name, plugin, "list"], env=dict(env, PYTHONVERBOSE="1"),
                         cwd="/")
    assert "add" in json.loads(listed.stdout)
    # The entry script imported the installed package, not the checkout's.
    loaded = {os.path.normpath(p) for p in re.findall(r"(/[^\s'\"]*/wormhole/methods\.py)", listed.stderr)}
    assert loaded == {str(root / "usr/lib/wormhole/wormhole/methods.py")}

    cli = str(root / "usr/sbin/wormhole")
    support.run(["ip", "netns", "exec", netns.name, cli, "inbound", "add", "tcp:443", "--label", "LuCI"],
                env=env, cwd="/")
    assert " 443 . tcp . " in netns.exec(["nft", "list", "table", "inet", "wormhole"]).stdout
    reply = support.first_json(support.run(["ip", "netns", "exec", netns.name, plugin, "call", "list"],
                                           env=env, input="{}", cwd="/").stdout)
    assert [(e["port"], e["label"]) for e in reply["exemptions"]] == [("443", "LuCI")]
    # Bytecode goes to RAM (/var/run), never next to the sources on the flash overlay.
    assert not list((root / "usr/lib/wormhole").rglob("*.pyc"))
    assert list((root / "var/run/wormhole/pycache").rglob("*.pyc"))
    support.run(["ip", "netns", "exec", netns.name, cli, "cleanup"], env=env, cwd="/")
    assert kernel(netns) == before


# --- on a running router (fw4): install, use, upgrade, hotplug, remove -------------------------------

def test_install_upgrade_hotplug_remove_fw4(ipks, sim, netns):
    netns.exec(["nft", "-f", "-"], input=FW4_BASE)
    before = kernel(netns)
    r = sim("fw4")
    default_config = r.path("/etc/config/wormhole")

    r.install(ipks[("wormhole", "1")])
    calls = r.calls()
    assert "rpcd reload" in calls, "the postinst must reload rpcd so ubus lists `wormhole`"
    assert calls.index("wormhole start") > calls.index("rpcd reload")
    assert "procd reload_trigger wormhole" in calls
    assert sorted(os.listdir(r.path("/etc/rc.d"))) == ["K10wormhole", "S99wormhole"]
    assert not r.path("/etc/uci-defaults/90-wormhole").exists(), "uci-defaults run once and are deleted"
    assert firewall_includes(r) == {}, "fw4 needs no firewall include"
    assert "add" in json.loads(r.run(["/usr/libexec/rpcd/wormhole", "list"]).stdout)
    assert plugin_call(r, "status")["backend"] == "fw4"

    add_user_config(r)
    r.run(["wormhole", "inbound", "add", "tcp:443", "--label", "LuCI"])
    r.run(["wormhole", "forward", "add", "tcp:8443", "192.168.1.20:443", "--label", "NAS"])
    applied = kernel(netns)
    assert " 443 . tcp . " in applied and "lookup 4091" in applied
    assert r.path("/usr/share/nftables.d/ruleset-post/50-wormhole.nft").exists()
    user_config = default_config.read_bytes()

    # Upgrade: the old prerm stops (rules out), the new postinst starts (rules back).
    r.clear_calls()
    r.install(ipks[("wormhole", "2")])
    assert r.installed("wormhole")["Version"].endswith("-r2")
    calls = r.calls()
    assert calls.index("wormhole stop") < calls.index("wormhole start")
    assert default_config.read_bytes() == user_config, "an upgrade keeps the user's config"
    assert r.path("/etc/config/wormhole-opkg").read_bytes() == \
        open(os.path.join(support.REPO, "files/etc/config/wormhole"), "rb").read()
    assert kernel(netns) == applied, "the upgrade re-applied the same rules"
    listed = json.loads(r.run(["wormhole", "list", "--json"]).stdout)
    assert [e["label"] for e in listed["exemptions"]] == ["LuCI"]
    assert [e["label"] for e in listed["redirects"]] == ["NAS"]

    # netifd flushed our ip rules (restart): an interface event brings them back.
    for fam in ("-4", "-6"):
        for prio in ("89", "90"):
            netns.exec(["ip", fam, "rule", "del", "priority", prio])
    assert kernel(netns) != applied
    r.run(["sh", "/etc/hotplug.d/iface/95-wormhole"], env={"ACTION": "ifup", "INTERFACE": "wan"})
    wait_for(lambda: kernel(netns) == applied, "the hotplug re-apply",
             lambda: "%s\n---\n%s\n--- log:\n%s" % (applied, kernel(netns), r.path("/tmp/sim-logger.log").read_text()))

    r.clear_calls()
    r.remove("wormhole")
    assert kernel(netns) == before, "removal leaves no rule, route or ip rule behind"
    assert "rpcd reload" in r.calls(), "the postrm must reload rpcd so `wormhole` leaves ubus"
    for gone in ("/usr/lib/wormhole", "/usr/sbin/wormhole", "/usr/libexec/rpcd/wormhole",
                 "/etc/init.d/wormhole", "/etc/hotplug.d/iface/95-wormhole",
                 "/usr/share/nftables.d/ruleset-post/50-wormhole.nft",
                 "/usr/share/nftables.d/chain-pre/input/50-wormhole.nft"):
        assert not os.path.lexists(r.path(gone)), gone
    assert os.listdir(r.path("/etc/rc.d")) == []
    assert default_config.read_bytes() == user_config, "a changed conffile survives removal (opkg)"


def test_hotplug_is_a_no_op_without_entries(ipks, sim, netns):
    r = sim("fw4")
    r.install(ipks[("wormhole", "1")])
    add_user_config(r)
    r.clear_calls()
    for action in ("ifup", "ifdown", "ifupdate", "free"):
        r.run(["sh", "/etc/hotplug.d/iface/95-wormhole"], env={"ACTION": action, "INTERFACE": "wan"})
    assert not r.path("/run/wormhole/hotplug-pending").exists()
    assert r.calls() == []


def test_a_stopped_service_stays_stopped_through_hotplug(ipks, sim, netns):
    """`/etc/init.d/wormhole stop` (and `wormhole cleanup`) removes everything, and an
    interface event (a DHCP renew, a VPN reconnect) must not put it back; start does."""
    netns.exec(["nft", "-f", "-"], input=FW4_BASE)
    before = kernel(netns)
    r = sim("fw4")
    r.install(ipks[("wormhole", "1")])
    add_user_config(r)
    r.run(["wormhole", "inbound", "add", "tcp:443"])
    applied = kernel(netns)
    assert applied != before

    r.run(["/etc/init.d/wormhole", "stop"])
    assert kernel(netns) == before
    r.clear_calls()
    for action in ("ifup", "ifupdate", "ifdown"):
        r.run(["sh", "/etc/hotplug.d/iface/95-wormhole"], env={"ACTION": action, "INTERFACE": "wan"})
    assert not r.path("/run/wormhole/hotplug-pending").exists(), "a stopped service queues no re-apply"
    # A job queued just before the stop still asks under the lock, and is told no.
    p = r.run(["wormhole", "apply", "--unless-stopped", "--json"])
    assert json.loads(p.stdout)["stopped"] is True
    assert kernel(netns) == before, "nothing came back while stopped"

    r.run(["/etc/init.d/wormhole", "start"])
    assert kernel(netns) == applied
    assert not r.path("/run/wormhole/stopped").exists()
    r.run(["wormhole", "cleanup"])
    assert r.path("/run/wormhole/stopped").exists(), "cleanup is a stop too"
    r.run(["wormhole", "apply"])
    assert kernel(netns) == applied, "an explicit apply starts it again"


# --- fw3: the firewall include ----------------------------------------------------------------------

def test_fw3_include_is_added_once_and_removed(ipks, sim, netns):
    before = kernel(netns)
    r = sim("fw3")
    r.install(ipks[("wormhole", "1")])
    includes = firewall_includes(r)
    assert sorted(includes) == ["wormhole_ipv4", "wormhole_ipv6"]
    for fam in ("ipv4", "ipv6"):
        stype, opts = includes["wormhole_" + fam]
        assert stype == "include"
        assert opts == {"type": "restore", "family": fam, "reload": "1",
                        "path": "/usr/share/wormhole/fw3-%s.rules" % fam}

    add_user_config(r)
    r.run(["wormhole", "inbound", "add", "tcp:443", "--open"])
    assert "-j WORMHOLE_PRE" in netns.exec(["iptables-save"]).stdout
    for fam, tool in (("ipv4", "iptables-restore"), ("ipv6", "ip6tables-restore")):
        rules = r.path("/usr/share/wormhole/fw3-%s.rules" % fam).read_text()
        assert "--dport 443" in rules
        # What fw3 does with the include on every reload: the file must load as it is.
        netns.exec([tool, "--noflush", "--test"], input=rules)

    r.install(ipks[("wormhole", "2")])
    assert sorted(firewall_includes(r)) == ["wormhole_ipv4", "wormhole_ipv6"], "an upgrade adds no second include"
    assert "-j WORMHOLE_PRE" in netns.exec(["iptables-save"]).stdout

    r.remove("wormhole")
    assert firewall_includes(r) == {}
    for tool in ("iptables-save", "ip6tables-save"):
        assert "WORMHOLE" not in netns.exec([tool]).stdout
    after = kernel(netns)
    for fam in ("-4", "-6"):
        assert netns.exec(["ip", fam, "rule", "show"]).stdout in before
    assert "wormhole" not in after and "4091" not in after
    assert not r.path("/usr/share/wormhole/fw3-ipv4.rules").exists()


# --- the LuCI package --------------------------------------------------------------------------------

def test_luci_app_install_and_remove(ipks, sim, netns):
    r = sim("fw4")
    r.install(ipks[("wormhole", "1")])
    cache = r.path("/tmp/luci-indexcache.0123abcd.json")
    cache.write_text("{}")
    r.clear_calls()
    r.install(ipks[("luci-app-wormhole", "1")])
    assert not cache.exists(), "the LuCI index cache must be cleared"
    assert "rpcd reload" in r.calls(), "rpcd must reload to read the new ACL"
    listed = r.path("/usr/lib/opkg/info/luci-app-wormhole.list").read_text().split()
    app = os.path.join(support.REPO, "luci-app-wormhole")
    expected = {prefix + "/" + os.path.relpath(os.path.join(d, n), os.path.join(app, sub))
                for sub, prefix in (("htdocs", "/www"), ("root", ""))
                for d, _dirs, names in os.walk(os.path.join(app, sub)) for n in names}
    assert set(listed) == expected
    with tarfile.open(fileobj=io.BytesIO(read_ipk(ipks[("luci-app-wormhole", "1")])[1])) as data:
        for dest in listed:
            assert r.path(dest).read_bytes() == data.extractfile("." + dest).read()
    r.remove("luci-app-wormhole")
    assert all(not r.path(f).exists() for f in listed)
    assert r.installed("wormhole") is not None


# --- the lab: the installed copy makes a real inbound connection work -----------------------------------

@pytest.mark.lab
def test_installed_copy_in_the_router_lab(ipks):
    try:
        from tests.lab import RouterLab
        from tests.lab.pytest_support import require_lab
    except ImportError as e:
        support.unavailable("the netns lab (tests/lab) does not import: %s" % e)
    require_lab()
    with RouterLab() as lab:
        r = Router(lab.ns["router"], "fw4", root=lab.root)
        try:
            r.install(ipks[("wormhole", "1")], image=True)
            uplinks = "".join("\nconfig uplink '%s'\n\toption device '%s'\n\toption gateway '%s'\n\toption gateway6 '%s'\n"
                              % (name, u["device"], u["gateway"], u["gateway6"]) for name, u in lab.uplinks().items())
            with open(r.path("/etc/config/wormhole"), "a") as f:
                f.write(uplinks)
            lab.fw4_accept_input(zone="wan", proto="tcp", port=443)
            lab.tcp_server("router", 443)
            assert lab.tcp_request("client", lab.wan4, 443, timeout=1.5) is None, "the kill-switch problem"
            cli = lab.root / "usr/sbin/wormhole"
            lab.wormhole("router", "inbound", "add", "tcp:443", "--label", "LuCI", cli=cli)
            reply = lab.tcp_request("client", lab.wan4, 443, timeout=3)
            assert reply is not None and reply.peer_ip == lab.client4
            # fw4 restarts keep it working: the installed include carries the table.
            lab.fw4_reload()
            reply = lab.tcp_request("client", lab.wan4, 443, timeout=3)
            assert reply is not None and reply.peer_ip == lab.client4
        finally:
            r.close()


# --- apk (OpenWrt 25.12): install, upgrade, remove with apk-tools 3's semantics -------------------

WORMHOLE_PATHS = ("/usr/lib/wormhole", "/usr/sbin/wormhole", "/usr/libexec/rpcd/wormhole", "/etc/init.d/wormhole",
                  "/etc/hotplug.d/iface/95-wormhole", "/etc/uci-defaults/90-wormhole",
                  "/lib/apk/packages/wormhole.list", "/lib/apk/packages/wormhole.conffiles",
                  "/lib/apk/packages/wormhole.conffiles_static",
                  "/usr/share/nftables.d/ruleset-post/50-wormhole.nft",
                  "/usr/share/nftables.d/chain-pre/input/50-wormhole.nft")


def leftovers(r):
    """Paths with 'wormhole' in them that outlive a removal, but for runtime state in RAM
    (/run, /tmp) and the sim's own records (its python3-uci stand-in, its apk database)."""
    skip = ("/run", "/tmp", "/var", "/usr/lib/wormhole-sim", "/lib/apk/db")
    found = []
    for d, dirs, names in os.walk(r.root):
        for n in dirs + names:
            path = "/" + os.path.relpath(os.path.join(d, n), r.root)
            if "wormhole" in n and not path.startswith(skip):
                found.append(path)
    return sorted(found)


def test_apk_install_upgrade_remove_fw4(apks, sim, netns):
    netns.exec(["nft", "-f", "-"], input=FW4_BASE)
    before = kernel(netns)
    r = sim("fw4")
    apk = Apk(r)
    config = r.path("/etc/config/wormhole")

    apk.add(apks[("wormhole", "1")])
    calls = r.calls()
    # apk's post-install: default_postinst (uci-defaults, enable, start), then ours (rpcd reload).
    assert "wormhole start" in calls and "rpcd reload" in calls
    assert sorted(os.listdir(r.path("/etc/rc.d"))) == ["K10wormhole", "S99wormhole"]
    assert not r.path("/etc/uci-defaults/90-wormhole").exists(), "uci-defaults ran from the apk .list"
    assert plugin_call(r, "status")["backend"] == "fw4"
    listed = r.path("/lib/apk/packages/wormhole.list").read_text().split()
    assert "/etc/config/wormhole" in listed and not set(r.stand_in_files()) & set(listed)

    add_user_config(r)
    r.run(["wormhole", "inbound", "add", "tcp:443", "--label", "LuCI"])
    applied = kernel(netns)
    assert " 443 . tcp . " in applied
    user_config = config.read_bytes()

    # Upgrade: apk runs only the new package's post-upgrade; the old service is not stopped.
    r.clear_calls()
    apk.add(apks[("wormhole", "2")])
    assert apk.installed("wormhole")["version"].endswith("-r2")
    calls = r.calls()
    assert "wormhole start" in calls and "wormhole stop" not in calls
    assert sorted(os.listdir(r.path("/etc/rc.d"))) == ["K10wormhole", "S99wormhole"]
    assert config.read_bytes() == user_config, "apk keeps the changed config"
    assert r.path("/etc/config/wormhole.apk-new").read_bytes() == open(DEFAULT_CONFIG, "rb").read()
    assert kernel(netns) == applied, "the new version re-applied the same rules"
    assert [e["label"] for e in json.loads(r.run(["wormhole", "list", "--json"]).stdout)["exemptions"]] == ["LuCI"]

    r.clear_calls()
    apk.delete("wormhole")
    assert kernel(netns) == before, "removal leaves no rule, route or ip rule behind"
    assert "rpcd reload" in r.calls()
    for gone in WORMHOLE_PATHS:
        assert not os.path.lexists(r.path(gone)), gone
    assert os.listdir(r.path("/etc/rc.d")) == []
    # apk del keeps a protected file the user changed (only --purge removes it), and drops .apk-new.
    assert config.read_bytes() == user_config
    assert leftovers(r) == ["/etc/config/wormhole"]


def test_apk_unchanged_config_is_replaced_and_removal_leaves_nothing(apks, sim, netns):
    r = sim("fw4")
    apk = Apk(r)
    apk.add(apks[("wormhole", "1")])
    apk.add(apks[("wormhole", "2")])
    assert not r.path("/etc/config/wormhole.apk-new").exists(), "an unchanged config is simply replaced"
    apk.delete("wormhole")
    assert leftovers(r) == []


def test_apk_purge_removes_a_changed_config(apks, sim, netns):
    r = sim("fw4")
    apk = Apk(r)
    apk.add(apks[("wormhole", "1")])
    add_user_config(r)
    apk.add(apks[("wormhole", "2")])
    apk.delete("wormhole", purge=True)
    assert leftovers(r) == []


def test_apk_image_build(apks, sim, netns):
    r = sim("fw4")
    Apk(r).add(apks[("wormhole", "1")], image=True)
    assert sorted(os.listdir(r.path("/etc/rc.d"))) == ["K10wormhole", "S99wormhole"]
    assert r.calls() == [], "an image build touches nothing live"
    assert r.path("/etc/uci-defaults/90-wormhole").exists(), "uci-defaults wait for first boot"


def test_apk_fw3_include_added_and_removed(apks, sim, netns):
    r = sim("fw3")
    apk = Apk(r)
    apk.add(apks[("wormhole", "1")])
    assert sorted(firewall_includes(r)) == ["wormhole_ipv4", "wormhole_ipv6"]
    apk.add(apks[("wormhole", "2")])
    assert sorted(firewall_includes(r)) == ["wormhole_ipv4", "wormhole_ipv6"], "an upgrade adds no second include"
    apk.delete("wormhole")
    assert firewall_includes(r) == {}


def test_apk_luci_app_install_and_remove(apks, sim, netns):
    r = sim("fw4")
    apk = Apk(r)
    apk.add(apks[("wormhole", "1")])
    cache = r.path("/tmp/luci-indexcache.0123abcd.json")
    cache.write_text("{}")
    r.clear_calls()
    apk.add(apks[("luci-app-wormhole", "1")])
    assert not cache.exists() and "rpcd reload" in r.calls()
    files = apkv3.read(apks[("luci-app-wormhole", "1")]).files()
    for path, f in files.items():
        assert r.path(path).read_bytes() == f.data and r.path(path).stat().st_mode & 0o7777 == f.mode
    apk.delete("luci-app-wormhole")
    assert all(not r.path(p).exists() for p in files)
    assert apk.installed("wormhole") is not None


# --- a router without python3-uci ------------------------------------------------------------------

def test_without_python3_uci_every_command_says_what_is_missing(ipks, sim, netns):
    """The package depends on python3-uci; should it be missing anyway, nothing falls back
    silently: reads and writes fail with the package to install."""
    r = sim("fw4")
    r.install(ipks[("wormhole", "1")])
    for f in r.stand_in_files():
        r.path(f).unlink()
    p = r.run(["wormhole", "inbound", "add", "tcp:443", "--json"], check=False)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "python3-uci" in support.first_json(p.stdout)["error"]["message"], p.stdout + p.stderr
    status = plugin_call(r, "status")
    assert "python3-uci" in json.dumps(status)
