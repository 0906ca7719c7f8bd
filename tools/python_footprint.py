#!/usr/bin/env python3
"""Estimate what OpenWrt's python3-light (with python3-base and libpython3) takes on the overlay.

No OpenWrt package index is reachable from where this was written, so nothing here is a
router's figure. Instead the file rules of OpenWrt's python3 packages (below, as data) are
applied to the CPython that runs this script, and its files are treated the way OpenWrt's
build treats them:

- Python modules: compiled to sourceless legacy .pyc (`compileall -b -d /`, no -O, so
  optimisation level 0), then every .py is deleted (Python3/CompileAll and
  Python3/DeleteSourceFiles in lang/python/python3-package.mk). Bytecode is the same on
  every architecture, so these figures hold for a router, for the same Python version.
- ELF files (lib-dynload/*.so, libpython3.X.so.1.0, /usr/bin/python3.X): stripped with
  `strip --strip-all` (OpenWrt's default CONFIG_STRIP_ARGS). They are this machine's
  machine code, x86-64 built with -O3 against glibc; a router's MIPS or ARM build, -Os
  against musl, differs. Treat the C figures as an order of magnitude.

Rules, read from openwrt/packages (Makefile PYTHON3_BASE_LIB_FILES, the python3-light and
libpython3 filespecs, files/python3-package-*.mk, python3-package.mk):
  24.10: branch openwrt-24.10 at 42525d32c41080d8a2a9f1b7929f4207427d5ce8 (Python 3.11.14;
         the python3 files last changed in 5ea20ec4f052d127ef8d41a14bf9bf584b409894)
  25.12: branch openwrt-25.12 at 57654a9f48f82a2163a36de4123c2537abb5fce8 (Python 3.13.9)
The rule set is chosen by the running interpreter's version (3.11: 24.10, 3.13: 25.12).

Which files exist comes from this CPython's install: top-level *.py and LICENSE.txt, the
files directly in each LIBSUBDIRS directory of its Makefile (what `make libinstall` copies
when configured with --disable-test-modules, as OpenWrt is), and lib-dynload minus the
test modules and the modules OpenWrt's configure marks n/a.

"installed" is the sum of file sizes (what opkg's Installed-Size and apk's size count).
"zlib/file" compresses each file whole with zlib level 9 (the method docs/INSTALL.md uses
for our own packages); "zlib/4k" compresses each 4 KiB block on its own, closer to jffs2
and ubifs, which compress per page. Flash use lies between the compressed and installed
figures.

Usage: .venv/bin/python tools/python_footprint.py [--ours] [--json] [--verbose]
       /root/.pyenv/versions/3.13.0/bin/python3 tools/python_footprint.py   (25.12 rules)
Standard library only (plus `strip` from binutils for the ELF files).
"""

import argparse
import ast
import fnmatch
import io
import json
import os
import py_compile
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

# Paths are relative to /usr/lib/python3.X. A pattern matches a file when the file's path,
# or one of the directories it lies in, matches it as a shell glob.
SO = "cpython-3*-*.so"      # PYTHON3_SO_SUFFIX

BASE_LIB_FILES = [          # PYTHON3_BASE_LIB_FILES: python3-base, with /usr/bin/python3.X
    "encodings", "_collections_abc.py", "_sitebuiltins.py", "_sysconfigdata_*.py",
    "_weakrefset.py", "abc.py", "codecs.py", "genericpath.py", "io.py", "os.py",
    "posixpath.py", "site.py", "stat.py",
]

# Py3BasePackage lists (files/python3-package-*.mk): split out of python3-light.
SPLIT_PACKAGES = {
    "python3-asyncio": ["asyncio"],
    "python3-codecs": ["lib-dynload/_codecs_%s.%s" % (c, SO) for c in ("cn", "hk", "iso2022", "jp", "kr", "tw")]
                      + ["lib-dynload/unicodedata." + SO],
    "python3-ctypes": ["ctypes", "lib-dynload/_ctypes." + SO],
    "python3-dbm": ["dbm", "lib-dynload/_dbm." + SO, "lib-dynload/_gdbm." + SO],
    "python3-decimal": ["decimal.py", "lib-dynload/_decimal." + SO],
    "python3-dev": ["config-3.*-*"],
    "python3-email": ["email"],
    "python3-logging": ["logging"],
    "python3-lzma": ["lzma.py", "lib-dynload/_lzma." + SO],
    "python3-multiprocessing": ["multiprocessing", "lib-dynload/_multiprocessing." + SO],
    "python3-ncurses": ["curses", "lib-dynload/_curses." + SO, "lib-dynload/_curses_panel." + SO],
    "python3-openssl": ["lib-dynload/_hashlib." + SO, "lib-dynload/_ssl." + SO],
    "python3-pydoc": ["doctest.py", "pydoc.py", "pydoc_data"],
    "python3-readline": ["lib-dynload/readline." + SO],
    "python3-sqlite3": ["sqlite3", "lib-dynload/_sqlite3." + SO],
    "python3-unittest": ["unittest"],
    "python3-urllib": ["urllib"],
    "python3-uuid": ["uuid.py", "lib-dynload/_uuid." + SO],
    "python3-venv": ["ensurepip", "venv"],
    "python3-xml": ["xml", "xmlrpc", "lib-dynload/_elementtree." + SO, "lib-dynload/pyexpat." + SO],
}

# Removed from python3-light's filespec and packaged nowhere.
LIGHT_DROPPED = ["idlelib", "tkinter", "turtledemo", "webbrowser.py", "_osx_support.py"]

RULES = {
    (3, 11): {
        "release": "OpenWrt 24.10 (Python 3.11.14)",
        "base": BASE_LIB_FILES + ["sysconfig.py"],
        "split": dict(SPLIT_PACKAGES, **{
            "python3-cgi": ["cgi.py"], "python3-cgitb": ["cgitb.py"],
            "python3-distutils": ["distutils"], "python3-lib2to3": ["lib2to3"]}),
        "dropped": LIGHT_DROPPED + ["distutils/cygwinccompiler.py"],
    },
    (3, 13): {
        "release": "OpenWrt 25.12 (Python 3.13.9)",
        "base": BASE_LIB_FILES + ["sysconfig/__init__.py", "sysconfig/__main__.py"],
        "split": SPLIT_PACKAGES,
        "dropped": LIGHT_DROPPED,
    },
}

# Not built: --disable-test-modules, and CONFIGURE_VARS py_cv_module__tkinter=n/a, py_cv_module_nis=n/a.
NOT_BUILT = re.compile(r"^(_test\w*|_xxtestfuzz|_ctypes_test|xxlimited\w*|xxsubtype|_tkinter|nis)\.")

ELF_MAGIC = b"\x7fELF"
BLOCK = 4096


def stdlib_files(libdest, makefile):
    """Paths (relative to libdest) that `make install` puts there, without the test modules."""
    files = [n for n in os.listdir(libdest)
             if os.path.isfile(os.path.join(libdest, n)) and (n.endswith(".py") or n == "LICENSE.txt")]
    for d in lib_subdirs(makefile):
        full = os.path.join(libdest, d)
        if not os.path.isdir(full):
            continue
        for n in os.listdir(full):
            p = os.path.join(full, n)
            if not os.path.isfile(p) or n.endswith((".pyc", ".pyo", ".orig", "~")):
                continue
            if d == "site-packages" and n != "README.txt":
                continue    # what pip installed here later; the source tree has only README.txt
            files.append(d + "/" + n)
    dynload = os.path.join(libdest, "lib-dynload")
    for n in os.listdir(dynload):
        if n.endswith(".so") and not NOT_BUILT.match(n):
            files.append("lib-dynload/" + n)
    return sorted(files)


def lib_subdirs(makefile):
    """LIBSUBDIRS of CPython's Makefile, with $(XMLLIBSUBDIRS) and friends expanded."""
    with open(makefile) as f:
        text = f.read().replace("\\\n", " ")
    variables = dict(re.findall(r"^(\w+)\s*=\s*(.*)$", text, re.M))
    out = []

    def expand(name):
        for word in variables.get(name, "").split():
            m = re.match(r"^\$\((\w+)\)$", word)
            if m:
                expand(m.group(1))
            else:
                out.append(word)
    expand("LIBSUBDIRS")
    if not out:
        raise SystemExit("no LIBSUBDIRS in %s" % makefile)
    return out


def matches(path, pattern):
    parts = path.split("/")
    return any(fnmatch.fnmatchcase("/".join(parts[:i]), pattern) for i in range(1, len(parts) + 1))


def package_of(path, rules):
    if any(matches(path, p) for p in rules["base"]):
        return "python3-base"
    for name, patterns in sorted(rules["split"].items()):
        if any(matches(path, p) for p in patterns):
            return name
    if any(matches(path, p) for p in rules["dropped"]):
        return None
    return "python3-light"


def compressed(data):
    whole = len(zlib.compress(data, 9))
    blocks = 0
    for i in range(0, len(data), BLOCK):
        chunk = data[i:i + BLOCK]
        blocks += min(len(chunk), len(zlib.compress(chunk, 9)))     # stored raw when it does not shrink
    return min(whole, len(data)), blocks


class Totals:
    def __init__(self):
        self.files = 0
        self.installed = 0
        self.zfile = 0
        self.zblock = 0
        self.elf = 0
        self.elf_zblock = 0

    def add(self, data, elf=False):
        zf, zb = compressed(data)
        self.files += 1
        self.installed += len(data)
        self.zfile += zf
        self.zblock += zb
        if elf:
            self.elf += len(data)
            self.elf_zblock += zb

    def merge(self, other):
        for k in ("files", "installed", "zfile", "zblock", "elf", "elf_zblock"):
            setattr(self, k, getattr(self, k) + getattr(other, k))

    def as_dict(self):
        return {"files": self.files, "installed_bytes": self.installed, "zlib_file_bytes": self.zfile,
                "zlib_4k_bytes": self.zblock, "elf_bytes": self.elf, "elf_zlib_4k_bytes": self.elf_zblock}


def stripped(path, tmp):
    out = os.path.join(tmp, "elf")
    shutil.copyfile(path, out)
    strip = shutil.which("strip")
    if not strip:
        raise SystemExit("strip (binutils) is needed: the installed ELF files carry debug info")
    subprocess.run([strip, "--strip-all", out], check=True)
    with open(out, "rb") as f:
        return f.read()


def pyc(src, rel, version, tmp):
    """The sourceless .pyc `compileall -b -d /` writes, or None when it does not compile."""
    out = os.path.join(tmp, "x.pyc")
    try:
        py_compile.compile(src, cfile=out, dfile="/usr/lib/python%s/%s" % (version, rel), doraise=True,
                           optimize=0, invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP)
    except py_compile.PyCompileError:
        return None
    with open(out, "rb") as f:
        return f.read()


def measure(verbose=False):
    version = "%d.%d" % sys.version_info[:2]
    rules = RULES.get(sys.version_info[:2])
    if rules is None:
        raise SystemExit("rules are known for Python %s only, this is %s" % (
            " and ".join("%d.%d" % v for v in sorted(RULES)), version))
    libdest = sysconfig.get_path("stdlib")
    makefile = sysconfig.get_makefile_filename()
    libdir = sysconfig.get_config_var("LIBDIR")
    soname = sysconfig.get_config_var("INSTSONAME")
    binary = os.path.join(sysconfig.get_config_var("BINDIR"), "python" + version)
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        raise SystemExit("this CPython is not built with --enable-shared: no libpython to measure")
    pkgs = {}
    failed = []

    def total(name):
        return pkgs.setdefault(name, Totals())

    with tempfile.TemporaryDirectory(prefix="python-footprint-") as tmp:
        total("libpython3").add(stripped(os.path.join(libdir, soname), tmp), elf=True)
        total("python3-base").add(stripped(binary, tmp), elf=True)
        for rel in stdlib_files(libdest, makefile):
            name = package_of(rel, rules)
            if name is None:
                continue
            src = os.path.join(libdest, rel)
            if rel.endswith(".py"):
                data = pyc(src, rel, version, tmp)
                if data is None:
                    failed.append(rel)
                    continue
                total(name).add(data)
            else:
                with open(src, "rb") as f:
                    head = f.read(4)
                if head == ELF_MAGIC:
                    total(name).add(stripped(src, tmp), elf=True)
                else:
                    with open(src, "rb") as f:
                        total(name).add(f.read())
            if verbose:
                print("%-24s %s" % (name, rel), file=sys.stderr)
    return {"release": rules["release"], "python": sys.version.split()[0], "prefix": sys.base_prefix,
            "machine": os.uname().machine, "packages": pkgs, "not_compiled": failed}


def ours():
    """The files of our .ipk packages (tools/mkipk.py into a temporary directory)."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="python-footprint-ipk-") as tmp:
        subprocess.run([sys.executable, os.path.join(HERE, "mkipk.py"), "--out", tmp],
                       check=True, capture_output=True, timeout=300)
        for name in sorted(os.listdir(tmp)):
            if not name.endswith(".ipk"):
                continue
            t = Totals()
            with tarfile.open(os.path.join(tmp, name), "r:gz") as outer:
                data = outer.extractfile("./data.tar.gz").read()
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as inner:
                for m in inner.getmembers():
                    if m.isfile():
                        t.add(inner.extractfile(m).read())
            out[name.split("_")[0]] = t
    return out


def imports_outside_light(rules):
    """Standard-library modules that rpcd/wormhole imports and python3-light does not hold."""
    libdest = sysconfig.get_path("stdlib")
    names = set()
    for root, _dirs, files in os.walk(os.path.join(REPO, "rpcd")):
        for n in files:
            p = os.path.join(root, n)
            with open(p, "rb") as f:
                head = f.read(64)
            if not (n.endswith(".py") or head.startswith(b"#!") and b"python" in head.split(b"\n")[0]):
                continue
            with open(p, "rb") as f:
                tree = ast.parse(f.read(), p)
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names.update(a.name.split(".")[0] for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    names.add(node.module.split(".")[0])
    outside = {}
    for mod in sorted(names & set(sys.stdlib_module_names)):
        if mod in sys.builtin_module_names:
            continue
        for rel in (mod + ".py", mod + "/__init__.py"):
            if os.path.exists(os.path.join(libdest, rel)):
                break
        else:
            so = [n for n in os.listdir(os.path.join(libdest, "lib-dynload")) if n.split(".")[0] == mod]
            rel = "lib-dynload/" + so[0] if so else None
        pkg = package_of(rel, rules) if rel else "?"
        if pkg not in ("python3-base", "python3-light"):
            outside[mod] = pkg
    return outside


def kb(n):
    return "%.1f kB" % (n / 1000.0)


def report(result, our):
    p = result["packages"]
    print("Estimate for %s, measured with CPython %s (%s) on %s" % (
        result["release"], result["python"], result["prefix"], result["machine"]))
    print("C parts (ELF) are this machine's %s code, stripped; a router's MIPS/ARM build differs.\n" % result["machine"])
    rows = []
    stack = Totals()
    for name in ("libpython3", "python3-base", "python3-light"):
        rows.append((name, p[name]))
        stack.merge(p[name])
    rows.append(("= python3-light with its python deps", stack))
    if our:
        mine = Totals()
        for name, t in our.items():
            rows.append((name + " (ours, .ipk files)", t))
            mine.merge(t)
        everything = Totals()
        everything.merge(stack)
        everything.merge(mine)
        rows.append(("= total", everything))
    print("%-40s %6s %11s %11s %11s %11s" % ("package", "files", "installed", "of it ELF", "zlib/file", "zlib/4k"))
    for name, t in rows:
        print("%-40s %6d %11s %11s %11s %11s" % (name, t.files, kb(t.installed), kb(t.elf), kb(t.zfile), kb(t.zblock)))
    print("\nOf python3-light with its python deps: bytecode and data (the same on a router) %s installed, %s zlib/4k;"
          % (kb(stack.installed - stack.elf), kb(stack.zblock - stack.elf_zblock)))
    print("C (%s, differs on a router) %s installed, %s zlib/4k." % (result["machine"], kb(stack.elf), kb(stack.elf_zblock)))
    print("\nSplit off (not pulled by python3-light), for reference:")
    for name in sorted(p):
        if name not in ("libpython3", "python3-base", "python3-light"):
            t = p[name]
            print("  %-30s %11s installed, %11s zlib/4k" % (name, kb(t.installed), kb(t.zblock)))
    if result["not_compiled"]:
        print("\nDid not compile (left out, as compileall leaves them out): %s" % ", ".join(result["not_compiled"]))
    outside = result.get("imports_outside_light")
    if outside is not None:
        print("\nStandard-library imports of rpcd/ outside python3-base/-light: %s" % (
            ", ".join("%s (%s)" % kv for kv in sorted(outside.items())) or "none"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ours", action="store_true", help="also build and measure our .ipk packages (tools/mkipk.py)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--verbose", action="store_true", help="list each file and its package on stderr")
    args = ap.parse_args(argv)
    result = measure(args.verbose)
    result["imports_outside_light"] = imports_outside_light(RULES[sys.version_info[:2]])
    our = ours() if args.ours else {}
    if args.json:
        doc = dict(result, packages={k: v.as_dict() for k, v in result["packages"].items()},
                   ours={k: v.as_dict() for k, v in our.items()})
        json.dump(doc, sys.stdout, indent=1, sort_keys=True)
        print()
    else:
        report(result, our)
    return 0


if __name__ == "__main__":
    sys.exit(main())
