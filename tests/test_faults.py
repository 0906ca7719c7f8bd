"""Failed applies: missing, failing and hanging tools, a kernel that refuses, a full disk.

For every fault: the kernel keeps its previous state (nft ruleset, iptables, ip rules,
routes), the error is reported with its reason, the config stays readable (the change it
carries is saved, DESIGN.md section 7.6, or refused whole), the include files on disk are
those of the previous state, and the next apply after the fault has gone succeeds.

Faults are injected with fake tools early on WORMHOLE_PATH (the product finds its tools
there; the fakes call the real ones by absolute path), and the disk is filled inside a
tiny tmpfs mounted as WORMHOLE_ROOT in a private mount namespace that dies with its
process. Everything runs inside scratch network namespaces. Tests of rollback after a
rejected nft load and of a missing nft on fw4 live in test_apply.py.
"""

import json
import os
import re
import stat
import subprocess
import sys

import pytest

from tests import reliability, support

TALLY = reliability.Tally()
RPCD = os.path.join(support.REPO, "rpcd")
TOOLS = ("ip", "nft", "iptables", "ip6tables", "iptables-save", "ip6tables-save", "iptables-restore",
         "ip6tables-restore", "sysctl")
RULESET = "usr/share/nftables.d/ruleset-post/50-wormhole.nft"

FW4_BASE = """table inet fw4
flush table inet fw4
table inet fw4 {
	chain input { type filter hook input priority filter; policy accept; }
	chain forward { type filter hook forward priority filter; policy accept; }
}
"""

# The CLI with short tool timeouts, so a hanging tool costs seconds, not the real 15 s.
QUICK_CLI = """
import sys
sys.path.insert(0, %r)
from wormhole import apply, cli, system
apply.NFT_TIMEOUT = system.DEFAULT_TIMEOUT = 2
sys.exit(cli.main(sys.argv[1:]))
""" % RPCD


@pytest.fixture(scope="module", autouse=True)
def figures():
    yield
    reliability.record("faults", TALLY.figures())


class Box:
    """A scratch namespace, a root, and a toolbox directory put first on WORMHOLE_PATH."""

    def __init__(self, ns, tmp, backend):
        self.ns = ns
        self.root = tmp / "root"
        self.bin = tmp / "bin"
        self.bin.mkdir()
        for tool in TOOLS:
            real = _which(tool)
            if real:
                os.symlink(real, str(self.bin / tool))
        support.write_config(self.root, support.UPLINK_WAN.replace("'fw4'", "'%s'" % backend) +
                             "\nconfig exemption 'ex_web'\n\toption port '443'\n\toption open '1'\n"
                             "\nconfig redirect 'rd_nas'\n\toption src_dport '8443'\n\toption dest_ip '192.168.1.20'\n")
        if backend == "fw4":
            ns.exec(["nft", "-f", "-"], input=FW4_BASE)

    def env(self):
        return {"WORMHOLE_PATH": str(self.bin)}

    def fake(self, tool, script):
        """Replace `tool` with a shell script; $REAL is the real tool."""
        path = self.bin / tool
        if path.exists() or path.is_symlink():
            path.unlink()
        path.write_text("#!/bin/sh\nPATH=%s\nREAL=%s\n%s\n" % (support.CLEAN_PATH, _which(tool), script))
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
        TALLY.add("faults injected")

    def remove(self, tool):
        (self.bin / tool).unlink()
        TALLY.add("faults injected")

    def heal(self):
        for tool in TOOLS:
            path = self.bin / tool
            if path.exists() or path.is_symlink():
                path.unlink()
            os.symlink(_which(tool), str(path))

    def cli(self, *args, quick=False):
        if quick:
            argv = ["ip", "netns", "exec", self.ns.name, sys.executable, "-c", QUICK_CLI] + list(args)
            return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd="/",
                                  env=support.clean_env(self.root, self.env()))
        return support.cli(self.root, *args, ns=self.ns, extra_env=self.env())

    def json(self, *args, quick=False):
        p = self.cli(*args, "--json", quick=quick)
        assert "Traceback" not in p.stdout + p.stderr, p.stderr
        return json.loads(p.stdout), p

    def kernel(self):
        return kernel(self.ns)

    def files(self):
        """The include files (what the next fw4/fw3 reload would load)."""
        out = {}
        base = self.root / "usr"
        for d, _dirs, names in os.walk(str(base)):
            for name in names:
                path = os.path.join(d, name)
                with open(path, "rb") as f:
                    out[os.path.relpath(path, str(self.root))] = f.read()
        return out


def _which(tool):
    for d in support.CLEAN_PATH.split(":"):
        if os.access(os.path.join(d, tool), os.X_OK):
            return os.path.join(d, tool)
    return None


# Packet counters move on their own (IPv6 router solicitations): compare without them.
_COUNTERS = re.compile(r"\[[0-9]+:[0-9]+\]|^#.*$|counter packets [0-9]+ bytes [0-9]+", re.M)


def kernel(ns):
    """Everything an apply may touch in the namespace, as comparable text."""
    parts = [_COUNTERS.sub("", ns.exec(["nft", "list", "ruleset"]).stdout)]
    for fam in ("-4", "-6"):
        parts.append(ns.exec(["ip", fam, "rule", "show"]).stdout)
        parts.append(ns.exec(["ip", fam, "route", "show", "table", "all"]).stdout)
    for save in ("iptables-save", "ip6tables-save"):
        parts.append(_COUNTERS.sub("", ns.exec([save]).stdout))
    return "\n".join(parts)


def make_box(netns, tmp_path, backend):
    support.require_root_tools("iptables-restore", "ip6tables-restore", "iptables-save")
    b = Box(netns, tmp_path, backend)
    b.backend = backend
    reply, p = b.json("apply")
    assert "error" not in reply, reply
    return b


@pytest.fixture(params=["fw4", "fw3"])
def box(request, netns, tmp_path):
    return make_box(netns, tmp_path, request.param)


def assert_kept(box, before_kernel, before_files, reply, reason, saved_port=None):
    """The fault's verdict: reported with its reason, nothing in the kernel or the includes
    changed, the config readable (holding the change when it was saved)."""
    err = reply.get("error")
    assert err, reply
    assert err["code"] == "apply_failed", reply
    assert re.search(reason, err["message"]), (reason, err["message"])
    assert box.kernel() == before_kernel
    assert box.files() == before_files
    status, _ = box.json("status")
    assert status["last_apply"]["ok"] is False and re.search(reason, status["last_apply"]["error"]), status
    listed, _ = box.json("list")
    assert "error" not in listed, listed
    if saved_port:
        assert saved_port in [e["port"] for e in listed["exemptions"]]
    TALLY.add("faults survived (kernel, includes and config intact)")
    box.heal()
    reply, _ = box.json("apply")
    assert "error" not in reply, reply
    if saved_port:
        assert box.kernel() != before_kernel      # the saved change reaches the kernel now


def _tool_for(box):
    return "nft" if box.backend == "fw4" else "iptables-restore"


def test_missing_tool(box):
    before, files = box.kernel(), box.files()
    box.remove(_tool_for(box))
    reply, p = box.json("inbound", "add", "udp:5000")
    assert p.returncode == 1
    assert_kept(box, before, files, reply, "not installed", saved_port="5000")


def test_failing_tool(box):
    before, files = box.kernel(), box.files()
    box.fake(_tool_for(box), 'case "$*" in *list*|*-save*) exec "$REAL" "$@";; esac\n'
                             'echo "Error: Could not process rule: Operation not supported (fake)" >&2\nexit 1')
    reply, p = box.json("inbound", "add", "udp:5000")
    assert_kept(box, before, files, reply, r"Operation not supported \(fake\)", saved_port="5000")


def test_tool_that_hangs(box):
    before, files = box.kernel(), box.files()
    box.fake(_tool_for(box), 'case "$*" in *list*) exec "$REAL" "$@";; esac\nexec sleep 30')
    reply, p = box.json("inbound", "add", "udp:5000", quick=True)
    assert_kept(box, before, files, reply, "timed out", saved_port="5000")


def test_tool_that_does_the_work_then_hangs(box):
    """The load reached the kernel, then the tool never returned: rollback puts the old back."""
    before, files = box.kernel(), box.files()
    if box.backend == "fw4":
        box.fake("nft", 'case "$*" in *list*) exec "$REAL" "$@";; esac\n"$REAL" "$@"\nexec sleep 30')
    else:
        box.fake("iptables-restore", '"$REAL" "$@"\nexec sleep 30')
    reply, p = box.json("inbound", "add", "udp:5000", quick=True)
    assert_kept(box, before, files, reply, "timed out", saved_port="5000")


def test_kernel_rejects_the_fw3_rules(netns, tmp_path):
    """iptables-restore refuses the whole file at COMMIT (a jump to a chain that is not there).
    fw4: tests/test_apply.py::test_rejected_apply_keeps_previous_state_and_the_config_change."""
    box = make_box(netns, tmp_path, "fw3")
    before, files = box.kernel(), box.files()
    box.fake("iptables-restore", 'sed "s/^COMMIT$/-A WORMHOLE_PRE -j WORMHOLE_NO_SUCH_CHAIN\\nCOMMIT/" | "$REAL" "$@"')
    reply, p = box.json("inbound", "add", "udp:5000")
    assert_kept(box, before, files, reply, "WORMHOLE_NO_SUCH_CHAIN|[Cc]hain", saved_port="5000")


def test_routing_step_fails_after_the_firewall_loaded(box):
    """A second uplink needs new ip rules; `ip rule add` fails after the firewall rules are
    in the kernel: they are taken out again, and so is the new uplink's routing table."""
    box.ns.exec(["ip", "link", "add", "wan1", "type", "veth", "peer", "name", "wan1p"])
    for argv in (["ip", "link", "set", "wan1p", "up"], ["ip", "addr", "add", "198.51.100.2/24", "dev", "wan1"],
                 ["ip", "link", "set", "wan1", "up"]):
        box.ns.exec(argv)
    text = support.read_config(box.root).decode() + \
        "\nconfig uplink 'wan_b'\n\toption device 'wan1'\n\toption gateway '198.51.100.1'\n"
    support.write_config(box.root, text)
    before, files = box.kernel(), box.files()
    box.fake("ip", 'case "$*" in *" rule add "*) echo "RTNETLINK answers: No buffer space available (fake)" >&2; '
                   'exit 2;; esac\nexec "$REAL" "$@"')
    reply, p = box.json("inbound", "add", "tcp:443", "--interface", "wan_b")
    assert_kept(box, before, files, reply, r"No buffer space available \(fake\)", saved_port=None)


def test_plugin_reply_arrives_before_rpcd_gives_up(netns, tmp_path):
    """With the real budgets: a load that hangs costs NFT_TIMEOUT (15 s), the rollback still
    runs, and the reply reaches rpcd well inside its 30 s."""
    b = make_box(netns, tmp_path, "fw4")
    before, files = b.kernel(), b.files()
    marker = tmp_path / "hung-once"
    b.fake("nft", 'case "$*" in *list*) exec "$REAL" "$@";; esac\n'
                  'if [ ! -e %s ]; then : > %s; exec sleep 60; fi\nexec "$REAL" "$@"' % (marker, marker))
    reply, p = support.plugin(b.root, "add", {"proto": "udp", "port": "5000"}, ns=netns, extra_env=b.env())
    assert reply["error"]["code"] == "apply_failed" and "timed out" in reply["error"]["message"], reply
    assert b.kernel() == before and b.files() == files
    TALLY.add("faults survived (kernel, includes and config intact)")


# --- a full disk --------------------------------------------------------------------------------

# Runs inside `unshare --mount --propagation private` (and the scratch netns): mounts a tiny
# tmpfs as the product root, then obeys one JSON command per line. The mount goes away
# with this process, whatever happens to the test.
DISK_AGENT = r"""
import json, os, shutil, subprocess, sys
root, size_k = sys.argv[1], int(sys.argv[2])
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%dk,mode=0755" % size_k, "wormhole-diskfull", root], check=True)
filler = os.path.join(root, "filler")

def free_pages():
    st = os.statvfs(root)
    return st.f_bavail * st.f_frsize // 4096

def fill(pages):
    unfill()
    with open(filler, "wb") as f:
        while free_pages() > pages:
            f.write(b"\0" * 4096)
            f.flush()
    return free_pages()

def unfill():
    if os.path.exists(filler):
        os.unlink(filler)

def files():
    out = {}
    for d, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(d, name)
            rel = os.path.relpath(path, root)
            if rel == "filler" or rel.startswith("var/lock"):
                continue
            with open(path, "rb") as f:
                out[rel] = f.read().decode("latin-1")
    return out

def write(rel, text):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)

print(json.dumps({"ready": free_pages()}), flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    op = cmd["op"]
    if op == "fill":
        out = {"free": fill(cmd["pages"])}
    elif op == "unfill":
        unfill()
        out = {"free": free_pages()}
    elif op == "write":
        write(cmd["rel"], cmd["text"])
        out = {}
    elif op == "files":
        out = {"files": files()}
    elif op == "cli":
        p = subprocess.run(cmd["argv"], capture_output=True, text=True, env=cmd["env"], timeout=120, cwd="/")
        out = {"rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr}
    else:
        break
    print(json.dumps(out), flush=True)
"""


class DiskAgent:
    def __init__(self, ns, root, size_k):
        root.mkdir(parents=True)
        self.root = root
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns.name, "unshare", "--mount", "--propagation", "private",
             sys.executable, "-c", DISK_AGENT, str(root), str(size_k)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd="/")
        self.free = json.loads(self.proc.stdout.readline())["ready"]

    def __call__(self, op, **kw):
        self.proc.stdin.write(json.dumps(dict(kw, op=op)) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "the disk agent died"
        return json.loads(line)

    def cli(self, *args):
        env = support.clean_env(self.root)
        out = self("cli", argv=[support.CLI] + list(args) + ["--json"], env=env)
        assert "Traceback" not in out["stdout"] + out["stderr"], out["stderr"]
        return json.loads(out["stdout"]), out

    def close(self):
        try:
            self.proc.stdin.write('{"op": "exit"}\n')
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.proc.stdout.close()


@pytest.fixture
def disk(netns, tmp_path):
    support.require_root_tools("unshare", "mount")
    agent = DiskAgent(netns, tmp_path / "root", size_k=256)
    try:
        yield agent
    finally:
        agent.close()
    # the mount lived in the agent's own mount namespace: nothing is mounted here
    with open("/proc/self/mounts") as f:
        assert str(tmp_path / "root") not in f.read()


def _config_of(files):
    from wormhole.uci.filebackend import Document
    text = files["etc/config/wormhole"]
    return {s.name: s.options for s in Document(text, "wormhole").sections()}


BIG_FW4 = ("forward", "add", "tcp:10000-10300", "192.168.1.30:20000-20300")     # a 301-port map: ~5 KB of nft
BIG_FW3 = ("forward", "add", "tcpudp:10000", "192.168.1.30") + tuple(
    x for i in range(150) for x in ("--allow", "198.51.100.%d" % i))                # 150 prefixes, 4 times over


@pytest.mark.parametrize("backend,change", [
    ("fw4", ("inbound", "add", "tcp:5000")), ("fw3", ("inbound", "add", "tcp:5000")),
    ("fw4", BIG_FW4), ("fw3", BIG_FW3),
], ids=["fw4-small", "fw3-small", "fw4-big", "fw3-big"])
def test_disk_full_at_every_point(disk, netns, backend, change):
    """Fill the disk to leave 0, 1, 2, ... pages free, then make a change: each outcome is
    one of refused (nothing changed), saved but not applied (kernel and includes as before),
    or done; never a traceback, never a truncated config. Freed again, `apply` catches up.
    A big change needs more room for its rules than for its config: that reaches the apply."""
    if backend == "fw4":
        netns.exec(["nft", "-f", "-"], input=FW4_BASE)
    old = support.UPLINK_WAN.replace("'fw4'", "'%s'" % backend) + "\nconfig exemption 'ex_web'\n\toption port '443'\n"
    port = change[2].split(":")[1]
    outcomes = []
    for pages in range(0, 30):
        disk("unfill")
        disk("write", rel="etc/config/wormhole", text=old)
        reply, _ = disk.cli("apply")
        assert "error" not in reply, reply
        before_kernel, before = kernel(netns), disk("files")["files"]
        assert disk("fill", pages=pages)["free"] == pages
        reply, out = disk.cli(*change)
        TALLY.add("faults injected")
        after = disk("files")["files"]
        cfg = _config_of(after)                      # parseable, never truncated
        saved = any(port in (o.get("port"), o.get("src_dport")) for o in cfg.values())
        includes = lambda fs: {k: v for k, v in fs.items() if k.startswith("usr/")}
        if "error" in reply:
            assert kernel(netns) == before_kernel, (pages, reply)
            assert includes(after) == includes(before), (pages, reply)
            assert "No space left on device" in reply["error"]["message"], reply
            if saved:
                assert reply["error"]["code"] == "apply_failed", reply
                outcomes.append("saved, not applied")
            else:
                assert reply["error"]["code"] == "config_error" and reply["error"]["field"] == "config", reply
                assert after["etc/config/wormhole"] == old, pages
                outcomes.append("refused")
            TALLY.add("faults survived (kernel, includes and config intact)")
        else:
            assert saved and kernel(netns) != before_kernel
            outcomes.append("done")
        disk("unfill")
        reply, _ = disk.cli("apply")
        assert "error" not in reply, (pages, reply)
        if outcomes.count("done") >= 2:
            break
    TALLY.add("disk-full points", len(outcomes))
    for kind in sorted(set(outcomes)):
        TALLY.add("disk full: %s" % kind, outcomes.count(kind))
    assert "refused" in outcomes and "done" in outcomes, outcomes
    if change in (BIG_FW4, BIG_FW3):
        assert "saved, not applied" in outcomes, outcomes
