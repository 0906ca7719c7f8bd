"""UCI access behind one small contract, with two backends.

- `euci` (pyuci, package python3-uci) wherever it imports: the router's own libuci.
- `file` everywhere else: a text-preserving reader/writer of the same file format.

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


def available_backends():
    names = ["file"]
    try:
        __import__("euci")
        names.insert(0, "euci")
    except ImportError:
        pass
    return names


def open_backend(name=None):
    """The backend to use: $WORMHOLE_UCI_BACKEND, else euci when it imports, else file."""
    name = name or os.environ.get("WORMHOLE_UCI_BACKEND") or None
    confdir = paths.under_root(paths.CONFIG_DIR)
    lockdir = paths.under_root(os.path.dirname(paths.LOCK_FILE))
    if name in (None, "euci"):
        try:
            __import__("euci")     # alone first: where it is missing, our adapter is not loaded either
            from .euci_backend import EuciBackend
            return EuciBackend(confdir, lockdir, paths.under_root(paths.UCI_SAVEDIR))
        except ImportError:
            if name == "euci":
                raise
    from .filebackend import FileBackend
    return FileBackend(confdir, lockdir)
