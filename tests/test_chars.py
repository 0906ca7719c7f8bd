"""chars.only says exactly what a per-character class test says, on any text."""

from hypothesis import given, settings
from hypothesis import strategies as st

from wormhole import chars

CLASSES = (chars.DIGITS, chars.HEX, chars.WORD, chars.IFNAME, chars.TYPE)
TEXT = st.text(alphabet=st.sampled_from(chars.IFNAME + " \n\t\x00:/é\u00b9") | st.characters(), max_size=20)


@settings(max_examples=2000, deadline=None, derandomize=True)
@given(TEXT, st.sampled_from(CLASSES), st.integers(0, 3), st.none() | st.integers(0, 20))
def test_only_is_a_character_class_test(text, cls, lo, hi):
    expected = lo <= len(text) and (hi is None or len(text) <= hi) and all(c in set(cls) for c in text)
    assert chars.only(text, cls, lo, hi) == expected


def test_only_refuses_what_regexes_let_through():
    assert not chars.only("wan0\n", chars.IFNAME)
    assert not chars.only("\u00b9\u2074", chars.DIGITS)     # str.isdigit() says yes
    assert not chars.only(None, chars.WORD) and not chars.only("", chars.WORD)
    assert chars.only("", chars.WORD, lo=0)


def _quote_by_character(text):
    """render.common.quote as the loop it is for text that needs work."""
    out, size = [], 0
    for ch in str(text):
        ch = "'" if ch == '"' else "/" if ch == "\\" else ch if ch.isprintable() else " "
        n = len(ch.encode("utf-8"))
        if size + n > 128:
            break
        out.append(ch)
        size += n
    return '"' + "".join(out) + '"'


@settings(max_examples=2000, deadline=None, derandomize=True)
@given(st.text(alphabet=st.sampled_from('ab"\\\n\x00é€😀 ') | st.characters(), max_size=140))
def test_quote_fast_path_says_what_the_loop_says(text):
    from wormhole.render.common import quote
    assert quote(text) == _quote_by_character(text)
