"""apk-tools 3's part on a simulated router: `apk add` (install or upgrade) and `apk del`.

Read with tests/apkv3.py (the independent reader), never with the writer. The semantics
are apk's (src/database.c apk_db_install_pkg, apk_db_migrate_files_for_priority,
apk_db_purge_pkg; defaults of apk_db_open):
- install: the files, then post-install <version>;
- upgrade: pre-upgrade <new> <old> (if any), the new files, the old package's files that
  the new one lacks removed, then the new package's post-upgrade <new> <old>. The old
  package's pre-deinstall is not run: the old service is not stopped;
- remove: pre-deinstall <version>, the files, post-deinstall <version>;
- files under /etc are protected ("+etc", "@etc/init.d"; "!etc/apk" is not ours): a file
  on disk that differs from what the installed package recorded (or that no package owns)
  is kept, and the package's copy lands beside it as <file>.apk-new, unless the disk copy
  already equals it. Removal keeps a changed protected file (without --purge) and deletes
  its .apk-new;
- scripts run with apk's environment: PATH, APK_SCRIPT and APK_PACKAGE only.
The installed database is the sim's own (lib/apk/db/sim-installed.json), not apk's format.
"""

import hashlib
import json
import os

from tests import apkv3

DB = "/lib/apk/db/sim-installed.json"
APK_NEW = ".apk-new"


def protected(path):
    return path.startswith("/etc/") and not path.startswith("/etc/apk/")


def sha256_of(p):
    with open(p, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class Apk:
    def __init__(self, router):
        self.r = router

    # --- the sim's installed database ------------------------------------------------------

    def _db(self):
        p = self.r.path(DB)
        return json.loads(p.read_text()) if p.exists() else {}

    def _save(self, db):
        p = self.r.path(DB)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(db, indent=1, sort_keys=True))

    def installed(self, name):
        return self._db().get(name)

    # --- apk add / apk del -----------------------------------------------------------------

    def add(self, apk_file, image=False):
        """apk add --allow-untrusted <file>; image=True: as the image builder runs it."""
        pkg = apkv3.read(apk_file)
        name, version = pkg.info["name"], pkg.info["version"]
        db = self._db()
        old = db.get(name)
        if old and "pre-upgrade" in pkg.scripts:
            self._script(pkg.scripts, name, "pre-upgrade", version, old["version"], image=image)
        elif not old and "pre-install" in pkg.scripts:
            self._script(pkg.scripts, name, "pre-install", version, image=image)
        files = pkg.files()
        for d in sorted(pkg.directories()):
            self.r.path(d).mkdir(parents=True, exist_ok=True)
        recorded = old["files"] if old else {}
        for path, f in sorted(files.items()):
            self._commit(path, f, recorded.get(path))
        for path in sorted(set(recorded) - set(files)):
            self._purge(path, recorded[path])
        if name == "wormhole":
            self.r.install_uci_stand_in()
        db[name] = {"version": version, "scripts": pkg.scripts,
                    "files": {p: f.sha256.hex() for p, f in files.items()}}
        self._save(db)
        if old:
            return self._script(pkg.scripts, name, "post-upgrade", version, old["version"], image=image)
        return self._script(pkg.scripts, name, "post-install", version, image=image)

    def delete(self, name, purge=False):
        db = self._db()
        old = db[name]
        self._script(old["scripts"], name, "pre-deinstall", old["version"])
        for path, digest in sorted(old["files"].items()):
            self._purge(path, digest, purge)
        self._script(old["scripts"], name, "post-deinstall", old["version"])
        del db[name]
        self._save(db)

    # --- files ---------------------------------------------------------------------------------

    def _commit(self, path, f, old_digest):
        target = self.r.path(path)
        if protected(path) and os.path.lexists(target) and sha256_of(target) != old_digest:
            if sha256_of(target) == f.sha256.hex():
                return                              # the disk copy is already the package's
            target = self.r.path(path + APK_NEW)
        target.unlink(missing_ok=True)
        target.write_bytes(f.data)
        target.chmod(f.mode)

    def _purge(self, path, digest, purge=False):
        target = self.r.path(path)
        changed = os.path.lexists(target) and sha256_of(target) != digest
        if not (protected(path) and changed and not purge):
            target.unlink(missing_ok=True)
        if protected(path):
            self.r.path(path + APK_NEW).unlink(missing_ok=True)
        d = os.path.dirname(path)
        while d not in ("", "/"):
            try:
                self.r.path(d).rmdir()
            except OSError:
                break
            d = os.path.dirname(d)

    # --- scripts -------------------------------------------------------------------------------

    def _script(self, scripts, name, kind, *args, image=False):
        """apk writes the script out and execs it with argv [script, versions...]."""
        if kind not in scripts:
            return None
        path = "/lib/apk/exec/%s-%s.%s" % (name, args[0], kind)
        p = self.r.path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(scripts[kind])
        p.chmod(0o755)
        env = {"APK_SCRIPT": kind, "APK_PACKAGE": name}
        try:
            if image:
                # The image builder runs apk with --preserve-env and IPKG_INSTROOT set.
                return self.r.run_on_host(["sh", str(p)] + list(args), dict(env, IPKG_INSTROOT=str(self.r.root)))
            return self.r.run(["sh", path] + list(args), env=env)
        finally:
            p.unlink(missing_ok=True)
