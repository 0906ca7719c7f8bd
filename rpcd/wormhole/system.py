"""Running system tools: argv lists only, a timeout on every call, errors that name the tool.

rpcd kills nothing and waits 30 s for a plugin, so every call here is bounded well below
that. Tools are looked up on a fixed PATH: rpcd gives its plugins a minimal environment.
"""

import os
import time

from . import jsonio

# subprocess is imported when a tool is first run: it costs 5 ms of a LuCI `list` or
# `status`, which ask the kernel directly (rtnl, nfnl) and start no tool at all.

DEFAULT_TIMEOUT = 10
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

# A whole request's budget: each tool has its own timeout, but several slow tools in one
# apply must not add up past rpcd's 30 s (after which it kills us mid-change).
_deadline = None


def set_deadline(seconds):
    """Bound the total time of all later tool calls in this process."""
    global _deadline
    _deadline = time.monotonic() + seconds


def _budget(timeout):
    if _deadline is None:
        return timeout
    return min(timeout, _deadline - time.monotonic())


class ToolError(Exception):
    """A tool failed, timed out or is missing; str() is the message to show."""

    def __init__(self, argv, message):
        super().__init__(message)
        self.argv = argv


def _tool_path():
    return os.environ.get("WORMHOLE_PATH", PATH)


def installed(tool):
    """Whether `run` would find `tool` (the same PATH)."""
    return any(d and os.access(os.path.join(d, tool), os.X_OK) for d in _tool_path().split(":"))


def run(argv, input=None, timeout=DEFAULT_TIMEOUT, check=True):
    """Run a tool; return (returncode, stdout, stderr). Raises ToolError when check fails."""
    import subprocess
    env = dict(os.environ)
    env["PATH"] = _tool_path()
    env["LC_ALL"] = "C"
    timeout = _budget(timeout)
    if timeout <= 0:
        raise ToolError(argv, "%s: not started, the request ran out of time" % argv[0])
    try:
        p = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout,
                           env=env, errors="replace")
    except FileNotFoundError:
        raise ToolError(argv, "%s: not installed" % argv[0]) from None
    except subprocess.TimeoutExpired:
        raise ToolError(argv, "%s: timed out after %.1fs" % (" ".join(argv[:3]), timeout)) from None
    if check and p.returncode != 0:
        raise ToolError(argv, "%s failed: %s" % (" ".join(argv[:3]), _first_lines(p.stderr or p.stdout)))
    return p.returncode, p.stdout, p.stderr


def _first_lines(text, limit=600):
    text = (text or "").strip()
    return text[:limit] + ("..." if len(text) > limit else "") if text else "no message"


def kernel_json(argv, ask, error):
    """What `argv` (an `ip` or `nft` JSON query) would print, parsed: asked of the kernel
    in-process by `ask()` (rtnl, nfnl), or by running the tool when that raises `error`.

    Only when the tool is installed, as before: the in-process path is a faster way to
    ask the same question, not a way to run where the tool is missing.
    """
    if not installed(argv[0]):
        return None
    try:
        return ask()
    except error:
        return run_json(argv)


def run_json(argv, timeout=DEFAULT_TIMEOUT):
    """Run a tool with JSON output; None when it fails (absent table, no such device)."""
    try:
        rc, out, _err = run(argv, timeout=timeout, check=False)
    except ToolError:
        return None
    if rc != 0 or not out.strip():
        return None
    try:
        return jsonio.loads(out)
    except ValueError:
        return None


def read_sys(path, default=None):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default
