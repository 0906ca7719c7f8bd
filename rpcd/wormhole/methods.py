"""The ubus method table: signatures for rpcd's `list` verb and the arguments each accepts.

Deliberately import-free: rpcd runs `wormhole list` synchronously at start-up with no
timeout, so this module must load in microseconds.

Signature examples double as rpcd type hints: a string example is a string, true a
boolean, [] an array. Integer examples are avoided: rpcd reads 8, 16 and 64 as int8,
int16 and int64, and ports here are strings anyway ("443", "8000-8010").
"""

ENTRY_OPTIONS = {
    "exemption": ("proto", "port", "label", "interface", "family", "open", "enabled"),
    "redirect": ("label", "proto", "src", "src_dport", "src_dip", "src_ip", "dest_ip", "dest_port",
                 "snat", "mss", "reply", "enabled"),
}

# Per option: the JSON types accepted from callers ("str", "int", "bool", "list").
ARG_TYPES = {
    "type": ("str",), "id": ("str",),
    "proto": ("str",), "port": ("str", "int"), "label": ("str",), "interface": ("str",),
    "family": ("str",), "open": ("bool", "str", "int"), "enabled": ("bool", "str", "int"),
    "src": ("str",), "src_dport": ("str", "int"), "src_dip": ("str",), "src_ip": ("list", "str"),
    "dest_ip": ("str",), "dest_port": ("str", "int"), "snat": ("bool", "str", "int"),
    "mss": ("str", "int"), "reply": ("bool", "str", "int"), "backend": ("str",),
}

_EXAMPLE = {"str": "", "bool": True, "list": []}


def _signature(names):
    return {n: _EXAMPLE[ARG_TYPES[n][0]] if ARG_TYPES[n][0] != "int" else "" for n in names}


_ALL_ENTRY = ("type",) + tuple(dict.fromkeys(ENTRY_OPTIONS["exemption"] + ENTRY_OPTIONS["redirect"]))

METHODS = {
    "list": (),
    "status": (),
    "add": _ALL_ENTRY,
    "update": ("id",) + _ALL_ENTRY[1:],
    "del": ("id", "type", "proto", "port", "interface"),
    "apply": (),
    "render": ("backend",),
    "check": (),
}

WRITE_METHODS = ("add", "update", "del", "apply")
READ_METHODS = ("list", "status", "render", "check")


def signatures():
    """What `wormhole list` prints: {method: {argument: example}}."""
    return {name: _signature(args) for name, args in METHODS.items()}
