"""UCI access behind one small contract, with two backends.

- `euci` (pyuci, package python3-uci) wherever it imports: the router's own libuci.
- `file` everywhere else: a text-preserving reader/writer of the same file format. It is
  not in the router package (a router has python3-uci, which the package depends on):
  where neither imports, every read and write fails with an error that names the package.

Contract (tests/test_uci_contract.py runs it against every importable backend):
    backend.load(package) -> [Section]             ordered as in the file
    with backend.edit(package) as ed:              exclusive lock; committed on clean exit
        ed.sections(); ed.add(type, name, {opt: value}); ed.set(name, {opt: value|None});
        ed.delete(name)
Values are str for `option` and list of str for `list`; None in set() deletes an option.
"""

import os

from .. import paths


class UciError(Exception):
    """The config cannot be read or written (syntax error, missing section, I/O)."""


class Section:
    __slots__ = ("name", "type", "anonymous", "options")

    def __init__(self, name, stype, anonymous, options):
        self.name = name
        self.type = stype
        self.anonymous = anonymous
        self.options = options

    def __repr__(self):
        return "Section(%r, %r, %r)" % (self.name, self.type, self.options)


MISSING = ("python3-uci (pyuci, the `euci` module) is not installed, and this host has no "
           "UCI file backend: install python3-uci (opkg install python3-uci / apk add python3-uci)")


class MissingBackend:
    """What a router without python3-uci gets: a reply that says so, on every read and write."""

    name = "missing"

    def __init__(self, why):
        self.why = why

    def load(self, package):
        raise UciError("%s (%s)" % (MISSING, self.why))

    def edit(self, package):
        return self      # a session that fails on entry, where callers expect backend errors

    def __enter__(self):
        return self.load(None)

    def __exit__(self, et, ev, tb):
        return False


def _importable(module):
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def available_backends():
    names = []
    if _importable("euci"):
        names.append("euci")
    if _importable(__name__ + ".filebackend"):
        names.append("file")
    return names


def open_backend(name=None):
    """The backend to use: $WORMHOLE_UCI_BACKEND, else euci when it imports, else file."""
    name = name or os.environ.get("WORMHOLE_UCI_BACKEND") or None
    confdir = paths.under_root(paths.CONFIG_DIR)
    lockdir = paths.under_root(os.path.dirname(paths.LOCK_FILE))
    why = ""
    if name in (None, "euci"):
        try:
            __import__("euci")     # alone first: where it is missing, our adapter is not loaded either
            from .euci_backend import EuciBackend
            return EuciBackend(confdir, lockdir, paths.under_root(paths.UCI_SAVEDIR))
        except ImportError as e:
            if name == "euci":
                raise
            why = "euci: %s" % e
    try:
        from .filebackend import FileBackend
    except ImportError as e:
        # Only the router package lacks it (openwrt-feed/wormhole/Makefile, WORMHOLE_HOST_ONLY).
        return MissingBackend("; ".join(filter(None, [why, "file backend: %s" % e])))
    return FileBackend(confdir, lockdir)
