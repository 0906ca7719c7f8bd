"""JSON for the plugin's hot path, on the C accelerator the `json` package itself uses.

`import json` costs more than the rest of a `list` call's imports: it pulls in `re` and
with it `enum`, about a third of the interpreter's start-up again, and LuCI polls
`list`/`status` every few seconds. `_json` (part of python3-light) does the real work for
`json` anyway; this module only drives it. Results are identical to
`json.dumps(obj, separators=(",", ":"))` and `json.loads(text)`
(tests/test_jsonio.py checks that property over random values). Anything unusual, and
every decoding error (so the message is json's own, with its position), goes through the
`json` package.
"""

try:
    import _json
except ImportError:     # an interpreter built without the accelerator
    _json = None

_WHITESPACE = " \t\n\r"
_CONSTANTS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


class _Context:
    """The attributes `_json.make_scanner` reads from a json.JSONDecoder."""
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = _CONSTANTS.__getitem__


def _unserialisable(obj):
    raise TypeError("Object of type %s is not JSON serializable" % type(obj).__name__)


_scan = _encode = None
if _json is not None:
    try:
        _scan = _json.make_scanner(_Context())
        _encode = _json.make_encoder(None, _unserialisable, _json.encode_basestring_ascii, None,
                                     ":", ",", False, False, True)
    except (TypeError, AttributeError):   # a signature this module does not know
        _scan = _encode = None


def dumps(obj):
    """Compact JSON text, ASCII only (as `json.dumps(obj, separators=(",", ":"))`)."""
    if _encode is None or not isinstance(obj, (dict, list)):
        import json
        return json.dumps(obj, separators=(",", ":"))
    return "".join(_encode(obj, 0))


def loads(text):
    """The JSON value in `text`, or ValueError (json.JSONDecodeError) as `json.loads` raises."""
    if _scan is not None and isinstance(text, str):
        start = _skip(text, 0)
        try:
            obj, end = _scan(text, start)
        except (StopIteration, SystemError, ValueError):
            pass    # json below says what is wrong, and where
        else:
            if _skip(text, end) == len(text):
                return obj
    import json
    return json.loads(text)


def _skip(text, i):
    n = len(text)
    while i < n and text[i] in _WHITESPACE:
        i += 1
    return i
