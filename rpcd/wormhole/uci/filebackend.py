"""UCI backend for hosts without libuci: edits /etc/config files in place, text-preserving.

Sections the caller does not touch keep their exact bytes (comments, quoting, order).
An edited section keeps its unchanged option lines and its comments; changed options
are rewritten in the canonical `uci export` form. Writes take an exclusive flock and
replace the file atomically.
"""

import os

from .. import chars, fsutil
from . import Section, UciError
from .syntax import (
    Statement, UciSyntaxError, anonymous_name, config_line, list_line,
    option_line, parse, quote,
)


class _Block:
    """A section in the document: comment lines directly above it, its header and its body."""

    __slots__ = ("lead", "head", "body", "stype", "name", "anonymous")

    def __init__(self, head, lead, name, anonymous):
        self.head = head
        self.lead = lead
        self.body = []
        self.stype = head.args[0]
        self.name = name
        self.anonymous = anonymous

    def text(self):
        return "".join(s.text for s in self.lead) + self.head.text + "".join(s.text for s in self.body)

    def options(self):
        opts = {}
        for st in self.body:
            if st.kind == "option":
                opts[st.args[0]] = st.args[1]
            elif st.kind == "list":
                prev = opts.get(st.args[0])
                opts[st.args[0]] = (prev if isinstance(prev, list) else []) + [st.args[1]]
        return opts


def _split_trivia(st):
    """Cut trivia before a section into (stays with what is above, belongs to the section)."""
    lines = st.text.splitlines(keepends=True)
    k = len(lines)
    while k > 0 and lines[k - 1].strip() != "":
        k -= 1
    above, below = "".join(lines[:k]), "".join(lines[k:])
    mk = lambda text: [Statement("trivia", [], text, st.line)] if text else []
    return mk(above), mk(below)


class Document:
    """A parsed config file whose text() reproduces the source until something is edited."""

    def __init__(self, src, path):
        self.path = path
        self.header = []
        self.blocks = []
        anon = 0
        pending = None
        for st in parse(src, path):
            if st.kind == "config":
                lead = []
                if pending is not None:
                    above, lead = _split_trivia(pending)
                    self._tail().extend(above)
                    pending = None
                if len(st.args) == 2:
                    name, anonymous = st.args[1], False
                else:
                    anon += 1
                    name, anonymous = anonymous_name(anon, st.args[0]), True
                self.blocks.append(_Block(st, lead, name, anonymous))
                continue
            if pending is not None:
                self._tail().append(pending)
                pending = None
            if st.kind == "trivia":
                pending = st
            elif st.kind == "package" or not self.blocks:
                if st.kind != "package":
                    raise UciSyntaxError(path, st.line, "%s outside of a section" % st.kind)
                self._tail().append(st)
            else:
                self.blocks[-1].body.append(st)
        if pending is not None:
            self._tail().append(pending)

    def _tail(self):
        return self.blocks[-1].body if self.blocks else self.header

    def text(self):
        return "".join(s.text for s in self.header) + "".join(b.text() for b in self.blocks)

    def sections(self):
        merged = {}
        order = []
        for b in self.blocks:
            if b.name not in merged:
                merged[b.name] = Section(b.name, b.stype, b.anonymous, {})
                order.append(b.name)
            sec = merged[b.name]
            sec.type = b.stype
            sec.options.update(b.options())
        return [merged[n] for n in order]

    def find(self, name):
        return [b for b in self.blocks if b.name == name]

    def add(self, stype, name, options):
        if self.find(name):
            raise UciError("section %r already exists" % name)
        text = self.text()
        lead = []
        if text and not text.endswith("\n"):
            self._tail().append(Statement("trivia", [], "\n", 0))
        if text.strip():
            lead = [Statement("trivia", [], "\n", 0)]
        head = Statement("config", [stype, name], config_line(stype, name), 0)
        block = _Block(head, lead, name, False)
        self.blocks.append(block)
        _set_options(block, options)

    def set(self, name, changes):
        blocks = self.find(name)
        if not blocks:
            raise UciError("no section %r" % name)
        _set_options(blocks[0], changes)
        for extra in blocks[1:]:
            extra.body = [st for st in extra.body if st.kind not in ("option", "list") or st.args[0] not in changes]

    def delete(self, name):
        """Drop a section with the comments directly above it. Comments trailing its body
        (separated from the next section by a blank line) are kept: they may be about
        what follows, and nothing a user wrote is dropped on a guess."""
        if not self.find(name):
            raise UciError("no section %r" % name)
        kept = []
        for b in self.blocks:
            if b.name != name:
                kept.append(b)
                continue
            tail = "".join(st.text for st in b.body[_insert_position(b):])
            if tail.strip():
                dest = kept[-1].body if kept else self.header
                before = "".join(st.text for st in dest)
                if before.endswith("\n\n") or before == "\n" or not before:
                    tail = tail.lstrip("\n")
                dest.append(Statement("trivia", [], tail, 0))
        self.blocks = kept


def _set_options(block, changes):
    """Apply {option: str | list | None} to a block, keeping lines whose value is unchanged."""
    for opt, value in changes.items():
        if not chars.only(opt, chars.WORD):
            raise UciError("invalid option name %r" % opt)
        idx = [i for i, st in enumerate(block.body) if st.kind in ("option", "list") and st.args[0] == opt]
        if _unchanged(block, idx, value):
            continue
        pos = idx[0] if idx else _insert_position(block)
        for i in reversed(idx):
            del block.body[i]
        block.body[pos:pos] = _statements_for(opt, value)


def _unchanged(block, idx, value):
    current = [block.body[i] for i in idx]
    if value is None:
        return not current
    if isinstance(value, str):
        return len(current) == 1 and current[0].kind == "option" and current[0].args[1] == value
    return [s.kind for s in current] == ["list"] * len(value) and [s.args[1] for s in current] == list(value) and bool(value)


def _statements_for(opt, value):
    if value is None:
        return []
    if isinstance(value, str):
        return [Statement("option", [opt, value], option_line(opt, value), 0)]
    return [Statement("list", [opt, v], list_line(opt, v), 0) for v in value]


def _insert_position(block):
    """After the last option/list line, so trailing blank lines and comments stay last."""
    last = -1
    for i, st in enumerate(block.body):
        if st.kind in ("option", "list"):
            last = i
    return last + 1


class FileBackend:
    name = "file"

    def __init__(self, confdir, lockdir):
        self.confdir = confdir
        self.lockdir = lockdir

    def path(self, package):
        return os.path.join(self.confdir, package)

    def _document(self, package):
        src = fsutil.read_text(self.path(package), default="")
        try:
            return Document(src, self.path(package))
        except UciSyntaxError as e:
            raise UciError(str(e)) from None

    def load(self, package):
        return self._document(package).sections()

    def edit(self, package):
        """A locked editing session; committed when the `with` block ends without an error."""
        from contextlib import contextmanager   # writers only: a read (a LuCI poll) loads none
        return contextmanager(self._edit)(package)

    def _edit(self, package):
        lock = os.path.join(self.lockdir, "uci-%s.lock" % package)
        with fsutil.FileLock(lock):
            doc = self._document(package)
            before = doc.text()
            yield _Editor(doc)
            after = doc.text()
            if after != before:
                mode = _mode_of(self.path(package))
                fsutil.atomic_write(self.path(package), after, mode)


def _mode_of(path):
    try:
        return os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        return 0o644


class _Editor:
    """The write side handed out by edit(): reads reflect earlier edits in the same session."""

    def __init__(self, doc):
        self._doc = doc

    def sections(self):
        return self._doc.sections()

    def add(self, stype, name, options):
        self._doc.add(stype, name, options)

    def set(self, name, changes):
        self._doc.set(name, changes)

    def delete(self, name):
        self._doc.delete(name)


__all__ = ["FileBackend", "Document", "quote"]
