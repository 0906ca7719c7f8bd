"""UCI backend on the router's libuci through pyuci's `euci` (package python3-uci).

A private save directory keeps our commits from picking up (or committing) changes
another tool staged in /tmp/.uci. libuci commits atomically; the flock below makes
read-modify-write sessions exclusive against other wormhole writers.
"""

import os

from euci import EUci  # ImportError here selects the file backend
from uci import UciException, UciExceptionNotFound

from .. import chars, fsutil
from . import Section, UciError


def _anonymous(name):
    """libuci names anonymous sections cfgXXYYYY (counter, then a hash of the type)."""
    return name.startswith("cfg") and chars.only(name[3:], chars.HEX, 6)


def _value(v):
    return list(v) if isinstance(v, tuple) else v


class EuciBackend:
    name = "euci"

    def __init__(self, confdir, lockdir, savedir):
        self.confdir = confdir
        self.lockdir = lockdir
        self.savedir = savedir

    def _uci(self):
        os.makedirs(self.savedir, exist_ok=True)
        return EUci(savedir=self.savedir, confdir=self.confdir)

    def load(self, package):
        return _sections(self._uci(), package)

    def edit(self, package):
        """A locked editing session; committed when the `with` block ends without an error."""
        from contextlib import contextmanager   # writers only: a read (a LuCI poll) loads none
        return contextmanager(self._edit)(package)

    def _edit(self, package):
        lock = os.path.join(self.lockdir, "uci-%s.lock" % package)
        with fsutil.FileLock(lock):
            if not os.path.exists(os.path.join(self.confdir, package)):
                fsutil.atomic_write(os.path.join(self.confdir, package), "")
            u = self._uci()
            ed = _Editor(u, package)
            try:
                yield ed
            except BaseException:
                u.revert(package)
                raise
            if ed.changed:
                try:
                    u.commit(package)
                except UciException as e:
                    raise UciError("commit of %s failed: %s" % (package, e)) from None


def _sections(u, package):
    try:
        data = u.get(package)
    except UciExceptionNotFound:
        return []
    except UciException as e:
        raise UciError("cannot read %s: %s" % (package, e)) from None
    out = []
    for name, opts in data.items():
        stype = u.get(package, name)
        options = {k: _value(v) for k, v in opts.items() if not k.startswith(".")}
        out.append(Section(name, stype, _anonymous(name), options))
    return out


class _Editor:
    def __init__(self, u, package):
        self.u = u
        self.package = package
        self.changed = False

    def sections(self):
        return _sections(self.u, self.package)

    def _exists(self, name):
        try:
            self.u.get(self.package, name)
            return True
        except UciExceptionNotFound:
            return False

    def add(self, stype, name, options):
        if self._exists(name):
            raise UciError("section %r already exists" % name)
        self.u.set(self.package, name, stype)
        self.changed = True
        self.set(name, options)

    def set(self, name, changes):
        if not self._exists(name):
            raise UciError("no section %r" % name)
        for opt, value in changes.items():
            if value is None or (not isinstance(value, str) and not value):
                self.u.delete(self.package, name, opt)
            elif isinstance(value, str):
                self.u.set(self.package, name, opt, value)
            else:
                self.u.set(self.package, name, opt, tuple(value))
            self.changed = True

    def delete(self, name):
        if not self._exists(name):
            raise UciError("no section %r" % name)
        self.u.delete(self.package, name)
        self.changed = True
