#!/usr/bin/env python3
"""Write luci-app-wormhole/po/templates/wormhole.pot: every translatable string of the app,
as LuCI's build/i18n-scan.pl collects them: `_('...')` in the JavaScript views and the
`title` of the menu.d entries (LuCI translates menu titles at run time).

Only string literals are collected, so a `_()` of anything else is an error here: a string
the template lacks is a string no translator can see. `--check` exits 1 when the template on
disk is not what this would write (tests/test_i18n.py runs it).

    python3 tools/i18n.py            # regenerate (make i18n)
    python3 tools/i18n.py --check
"""

import argparse
import glob
import json
import os
import re
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = os.path.join(REPO, "luci-app-wormhole")
POT = os.path.join(APP, "po", "templates", "wormhole.pot")

# _( then a quoted literal then ) - nothing else is allowed inside _()
CALL = re.compile(r"\b_\(\s*")
LITERAL = re.compile(r"""('(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")\s*\)""")
ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", "'": "'", '"': '"'}


class NotALiteral(Exception):
    pass


def _unquote(lit):
    body = lit[1:-1]
    return re.sub(r"\\(.)", lambda m: ESCAPES.get(m.group(1), m.group(1)), body)


def _strip_comments(src):
    # keep line numbers: comments become blanks of the same shape
    blank = lambda m: re.sub(r"[^\n]", " ", m.group(0))
    return re.sub(r"/\*.*?\*/|(?<![:'\"\\])//[^\n]*", blank, src, flags=re.S)


def js_strings(path):
    """[(msgid, line)] of a view; raises NotALiteral at a _() of anything but one literal."""
    with open(path, encoding="utf-8") as f:
        src = _strip_comments(f.read())
    out = []
    for m in CALL.finditer(src):
        lit = LITERAL.match(src, m.end())
        line = src.count("\n", 0, m.start()) + 1
        if not lit:
            raise NotALiteral("%s:%d: _() of something other than one string literal" % (path, line))
        out.append((_unquote(lit.group(1)), line))
    return out


def menu_strings(path):
    with open(path, encoding="utf-8") as f:
        menu = json.load(f)
    return [(node["title"], 0) for node in menu.values() if node.get("title")]


def collect():
    """{msgid: [reference]} in first-seen order."""
    found = {}
    files = sorted(glob.glob(os.path.join(APP, "htdocs", "**", "*.js"), recursive=True))
    files += sorted(glob.glob(os.path.join(APP, "root", "usr", "share", "luci", "menu.d", "*.json")))
    for path in files:
        rel = os.path.relpath(path, REPO)
        strings = js_strings(path) if path.endswith(".js") else menu_strings(path)
        for msgid, line in strings:
            refs = found.setdefault(msgid, [])
            if rel not in refs:     # files, not lines: the template changes only with its strings
                refs.append(rel)
    return found


def _po_quote(text):
    return '"%s"' % text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")


def render(found):
    out = ['msgid ""', 'msgstr "Content-Type: text/plain; charset=UTF-8"', ""]
    for msgid in sorted(found):
        out += ["#: %s" % ref for ref in found[msgid]]
        out += ["msgid %s" % _po_quote(msgid), 'msgstr ""', ""]
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 when the template is out of date")
    args = ap.parse_args(argv)
    try:
        text = render(collect())
    except NotALiteral as e:
        print("i18n: %s" % e, file=sys.stderr)
        return 2
    if args.check:
        try:
            with open(POT, encoding="utf-8") as f:
                current = f.read()
        except FileNotFoundError:
            current = None
        if current != text:
            print("i18n: %s is out of date; run `make i18n`" % os.path.relpath(POT, REPO), file=sys.stderr)
            return 1
        return 0
    os.makedirs(os.path.dirname(POT), exist_ok=True)
    with open(POT, "w", encoding="utf-8") as f:
        f.write(text)
    print("i18n: %d strings in %s" % (len(collect()), os.path.relpath(POT, REPO)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
