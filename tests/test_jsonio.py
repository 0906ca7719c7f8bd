"""jsonio must say exactly what the `json` package says, on any value and any text."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wormhole import jsonio

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=30)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(JSON_VALUES)
def test_dumps_and_loads_match_json(value):
    text = json.dumps(value, separators=(",", ":"))
    assert jsonio.dumps(value) == text
    assert jsonio.loads(text) == json.loads(text)
    assert jsonio.loads(" \n" + json.dumps(value, indent=2) + "\t ") == value or value != value


@settings(max_examples=400, deadline=None, derandomize=True)
@given(st.text(max_size=40) | st.sampled_from(['{"a":', '"\\u12"', '"a\x01"', "[1,]", "{} x", "\ufeff{}", "NaN",
                                                 "-Infinity", "01", "1e999", '{"a":1,"a":2}', "[" * 50 + "]" * 50]))
def test_loads_agrees_on_arbitrary_text(text):
    try:
        want = ("ok", json.loads(text))
    except ValueError as e:
        want = ("error", str(e))
    try:
        got = ("ok", jsonio.loads(text))
    except ValueError as e:
        got = ("error", str(e))
    if want[0] == "ok" and isinstance(want[1], float) and want[1] != want[1]:
        assert got[0] == "ok" and got[1] != got[1]        # NaN
    else:
        assert got == want


def test_surrogates_and_non_ascii_are_escaped():
    value = {"label": "é\udcff\u2028", "n": [1, 2.5, None, True]}
    assert jsonio.dumps(value) == json.dumps(value, separators=(",", ":"))
    assert jsonio.dumps(value).isascii()


def test_unserialisable_values_fail_like_json():
    for bad in ({"a": {1, 2}}, [object()]):
        with pytest.raises(TypeError):
            jsonio.dumps(bad)
