"""An OpenWrt-like router to install our .ipk files into, for the install/upgrade/remove tests.

`Router` keeps a scratch root and plays opkg's part (unpack, conffiles, the .list, the
order in which maintainer scripts run, from opkg-lede's opkg_install.c / opkg_remove.c).
The maintainer scripts then run as they would on a router, with IPKG_INSTROOT empty:
`run()` executes a command in a private mount namespace inside a scratch network
namespace, where the scratch root is the upper layer of overlay mounts on /etc, /usr,
/run and /tmp. The package's files appear at their real paths (/usr/sbin/wormhole,
/etc/init.d/wormhole, ...) over the host's files, everything written lands in the scratch
root, and the kernel state touched is the scratch namespace's only.

OpenWrt pieces that a Debian host lacks are test doubles from this directory:
/lib/functions.sh (default_postinst / default_prerm), /etc/rc.common (procd flavour),
/etc/init.d/rpcd, uci and logger. They record what they were asked in /tmp/sim-calls.log
and /tmp/sim-logger.log of the scratch root. /sbin/fw4 (or /sbin/fw3) is an empty stub:
its presence is how OpenWrt packages, wormhole included, tell the firewalls apart.

python3-uci (pyuci) has no Debian package, and the router package leaves wormhole's own
UCI file backend out (it depends on python3-uci). The sim's stand-in for python3-uci is
that file backend, copied from the checkout into the sandbox's package directory when
`wormhole` is unpacked, before its scripts run (as the dependency would be installed
first), and recorded in /usr/lib/wormhole-sim/uci-stand-in.list, never in the package's
own file list: `stand_in_files()` says which files are the fixture's.

`Router` plays opkg; tests/openwrt_sim/apk.py plays apk-tools 3 on the same sandbox.
"""

import gzip
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CLEAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
OVERLAID = ("/etc", "/usr", "/run", "/tmp")
INFO = "usr/lib/opkg/info"
# Module files (package-relative) the router package leaves out: openwrt-feed/wormhole/Makefile.
UCI_STAND_IN = ("wormhole/uci/filebackend.py", "wormhole/uci/syntax.py")
STAND_IN_LIST = "/usr/lib/wormhole-sim/uci-stand-in.list"


class SimError(AssertionError):
    pass


def read_ipk(path):
    """({control file name: bytes}, data.tar bytes) of an .ipk (gzip'd tar of three members)."""
    with tarfile.open(path, "r:gz") as outer:
        members = {m.name: outer.extractfile(m).read() for m in outer.getmembers() if m.isfile()}
    control = {}
    with tarfile.open(fileobj=io.BytesIO(members["./control.tar.gz"]), mode="r:gz") as tar:
        for m in tar.getmembers():
            if m.isfile():
                control[m.name[2:]] = tar.extractfile(m).read()
    return control, gzip.decompress(members["./data.tar.gz"])


def control_fields(text):
    fields = {}
    for line in text.decode().splitlines():
        if ":" in line and not line.startswith(" "):
            key, value = line.split(":", 1)
            fields[key] = value.strip()
    return fields


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class Router:
    def __init__(self, netns_name, firewall="fw4", root=None):
        """root: an existing directory to install into (image builds only: no run())."""
        self.ns = netns_name
        # Outside /tmp and the other overlaid trees: an upper layer may not sit inside its lower.
        self.base = Path(tempfile.mkdtemp(prefix="wormhole-sim-", dir="/var/tmp"))
        self.root = Path(root) if root else self.base / "root"
        self.work = self.base / "work"
        self._skeleton(firewall)

    def close(self):
        shutil.rmtree(self.base, ignore_errors=True)

    # --- the scratch root ------------------------------------------------------------

    def _skeleton(self, firewall):
        r = self.root
        for d in ("etc/config", "etc/init.d", "etc/rc.d", INFO, "usr/sbin", "usr/lib", "usr/bin",
                  "run/lock", "tmp", "var"):
            (r / d).mkdir(parents=True, exist_ok=True)
        for d in OVERLAID:
            (self.work / d.strip("/")).mkdir(parents=True)
        # merged /usr, like the host: the same paths work with IPKG_INSTROOT and in run().
        for link, target in (("lib", "usr/lib"), ("sbin", "usr/sbin"), ("bin", "usr/bin"),
                             ("var/run", "../run"), ("var/lock", "../run/lock")):
            if not os.path.lexists(r / link):
                os.symlink(target, r / link)
        for src, dest, mode in (("functions.sh", "usr/lib/functions.sh", 0o644),
                                ("rc.common", "etc/rc.common", 0o755),
                                ("rpcd.init", "etc/init.d/rpcd", 0o755),
                                ("uci", "usr/sbin/uci", 0o755),
                                ("logger", "usr/sbin/logger", 0o755)):
            shutil.copyfile(HERE / src, r / dest)
            os.chmod(r / dest, mode)
        stub = r / "usr/sbin" / firewall
        stub.write_text("#!/bin/sh\nexit 0\n")
        stub.chmod(0o755)
        (r / "etc/config/firewall").write_text("config defaults\n\toption input 'ACCEPT'\n")

    def path(self, device_path):
        """A device path inside the scratch root (following its merged-/usr links)."""
        return self.root / device_path.lstrip("/")

    def install_uci_stand_in(self):
        """The file backend in place of python3-uci: a fixture, not part of any package."""
        listed = []
        for rel in UCI_STAND_IN:
            dest = "/usr/lib/wormhole/" + rel
            self.path(dest).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(REPO / "rpcd" / rel, self.path(dest))
            listed.append(dest)
        self.path(STAND_IN_LIST).parent.mkdir(parents=True, exist_ok=True)
        self.path(STAND_IN_LIST).write_text("".join(f + "\n" for f in listed))

    def stand_in_files(self):
        p = self.path(STAND_IN_LIST)
        return p.read_text().split() if p.exists() else []

    def calls(self):
        p = self.path("/tmp/sim-calls.log")
        return p.read_text().splitlines() if p.exists() else []

    def clear_calls(self):
        self.path("/tmp/sim-calls.log").unlink(missing_ok=True)

    # --- running things as on the router -------------------------------------------------

    def run(self, argv, env=None, check=True, timeout=60, input=None):
        mounts = " && ".join(
            "mount -t overlay overlay -o lowerdir=%s,upperdir=%s,workdir=%s %s"
            % (d, self.root / d.strip("/"), self.work / d.strip("/"), d) for d in OVERLAID)
        full = ["ip", "netns", "exec", self.ns, "unshare", "--mount", "--propagation", "private",
                "sh", "-c", mounts + ' && exec "$@"', "sh"] + list(argv)
        e = {"PATH": CLEAN_PATH, "WORMHOLE_SIM_PYTHONPATH": str(REPO / "rpcd")}
        e.update(env or {})
        p = subprocess.run(full, capture_output=True, text=True, timeout=timeout, env=e, input=input, cwd="/")
        if check and p.returncode != 0:
            raise SimError("%s failed (%d):\n%s%s" % (" ".join(argv), p.returncode, p.stdout, p.stderr))
        return p

    def run_on_host(self, argv, env):
        """As in an image build: on the build host (no sandbox), IPKG_INSTROOT naming the image."""
        e = dict(env, PATH=CLEAN_PATH)
        p = subprocess.run(["ip", "netns", "exec", self.ns] + list(argv), capture_output=True, text=True,
                           timeout=60, env=e, cwd="/")
        if p.returncode != 0:
            raise SimError("%s (image build) failed: %s%s" % (" ".join(argv), p.stdout, p.stderr))
        return p

    def script(self, package, script, *args, upgrade=False):
        """Run a maintainer script the way opkg does: `sh -c '<info>/<pkg>.<script> <args>'`."""
        path = "/%s/%s.%s" % (INFO, package, script)
        if not self.path(path).exists():
            return None
        env = {"PKG_UPGRADE": "1" if upgrade else "0", "PKG_ROOT": "/"}
        return self.run(["sh", path] + list(args), env=env)

    # --- opkg --------------------------------------------------------------------------------

    def installed(self, package):
        p = self.path("/%s/%s.control" % (INFO, package))
        return control_fields(p.read_bytes()) if p.exists() else None

    def install(self, ipk, image=False):
        """opkg install (an upgrade when the package is installed); image=True builds an image:
        files only, and the postinst with IPKG_INSTROOT set, outside the sandbox."""
        control, data = read_ipk(ipk)
        fields = control_fields(control["control"])
        name, version = fields["Package"], fields["Version"]
        old = self.installed(name)
        conffiles = [c for c in control.get("conffiles", b"").decode().split("\n") if c]
        backups = {}
        if old:
            self.script(name, "prerm", "upgrade", version, upgrade=True)
            backups = self._backup_modified_conffiles(name)
            self.script(name, "postrm", "upgrade", version, upgrade=True)
            self._remove_files(name, keep=self._conffiles(name))
        files = self._extract(data)
        if name == "wormhole":
            self.install_uci_stand_in()
        for cf in conffiles:
            self._resolve_conffile(cf, backups.get(cf))
        info = self.path("/" + INFO)
        for old_file in info.glob(name + ".*"):
            old_file.unlink()
        for key, blob in control.items():
            target = info / ("%s.%s" % (name, key))
            target.write_bytes(blob)
            target.chmod(0o755 if key not in ("control", "conffiles") else 0o644)
        (info / ("%s.list" % name)).write_text("".join(f + "\n" for f in files))
        (info / ("%s.conffile-sums" % name)).write_text(
            "".join("%s %s\n" % (cf, self._sum_of_package_copy(data, cf)) for cf in conffiles))
        if image:
            return self.run_on_host(["sh", str(info / ("%s.postinst" % name))], {"IPKG_INSTROOT": str(self.root)})
        return self.script(name, "postinst", "configure", upgrade=bool(old))

    def remove(self, package):
        """opkg remove: prerm, files (modified conffiles stay), postrm, the package's records."""
        self.script(package, "prerm", "remove")
        self._remove_files(package, keep=self._modified_conffiles(package))
        self.script(package, "postrm", "remove")
        for f in self.path("/" + INFO).glob(package + ".*"):
            f.unlink()

    def _extract(self, data):
        """Unpack data.tar into the root; the installed file list, as opkg's .list has it."""
        files = []
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for m in tar.getmembers():
                rel = m.name[2:].rstrip("/")
                if not rel:
                    continue
                target = self.root / rel
                if m.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                target.unlink(missing_ok=True)
                target.write_bytes(tar.extractfile(m).read())
                target.chmod(m.mode)
                files.append("/" + rel)
        return files

    def _sum_of_package_copy(self, data, cf):
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            return hashlib.sha256(tar.extractfile("." + cf).read()).hexdigest()

    def _conffiles(self, package):
        p = self.path("/%s/%s.conffile-sums" % (INFO, package))
        return dict(line.split() for line in p.read_text().splitlines()) if p.exists() else {}

    def _modified_conffiles(self, package):
        return [cf for cf, s in self._conffiles(package).items()
                if self.path(cf).exists() and sha256(self.path(cf)) != s]

    def _backup_modified_conffiles(self, package):
        backups = {}
        for cf in self._modified_conffiles(package):
            backup = self.path(cf + "-opkg.backup")
            shutil.copy2(self.path(cf), backup)
            backups[cf] = backup
        return backups

    def _resolve_conffile(self, cf, backup):
        """opkg's resolve_conffiles: the user's changed file wins, the new default goes to -opkg."""
        if backup is None:
            return
        if sha256(backup) != sha256(self.path(cf)):
            os.replace(self.path(cf), self.path(cf + "-opkg"))
            os.replace(backup, self.path(cf))
        else:
            backup.unlink()

    def _remove_files(self, package, keep=()):
        listed = self.path("/%s/%s.list" % (INFO, package))
        dirs = set()
        for f in listed.read_text().splitlines() if listed.exists() else []:
            if f in keep:
                continue
            self.path(f).unlink(missing_ok=True)
            d = os.path.dirname(f)
            while d not in ("", "/"):
                dirs.add(d)
                d = os.path.dirname(d)
        for d in sorted(dirs, key=len, reverse=True):
            try:
                self.path(d).rmdir()
            except OSError:
                pass
