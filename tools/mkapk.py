#!/usr/bin/env python3
"""Build the wormhole and luci-app-wormhole .apk files (apk-tools 3) here, without the SDK.

OpenWrt 25.12 installs packages with apk-tools 3, whose packages are "ADB" files (apk-tools
doc/apk-v3.5, src/adb.h, src/apk_adb.c, src/app_mkpkg.c). What this writes is what
`apk mkpkg` writes for OpenWrt's include/package-pack.mk, unsigned:

    "ADBd" + raw deflate of:  "ADB." "pckg"  ADB block  DATA block per non-empty file

A block is a little-endian u32 (type << 30 | 4 + payload length), the payload, zero
padding to 8 bytes. The ADB block is an 8-byte header (compat 0, version 0, reserved,
root value) followed by the values the root refers to. A value is a u32 tag: 4 bits of
type, 28 bits of immediate value or of offset into the ADB block. Objects and arrays
are u32 slot lists whose slot 0 is the slot count; trailing null slots are left out.
Every value is aligned to its own unit (u32 slots, u8/u16/u32 blob length prefixes).

As package-pack.mk does for apk, the data gets /lib/apk/packages/<name>.list (every
file), .conffiles and .conffiles_static (conffile and its sha256), and the maintainer
scripts become post-install (default_postinst, then ours), post-upgrade (the same with
PKG_UPGRADE=1), pre-deinstall (default_prerm, then ours) and post-deinstall (our postrm).
What goes in comes from the feed Makefiles (tools/feedpkg.py, shared with mkipk.py).

Reproducible: sorted paths, root:root, one mtime ($SOURCE_DATE_EPOCH, else the last
commit), deflate at a fixed level. tests/apkv3.py reads the result back independently.

Usage: python3 tools/mkapk.py [--out dist] [--firewall fw4|fw3] [--release N]
Standard library only.
"""

import hashlib
import os
import re
import struct
import sys
import zlib

import feedpkg
from feedpkg import BuildError

# Value types: the top 4 bits of a tag (adb.h ADB_TYPE_*).
INT, INT32, INT64, BLOB8, BLOB16, BLOB32, ARRAY, OBJECT = 0x1, 0x2, 0x3, 0x8, 0x9, 0xA, 0xD, 0xE
NULL = 0
BLOCK_ADB, BLOCK_DATA = 0, 2
SCHEMA_PACKAGE = b"pckg"
# Slot indices of the schemas we fill (apk_adb.h ADBI_*).
PKG = {"info": 1, "paths": 2, "scripts": 3}
INFO = {"name": 1, "version": 2, "hashes": 3, "description": 4, "arch": 5, "license": 6,
        "origin": 7, "maintainer": 8, "url": 9, "installed-size": 12, "depends": 15}
DEP_NAME = 1
ACL = {"mode": 1, "user": 2, "group": 3}
FILE = {"name": 1, "acl": 2, "size": 3, "mtime": 4, "hash": 5}
DIR = {"name": 1, "acl": 2, "files": 3}
SCRIPTS = {"pre-install": 2, "post-install": 3, "pre-deinstall": 4, "post-deinstall": 5,
           "pre-upgrade": 6, "post-upgrade": 7}
UNIQUE_ID_LEN = 20      # mkpkg: the first 20 bytes (a SHA-1's length) of a SHA-256
MAX_OFFSET = 0x0FFFFFFF
DEFLATE_LEVEL = 9       # apk's deflate stream: level 9, raw (no zlib/gzip wrapper), memLevel 8
APK_PACKAGES = "/lib/apk/packages"


class Adb:
    """The ADB block being written. Identical data is stored once, as apk's writer does."""

    def __init__(self):
        self.buf = bytearray(8)        # adb_hdr: compat 0, version 0, reserved 0, root 0
        self.stored = {}

    def _store(self, raw, align, shared=True):
        if shared and raw in self.stored and self.stored[raw] % align == 0:
            return self.stored[raw]
        self.buf += b"\0" * (-len(self.buf) % align)
        offset = len(self.buf)
        if offset + len(raw) > MAX_OFFSET:
            raise BuildError("package metadata over 256 MiB: offsets have 28 bits")
        self.buf += raw
        if shared:
            self.stored.setdefault(raw, offset)
        return offset

    def blob(self, data, shared=True):
        """A byte string; an empty one is the null value (apk leaves it out too)."""
        if isinstance(data, str):
            data = data.encode()
        if not data:
            return NULL
        for kind, fmt in ((BLOB8, "<B"), (BLOB16, "<H"), (BLOB32, "<I")):
            if len(data) < 1 << (8 * struct.calcsize(fmt)):
                size = struct.calcsize(fmt)
                return kind << 28 | self._store(struct.pack(fmt, len(data)) + data, size, shared)
        raise BuildError("a value over 4 GiB")

    def int(self, n):
        if n <= MAX_OFFSET:
            return INT << 28 | n
        if n < 1 << 32:
            return INT32 << 28 | self._store(struct.pack("<I", n), 4)
        # 8-aligned: apk 3.0.0 reads 4, its pre-release snapshots wanted 8.
        return INT64 << 28 | self._store(struct.pack("<Q", n), 8)

    def obj(self, slots, kind=OBJECT):
        """slots: {index: value} (objects) or [value, ...] (arrays, index 1 on)."""
        if isinstance(slots, dict):
            values = [slots.get(i, NULL) for i in range(1, max(slots, default=0) + 1)]
        else:
            values = [v for v in slots if v != NULL]
        while values and values[-1] == NULL:
            values.pop()
        if not values:
            return NULL
        return kind << 28 | self._store(struct.pack("<%dI" % (len(values) + 1), len(values) + 1, *values), 4)

    def array(self, values):
        return self.obj(values, ARRAY)

    def root(self, value):
        struct.pack_into("<I", self.buf, 4, value)


# --- what package-pack.mk adds for apk ----------------------------------------------------------

# The lines package-pack.mk echoes around our scripts (as the shell prints them).
NO_SCRIPT = '[ "${IPKG_NO_SCRIPT}" = "1" ] && exit 0\n'
FUNCTIONS = '[ -s ${IPKG_INSTROOT}/lib/functions.sh ] || exit 0\n. ${IPKG_INSTROOT}/lib/functions.sh\n'
UPGRADE = "#!/bin/sh\nexport PKG_UPGRADE=1\n"


def _body(script):
    """A script without its shebang lines (package-pack.mk: sed '/^\\s*#!/d')."""
    return "".join(l for l in script.splitlines(True) if not re.match(r"\s*#!", l))


def apk_scripts(pkg):
    """{apk script type: text}, assembled as package-pack.mk assembles them for apk."""
    env = 'export root="${IPKG_INSTROOT}"\nexport pkgname="%s"\n' % pkg.name
    post_install = ("#!/bin/sh\n" + NO_SCRIPT + FUNCTIONS + env + "add_group_and_user\ndefault_postinst\n"
                    + _body(pkg.scripts.get("postinst", "")))
    out = {"post-install": post_install,
           "post-upgrade": UPGRADE + _body(post_install),
           "pre-deinstall": "#!/bin/sh\n" + FUNCTIONS + env + "default_prerm\n" + _body(pkg.scripts.get("prerm", ""))}
    if "preinst" in pkg.scripts:
        out["pre-install"] = pkg.scripts["preinst"]
        out["pre-upgrade"] = UPGRADE + _body(pkg.scripts["preinst"])
    if "postrm" in pkg.scripts:
        out["post-deinstall"] = re.sub(r"^\s*#!", "#!", pkg.scripts["postrm"])   # sed -z 's/^\s*#!/#!/'
    return out


def data_tree(pkg):
    """{device path: (bytes, mode)}: the package's files plus /lib/apk/packages/<name>.*"""
    tree = {}
    for dest, src, mode in pkg.files:
        with open(src, "rb") as f:
            tree[dest] = (f.read(), mode)
    meta = APK_PACKAGES + "/" + pkg.name
    # The .list is taken before the metadata files are added (package-pack.mk's order).
    listing = "".join(p + "\n" for p in sorted(tree))
    tree[meta + ".list"] = (listing.encode(), 0o644)
    if pkg.conffiles:
        tree[meta + ".conffiles"] = ("".join(c + "\n" for c in pkg.conffiles).encode(), 0o644)
        sums = "".join("%s %s\n" % (c, hashlib.sha256(tree[c][0]).hexdigest()) for c in pkg.conffiles)
        tree[meta + ".conffiles_static"] = (sums.encode(), 0o644)
    return tree


def directories(tree):
    """{directory name without leading slash ('' is /): [(file name, bytes, mode)]}, every
    ancestor included (mkpkg lists each directory it walks, empty ones too)."""
    dirs = {"": []}
    for path in tree:
        parts = path.strip("/").split("/")
        for k in range(1, len(parts)):
            dirs.setdefault("/".join(parts[:k]), [])
    for path, (data, mode) in tree.items():
        head, name = os.path.split(path.strip("/"))
        dirs[head].append((name, data, mode))
    return {d: sorted(files) for d, files in dirs.items()}


# --- the package ------------------------------------------------------------------------------

def _acl(adb, mode):
    return adb.obj({ACL["mode"]: adb.int(mode), ACL["user"]: adb.blob("root"), ACL["group"]: adb.blob("root")})


def _paths(adb, dirs, mtime):
    entries = []
    for name in sorted(d.encode() for d in dirs):
        files = [adb.obj({FILE["name"]: adb.blob(fname), FILE["acl"]: _acl(adb, mode),
                          FILE["size"]: adb.int(len(data)), FILE["mtime"]: adb.int(mtime),
                          FILE["hash"]: adb.blob(hashlib.sha256(data).digest())})
                 for fname, data, mode in dirs[name.decode()]]
        entries.append(adb.obj({DIR["name"]: adb.blob(name), DIR["acl"]: _acl(adb, 0o755),
                                DIR["files"]: adb.array(files)}))
    return adb.array(entries)


def _info(adb, pkg, installed_size):
    depends = [adb.obj({DEP_NAME: adb.blob(d)}) for d in sorted(set(pkg.depends))]
    fields = {"name": pkg.name, "version": pkg.version, "description": pkg.description,
              "arch": "noarch", "license": pkg.license or "", "origin": pkg.source,
              "maintainer": pkg.maintainer or "", "url": ""}
    slots = {INFO[k]: adb.blob(v) for k, v in fields.items()}
    # The unique id is filled in once the whole block exists: kept out of deduplication.
    slots[INFO["hashes"]] = adb.blob(b"\0" * UNIQUE_ID_LEN, shared=False)
    slots[INFO["installed-size"]] = adb.int(max(installed_size, 1))
    slots[INFO["depends"]] = adb.array(depends)
    return adb.obj(slots)


def metadata(pkg, dirs, mtime):
    """The ADB block bytes, with the package's unique id: sha256 of the block with a zero id."""
    adb = Adb()
    installed = sum(len(data) for files in dirs.values() for _n, data, _m in files)
    info = _info(adb, pkg, installed)
    id_at = (info & MAX_OFFSET)
    scripts = apk_scripts(pkg)
    root = adb.obj({PKG["info"]: info, PKG["paths"]: _paths(adb, dirs, mtime),
                    PKG["scripts"]: adb.obj({SCRIPTS[k]: adb.blob(v) for k, v in scripts.items()})})
    adb.root(root)
    slot = struct.unpack_from("<I", adb.buf, id_at + 4 * INFO["hashes"])[0]
    start = (slot & MAX_OFFSET) + 1                 # past the BLOB8 length byte
    adb.buf[start:start + UNIQUE_ID_LEN] = hashlib.sha256(bytes(adb.buf)).digest()[:UNIQUE_ID_LEN]
    return bytes(adb.buf)


def block(kind, payload):
    size = 4 + len(payload)
    if size > 0x3FFFFFFF:
        raise BuildError("a block over 1 GiB")
    return struct.pack("<I", kind << 30 | size) + payload + b"\0" * (-size % 8)


def build(pkg, mtime):
    """The .apk bytes of a feedpkg.Package."""
    dirs = directories(data_tree(pkg))
    parts = [b"ADB.", SCHEMA_PACKAGE, block(BLOCK_ADB, metadata(pkg, dirs, mtime))]
    # Data blocks in path order, each naming its directory and file by their 1-based index.
    for d_idx, name in enumerate(sorted(d.encode() for d in dirs), 1):
        for f_idx, (_fname, data, _mode) in enumerate(dirs[name.decode()], 1):
            if data:
                parts.append(block(BLOCK_DATA, struct.pack("<II", d_idx, f_idx) + data))
    z = zlib.compressobj(DEFLATE_LEVEL, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY)
    return b"ADBd" + z.compress(b"".join(parts)) + z.flush()


def apk_filename(pkg):
    return "%s-%s.apk" % (pkg.name, pkg.version)


def main(argv=None):
    return feedpkg.main(argv, "mkapk", ".apk", build, apk_filename)


if __name__ == "__main__":
    sys.exit(main())
