"""UCI file syntax: tokenize statements, keep their source text, and emit canonical lines.

Written by hand: PyPI's uciparse (0.3.0) is line-oriented (no value spanning lines) and
re-emits the whole file in its own normalised layout, so an edit would rewrite sections
the user never touched; libuci itself is what the euci backend uses where it is installed.
The grammar follows libuci's file.c: `package`, `config TYPE [NAME]`, `option NAME VALUE`,
`list NAME VALUE`;
words may be quoted with '...' (literal) or "..." (backslash escapes) and quoted parts
concatenate; `#` at the start of a word comments out the rest of the line; a quoted
value may span lines.
"""

from .. import chars

# A quoted name may span lines: 'rd_x<newline>' once reached the chain names and broke
# the whole ruleset, so names are checked by chars.only, which refuses it, as libuci's
# uci_validate_name does (issue 9).


class UciSyntaxError(Exception):
    def __init__(self, path, line, message):
        super().__init__("%s:%d: %s" % (path, line, message))
        self.path = path
        self.line = line


class Statement:
    """One logical statement or a run of non-statement text (blank lines, comments)."""

    __slots__ = ("kind", "args", "text", "line")

    def __init__(self, kind, args, text, line):
        self.kind = kind      # 'package' | 'config' | 'option' | 'list' | 'trivia'
        self.args = args      # the statement's words after the keyword
        self.text = text      # exact source text, newline included
        self.line = line      # 1-based line where it starts


# Blanks between words, as libuci's isspace(): '\r' included, so CRLF files read as libuci
# reads them now that the file is read byte-exact (fsutil.read_text).
BLANKS = " \t\r\v\f"


def _read_word(src, i, path, line):
    """Read one word starting at src[i]; return (word, new_index, lines_consumed)."""
    out = []
    n = len(src)
    extra_lines = 0
    while i < n:
        c = src[i]
        if c in BLANKS or c == "\n":
            break
        if c == "'":
            j = src.find("'", i + 1)
            if j < 0:
                raise UciSyntaxError(path, line, "unterminated ' quote")
            piece = src[i + 1:j]
            extra_lines += piece.count("\n")
            out.append(piece)
            i = j + 1
        elif c == '"':
            i += 1
            while True:
                if i >= n:
                    raise UciSyntaxError(path, line, 'unterminated " quote')
                c = src[i]
                if c == '"':
                    i += 1
                    break
                if c == "\\" and i + 1 < n:
                    if src[i + 1] == "\n":
                        extra_lines += 1
                    else:
                        out.append(src[i + 1])
                    i += 2
                    continue
                if c == "\n":
                    extra_lines += 1
                out.append(c)
                i += 1
        elif c == "\\" and i + 1 < n:
            if src[i + 1] == "\n":
                extra_lines += 1
            else:
                out.append(src[i + 1])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out), i, extra_lines


def _read_statement_words(src, i, path, line):
    """Read the words of one line (quoted values may continue it). Returns (words, index, line)."""
    words = []
    n = len(src)
    while i < n:
        c = src[i]
        if c in BLANKS:
            i += 1
            continue
        if c == "\n":
            i += 1
            line += 1
            break
        if c == "#":
            j = src.find("\n", i)
            i = n if j < 0 else j + 1
            line += 1
            break
        word, i, extra = _read_word(src, i, path, line)
        line += extra
        words.append(word)
    else:
        line += 1
    return words, i, line


ARITY = {"package": (1, 1), "config": (1, 2), "option": (2, 2), "list": (2, 2)}


def parse(src, path="<config>"):
    """Split UCI source into statements; concatenating their .text gives back src exactly."""
    stmts = []
    i, line, n = 0, 1, len(src)
    trivia_start, trivia_line = None, None
    while i < n:
        start, start_line = i, line
        words, i, line = _read_statement_words(src, i, path, line)
        if not words:
            if trivia_start is None:
                trivia_start, trivia_line = start, start_line
            continue
        if trivia_start is not None:
            stmts.append(Statement("trivia", [], src[trivia_start:start], trivia_line))
            trivia_start = None
        keyword, args = words[0], words[1:]
        if keyword not in ARITY:
            raise UciSyntaxError(path, start_line, "unknown statement %r" % keyword)
        lo, hi = ARITY[keyword]
        if not lo <= len(args) <= hi:
            raise UciSyntaxError(path, start_line, "%s takes %d to %d arguments" % (keyword, lo, hi))
        _check_names(keyword, args, path, start_line)
        stmts.append(Statement(keyword, args, src[start:i], start_line))
    if trivia_start is not None:
        stmts.append(Statement("trivia", [], src[trivia_start:], trivia_line))
    return stmts


def _check_names(keyword, args, path, line):
    if keyword == "config":
        if not chars.only(args[0], chars.TYPE):
            raise UciSyntaxError(path, line, "invalid section type %r" % args[0])
        if len(args) == 2 and not chars.only(args[1], chars.WORD):
            raise UciSyntaxError(path, line, "invalid section name %r" % args[1])
    elif keyword in ("option", "list") and not chars.only(args[0], chars.WORD):
        raise UciSyntaxError(path, line, "invalid option name %r" % args[0])


def quote(value):
    """Quote a value the way `uci export` does: single quotes, ' written as '\\''."""
    return "'" + value.replace("'", "'\\''") + "'"


def config_line(stype, name):
    return "config %s %s\n" % (stype, quote(name)) if name else "config %s\n" % stype


def option_line(name, value):
    return "\toption %s %s\n" % (name, quote(value))


def list_line(name, value):
    return "\tlist %s %s\n" % (name, quote(value))


def djbhash(h, text):
    """libuci's hash for anonymous section names (list.c), bytes taken as signed chars."""
    if h == 0xFFFFFFFF:
        h = 5381
    for b in text.encode("utf-8"):
        if b > 127:
            b -= 256
        h = (h * 33 + b) & 0xFFFFFFFF
    return h & 0x7FFFFFFF


def anonymous_name(index, stype):
    """The name libuci gives the index-th (1-based) anonymous section of a loaded file."""
    return "cfg%02x%04x" % (index, djbhash(0xFFFFFFFF, stype) % 0x10000)
