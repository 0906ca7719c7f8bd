"""The two packages as the feed Makefiles describe them: what mkipk.py and mkapk.py share.

Everything a package is made of comes from its feed Makefile (openwrt-feed/<pkg>/Makefile),
so the SDK build and ours cannot drift apart: version, dependencies (conditional ones
resolved as include/package-pack.mk does, for the firewall chosen with --firewall),
description, conffiles, maintainer scripts, and for the backend the install recipe.
The archive formats live in mkipk.py (opkg) and mkapk.py (apk v3); this module knows
nothing of either. Standard library only.
"""

import argparse
import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FEED = os.path.join(REPO, "openwrt-feed")
PACKAGES = ("wormhole", "luci-app-wormhole")
FIREWALL_SYMBOLS = {"fw4": {"PACKAGE_firewall4"}, "fw3": {"PACKAGE_firewall"}}
INSTALL_MODES = {"INSTALL_BIN": 0o755, "INSTALL_DATA": 0o644, "INSTALL_CONF": 0o600}
# `$(INSTALL_BIN) $(WORMHOLE_SRC)/files/etc/init.d/wormhole $(1)/etc/init.d/wormhole`
INSTALL_RE = re.compile(r"^\s*\$\((INSTALL_BIN|INSTALL_DATA|INSTALL_CONF)\)\s+\$\(WORMHOLE_SRC\)/(\S+)\s+\$\(1\)(/\S+)\s*$")
JUNK_RE = re.compile(r"(^|/)(__pycache__|tests)(/|$)|\.pyc$|~$|(^|/)\.#|\.swp$")


class BuildError(Exception):
    pass


# --- reading a feed Makefile ---------------------------------------------------------------

def parse_makefile(path):
    """(variables, defines) of a package Makefile: `NAME:=value` lines and `define` blocks.

    Only the plain subset our feed Makefiles use; `define Package/x` bodies hold the
    package's own `KEY:=value` lines, which are returned as variables too.
    """
    with open(path) as f:
        lines = f.read().split("\n")
    variables, defines = {}, {}
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("define "):
            name = line[len("define "):].strip()
            body = []
            i += 1
            while i < len(lines) and lines[i].strip() != "endef":
                body.append(lines[i])
                i += 1
            defines[name] = "\n".join(body)
            if name.startswith("Package/") and name.count("/") == 1:
                variables.update(_assignments(body))
        elif not line.startswith("\t"):
            statement = [line]
            while statement[-1].endswith("\\") and i + 1 < len(lines):
                i += 1
                statement.append(lines[i])
            variables.update(_assignments(statement))
        i += 1
    return variables, defines


def _assignments(lines):
    """{NAME: value} from `NAME:=value` lines, with backslash continuations joined."""
    out, pending = {}, ""
    for line in lines:
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text, pending = pending + line, ""
        m = re.match(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*:?=\s*(.*)$", text)
        if m:
            out[m.group(1)] = " ".join(m.group(2).split())
    return out


def resolve_depends(spec, symbols):
    """OpenWrt DEPENDS -> the Depends list of a built package (include/package-pack.mk).

    `+pkg` and `pkg` stay; `@SYMBOL` is a build-time condition only; `COND:pkg` keeps pkg
    when COND (`A||B`, `A&&B`, `!A`, parentheses) holds for the enabled Kconfig symbols.
    """
    out = []
    for token in spec.split():
        token = token.lstrip("+")
        if not token or token.startswith("@"):
            continue
        if ":" in token:
            cond, pkg = token.rsplit(":", 1)
            negate = cond.startswith("!")
            cond = cond.lstrip("!").strip("()")
            holds = any(all(sym in symbols for sym in alt.split("&&")) for alt in cond.split("||"))
            if holds == negate:
                continue
            token = pkg
        if token not in out:
            out.append(token)
    return out


def shell_text(define, where):
    """A maintainer script or conffiles list from a define: `$$` is a shell `$`."""
    text = define.replace("$$", "\0")
    if "$" in text:
        raise BuildError("%s uses a make variable; maintainer scripts may only use $$" % where)
    return text.replace("\0", "$").strip("\n") + "\n"


# --- what goes into each package ------------------------------------------------------------

def backend_files(makefile_text, host_only=()):
    """[(device path, source path, mode)]: the Python package and the install recipe lines.

    host_only: package-relative paths the Makefile's install recipe leaves out
    (WORMHOLE_HOST_ONLY: the UCI file backend, for hosts without libuci).
    """
    files = []
    pkg_root = os.path.join(REPO, "rpcd")
    for dirpath, dirnames, filenames in os.walk(os.path.join(pkg_root, "wormhole")):
        dirnames[:] = sorted(d for d in dirnames if not JUNK_RE.search(d + "/"))
        for name in sorted(filenames):
            rel = os.path.relpath(os.path.join(dirpath, name), pkg_root)
            if name.endswith(".py") and not JUNK_RE.search(rel) and rel not in host_only:
                files.append(("/usr/lib/wormhole/" + rel, os.path.join(pkg_root, rel), 0o644))
    found = False
    for line in makefile_text.split("\n"):
        m = INSTALL_RE.match(line)
        if m:
            files.append((m.group(3), os.path.join(REPO, m.group(2)), INSTALL_MODES[m.group(1)]))
            found = True
    if not found:
        raise BuildError("no $(INSTALL_*) $(WORMHOLE_SRC)/... $(1)/... lines in the wormhole Makefile")
    return files


def luci_files():
    """luci.mk's layout: htdocs/** -> /www/**, root/** -> /**, modes as in the source (cp -p)."""
    files = []
    app = os.path.join(REPO, "luci-app-wormhole")
    for sub, prefix in (("htdocs", "/www"), ("root", "")):
        base = os.path.join(app, sub)
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for name in sorted(filenames):
                src = os.path.join(dirpath, name)
                rel = os.path.relpath(src, base)
                if JUNK_RE.search(rel):
                    continue
                mode = 0o755 if os.stat(src).st_mode & 0o111 else 0o644
                files.append((prefix + "/" + rel, src, mode))
    return files


class Package:
    """One package as its feed Makefile describes it."""

    def __init__(self, name, symbols, release=None):
        self.name = name
        path = os.path.join(FEED, name, "Makefile")
        with open(path) as f:
            text = f.read()
        variables, defines = parse_makefile(path)
        v = dict(variables)
        self.version = "%s-r%s" % (v["PKG_VERSION"], release or v["PKG_RELEASE"])
        self.maintainer = v.get("PKG_MAINTAINER")
        self.license = v.get("PKG_LICENSE")
        # What OpenWrt records as the package's SOURCE (its directory under the build tree).
        self.source = "feeds/wormhole/openwrt-feed/%s" % name
        self.scripts = {}
        for script in ("postinst", "prerm", "postrm", "preinst"):
            key = "Package/%s/%s" % (name, script)
            if key in defines:
                self.scripts[script] = shell_text(defines[key], key)
        conf = defines.get("Package/%s/conffiles" % name, "")
        self.conffiles = [l.strip() for l in shell_text(conf, "conffiles").split("\n") if l.strip()]
        if "LUCI_TITLE" in v:               # luci.mk
            self.section, self.title = "luci", v["LUCI_TITLE"]
            self.depends = resolve_depends(v.get("LUCI_DEPENDS", ""), symbols)
            self.description = v.get("LUCI_DESCRIPTION") or self.title
            self.files = luci_files()
        else:
            self.section, self.title = v["SECTION"], v["TITLE"]
            self.depends = resolve_depends(v.get("DEPENDS", ""), symbols)
            desc = defines.get("Package/%s/description" % name, "").strip()
            self.description = " ".join(desc.split()) or self.title
            self.host_only = v.get("WORMHOLE_HOST_ONLY", "").split()
            self.files = backend_files(text, self.host_only)
        for conffile in self.conffiles:
            if conffile not in [dest for dest, _src, _mode in self.files]:
                raise BuildError("%s: conffile %s is not installed" % (name, conffile))


def source_epoch():
    if os.environ.get("SOURCE_DATE_EPOCH", "").isdigit():
        return int(os.environ["SOURCE_DATE_EPOCH"])
    try:
        out = subprocess.run(["git", "-C", REPO, "log", "-1", "--format=%ct"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        if out.isdigit():
            return int(out)
    except (OSError, subprocess.SubprocessError):
        pass
    return 0




def main(argv, tool, what, build, filename):
    """The command line of mkipk.py and mkapk.py: build(pkg, mtime) -> bytes, written atomically."""
    p = argparse.ArgumentParser(description="Build the wormhole %s files without the OpenWrt SDK." % what)
    p.add_argument("--out", default="dist", help="output directory (default dist)")
    p.add_argument("--firewall", choices=sorted(FIREWALL_SYMBOLS), default="fw4",
                   help="firewall the target image uses: picks the conditional dependencies (default fw4)")
    p.add_argument("--release", help="override PKG_RELEASE (a newer build for upgrade tests)")
    p.add_argument("--package", action="append", choices=PACKAGES, help="build only this package")
    args = p.parse_args(argv)
    if args.release is not None and not args.release.isdigit():
        p.error("--release must be a number (it becomes the -r<N> of the version)")
    mtime = source_epoch()
    try:
        os.makedirs(args.out, exist_ok=True)
        for name in args.package or PACKAGES:
            pkg = Package(name, FIREWALL_SYMBOLS[args.firewall], args.release)
            data = build(pkg, mtime)
            path = os.path.join(args.out, filename(pkg))
            with open(path + ".tmp", "wb") as f:
                f.write(data)
            os.replace(path + ".tmp", path)
            print("%s  %d bytes (%.1f kB)" % (path, len(data), len(data) / 1024.0))
    except (BuildError, KeyError, OSError) as e:
        sys.stderr.write("%s: %s\n" % (tool, e))
        return 1
    return 0
