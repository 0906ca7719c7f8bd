"""Test helpers: skip-or-fail policy, scratch namespaces, running the entry points."""

import json
import os
import shutil
import subprocess
import sys
import uuid

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLUGIN = os.path.join(REPO, "rpcd", "libexec", "wormhole")
CLI = os.path.join(REPO, "files", "usr", "sbin", "wormhole")
CLEAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def in_ci():
    return os.environ.get("CI", "").lower() == "true"


def unavailable(reason):
    """Skip here; under CI=true a missing capability is a failure, never a skip."""
    if in_ci():
        pytest.fail("CI=true but %s" % reason)
    pytest.skip(reason)


def kernel_refuses(what, stderr):
    """Skip, in CI too: the kernel was asked and refused (a feature this kernel is built
    without, such as flowtables here). Only after the refusal was seen, with its words."""
    pytest.skip("the kernel refuses %s: %s" % (what, " ".join(stderr.split()) or "no reason given"))


def require_root_tools(*tools):
    if os.geteuid() != 0:
        unavailable("needs root for network namespaces")
    for t in tools:
        if not shutil.which(t, path=CLEAN_PATH):
            unavailable("needs %s" % t)


def run(argv, check=True, **kw):
    kw.setdefault("timeout", 30)
    p = subprocess.run(argv, capture_output=True, text=True, **kw)
    if check and p.returncode != 0:
        raise AssertionError("%s failed (%d): %s%s" % (" ".join(argv), p.returncode, p.stdout, p.stderr))
    return p


def clean_env(root, extra=None):
    """The environment rpcd gives a plugin: almost nothing. Plus our scratch root."""
    env = {"PATH": CLEAN_PATH, "WORMHOLE_ROOT": str(root), "WORMHOLE_UCI_BACKEND": "file"}
    env.update(extra or {})
    return env


class ScratchNetns:
    """A throw-away namespace: lo, a dummy uplink wan0 with a gateway, nothing else."""

    def __init__(self):
        self.name = "whtest-" + uuid.uuid4().hex[:8]
        run(["ip", "netns", "add", self.name])
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def _setup(self):
        self.exec(["ip", "link", "set", "lo", "up"])
        # No IPv6 link-local autoconfiguration: its routes appear a moment after link-up
        # and would make before/after comparisons of the routing tables racy.
        self.exec(["sysctl", "-qw", "net.ipv6.conf.default.addr_gen_mode=1"])
        # veth, not dummy: the dummy module is not available on every kernel here.
        self.exec(["ip", "link", "add", "wan0", "type", "veth", "peer", "name", "wan0p"])
        self.exec(["ip", "link", "set", "wan0p", "up"])
        self.exec(["ip", "addr", "add", "192.0.2.2/28", "dev", "wan0"])
        self.exec(["ip", "-6", "addr", "add", "2001:db8:2::2/64", "dev", "wan0", "nodad"])
        self.exec(["ip", "link", "set", "wan0", "up"])
        self.exec(["ip", "route", "add", "default", "via", "192.0.2.1"])
        self.exec(["ip", "-6", "route", "add", "default", "via", "2001:db8:2::1"])

    def exec(self, argv, check=True, **kw):
        return run(["ip", "netns", "exec", self.name] + list(argv), check=check, **kw)

    def close(self):
        run(["ip", "netns", "del", self.name], check=False)


def plugin(root, method, request=None, ns=None, raw=None, cwd="/", extra_env=None):
    """Call the plugin exactly as rpcd does: argv [path, call, method], JSON on stdin."""
    argv = [PLUGIN, "call", method]
    if ns is not None:
        argv = ["ip", "netns", "exec", ns.name] + argv
    data = raw if raw is not None else json.dumps(request if request is not None else {})
    p = subprocess.run(argv, input=data, capture_output=True, text=True, timeout=60, cwd=cwd,
                       env=clean_env(root, extra_env))
    return first_json(p.stdout), p


def first_json(text):
    """rpcd parses the first JSON value on stdout."""
    obj, _end = json.JSONDecoder().raw_decode(text.lstrip())
    return obj


def cli(root, *args, ns=None, cwd="/", extra_env=None):
    argv = [CLI] + list(args)
    if ns is not None:
        argv = ["ip", "netns", "exec", ns.name] + argv
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=cwd, env=clean_env(root, extra_env))


def write_config(root, text):
    path = os.path.join(str(root), "etc", "config", "wormhole")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


def read_config(root):
    with open(os.path.join(str(root), "etc", "config", "wormhole"), "rb") as f:
        return f.read()


UPLINK_WAN = """
config wormhole 'main'
	option backend 'fw4'

config uplink 'wan'
	option device 'wan0'
	option gateway '192.0.2.1'
	option gateway6 '2001:db8:2::1'
"""


# The UCI file backend: for hosts without libuci, never in the router package
# (openwrt-feed/wormhole/Makefile, WORMHOLE_HOST_ONLY).
HOST_ONLY = {"/usr/lib/wormhole/wormhole/uci/filebackend.py", "/usr/lib/wormhole/wormhole/uci/syntax.py"}


def build_packages(tool, out, *args, epoch="1700000000"):
    """Run tools/<tool> (mkipk.py or mkapk.py) with a fixed SOURCE_DATE_EPOCH; its output."""
    env = dict(os.environ, SOURCE_DATE_EPOCH=epoch)
    p = subprocess.run([sys.executable, os.path.join(REPO, "tools", tool), "--out", str(out)] + list(args),
                       capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 0, p.stderr
    return p
