"""Arguments as callers send them, checked and turned into UCI text before any method runs."""

from .. import methods, schema
from ..errors import invalid

IGNORED_ARGS = ("ubus_rpc_session",)


def _json_type(v):
    """The JSON name of a decoded value's type, as methods.ARG_TYPES spells them."""
    for t, name in ((bool, methods.BOOLEAN), (int, methods.INTEGER), (str, methods.STRING),
                    (list, methods.ARRAY), (float, "number"), (dict, "object")):
        if isinstance(v, t):
            return name
    return "null" if v is None else type(v).__name__


def check_args(method, args):
    """Drop rpcd's session, reject unknown or mistyped arguments, normalise to UCI text."""
    allowed = methods.METHODS[method]
    out = {}
    for name, value in args.items():
        if name in IGNORED_ARGS:
            continue
        if name not in allowed:
            raise invalid(name, "unknown argument for %s" % method)
        kind = _json_type(value)
        if kind not in methods.ARG_TYPES[name]:
            raise invalid(name, "must be %s, not %s" % (" or ".join(methods.ARG_TYPES[name]), kind))
        out[name] = _to_text(name, value)
    return out


def _to_text(name, value):
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise invalid(name, "item %d must be a string, not %s" % (i, _json_type(item)))
            if "\x00" in item:
                raise invalid(name, "item %d contains a NUL character" % i)
        return list(value)
    if "\x00" in value:
        raise invalid(name, "contains a NUL character")
    return value


def entry_type(args):
    """The entry type named by `type` (removed from args), exemption when absent."""
    stype = args.pop("type", "exemption")
    if stype not in schema.ENTRY_TYPES:
        raise invalid("type", "%s is not one of %s" % (schema.shown(stype), ", ".join(schema.ENTRY_TYPES)))
    return schema.ENTRY_TYPES[stype]


def only_options_of(kind, args):
    for name in args:
        if name not in kind.options:
            raise invalid(name, "is not an option of %s" % kind.noun)


def parse_arg(field, parse, raw):
    try:
        return parse(raw)
    except ValueError as e:
        raise invalid(field, str(e)) from None
