#!/usr/bin/env python3
"""Build the wormhole and luci-app-wormhole .ipk files here, without the OpenWrt SDK.

The format is what opkg-lede reads (libbb/unarchive.c, deb_extract) and what OpenWrt's
scripts/ipkg-build writes: a gzip-compressed GNU tar holding ./debian-binary ("2.0"),
./data.tar.gz and ./control.tar.gz, each inner archive a gzip'd tar of "./"-relative
paths. Not a Debian `ar` archive: opkg-lede opens the outer file as gzip'd tar.

What goes in comes from the feed Makefiles (tools/feedpkg.py, shared with mkapk.py).
Maintainer scripts are wrapped the OpenWrt way: `postinst` sources /lib/functions.sh and
runs default_postinst, which runs our `postinst-pkg` (likewise prerm / prerm-pkg).

Archives are reproducible: sorted names, uid/gid 0 (root:root), one mtime
($SOURCE_DATE_EPOCH, else the time of the last commit), gzip without name or time.

Usage: python3 tools/mkipk.py [--out dist] [--firewall fw4|fw3] [--release N]
Standard library only.
"""

import gzip
import io
import sys
import tarfile

import feedpkg
from feedpkg import BuildError

GZIP_LEVEL = 9


def ipk_filename(pkg):
    return "%s_%s_all.ipk" % (pkg.name, pkg.version)


def control(pkg, installed_size):
    fields = [("Package", pkg.name), ("Version", pkg.version),
              ("Depends", ", ".join(pkg.depends)),
              ("Source", pkg.source), ("SourceName", pkg.name),
              ("License", pkg.license), ("Section", pkg.section), ("Maintainer", pkg.maintainer),
              ("Architecture", "all"), ("Installed-Size", str(installed_size)),
              ("Description", pkg.description)]
    return "".join("%s: %s\n" % (k, val) for k, val in fields if val)


def control_files(pkg, installed_size):
    """{name: (text, mode)} of control.tar.gz, with OpenWrt's postinst/prerm wrappers."""
    out = {"control": (control(pkg, installed_size), 0o644),
           "postinst": (WRAPPERS["postinst"], 0o755), "prerm": (WRAPPERS["prerm"], 0o755)}
    if pkg.conffiles:
        out["conffiles"] = ("".join(c + "\n" for c in pkg.conffiles), 0o644)
    for script, text in pkg.scripts.items():
        # postinst/prerm of the Makefile run from the wrappers as *-pkg (package-pack.mk).
        key = script + "-pkg" if script in ("postinst", "prerm") else script
        out[key] = (text, 0o755)
    return out


# OpenWrt's wrapper: default_postinst / default_prerm in /lib/functions.sh run uci-defaults,
# the package's own script (<name>.postinst-pkg) and enable/start (stop/disable) the init
# scripts; IPKG_INSTROOT is the image being built, empty on a running router.
WRAPPERS = {
    "postinst": """#!/bin/sh
[ "${IPKG_NO_SCRIPT}" = "1" ] && exit 0
[ -s "${IPKG_INSTROOT}/lib/functions.sh" ] || exit 0
. ${IPKG_INSTROOT}/lib/functions.sh
default_postinst $0 $@
""",
    "prerm": """#!/bin/sh
[ -s "${IPKG_INSTROOT}/lib/functions.sh" ] || exit 0
. ${IPKG_INSTROOT}/lib/functions.sh
default_prerm $0 $@
""",
}


# --- archives ----------------------------------------------------------------------------------

def _info(name, mode, mtime, size=0, kind=tarfile.REGTYPE):
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.mtime, ti.size = kind, mode, mtime, size
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    return ti


def _tar(entries, mtime):
    """A gzip'd GNU tar of {"./path": (bytes, mode)} plus every parent directory, sorted."""
    dirs = {"."}
    for name in entries:
        parts = name.split("/")[:-1]
        for k in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:k]))
    for name in entries:
        if len(name) >= 100:
            # Longer names need GNU long-name records, which opkg-lede may be built without.
            raise BuildError("path too long for a plain tar header: %s" % name)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name in sorted(set(entries) | dirs):
            if name in entries:
                data, mode = entries[name]
                tar.addfile(_info(name, mode, mtime, len(data)), io.BytesIO(data))
            else:
                tar.addfile(_info(name + "/" if name != "." else "./", 0o755, mtime, kind=tarfile.DIRTYPE))
    return raw.getvalue()


def gzip_bytes(data):
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=GZIP_LEVEL) as gz:
        gz.write(data)
    return out.getvalue()


def build(pkg, mtime):
    """The .ipk bytes of a Package."""
    data_entries = {}
    for dest, src, mode in pkg.files:
        with open(src, "rb") as f:
            data_entries["." + dest] = (f.read(), mode)
    data_tar = _tar(data_entries, mtime)
    control = {"./" + k: (text.encode(), mode) for k, (text, mode) in control_files(pkg, len(data_tar)).items()}
    members = {"./debian-binary": (b"2.0\n", 0o644),
               "./data.tar.gz": (gzip_bytes(data_tar), 0o644),
               "./control.tar.gz": (gzip_bytes(_tar(control, mtime)), 0o644)}
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        # ipkg-build's order; opkg looks members up by name.
        for name in ("./debian-binary", "./data.tar.gz", "./control.tar.gz"):
            data, mode = members[name]
            tar.addfile(_info(name, mode, mtime, len(data)), io.BytesIO(data))
    return gzip_bytes(raw.getvalue())


def main(argv=None):
    return feedpkg.main(argv, "mkipk", ".ipk", build, ipk_filename)


if __name__ == "__main__":
    sys.exit(main())
