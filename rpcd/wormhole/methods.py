"""The ubus method table: which arguments each method takes, their JSON types, rpcd signatures.

Deliberately import-free: rpcd runs `wormhole list` synchronously at start-up with no
timeout, once per boot and per rpcd restart, so this module must load in microseconds.

How rpcd uses the signatures (rpcd plugin.c, libubus, checked against their sources):
- `list` output is turned into one blobmsg policy per method; each example value only
  gives a type: a string example is STRING, true is BOOL, [] is ARRAY, {} is TABLE, and
  an integer is INT32 - except 8, 16 and 64, which rpcd reads as INT8, INT16 and INT64.
- Nothing enforces those policies for exec plugins: libubus hands the request to rpcd's
  handler without parsing it against the policy, and rpcd passes it on as JSON
  (`blobmsg_format_json`). `ubus call wormhole add '{"port":443}'` therefore reaches us
  with an integer although the signature says string. The types show up only in
  `ubus -v list wormhole`, so they are documentation, and validation is ours
  (`ARG_TYPES`, checked in api.check_args).
- So every example is the type callers should send, never an integer: ports are strings
  ("443", "8000-8010") that we also accept as integers; booleans are true/false that we
  also accept as "1"/"0" or 1/0 (UCI habits); lists are arrays that we also accept as
  one space-separated string (UCI habit).
"""

ENTRY_OPTIONS = {
    "exemption": ("proto", "port", "label", "interface", "family", "src_ip", "open", "enabled"),
    "redirect": ("label", "proto", "src", "src_dport", "src_dip", "src_ip", "dest_ip", "dest_port",
                 "snat", "mss", "reply", "reflection", "enabled"),
}

# JSON types, named as JSON names them; the first one accepted is the signature type.
STRING, INTEGER, BOOLEAN, ARRAY = "string", "integer", "boolean", "array"
_FLAG = (BOOLEAN, STRING, INTEGER)
_PORT = (STRING, INTEGER)

# Per argument: the JSON types accepted from callers, preferred first.
ARG_TYPES = {
    "type": (STRING,), "id": (STRING,), "backend": (STRING,),
    "proto": (STRING,), "port": _PORT, "label": (STRING,), "interface": (STRING,),
    "family": (STRING,), "open": _FLAG, "enabled": _FLAG,
    "src": (STRING,), "src_dport": _PORT, "src_dip": (STRING,), "src_ip": (ARRAY, STRING),
    "dest_ip": (STRING,), "dest_port": _PORT, "snat": _FLAG,
    "mss": _PORT, "reply": _FLAG, "reflection": _FLAG,
    "mark_mask": (STRING,), "priority": _PORT, "table_base": _PORT, "fwmark_accept": _FLAG,
    "unless_stopped": _FLAG, "status": _FLAG,
}

MAIN_OPTIONS = ("enabled", "backend", "mark_mask", "priority", "table_base", "fwmark_accept")

# The rpcd type hint per JSON type. No integer here on purpose (see the module docstring).
_EXAMPLE = {STRING: "", BOOLEAN: True, ARRAY: []}

_ALL_ENTRY = ("type",) + tuple(dict.fromkeys(ENTRY_OPTIONS["exemption"] + ENTRY_OPTIONS["redirect"]))

# method -> the arguments it accepts (besides rpcd's ubus_rpc_session, which is ignored).
METHODS = {
    "list": ("status",),
    "status": (),
    "add": _ALL_ENTRY,
    "update": ("id",) + _ALL_ENTRY,
    "del": ("id", "type", "proto", "port", "interface", "src_dport", "src"),
    "settings": MAIN_OPTIONS,
    "apply": ("unless_stopped",),
    "render": ("backend",),
    "check": (),
}

# The ACL grants follow these two lists (tests/test_acl.py): every method is in exactly one.
WRITE_METHODS = ("add", "update", "del", "settings", "apply")
READ_METHODS = ("list", "status", "render", "check")


def signatures():
    """What `wormhole list` prints: {method: {argument: example}}."""
    return {name: {arg: _EXAMPLE[ARG_TYPES[arg][0]] for arg in args} for name, args in METHODS.items()}


def signatures_json():
    """`signatures()` as JSON text, without `import json`: that import alone costs 8 ms on a
    desktop CPU (it pulls in re), many times that on a router's, and rpcd waits for it."""
    out = []
    for method, args in signatures().items():
        fields = ",".join('"%s":%s' % (_name(arg), _literal(example)) for arg, example in args.items())
        out.append('"%s":{%s}' % (_name(method), fields))
    return "{%s}" % ",".join(out)


def _name(text):
    # Method and argument names are identifiers: nothing to escape, and we make sure of it.
    if not text or not all(c.isascii() and (c.isalnum() or c == "_") for c in text):
        raise ValueError("not an identifier: %r" % text)
    return text


def _literal(value):
    for example, text in ((True, "true"), ("", '""'), ([], "[]")):
        if value == example and type(value) is type(example):
            return text
    raise ValueError("no JSON literal for %r" % (value,))
