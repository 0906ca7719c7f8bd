"""Every string a LuCI user reads is translatable (issue 15): the views pass them through
`_()` as string literals, and luci-app-wormhole/po/templates/wormhole.pot holds each one
(`make i18n` regenerates it; LuCI's build compiles the po/ files next to it)."""

import glob
import os
import re
import subprocess
import sys

import pytest

from tests import support

TOOL = os.path.join(support.REPO, "tools", "i18n.py")
APP = os.path.join(support.REPO, "luci-app-wormhole")
sys.path.insert(0, os.path.join(support.REPO, "tools"))
import i18n  # noqa: E402


def _views():
    return sorted(glob.glob(os.path.join(APP, "htdocs", "**", "*.js"), recursive=True))


def test_the_template_holds_every_string_and_nothing_else():
    p = subprocess.run([sys.executable, TOOL, "--check"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_every_view_string_is_in_the_template():
    with open(i18n.POT, encoding="utf-8") as f:
        pot = f.read()
    ids = set(re.findall(r'^msgid "(.*)"$', pot, re.M))
    strings = [s for path in _views() for s, _line in i18n.js_strings(path)]
    assert len(strings) > 100
    missing = {s for s in strings if i18n._po_quote(s)[1:-1] not in ids}
    assert not missing, missing
    assert "Inbound Services" in ids        # the menu title too


def test_a_translation_call_of_anything_but_a_literal_is_refused(tmp_path):
    view = tmp_path / "v.js"
    view.write_text("var a = _('fine'), b = _(name), c = _('x' + y);\n")
    with pytest.raises(i18n.NotALiteral):
        i18n.js_strings(str(view))
    view.write_text("var a = _('it\\'s'), b = _(\"two\\nlines\"); // _(comment)\n/* _(also) */\n")
    assert [s for s, _l in i18n.js_strings(str(view))] == ["it's", "two\nlines"]


# An English word or phrase as a bare child of E(): shown to users, but not translatable.
BARE_TEXT = re.compile(r"""E\('[a-z0-9]+',\s*\{[^}]*\},\s*\[\s*'([^']*[A-Za-z]{2}[^']*)'""")


@pytest.mark.parametrize("path", _views(), ids=os.path.basename)
def test_no_english_text_goes_into_the_page_untranslated(path):
    with open(path, encoding="utf-8") as f:
        src = f.read()
    assert BARE_TEXT.findall(src) == []
