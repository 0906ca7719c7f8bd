"""Small runtime state under /var/run/wormhole: the last apply's outcome and what it installed."""

import os

from . import fsutil, jsonio, paths


def _load(device_path):
    text = fsutil.read_text(paths.under_root(device_path))
    if not text:
        return {}
    try:
        data = jsonio.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _save(device_path, data):
    fsutil.atomic_write(paths.under_root(device_path), jsonio.dumps(data) + "\n")


def last_apply():
    return _load(paths.LAST_APPLY)


def save_last_apply(record):
    _save(paths.LAST_APPLY, record)


def applied():
    """What the last successful apply installed: backend, uplink numbers, rules, tables."""
    return _load(paths.APPLIED_STATE)


def save_applied(record):
    _save(paths.APPLIED_STATE, record)


def stopped():
    """The service was stopped (init stop, `wormhole cleanup`) and not started since."""
    return os.path.exists(paths.under_root(paths.STOPPED_FLAG))


def set_stopped(flag):
    if flag:
        fsutil.atomic_write(paths.under_root(paths.STOPPED_FLAG), "stopped\n")
    else:
        fsutil.remove_file(paths.under_root(paths.STOPPED_FLAG))
