"""Allow-list checks of identifiers, without the `re` module.

`re` (and `enum` under it) is a quarter of the start-up of a LuCI poll of the plugin; the
identifiers wormhole accepts are plain character classes, so a class test of every
character says the same, and is as strict: nothing outside the class, not even a final newline
(a regex with `$` let "wan0\n" through as a device name, and it broke the quoted rule
text it was put in: issue 9).
"""

# Classes as strings: str.strip(cls) drops every leading and trailing character of the
# class, in C, so what is left is empty exactly when all of them belong to it (a Python
# loop per character was 40 % of parsing a 1,000-entry config).
DIGITS = "0123456789"
HEX = "0123456789abcdef"
WORD = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_"
IFNAME = WORD + ".-"
TYPE = WORD + "-"


def only(text, allowed, lo=1, hi=None):
    """Whether `text` has lo..hi characters, all from `allowed`."""
    return isinstance(text, str) and lo <= len(text) and (hi is None or len(text) <= hi) \
        and not text.strip(allowed)


def digit_prefix(text):
    """The leading ASCII digits of `text` ('' when none)."""
    i = 0
    while i < len(text) and text[i] in DIGITS:
        i += 1
    return text[:i]
