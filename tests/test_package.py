"""The .ipk files `make ipk` builds: unpacked with plain tar and checked piece by piece.

The format is the one opkg-lede reads (an outer gzip'd tar, not a Debian ar archive), the
control fields are OpenWrt's, modes and paths are what the feed Makefiles install.
"""

import glob
import gzip
import io
import os
import re
import sys
import tarfile

import pytest

from tests import support

sys.path.insert(0, os.path.join(support.REPO, "tools"))
import feedpkg  # noqa: E402

import wormhole  # noqa: E402

VERSION = "%s-r1" % wormhole.VERSION
EXECUTABLE = {"/usr/libexec/rpcd/wormhole", "/usr/sbin/wormhole", "/etc/init.d/wormhole",
              "/etc/hotplug.d/iface/95-wormhole", "/etc/uci-defaults/90-wormhole"}
BACKEND_MAX_BYTES = 100 * 1024
HOST_ONLY = support.HOST_ONLY


def build(out, *args):
    return support.build_packages("mkipk.py", out, *args)


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    build(out)
    return out


def unpack(ipk, dest):
    """Plain tar, as a person (or opkg) would: outer archive, then each inner one."""
    os.makedirs(dest)
    support.run(["tar", "-xzf", str(ipk), "-C", str(dest)])
    for part in ("control", "data"):
        os.makedirs(os.path.join(dest, part))
        support.run(["tar", "-xzf", os.path.join(dest, part + ".tar.gz"), "-C", os.path.join(dest, part)])
    return dest


def fields(control_text):
    return dict(line.split(": ", 1) for line in control_text.splitlines() if ": " in line)


def members(path_or_bytes):
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else open(path_or_bytes, "rb").read()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return tar.getmembers()


def tar_files(dest, part):
    """{device path: mode} of the regular files tar put under dest/part."""
    out = {}
    base = os.path.join(dest, part)
    for d, _dirs, names in os.walk(base):
        for n in names:
            p = os.path.join(d, n)
            out["/" + os.path.relpath(p, base)] = os.stat(p).st_mode & 0o7777
    return out


# --- format ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["wormhole", "luci-app-wormhole"])
def test_outer_archive_is_a_gzip_tar_in_ipkg_build_order(dist, name):
    ipk = dist / ("%s_%s_all.ipk" % (name, VERSION))
    raw = ipk.read_bytes()
    assert raw[:2] == b"\x1f\x8b", "an .ipk for opkg-lede is gzip'd tar, not an ar archive"
    listing = support.run(["tar", "-tzf", str(ipk)]).stdout.split()
    assert listing == ["./debian-binary", "./data.tar.gz", "./control.tar.gz"]
    with tarfile.open(ipk, "r:gz") as tar:
        assert tar.extractfile("./debian-binary").read() == b"2.0\n"


@pytest.mark.parametrize("name", ["wormhole", "luci-app-wormhole"])
def test_headers_are_plain_tar_opkg_reads(dist, name):
    """opkg-lede's tar reader: 'ustar' magic, a valid checksum, file and directory entries only."""
    ipk = (dist / ("%s_%s_all.ipk" % (name, VERSION))).read_bytes()
    archives = [gzip.decompress(ipk)]
    with tarfile.open(fileobj=io.BytesIO(ipk), mode="r:gz") as outer:
        for inner in ("./control.tar.gz", "./data.tar.gz"):
            archives.append(gzip.decompress(outer.extractfile(inner).read()))
    for raw in archives:
        offset = 0
        while offset + 512 <= len(raw) and raw[offset:offset + 512] != b"\0" * 512:
            header = raw[offset:offset + 512]
            assert header[257:262] == b"ustar"
            stored = int(header[148:156].split(b"\0")[0].strip() or b"0", 8)
            assert stored == sum(header[:148]) + 8 * 32 + sum(header[156:])
            assert header[156:157] in (b"0", b"5"), "no long-name or pax records"
            assert int(header[108:116].split(b"\0")[0] or b"0", 8) == 0, "uid 0"
            assert int(header[116:124].split(b"\0")[0] or b"0", 8) == 0, "gid 0"
            size = int(header[124:136].split(b"\0")[0].strip() or b"0", 8)
            offset += 512 + (size + 511) // 512 * 512


def test_build_is_reproducible(tmp_path):
    build(tmp_path / "a")
    build(tmp_path / "b")
    for name in ("wormhole", "luci-app-wormhole"):
        f = "%s_%s_all.ipk" % (name, VERSION)
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    for m in members((tmp_path / "a" / ("wormhole_%s_all.ipk" % VERSION)).read_bytes()):
        assert m.mtime == 1700000000 and m.uname == "root" and m.gname == "root"


# --- the backend package ----------------------------------------------------------------------

def test_backend_control_fields(dist, tmp_path):
    d = unpack(dist / ("wormhole_%s_all.ipk" % VERSION), tmp_path / "x")
    control = open(os.path.join(d, "control", "control")).read()
    f = fields(control)
    assert f["Package"] == "wormhole"
    assert f["Version"] == VERSION
    assert f["Architecture"] == "all"
    assert f["Section"] == "net"
    assert f["Depends"].split(", ") == ["python3-light", "python3-uci", "python3-ubus", "ip", "nftables-json"]
    data_tar = gzip.decompress(open(os.path.join(d, "data.tar.gz"), "rb").read())
    assert int(f["Installed-Size"]) == len(data_tar), "ipkg-build: the size of the unpacked data.tar"
    assert len(f["Description"]) > 40
    assert open(os.path.join(d, "control", "conffiles")).read() == "/etc/config/wormhole\n"


def test_fw3_build_depends_on_the_iptables_tools(tmp_path):
    build(tmp_path, "--firewall", "fw3", "--package", "wormhole")
    control = tarfile.open(tmp_path / ("wormhole_%s_all.ipk" % VERSION), "r:gz").extractfile("./control.tar.gz").read()
    text = tarfile.open(fileobj=io.BytesIO(control), mode="r:gz").extractfile("./control").read().decode()
    depends = fields(text)["Depends"].split(", ")
    assert depends[-4:] == ["iptables", "ip6tables", "iptables-mod-conntrack-extra", "kmod-ipt-conntrack-extra"]
    assert "nftables-json" not in depends


def test_backend_maintainer_scripts(dist, tmp_path):
    d = unpack(dist / ("wormhole_%s_all.ipk" % VERSION), tmp_path / "x")
    scripts = tar_files(d, "control")
    for name in ("postinst", "prerm", "postinst-pkg", "prerm-pkg", "postrm"):
        assert scripts["/" + name] == 0o755, name
        text = open(os.path.join(d, "control", name)).read()
        assert text.startswith("#!/bin/sh\n")
        support.run(["sh", "-n", os.path.join(d, "control", name)])
    assert scripts["/control"] == scripts["/conffiles"] == 0o644
    wrapper = open(os.path.join(d, "control", "postinst")).read()
    assert ". ${IPKG_INSTROOT}/lib/functions.sh" in wrapper and "default_postinst $0 $@" in wrapper
    assert "default_prerm $0 $@" in open(os.path.join(d, "control", "prerm")).read()
    for name in ("postinst-pkg", "prerm-pkg", "postrm"):
        # Image builds (IPKG_INSTROOT set) must not touch the build host.
        assert '[ -n "${IPKG_INSTROOT}" ] && exit 0' in open(os.path.join(d, "control", name)).read()


def test_backend_files_modes_and_paths(dist, tmp_path):
    d = unpack(dist / ("wormhole_%s_all.ipk" % VERSION), tmp_path / "x")
    files = tar_files(d, "data")
    pkg_dir = os.path.join(support.REPO, "rpcd")
    python = {"/usr/lib/wormhole/" + os.path.relpath(os.path.join(dp, n), pkg_dir)
              for dp, dirs, names in os.walk(os.path.join(pkg_dir, "wormhole"))
              if "__pycache__" not in dp for n in names if n.endswith(".py")} - HOST_ONLY
    assert python and set(files) == python | EXECUTABLE | {"/etc/config/wormhole"}
    for path, mode in files.items():
        expected = 0o755 if path in EXECUTABLE else 0o600 if path == "/etc/config/wormhole" else 0o644
        assert mode == expected, "%s: %o" % (path, mode)
    assert not [p for p in files if "__pycache__" in p or p.endswith(".pyc") or "/tests/" in p]
    for path in EXECUTABLE | {"/etc/config/wormhole"}:
        src = {"/usr/libexec/rpcd/wormhole": "rpcd/libexec/wormhole"}.get(path, "files" + path)
        assert open(os.path.join(d, "data") + path, "rb").read() == open(os.path.join(support.REPO, src), "rb").read()
    for m in members(open(os.path.join(d, "data.tar.gz"), "rb").read()):
        assert m.name == "." or m.name.startswith("./"), "tarfile reads the \"./\" root entry as \".\""


def test_backend_package_stays_small(dist):
    size = (dist / ("wormhole_%s_all.ipk" % VERSION)).stat().st_size
    assert size < BACKEND_MAX_BYTES, "the backend ipk grew to %d bytes" % size


# --- the LuCI package --------------------------------------------------------------------------

def test_luci_package(dist, tmp_path):
    d = unpack(dist / ("luci-app-wormhole_%s_all.ipk" % VERSION), tmp_path / "x")
    f = fields(open(os.path.join(d, "control", "control")).read())
    assert (f["Package"], f["Version"], f["Architecture"], f["Section"]) == ("luci-app-wormhole", VERSION, "all", "luci")
    assert f["Depends"] == "luci-base, wormhole"
    files = tar_files(d, "data")
    app = os.path.join(support.REPO, "luci-app-wormhole")
    expected = {}
    for sub, prefix in (("htdocs", "/www"), ("root", "")):
        for dp, _dirs, names in os.walk(os.path.join(app, sub)):
            for n in names:
                src = os.path.join(dp, n)
                expected[prefix + "/" + os.path.relpath(src, os.path.join(app, sub))] = \
                    0o755 if os.stat(src).st_mode & 0o111 else 0o644
    assert files == expected
    assert "/conffiles" not in tar_files(d, "control")


# --- the feed Makefiles are the single source ----------------------------------------------------

def test_versions_agree():
    for name in ("wormhole", "luci-app-wormhole"):
        variables, _ = feedpkg.parse_makefile(os.path.join(support.REPO, "openwrt-feed", name, "Makefile"))
        assert variables["PKG_VERSION"] == wormhole.VERSION, name


def test_every_makefile_install_line_is_packaged(dist, tmp_path):
    text = open(os.path.join(support.REPO, "openwrt-feed", "wormhole", "Makefile")).read()
    dests = re.findall(r"\$\(1\)(/\S+)\s*$", text, re.M)
    files = tar_files(unpack(dist / ("wormhole_%s_all.ipk" % VERSION), tmp_path / "x"), "data")
    assert len(dests) >= 6
    for dest in dests:
        assert dest in files or any(f.startswith(dest + "/") for f in files), dest


def test_luci_feed_dirs_point_at_the_app():
    feed = os.path.join(support.REPO, "openwrt-feed", "luci-app-wormhole")
    for sub in ("htdocs", "root"):
        assert os.path.realpath(os.path.join(feed, sub)) == os.path.join(support.REPO, "luci-app-wormhole", sub)


@pytest.mark.parametrize("spec,symbols,expected", [
    ("+a +PACKAGE_firewall4:b +PACKAGE_firewall:c @TARGET_x", {"PACKAGE_firewall4"}, ["a", "b"]),
    ("+a +PACKAGE_firewall4:b +PACKAGE_firewall:c", {"PACKAGE_firewall"}, ["a", "c"]),
    ("+!PACKAGE_firewall4:c +(X||PACKAGE_firewall4):d +X&&Y:e", {"PACKAGE_firewall4"}, ["d"]),
    ("+!PACKAGE_firewall4:c +X&&Y:e", {"X", "Y"}, ["c", "e"]),
])
def test_conditional_dependencies_resolve_like_openwrt(spec, symbols, expected):
    assert feedpkg.resolve_depends(spec, symbols) == expected


def test_maintainer_scripts_may_not_use_make_variables():
    with pytest.raises(feedpkg.BuildError):
        feedpkg.shell_text("echo $(PKG_NAME)", "postinst")
    assert feedpkg.shell_text("echo $${IPKG_INSTROOT}\n", "postinst") == "echo ${IPKG_INSTROOT}\n"


def test_the_router_package_has_no_uci_file_backend(dist, tmp_path):
    """The package depends on python3-uci: the file backend (and the syntax module only it
    uses) stays on development hosts, named once in the Makefile's WORMHOLE_HOST_ONLY."""
    files = tar_files(unpack(dist / ("wormhole_%s_all.ipk" % VERSION), tmp_path / "x"), "data")
    assert "/usr/lib/wormhole/wormhole/uci/__init__.py" in files
    assert "/usr/lib/wormhole/wormhole/uci/euci_backend.py" in files
    assert not HOST_ONLY & set(files)
    variables, _ = feedpkg.parse_makefile(os.path.join(support.REPO, "openwrt-feed", "wormhole", "Makefile"))
    assert {"/usr/lib/wormhole/" + p for p in variables["WORMHOLE_HOST_ONLY"].split()} == HOST_ONLY
    # Only the file backend imports the syntax module, so it can stay out with it.
    users = [p for p in glob.glob(os.path.join(support.REPO, "rpcd", "wormhole", "**", "*.py"), recursive=True)
             if re.search(r"^from \.syntax import|^from \.+uci\.syntax import|import syntax", open(p).read(), re.M)]
    assert [os.path.relpath(p, support.REPO) for p in users] == ["rpcd/wormhole/uci/filebackend.py"]


# --- tools/python_footprint.py: OpenWrt's python3 file rules (no compiling, no stripping) ---

import python_footprint  # noqa: E402


@pytest.mark.parametrize("version", sorted(python_footprint.RULES))
@pytest.mark.parametrize("path, package", [
    ("os.py", "python3-base"),
    ("encodings/utf_8.py", "python3-base"),
    ("_sysconfigdata__linux_x86_64-linux-gnu.py", "python3-base"),
    ("json/decoder.py", "python3-light"),
    ("lib-dynload/_socket.cpython-311-x86_64-linux-gnu.so", "python3-light"),
    ("lib-dynload/_asyncio.cpython-311-x86_64-linux-gnu.so", "python3-light"),
    ("logging/__init__.py", "python3-logging"),
    ("email/message.py", "python3-email"),
    ("lib-dynload/_ssl.cpython-311-x86_64-linux-gnu.so", "python3-openssl"),
    ("config-3.11-x86_64-linux-gnu/Makefile", "python3-dev"),
    ("tkinter/__init__.py", None),
])
def test_python_footprint_assigns_files_like_openwrt(version, path, package):
    assert python_footprint.package_of(path, python_footprint.RULES[version]) == package


@pytest.mark.skipif(sys.version_info[:2] not in python_footprint.RULES,
                    reason="OpenWrt's python3 rules are written down for 3.11 (24.10) and 3.13 (25.12)")
def test_python3_light_holds_every_stdlib_module_the_backend_imports():
    # wormhole depends on python3-light alone: an import of logging, email, asyncio... would fail on a router
    assert python_footprint.imports_outside_light(python_footprint.RULES[sys.version_info[:2]]) == {}
