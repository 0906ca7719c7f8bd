"""The .apk files of `make apk`, read back with tests/apkv3.py (written from the format's
description, sharing no code with tools/mkapk.py): every info field, every file with its
mode, owner, size, mtime and SHA-256, the scripts as OpenWrt's package-pack.mk assembles
them for apk, the /lib/apk/packages metadata, reproducibility, and a reader that refuses
damaged packages (so the checks above are not vacuous)."""

import hashlib
import os
import zlib

import pytest

from tests import apkv3, support

import wormhole

VERSION = "%s-r1" % wormhole.VERSION
EPOCH = 1700000000
EXECUTABLE = {"/usr/libexec/rpcd/wormhole", "/usr/sbin/wormhole", "/etc/init.d/wormhole",
              "/etc/hotplug.d/iface/95-wormhole", "/etc/uci-defaults/90-wormhole"}
HOST_ONLY = support.HOST_ONLY
META = "/lib/apk/packages/"


def build(out, *args):
    return support.build_packages("mkapk.py", out, *args, epoch=str(EPOCH))


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    build(out)
    return out


def package(dist, name):
    return apkv3.read(dist / ("%s-%s.apk" % (name, VERSION)))


def backend_sources():
    """{device path: (source path, mode)} of what the wormhole package must hold."""
    rpcd = os.path.join(support.REPO, "rpcd")
    out = {}
    for d, dirs, names in os.walk(os.path.join(rpcd, "wormhole")):
        dirs[:] = [x for x in dirs if x != "__pycache__"]
        for n in names:
            if n.endswith(".py"):
                rel = os.path.relpath(os.path.join(d, n), rpcd)
                out["/usr/lib/wormhole/" + rel] = (os.path.join(rpcd, rel), 0o644)
    for dest in EXECUTABLE:
        src = {"/usr/libexec/rpcd/wormhole": "rpcd/libexec/wormhole"}.get(dest, "files" + dest)
        out[dest] = (os.path.join(support.REPO, src), 0o755)
    out["/etc/config/wormhole"] = (os.path.join(support.REPO, "files/etc/config/wormhole"), 0o600)
    return {k: v for k, v in out.items() if k not in HOST_ONLY}


def luci_sources():
    app = os.path.join(support.REPO, "luci-app-wormhole")
    out = {}
    for sub, prefix in (("htdocs", "/www"), ("root", "")):
        for d, _dirs, names in os.walk(os.path.join(app, sub)):
            for n in names:
                src = os.path.join(d, n)
                mode = 0o755 if os.stat(src).st_mode & 0o111 else 0o644
                out[prefix + "/" + os.path.relpath(src, os.path.join(app, sub))] = (src, mode)
    return out


# --- the container ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["wormhole", "luci-app-wormhole"])
def test_container_is_deflated_adb_with_one_adb_block_and_no_signature(dist, name):
    raw = (dist / ("%s-%s.apk" % (name, VERSION))).read_bytes()
    assert raw[:4] == b"ADBd", "apk mkpkg's default: raw deflate after the magic"
    stream = zlib.decompressobj(-15).decompress(raw[4:])
    assert stream[:8] == b"ADB.pckg"
    kinds = [k for k, _ in apkv3.blocks(stream)]
    assert kinds[0] == apkv3.ADB and apkv3.SIG not in kinds, "unsigned: apk add --allow-untrusted"
    pkg = package(dist, name)
    assert pkg.signatures == []
    assert pkg.unique_id_matches(), "info.hashes: sha256 of the ADB block with the id zeroed, 20 bytes"


def test_build_is_reproducible(tmp_path):
    build(tmp_path / "a")
    build(tmp_path / "b")
    for name in ("wormhole", "luci-app-wormhole"):
        f = "%s-%s.apk" % (name, VERSION)
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()


# --- info -----------------------------------------------------------------------------------------

def test_backend_info_fields(dist):
    pkg = package(dist, "wormhole")
    info = dict(pkg.info)
    info.pop("hashes")
    files = pkg.files()
    assert info == {
        "name": "wormhole", "version": VERSION, "arch": "noarch", "license": "MIT",
        "origin": "feeds/wormhole/openwrt-feed/wormhole",
        "maintainer": "wormhole developers <wormhole@example.invalid>",
        "description": info["description"],
        "installed-size": sum(f.size for f in files.values()),
        # apk sorts dependencies by name.
        "depends": [{"name": n} for n in ("ip", "nftables-json", "python3-light", "python3-ubus", "python3-uci")],
    }
    assert info["description"].startswith("Makes inbound services") and "\n" not in info["description"]


def test_fw3_build_depends_on_the_iptables_tools(tmp_path):
    build(tmp_path, "--firewall", "fw3", "--package", "wormhole")
    depends = [d["name"] for d in apkv3.read(tmp_path / ("wormhole-%s.apk" % VERSION)).info["depends"]]
    assert depends == sorted(["python3-light", "python3-uci", "python3-ubus", "ip", "iptables", "ip6tables",
                              "iptables-mod-conntrack-extra", "kmod-ipt-conntrack-extra"])


def test_luci_info_fields(dist):
    info = package(dist, "luci-app-wormhole").info
    assert (info["name"], info["version"], info["arch"]) == ("luci-app-wormhole", VERSION, "noarch")
    assert info["depends"] == [{"name": "luci-base"}, {"name": "wormhole"}]
    assert info["description"].startswith("Web interface for wormhole")


# --- files ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,sources", [("wormhole", backend_sources), ("luci-app-wormhole", luci_sources)])
def test_every_file_mode_owner_time_and_hash(dist, name, sources):
    pkg = package(dist, name)
    files = pkg.files()
    expected = sources()
    assert set(files) - {p for p in files if p.startswith(META)} == set(expected)
    for path, (src, mode) in expected.items():
        f = files[path]
        data = open(src, "rb").read()
        assert (f.mode, f.user, f.group, f.mtime) == (mode, "root", "root", EPOCH), path
        assert f.data == data and f.size == len(data) and f.sha256 == hashlib.sha256(data).digest(), path
    for f in files.values():
        assert (f.user, f.group, f.mtime) == ("root", "root", EPOCH)


@pytest.mark.parametrize("name", ["wormhole", "luci-app-wormhole"])
def test_every_directory_is_listed_root_owned(dist, name):
    pkg = package(dist, name)
    dirs = pkg.directories()
    needed = {"/"}
    for path in pkg.files():
        parts = path.strip("/").split("/")[:-1]
        needed |= {"/" + "/".join(parts[:k]) for k in range(1, len(parts) + 1)}
    assert set(dirs) == needed, "every directory, parents included, before its files"
    for acl in dirs.values():
        assert acl == {"mode": 0o755, "user": "root", "group": "root"}


def test_the_router_package_has_no_uci_file_backend(dist):
    files = package(dist, "wormhole").files()
    assert "/usr/lib/wormhole/wormhole/uci/euci_backend.py" in files
    assert not HOST_ONLY & set(files)


# --- OpenWrt's apk metadata files -----------------------------------------------------------------

def test_lib_apk_packages_metadata(dist):
    files = package(dist, "wormhole").files()
    listed = files[META + "wormhole.list"].data.decode().splitlines()
    assert listed == sorted(p for p in files if not p.startswith(META)), ".list: every file but the metadata"
    assert files[META + "wormhole.conffiles"].data == b"/etc/config/wormhole\n"
    digest = hashlib.sha256(files["/etc/config/wormhole"].data).hexdigest()
    assert files[META + "wormhole.conffiles_static"].data == ("/etc/config/wormhole %s\n" % digest).encode()
    for name in ("list", "conffiles", "conffiles_static"):
        assert files[META + "wormhole." + name].mode == 0o644
    luci = package(dist, "luci-app-wormhole").files()
    assert META + "luci-app-wormhole.list" in luci and META + "luci-app-wormhole.conffiles" not in luci


# --- scripts --------------------------------------------------------------------------------------

def test_backend_scripts_as_package_pack_mk_writes_them(dist, tmp_path):
    scripts = package(dist, "wormhole").scripts
    assert sorted(scripts) == ["post-deinstall", "post-install", "post-upgrade", "pre-deinstall"]
    head = ('#!/bin/sh\n[ "${IPKG_NO_SCRIPT}" = "1" ] && exit 0\n[ -s ${IPKG_INSTROOT}/lib/functions.sh ] || exit 0\n'
            '. ${IPKG_INSTROOT}/lib/functions.sh\nexport root="${IPKG_INSTROOT}"\nexport pkgname="wormhole"\n')
    assert scripts["post-install"].startswith(head + "add_group_and_user\ndefault_postinst\n")
    assert "/etc/init.d/rpcd reload" in scripts["post-install"]
    assert scripts["post-install"].count("#!") == 1, "our postinst's shebang is dropped when inlined"
    assert scripts["post-upgrade"] == "#!/bin/sh\nexport PKG_UPGRADE=1\n" + scripts["post-install"].split("\n", 1)[1]
    assert scripts["pre-deinstall"].startswith(head.replace('[ "${IPKG_NO_SCRIPT}" = "1" ] && exit 0\n', "")
                                               + "default_prerm\n")
    assert "/usr/sbin/wormhole cleanup" in scripts["pre-deinstall"]
    assert scripts["post-deinstall"].startswith("#!/bin/sh\n") and "rm -rf /usr/lib/wormhole" in scripts["post-deinstall"]
    for kind, text in scripts.items():
        path = tmp_path / kind
        path.write_text(text)
        support.run(["sh", "-n", str(path)])


def test_luci_scripts(dist):
    scripts = package(dist, "luci-app-wormhole").scripts
    assert sorted(scripts) == ["post-deinstall", "post-install", "post-upgrade", "pre-deinstall"]
    assert 'export pkgname="luci-app-wormhole"' in scripts["pre-deinstall"]
    assert "rm -rf /tmp/luci-indexcache*" in scripts["post-install"]


# --- the reader is strict (the checks above are not vacuous) -------------------------------------

def _reflate(stream):
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    return b"ADBd" + z.compress(stream) + z.flush()


@pytest.fixture
def stream(dist):
    return bytearray(zlib.decompressobj(-15).decompress((dist / ("wormhole-%s.apk" % VERSION)).read_bytes()[4:]))


def test_reader_refuses_changed_file_content(stream):
    stream[-20] ^= 0xFF if stream[-20] else 0x01
    with pytest.raises(apkv3.FormatError):
        apkv3.read(_reflate(bytes(stream)))


def test_reader_refuses_truncation_and_bad_magic(stream):
    with pytest.raises(apkv3.FormatError):
        apkv3.read(_reflate(bytes(stream[:-8])))
    with pytest.raises(apkv3.FormatError):
        apkv3.read(b"ADBx" + bytes(stream[4:]))
    with pytest.raises(apkv3.FormatError):
        apkv3.read(bytes(stream[:4]) + b"indx" + bytes(stream[8:]))


def test_reader_refuses_data_blocks_out_of_order(stream):
    blocks = apkv3.blocks(bytes(stream))
    data = [(k, p) for k, p in blocks if k == apkv3.DATA]
    swapped = [blocks[0]] + [data[1], data[0]] + data[2:]

    def encode(kind, payload):
        size = 4 + len(payload)
        return (kind << 30 | size).to_bytes(4, "little") + payload + b"\0" * (-size % 8)

    with pytest.raises(apkv3.FormatError, match="names"):
        apkv3.read(b"ADB.pckg" + b"".join(encode(k, p) for k, p in swapped))
