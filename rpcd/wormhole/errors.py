"""Errors that travel in reply bodies: a code, the field at fault, and a message.

rpcd ignores exit codes and stderr, so every failure a caller should see becomes
`{"error": {"code": ..., "field": ..., "message": ...}}`.
"""

INVALID_ARGUMENT = "invalid_argument"
NOT_FOUND = "not_found"
CONFLICT = "conflict"
CONFIG_ERROR = "config_error"
APPLY_FAILED = "apply_failed"
BUSY = "busy"

CODES = (INVALID_ARGUMENT, NOT_FOUND, CONFLICT, CONFIG_ERROR, APPLY_FAILED, BUSY)


class WormholeError(Exception):
    """A failure with a machine-readable code; `extra` adds keys to the error object."""

    def __init__(self, code, message, field=None, **extra):
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.extra = extra

    def to_reply(self):
        err = {"code": self.code, "message": self.message}
        if self.field is not None:
            err["field"] = self.field
        err.update(self.extra)
        return {"error": err}


def invalid(field, message):
    """A bad value: the message is prefixed with the field so every surface names it."""
    return WormholeError(INVALID_ARGUMENT, "%s: %s" % (field, message), field=field)
