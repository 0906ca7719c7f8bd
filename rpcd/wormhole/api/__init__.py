"""The service layer: one function per ubus method; the plugin and the CLI only wrap these.

Every method returns a JSON-able dict. Failures raise WormholeError, which `call()`
turns into `{"error": {...}}`. What is where:
  args   - checking and normalising the arguments a caller sends (types, names, NULs);
  write  - the methods that change the config or the kernel, under the one writer lock;
  views  - the methods that only read: list, status, render, check.
"""

from .. import methods, schema
from ..errors import WormholeError, invalid
from . import views, write
from .args import check_args
from .write import cleanup

HANDLERS = {
    "list": views.list_entries,
    "status": views.status,
    "add": write.add,
    "update": write.update,
    "del": write.delete,
    "apply": write.apply_method,
    "settings": write.settings,
    "render": views.render_method,
    "check": views.check,
}


def call(method, args):
    """Run a method; always returns a reply dict (errors included)."""
    try:
        if method not in methods.METHODS:
            raise invalid("method", "unknown method %s (known: %s)" % (schema.shown(method), ", ".join(methods.METHODS)))
        if not isinstance(args, dict):
            raise invalid("request", "must be a JSON object")
        args = check_args(method, args)
        return HANDLERS[method](args)
    except WormholeError as e:
        return e.to_reply()


def run_cleanup():
    """`cleanup` as a reply: the CLI's uninstall path (not a ubus method: nothing in LuCI
    should be able to remove every rule of the router's owner behind their back)."""
    try:
        return cleanup()
    except WormholeError as e:
        return e.to_reply()
