"""Allow-list checks of identifiers, without the `re` module.

`re` (and `enum` under it) is a quarter of the start-up of a LuCI poll of the plugin; the
identifiers wormhole accepts are plain character classes, so a set lookup per character
says the same, and is as strict: nothing outside the class, not even a final newline
(a regex with `$` let "wan0\n" through as a device name, and it broke the quoted rule
text it was put in: issue 9).
"""

DIGITS = frozenset("0123456789")
HEX = frozenset("0123456789abcdef")
WORD = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
IFNAME = WORD | frozenset(".-")
TYPE = WORD | frozenset("-")


def only(text, allowed, lo=1, hi=None):
    """Whether `text` has lo..hi characters, all from `allowed`."""
    return isinstance(text, str) and lo <= len(text) and (hi is None or len(text) <= hi) \
        and all(c in allowed for c in text)


def digit_prefix(text):
    """The leading ASCII digits of `text` ('' when none)."""
    i = 0
    while i < len(text) and text[i] in DIGITS:
        i += 1
    return text[:i]
