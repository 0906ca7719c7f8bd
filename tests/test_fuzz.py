"""Hostile input, fuzzed: every ubus method and CLI command, arbitrary JSON, hostile text.

The property (issue 9): every input either becomes a valid entry whose generated rules
load (`nft -c -f`, `iptables-restore --test`, both run by the real tools inside one
scratch network namespace), or it is rejected with a clear error and the config file
byte-identical. Never an exception out of `api.call`, never a traceback on stdout,
never a hang.

In-process: `api.call` with `api.write._apply_locked` replaced by a checker that renders the
config on disk for fw4 *and* fw3 (with pinned facts) and hands the text to the tools in
the namespace: nothing is ever applied to this host. WORMHOLE_PATH points at an empty
directory, so even a slip could not reach this host's firewall. A smaller number of
examples go through the real plugin and CLI subprocesses, inside the namespace, to catch
tracebacks on stdout and hangs at the process level.

Budget: WORMHOLE_FUZZ_SCALE=<factor> multiplies every max_examples (default 1: about a
minute). Under CI=true runs are derandomized, so a failure reproduces exactly.
"""

import ipaddress
import json
import os
import re
import signal
import subprocess

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from tests import reliability, support
from wormhole import api, config, methods, paths, render, schema
from wormhole.uci import syntax as uci_syntax
from wormhole.layout import assign_uplink_indices
from wormhole.render.common import entry_tag, quote

# --- hypothesis profiles ---------------------------------------------------------------------

settings.register_profile("wormhole-ci", derandomize=True, database=None, deadline=None, print_blob=True,
                          suppress_health_check=list(HealthCheck))
settings.register_profile("wormhole-dev", database=None, deadline=None, print_blob=True,
                          suppress_health_check=list(HealthCheck))
PROFILE = settings.get_profile("wormhole-ci" if support.in_ci() else "wormhole-dev")
SCALE = float(os.environ.get("WORMHOLE_FUZZ_SCALE", "1"))


def budget(n):
    return settings(PROFILE, max_examples=max(1, int(n * SCALE)))


TALLY = reliability.Tally()
CODES = ("invalid_argument", "not_found", "conflict", "config_error", "apply_failed", "busy")
CALL_TIMEOUT = 20   # seconds for one in-process api.call: longer is a hang

BASE = support.UPLINK_WAN + """
config uplink 'wan_b'
	option device 'wan1'
	option gateway '203.0.113.1'
	option gateway6 '2001:db8:3::1'

config uplink 'tun'
	option device 'wg0'

config exemption 'ex_web'
	option proto 'tcp'
	option port '443'
	option label 'LuCI'

config redirect 'rd_nas'
	option src_dport '8443'
	option dest_ip '192.168.1.20'
	option dest_port '443'
	list src_ip '198.51.100.0/24'
"""

# What the checker renders with: facts pinned, so only the input varies.
UPLINK_FACTS = {
    "wan": {"device": "wan0", "gateway": "192.0.2.1", "gateway6": "2001:db8:2::1", "up": True, "p2p": False,
            "mtu": 1500},
    "wan_b": {"device": "wan1", "gateway": "203.0.113.1", "gateway6": "2001:db8:3::1", "up": True, "p2p": False,
              "mtu": 1500},
    "tun": {"device": "wg0", "gateway": None, "gateway6": None, "up": True, "p2p": True, "mtu": 1420,
            "addresses": ["10.99.0.2", "fd00:99::2"]},
}


# --- the environment: one scratch namespace, one scratch root ---------------------------------

class Checker:
    """Stands in for api.write._apply_locked: render both backends, let the real tools judge."""

    def __init__(self, ns, tmp):
        self.ns = ns
        self.tmp = tmp
        self.calls = 0
        self.failures = []

    def __call__(self, sid=None, cfg=None):
        self.calls += 1
        on_disk = config.load()
        if on_disk.error:
            self.failures.append("apply saw an unreadable config: %s" % on_disk.error)
            return {"applied": True, "warnings": [], "skipped": {}}
        if cfg is not None and [(e.id, e.raw) for e in cfg.entries] != [(e.id, e.raw) for e in on_disk.entries]:
            self.failures.append("the config handed to apply differs from the file written")
        cfg = cfg or on_disk
        for fw in ("fw4", "fw3"):
            plan = render.render(cfg, pinned_facts(cfg), fw)
            for problem in check_plan(self, plan, fw):
                self.failures.append("%s: %s" % (fw, problem))
            skipped = api.views.skipped_sections(cfg, plan)
            # every entry the rules leave out is named (issue 14: nothing fails quietly)
            rendered = "".join(t for t in plan["files"].values() if t)
            for e in cfg.entries:
                if e.enabled and cfg.main["enabled"] and e.id not in skipped and e.id not in rendered:
                    self.failures.append("%s: %s is neither rendered nor skipped" % (fw, e.id))
        return {"applied": True, "warnings": cfg.notes(), "skipped": skipped}

    def tool(self, argv, text):
        """Run a tool in the namespace on `text` (as a file for nft, on stdin for iptables)."""
        TALLY.add("tool runs")
        if argv[0] == "nft":
            path = os.path.join(self.tmp, "check.nft")
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            return self.ns.exec(argv + [path], check=False)
        return self.ns.exec(argv, check=False, input=text)


def pinned_facts(cfg):
    ups = dict(UPLINK_FACTS)
    for name, rec in cfg.uplinks.items():     # hand-written uplink sections: as declared
        if name not in ups and rec.get("device"):
            ups[name] = {"device": rec["device"], "gateway": _text(rec.get("gateway")),
                         "gateway6": _text(rec.get("gateway6")), "up": True, "p2p": False, "mtu": 1500}
    names = [n for n in cfg.uplink_names() if n in ups]
    # A different route MTU per destination: exercises the MSS maps and their merging.
    mtus = {str(e.rec["dest_ip"]): 1280 + int(e.rec["dest_ip"]) % 220 for e in cfg.active("redirect")}
    return {"backend": "fw4", "uplinks": ups, "uplink_index": assign_uplink_indices(names, {}),
            "dest_mtu": mtus, "counters": {}}


def _text(value):
    return None if value is None else str(value)


def check_plan(checker, plan, fw):
    """Problems with a rendered plan: the tools' verdict and the no-hole invariants."""
    problems = []
    if fw == "fw4":
        texts = [plan["files"][paths.NFT_RULESET]] + [t for t in plan.get("live", {}).values() if t]
        for text in texts:
            p = checker.tool(["nft", "-c", "-f"], text)
            if p.returncode != 0:
                problems.append("nft -c rejected the ruleset: %s" % p.stderr.strip()[:600])
            problems += nft_holes(text)
    else:
        for family, tool in (("ipv4", "iptables-restore"), ("ipv6", "ip6tables-restore")):
            text = plan["files"][paths.FW3_RULES.format(family=family)]
            p = checker.tool([tool, "--test"], text)
            if p.returncode != 0:
                problems.append("%s --test rejected the rules: %s" % (tool, p.stderr.strip()[:600]))
            problems += ipt_holes(text)
    return problems


_COMMENT = re.compile(r'comment "[^"]*"')
# The one mark that clears bits (render/nft.py, mangle_input): only on a SYN to the router
# of a connection wormhole marked, keeping exactly the bits of mark_mask.
_SOCKET_MARK = re.compile(r"tcp flags & \(syn \| ack\) == syn ct mark & 0x[0-9a-f]{8} != 0x00000000 "
                          r"meta mark set meta mark & 0x[0-9a-f]{8}")
_IPT_SOCKET_MARK = re.compile(r"-A WORMHOLE_IN -p tcp -m tcp --tcp-flags SYN,ACK SYN -m connmark ! --mark "
                              r"0x0/0x[0-9a-f]{8} -m comment +-j MARK --set-xmark 0x0/0x[0-9a-f]{8}")


def nft_holes(text):
    """Our table never accepts, drops or rejects; marks are set only where they belong, and
    the uplink mark only on new connections arriving on an uplink device."""
    out = []
    chain = None
    for raw in text.splitlines():
        line = _COMMENT.sub("", raw).strip()
        m = re.match(r"chain (\S+) \{", line)
        if m:
            chain = m.group(1)
            continue
        if re.search(r"\b(accept|drop|reject|queue)\b", line) and not line.endswith("policy accept;"):
            out.append("verdict outside a policy: %r" % raw)
        if "ct mark set" in line and not (chain or "").startswith(("mark_", "redirect_")):
            out.append("ct mark set in chain %s: %r" % (chain, raw))
        if "meta mark set" in line and not ((chain or "").startswith("restore_") or (
                chain == "mangle_input" and _SOCKET_MARK.fullmatch(line))):
            out.append("meta mark set in chain %s: %r" % (chain, raw))
        if "@in_" in line and not line.startswith("ct state new iifname "):
            out.append("inbound map reached without ct state new + iifname: %r" % raw)
    return out


IPT_ACCEPTS = {
    # filter: the only accepts that let traffic in, gated by our flag bits
    "filter": ("-A WORMHOLE_INPUT -m connmark ! --mark 0x0/", "-A WORMHOLE_FORWARD -m connmark --mark "),
    # mangle: ends mangle FORWARD for inbound SYNs of uplink-marked connections (past fw3's
    # mtu_fix); it lets nothing through the filter table
    "mangle": ("-A WORMHOLE_FWD -p tcp -m tcp --tcp-flags SYN,RST SYN -m conntrack --ctdir ORIGINAL "
               "-m connmark ! --mark 0x0/",),
}


def ipt_holes(text):
    out = []
    table = None
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        bare = re.sub(r'--comment "[^"]*"', "", line)
        if "-j ACCEPT" in bare and not bare.startswith(IPT_ACCEPTS.get(table, ())):
            out.append("accept outside the flag rules (%s): %r" % (table, line))
        if re.search(r"-j (DROP|REJECT)", bare):
            out.append("drop/reject: %r" % line)
        if re.search(r"-j MARK\b", bare) and not _IPT_SOCKET_MARK.fullmatch(bare.strip()):
            out.append("packet mark set outside the socket-mark rule: %r" % line)
        if "CONNMARK --set-xmark" in bare and not (
                bare.startswith("-A WORMHOLE_NEW -i ") or bare.startswith("-A WORMHOLE_DNAT -i ")):
            out.append("mark set outside new inbound connections: %r" % line)
        if "-j WORMHOLE_NEW" in bare and bare != "-A WORMHOLE_PRE -m conntrack --ctstate NEW -m comment  -j WORMHOLE_NEW":
            out.append("WORMHOLE_NEW reached other than by new connections: %r" % line)
    return out


class Env:
    def __init__(self, ns, root, tmp, checker):
        self.ns = ns
        self.root = root
        self.tmp = tmp
        self.checker = checker

    def reset(self, text=BASE):
        support.write_config(self.root, text)
        self.checker.failures = []

    def config_bytes(self):
        return support.read_config(self.root)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    support.require_root_tools("ip", "nft", "iptables-restore", "ip6tables-restore")
    tmp = tmp_path_factory.mktemp("fuzz")
    root = tmp / "root"
    (root / "etc" / "config").mkdir(parents=True)
    empty = tmp / "no-tools"
    empty.mkdir()
    ns = support.ScratchNetns()
    mp = pytest.MonkeyPatch()
    try:
        mp.setenv("WORMHOLE_ROOT", str(root))
        mp.setenv("WORMHOLE_UCI_BACKEND", "file")
        mp.setenv("WORMHOLE_PATH", str(empty))       # read methods find no tool; applies are mocked
        mp.setenv("WORMHOLE_LOCK_TIMEOUT", "5")
        checker = Checker(ns, str(tmp))
        mp.setattr(api.write, "_apply_locked", checker)
        yield Env(ns, root, str(tmp), checker)
    finally:
        mp.undo()
        ns.close()


@pytest.fixture(scope="module", autouse=True)
def figures():
    yield
    reliability.record("fuzz", TALLY.figures())


# --- calling and judging ---------------------------------------------------------------------

class Hang(Exception):
    pass


def _alarm(_sig, _frame):
    raise Hang("api.call took longer than %d s" % CALL_TIMEOUT)


def call(method, args):
    """api.call under a watchdog; every reply must be JSON-able, errors well-formed."""
    TALLY.add("inputs tried")
    TALLY.add("inputs to %s" % (method if method in methods.METHODS else "an unknown method"))
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(CALL_TIMEOUT)
    try:
        reply = api.call(method, args)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert isinstance(reply, dict), reply
    json.dumps(reply)   # serialisable, as the plugin needs
    if "error" in reply:
        assert set(reply) == {"error"}, reply
        err = reply["error"]
        assert err["code"] in CODES, reply
        assert isinstance(err["message"], str) and err["message"].strip(), reply
        if "field" in err:
            assert isinstance(err["field"], str) and err["field"] in err["message"], reply
        TALLY.add("rejected")
    else:
        TALLY.add("accepted")
    return reply


def judged(env, method, args):
    """Call, then check the property: rejected -> config byte-identical; accepted -> every
    entry valid and the rules the tools accept."""
    before = env.config_bytes()
    broken = {e.id for e in config.load().entries if not e.valid}
    calls = env.checker.calls
    env.checker.failures = []
    reply = call(method, args)
    if "error" in reply:
        assert env.config_bytes() == before, (method, args, reply)
        assert env.checker.calls == calls, "apply ran for a rejected request"
        return reply
    assert env.checker.failures == [], (method, args, env.checker.failures)
    if method in methods.WRITE_METHODS:
        assert env.checker.calls == calls + 1, (method, args, reply)
        TALLY.add("accepted writes checked by the tools")
    cfg = config.load()
    assert cfg.error is None, (method, args, cfg.error)
    bad = [(e.id, e.errors) for e in cfg.entries if not e.valid and e.id not in broken]
    assert bad == [], ("an accepted change left an invalid entry behind", method, args, bad)
    if method == "add":
        entry = cfg.find(reply["id"])
        assert entry is not None and entry.valid, (args, reply)
        _canonical(entry)
    return reply


def _canonical(entry):
    """What was stored reads back to itself: canonical text, nothing a second parse changes."""
    again = config.parse_entry(entry.id, entry.type, entry.raw)
    assert again.valid and again.rec == entry.rec, (entry.raw, again.errors)
    for name, value in entry.raw.items():
        assert config.format_value(entry.rec[name]) == value, (name, value)


# --- strategies --------------------------------------------------------------------------------

JSON_SCALARS = (st.none() | st.booleans() | st.integers(min_value=-2 ** 70, max_value=2 ** 70)
                | st.floats() | st.text(max_size=30))
JSON = st.recursive(JSON_SCALARS, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                    max_leaves=10)

ALL_ARGS = sorted({a for args in methods.METHODS.values() for a in args} | {"ubus_rpc_session"})

METACHARS = ['"', "'", ";", "}", "{", "\n", "\r", "\t", "$(reboot)", "`id`", "\\", "#", " -j ACCEPT", "\x00",
             "\x1b[31m", "%s", "\u202e", "\u200b", "\ufeff", "\u2028", "é", "漢字", "🐍", "\U0010fffd", " ", "*",
             "\x7f", "../", "; flush ruleset ;", '" ; flush ruleset ; "', "\\\"", "\\n"]

HOSTILE_TEXT = st.one_of(
    st.text(max_size=80),
    st.lists(st.sampled_from(METACHARS) | st.text(max_size=4), max_size=12).map("".join),
    # long multi-byte labels: 64 characters, up to 256 bytes of UTF-8
    st.text(st.characters(min_codepoint=0x80, blacklist_categories=("Cs",)), min_size=58, max_size=66),
)

VALID_PORT = st.one_of(st.integers(1, 65535).map(str),
                       st.tuples(st.integers(1, 65535), st.integers(0, 300)).map(
                           lambda t: "%d-%d" % (t[0], min(65535, t[0] + t[1]))))
HOSTILE_PORT = st.one_of(
    st.sampled_from(["0", "65536", "-1", "1-", "80-70", "08", "1-65535", "65535", "80 ", " 80", "+80", "8_0", "0x50",
                     "1e3", "८०", "８０", "80-80", "1--2", "1-2-3", "80,81", "$(reboot)", "`id`", "", "-",
                     "99999999999999999999", "\n80", "80\x00"]),
    st.integers(-70000, 140000).map(str),
    st.integers(-2 ** 40, 2 ** 40),
    st.tuples(st.integers(-5, 70000), st.integers(-5, 70000)).map(lambda t: "%d-%d" % t),
    st.from_regex(r"\A[0-9 \-+,]{0,12}\Z"),
    JSON,
)
PORT = st.one_of(VALID_PORT, HOSTILE_PORT)

SPECIAL_ADDRS = ["999.1.1.1", "::ffff:1.2.3.4", "10.0.0.0/33", "192.168.1.20", "192.168.1.020", "1.2.3", "01.2.3.4",
                 "fe80::1%eth0", "fe80::1", "2001:db8::1", "2001:DB8::0001", "::1", "0.0.0.0", "255.255.255.255",
                 "224.0.0.1", "::", "10.0.0.1/32", "1.2.3.4 ", "1.2.3.4\n", "192.168.1.5;reboot", "$(id)",
                 "::1.2.3.4", "192.168.1.5/24", "ff02::1", "1.2.3.4\x00", "127.0.0.1", "10.0.0.1", "2001:db8::5"]
VALID_HOST = st.one_of(st.ip_addresses(v=4, network="192.168.0.0/16").map(str),
                       st.ip_addresses(v=4, network="10.0.0.0/8").map(str),
                       st.ip_addresses(v=6, network="2001:db8::/32").map(str))
ADDR = st.one_of(VALID_HOST, st.sampled_from(SPECIAL_ADDRS), st.ip_addresses().map(str), HOSTILE_TEXT)


def _prefix(addr, length):
    return "%s/%d" % (addr, length)


VALID_PREFIX = st.builds(lambda a, n: str(ipaddress.ip_network("%s/%d" % (a, min(n, a.max_prefixlen)), strict=False)),
                         st.ip_addresses(v=4, network="198.51.100.0/24") | st.ip_addresses(v=4, network="203.0.113.0/24")
                         | st.ip_addresses(v=4, network="10.0.0.0/8"),
                         st.integers(0, 32))
VALID_PREFIX6 = st.builds(lambda a, n: str(ipaddress.ip_network("%s/%d" % (a, n), strict=False)),
                          st.ip_addresses(v=6, network="2001:db8::/32"), st.integers(0, 128))
PREFIX = st.one_of(VALID_PREFIX, VALID_PREFIX6, st.builds(_prefix, st.ip_addresses(), st.integers(-1, 130)),
                   st.sampled_from(SPECIAL_ADDRS), HOSTILE_TEXT)
SRC_IP = st.one_of(st.lists(PREFIX, max_size=6), st.lists(VALID_PREFIX, min_size=1, max_size=80),
                   st.lists(VALID_PREFIX6, min_size=1, max_size=60),
                   st.lists(VALID_PREFIX, max_size=6).map(" ".join), PREFIX, JSON)

FLAG = st.one_of(st.sampled_from([True, False, 0, 1, 2, -1, "1", "0", "yes", "no", "on", "off", "true", "false",
                                  "enabled", "disabled", " 1", "TRUE", "maybe", "", "١"]), JSON)
PROTO = st.one_of(st.sampled_from(["tcp", "udp", "tcpudp", "TCP", "icmp", "", "tcp ", "all", "tcp;udp", "tcp\n"]), JSON)
FAMILY = st.one_of(st.sampled_from(["any", "ipv4", "ipv6", "IPV4", "inet", ""]), JSON)
IFACE = st.one_of(st.sampled_from(["wan", "wan", "wan_b", "tun", "WAN", "lan", "wan/x", "wan-2", "", "a" * 16, "wan0",
                                   "lo", "../x", "wan\n", "main"]), HOSTILE_TEXT)
MSS = st.one_of(st.sampled_from(["", "536", "535", "1400", "65495", "65496", "0", "01400", "１４００", "¹⁴⁰⁰", "-1",
                                 "1400 "]), st.integers(0, 70000), JSON)
LABEL = st.one_of(st.sampled_from(["", "LuCI", "x" * 64, "x" * 65, "é" * 64, "🐍" * 64, '"', "'", "it's"]),
                  HOSTILE_TEXT, JSON)
IDS = st.one_of(st.sampled_from(["ex_web", "rd_nas", "../etc/passwd", "ex_web/../rd_nas", "main", "wan", "wan_b", "tun",
                                 "", ".", "..", "ex_web\n", "EX_WEB", "ex_web ", "*", "cfg01", "@exemption[0]",
                                 "ex_web\x00"]), HOSTILE_TEXT, JSON)
TYPE = st.one_of(st.sampled_from(["exemption", "redirect", "rule", "", "Exemption", "uplink", "wormhole"]), JSON)

EXEMPTION_OPTS = {"proto": PROTO, "label": LABEL, "interface": IFACE, "family": FAMILY, "open": FLAG, "enabled": FLAG}
REDIRECT_OPTS = {"label": LABEL, "proto": PROTO, "src": IFACE, "src_dip": ADDR, "src_ip": SRC_IP,
                 "dest_port": PORT, "snat": FLAG, "mss": MSS, "reply": FLAG, "enabled": FLAG}

EXEMPTION = st.fixed_dictionaries({"port": PORT}, optional=dict(EXEMPTION_OPTS, type=st.just("exemption") | TYPE,
                                                                 ubus_rpc_session=JSON))
REDIRECT = st.fixed_dictionaries({"type": st.just("redirect"), "src_dport": PORT, "dest_ip": st.one_of(VALID_HOST, ADDR)},
                                 optional=REDIRECT_OPTS)
# Friendlier ones, so that many are accepted and their rules reach the tools.
GOOD_EXEMPTION = st.fixed_dictionaries({"port": VALID_PORT}, optional={
    "proto": st.sampled_from(["tcp", "udp", "tcpudp"]), "label": HOSTILE_TEXT.filter(lambda s: len(s) <= 64),
    "interface": st.sampled_from(["wan", "wan_b", "tun"]), "family": st.sampled_from(["any", "ipv4", "ipv6"]),
    "open": st.booleans()})
GOOD_REDIRECT = st.fixed_dictionaries({"type": st.just("redirect"), "src_dport": VALID_PORT, "dest_ip": VALID_HOST}, optional={
    "proto": st.sampled_from(["tcp", "udp", "tcpudp"]), "label": HOSTILE_TEXT.filter(lambda s: len(s) <= 64),
    "src": st.sampled_from(["wan", "wan_b", "tun"]), "dest_port": VALID_PORT,
    "src_ip": st.lists(VALID_PREFIX, max_size=4) | st.lists(VALID_PREFIX6, max_size=4)
    | st.lists(VALID_PREFIX, min_size=60, max_size=80),
    "snat": st.booleans(), "mss": st.integers(536, 1460).map(str), "reply": st.booleans()})
OPTIONS = st.dictionaries(st.sampled_from(sorted(set(EXEMPTION_OPTS) | set(REDIRECT_OPTS) | {"port", "src_dport",
                                                                                                "dest_ip"})),
                          st.one_of(PORT, ADDR, FLAG, LABEL), max_size=4)


# --- arbitrary JSON to every method ------------------------------------------------------------

@budget(1000)
@given(method=st.sampled_from(sorted(methods.METHODS)) | st.text(max_size=12),
       args=st.dictionaries(st.sampled_from(ALL_ARGS) | st.text(max_size=10), JSON, max_size=5) | JSON)
def test_arbitrary_json_to_any_method(env, method, args):
    env.reset()
    if method == "check" and isinstance(args, dict) and not set(args) - {"ubus_rpc_session"}:
        method = "status"    # `check` runs every diagnostic of this host: covered elsewhere
    judged(env, method, args)


# --- targeted: exemptions and redirects ---------------------------------------------------------

@budget(400)
@given(args=EXEMPTION)
@example(args={"port": "443-443"})
@example(args={"port": "444", "label": "é" * 64})
@example(args={"port": "444", "label": '" ; flush ruleset ; "'})
@example(args={"port": "444", "label": "$(reboot)`id`\\"})
@example(args={"port": 65535, "proto": "tcpudp", "family": "ipv6", "open": "yes", "interface": "tun"})
def test_exemption_inputs(env, args):
    env.reset()
    judged(env, "add", args)


@budget(400)
@given(args=REDIRECT)
@example(args={"type": "redirect", "src_dport": "8000-8010", "dest_ip": "192.168.1.20", "dest_port": "9000-9010",
               "mss": "1400"})
@example(args={"type": "redirect", "src_dport": "1-65535", "dest_ip": "2001:db8::5"})
@example(args={"type": "redirect", "src_dport": "1000-60000", "dest_ip": "10.0.0.5", "dest_port": "2000-61000"})
@example(args={"type": "redirect", "src_dport": "9000", "dest_ip": "::ffff:1.2.3.4"})
@example(args={"type": "redirect", "src_dport": "9000", "dest_ip": "10.0.0.5", "src_ip": ["10.0.0.0/33"]})
@example(args={"type": "redirect", "src_dport": "9000", "dest_ip": "10.0.0.5", "src_ip": "10.0.0.0/8 10.1.0.0/16"})
def test_redirect_inputs(env, args):
    env.reset()
    judged(env, "add", args)


@budget(300)
@given(sid=IDS, options=OPTIONS)
def test_update_and_delete_inputs(env, sid, options):
    env.reset()
    judged(env, "update", dict(options, id=sid))
    env.reset()
    judged(env, "del", {"id": sid})


@budget(200)
@given(args=st.fixed_dictionaries({}, optional={"type": TYPE, "proto": PROTO, "port": PORT, "interface": IFACE}))
def test_delete_by_port_inputs(env, args):
    env.reset()
    judged(env, "del", args)


# --- sequences: many entries in one config -------------------------------------------------------

OP = st.one_of(
    st.tuples(st.just("add"), GOOD_EXEMPTION),
    st.tuples(st.just("add"), GOOD_REDIRECT),
    st.tuples(st.just("add"), EXEMPTION),
    st.tuples(st.just("add"), REDIRECT),
    st.tuples(st.just("update"), OPTIONS),
    st.tuples(st.just("del"), st.just({})),
    st.tuples(st.just("apply"), st.just({})),
)


@budget(80)
@given(ops=st.lists(OP, min_size=1, max_size=8), data=st.data())
def test_sequences_of_changes(env, ops, data):
    """Entries accumulate (overlapping MSS ranges, long allowlists, every uplink), each step
    judged; at the end the whole ruleset is loaded for real in the namespace."""
    env.reset()
    for method, args in ops:
        args = dict(args)
        if method in ("update", "del"):
            ids = [e.id for e in config.load().entries]
            args["id"] = data.draw(st.sampled_from(ids) if ids else IDS)
        judged(env, method, args)
        assert "error" not in call("list", {})
    load_for_real(env)


def load_for_real(env):
    """Load both backends' output into the namespace and compare what the kernel holds with
    what was written: a label that broke out of its comment would add or drop rules."""
    cfg = config.load()
    f = pinned_facts(cfg)
    plan = render.render(cfg, f, "fw4")
    text = plan["files"][paths.NFT_RULESET]
    env.ns.exec(["nft", "flush", "ruleset"])
    p = env.checker.tool(["nft", "-f"], text)
    assert p.returncode == 0, p.stderr
    listed = json.loads(env.ns.exec(["nft", "-j", "list", "ruleset"]).stdout)["nftables"]
    tables = {(o["table"]["family"], o["table"]["name"]) for o in listed if "table" in o}
    rules = [o["rule"] for o in listed if "rule" in o]
    if cfg.active():
        assert tables == {("inet", "wormhole")}, tables
    assert len(rules) == _nft_rule_lines(text), text
    comments = {e.get("comment") for o in listed if "map" in o for e in _elems(o["map"])}
    for e in cfg.active():
        if e.id in _rendered_ids(text):
            assert quote(entry_tag(e))[1:-1] in comments, (e.id, comments)
    TALLY.add("rulesets loaded for real")
    plan = render.render(cfg, f, "fw3")
    for family, tool, save in (("ipv4", "iptables-restore", "iptables-save"),
                               ("ipv6", "ip6tables-restore", "ip6tables-save")):
        text = plan["files"][paths.FW3_RULES.format(family=family)]
        p = env.checker.tool([tool], text)
        assert p.returncode == 0, (tool, p.stderr, text)
        saved = env.ns.exec([save]).stdout
        assert _ipt_rules(saved) == _ipt_rules(text, expand=True), (family, text, saved)
        TALLY.add("rulesets loaded for real")


def _nft_rule_lines(text):
    n, chain = 0, False
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("chain "):
            chain = True
        elif s == "}":
            chain = False
        elif chain and s and not s.startswith("type "):
            n += 1
    return n


def _elems(m):
    for item in m.get("elem", []):
        if isinstance(item, list):
            item = item[0]
        yield item.get("elem", {}) if isinstance(item, dict) else {}


def _rendered_ids(text):
    return set(re.findall(r'comment "((?:ex|rd)_[0-9a-z]+)', text))


def _ipt_rules(text, expand=False):
    """Count of our rules (-A lines); `-s a,b` is one line in the file and two in the kernel."""
    n = 0
    for line in text.splitlines():
        if line.startswith("-A WORMHOLE_"):
            m = re.search(r" -s (\S+)", line) if expand else None
            n += len(m.group(1).split(",")) if m else 1
    return n


# --- hand-edited config files -------------------------------------------------------------------

def _word(value, style):
    if style == 0:
        return uci_syntax.quote(value)                       # what uci export writes
    if style == 1:
        return '"%s"' % value.replace("\\", "\\\\").replace('"', '\\"')
    return value                                            # bare: may well not parse


VALUE = st.one_of(VALID_PORT, VALID_HOST, VALID_PREFIX, PORT, ADDR, FLAG, LABEL, MSS).map(
    lambda v: v if isinstance(v, str) else json.dumps(v))
def _mostly(good, bad, odds=12):
    """Rarely `bad`: a file is unreadable as soon as one word is, and readable files are
    the interesting ones (their good sections must still load)."""
    # (st.one_of flattens and de-duplicates its branches, so it cannot weight them)
    return st.sampled_from([False] * odds + [True]).flatmap(lambda hostile: bad if hostile else good)


OPTION_NAME = _mostly(st.sampled_from(sorted(set(schema.EXEMPTION) | set(schema.REDIRECT) | set(schema.UPLINK)
                                             | set(schema.MAIN))),
                      st.from_regex(r"\A[A-Za-z0-9_]{1,12}\Z") | HOSTILE_TEXT)
STYLE = st.sampled_from([0] * 12 + [1, 1, 2])
SECTION = st.tuples(
    _mostly(st.sampled_from(["exemption", "redirect", "exemption", "redirect", "uplink", "wormhole"]),
            st.sampled_from(["rule", "Exemption"]) | HOSTILE_TEXT),
    _mostly(st.one_of(st.none(), st.sampled_from(["main", "wan", "wan_b", "ex_web", "rd_x", "wan9"]),
                      st.from_regex(r"\A[A-Za-z0-9_]{1,10}\Z")), HOSTILE_TEXT),
    st.lists(st.tuples(st.sampled_from(["option", "option", "list"]), OPTION_NAME, VALUE, STYLE), max_size=8),
    STYLE)


def config_text(sections):
    out = [BASE]
    for stype, name, options, style in sections:
        out.append("\nconfig %s%s\n" % (_word(stype, style), "" if name is None else " " + _word(name, style)))
        for kind, opt, value, vstyle in options:
            out.append("\t%s %s %s\n" % (kind, _word(opt, style), _word(value, vstyle)))
    return "".join(out)


@budget(150)
@given(sections=st.lists(SECTION, max_size=6), tail=_mostly(st.just(""), st.text(max_size=200)))
def test_hand_edited_configs(env, sections, tail):
    """A config written by hand (or by another tool): loading never fails, bad sections are
    skipped with a reason, the good ones still load into the kernel, and a change through the
    API keeps every byte of what was there."""
    text = config_text(sections) + tail
    env.reset(text)
    TALLY.add("config files tried")
    cfg = config.load()
    if cfg.error is None:
        TALLY.add("config files readable")
        for e in cfg.entries:
            assert e.valid or e.errors
        for fw in ("fw4", "fw3"):
            problems = check_plan(env.checker, render.render(cfg, pinned_facts(cfg), fw), fw)
            assert problems == [], (text, problems)
    reply = call("list", {})
    assert ("error" in reply) == (cfg.error is not None), reply
    before = env.config_bytes()
    reply = judged(env, "add", {"proto": "udp", "port": "39999", "label": "fuzz"})
    if "error" not in reply:
        assert env.config_bytes().startswith(before), "an add changed bytes of other sections"


# --- sizes -------------------------------------------------------------------------------------

MB = 1024 * 1024


@pytest.mark.parametrize("args", [
    {"port": "443", "label": "x" * MB},
    {"port": "1" * MB},
    {"port": "80", "interface": "w" * MB},
    {"type": "redirect", "src_dport": "80", "dest_ip": "1" * MB},
    {"type": "redirect", "src_dport": "80", "dest_ip": "10.0.0.5", "src_ip": ["10.0.0.0/8"] * 10000 + ["x" * MB]},
    {"port": "80", "label": "é" * (MB // 2)},
    {"id": "ex_" + "a" * MB, "label": "x"},
    {"type": "r" * MB, "port": "80"},
], ids=["label", "port", "interface", "dest_ip", "src_ip", "label-utf8", "id", "type"])
def test_megabyte_values(env, args):
    env.reset()
    reply = judged(env, "update" if "id" in args else "add", args)
    assert "error" in reply, "a megabyte value was accepted"
    assert len(reply["error"]["message"]) < 300, "the error echoes the whole value back"


@pytest.mark.parametrize("src_ip", [["10.0.0.0/8"] * 20000, "10.0.0.0/8 " * 20000],
                         ids=["duplicates-list", "duplicates-string"])
def test_megabyte_allowlists(env, src_ip):
    """Valid prefixes, but far too many: refused with a short error naming src_ip."""
    env.reset()
    reply = judged(env, "add", {"type": "redirect", "src_dport": "80", "dest_ip": "10.0.0.5", "src_ip": src_ip})
    assert reply["error"]["field"] == "src_ip" and "at most" in reply["error"]["message"], reply
    assert len(reply["error"]["message"]) < 300


def test_the_longest_allowlist_still_loads(env):
    """The longest allowlist accepted (schema.LIST_MAX entries) must load on fw3 too
    (iptables-restore refuses a parameter longer than 1023 characters)."""
    env.reset()
    nets = ["198.51.%d.%d/32" % (i // 250, i % 250) for i in range(1024)]
    assert len(json.dumps({"type": "redirect", "src_dport": "80", "dest_ip": "10.0.0.5", "src_ip": nets})) < 64 * 1024
    judged(env, "add", {"type": "redirect", "src_dport": "80", "dest_ip": "10.0.0.5", "src_ip": nets})
    load_for_real(env)


# --- the processes: plugin and CLI -------------------------------------------------------------

@pytest.fixture(scope="module")
def proc_env(env, tmp_path_factory):
    """A root for the subprocess examples: real applies, inside the scratch namespace."""
    root = tmp_path_factory.mktemp("proc") / "root"
    return root


def _process_snapshot(root):
    try:
        return support.read_config(root)
    except FileNotFoundError:
        return None


REQUEST = st.one_of(
    EXEMPTION.map(json.dumps), REDIRECT.map(json.dumps), GOOD_EXEMPTION.map(json.dumps),
    JSON.map(lambda v: json.dumps(v, allow_nan=True)),
    st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
    st.sampled_from(["", "{", "[]", "null", '{"port":' + "1" * 5000 + "}", '{"port":"80"}{"port":"81"}',
                     '{"port":"80","port":"81"}', '{"label":"' + "\\ud800" + '","port":"80"}', "\ufeff{}",
                     '{"port":NaN}', '{"port":Infinity}', '{"port":1e400}']),
)


@budget(100)
@given(method=st.sampled_from(["add", "add", "update", "del", "list", "status", "render", "apply", "nope"]),
       data=REQUEST)
def test_plugin_process(env, proc_env, method, data):
    """rpcd's view: exactly one JSON object on stdout, whatever the request; no traceback."""
    support.write_config(proc_env, BASE)
    before = _process_snapshot(proc_env)
    TALLY.add("plugin runs")
    p = subprocess.run(["ip", "netns", "exec", env.ns.name, support.PLUGIN, "call", method],
                       input=data.encode("utf-8", "surrogatepass"), capture_output=True, timeout=60, cwd="/",
                       env=support.clean_env(proc_env, {"WORMHOLE_LOCK_TIMEOUT": "10"}))
    out = p.stdout.decode("ascii")
    assert "Traceback" not in out
    reply, end = json.JSONDecoder().raw_decode(out)
    assert isinstance(reply, dict) and out[end:] == "\n", out
    assert p.returncode == 0
    err = reply.get("error")
    if err:
        assert err["code"] in CODES, reply     # never internal_error
        if err["code"] != "apply_failed":
            assert _process_snapshot(proc_env) == before, (method, data, reply)
    else:
        cfg_text = _process_snapshot(proc_env)
        assert cfg_text is not None


CLI_TEXT = st.one_of(HOSTILE_TEXT, st.sampled_from(METACHARS), VALID_PORT).map(
    lambda s: s.replace("\x00", ""))
CLI_ARGV = st.one_of(
    st.tuples(st.just("inbound"), st.just("add"), st.one_of(VALID_PORT, CLI_TEXT, VALID_PORT.map(lambda p: "udp:" + p)),
              st.just("--label"), CLI_TEXT).map(list),
    st.tuples(st.just("forward"), st.just("add"), VALID_PORT.map(lambda p: "tcp:" + p),
              st.one_of(VALID_HOST, st.sampled_from(SPECIAL_ADDRS).map(lambda s: s.replace("\x00", "")), CLI_TEXT),
              st.just("--allow"), st.one_of(VALID_PREFIX, CLI_TEXT)).map(list),
    st.tuples(st.sampled_from(["inbound", "forward"]), st.sampled_from(["del", "enable", "disable"]), CLI_TEXT).map(list),
    st.lists(st.one_of(st.sampled_from(["inbound", "forward", "add", "del", "list", "--json", "--label", "render",
                                        "status", "apply", "--fw3", "-h", "--", "--open", "--allow", "enable"]),
                       CLI_TEXT), max_size=6),
)


@budget(100)
@given(argv=CLI_ARGV, as_json=st.booleans())
def test_cli_process(env, proc_env, argv, as_json):
    assume("cleanup" not in argv)
    support.write_config(proc_env, BASE)
    before = _process_snapshot(proc_env)
    argv = list(argv) + (["--json"] if as_json else [])
    TALLY.add("cli runs")
    p = subprocess.run(["ip", "netns", "exec", env.ns.name, support.CLI] + argv, capture_output=True, timeout=60,
                       cwd="/", env=support.clean_env(proc_env, {"WORMHOLE_LOCK_TIMEOUT": "10"}))
    out, err = p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")
    assert "Traceback" not in out and "Traceback" not in err, (argv, out, err)
    assert p.returncode in (0, 1, 2, 3), (argv, p.returncode, out, err)     # 3: done, sections skipped
    failed_apply = "apply_failed" in out + err
    if p.returncode in (1, 2) and not failed_apply:
        assert _process_snapshot(proc_env) == before, (argv, out, err)
    # -h (or an abbreviation of --help: argparse takes `--he`) prints the help, --json or not
    if as_json and p.returncode in (0, 1, 3) and out.strip() and not out.startswith("usage:"):
        reply = json.loads(out)
        assert isinstance(reply, dict)
        assert ("error" in reply) == (p.returncode == 1), (argv, reply)


# --- regressions: each defect the fuzzing found, pinned -----------------------------------------

def test_quote_fits_the_nft_comment_limit():
    """64 two-byte letters made a 142-byte comment; nft refuses more than 128 and the whole
    load failed (every later apply too, since the entry stays in the config)."""
    for label in ("é" * 64, "🐍" * 64, "x" * 300, "漢" * 64 + "\\" + '"'):
        q = quote("!wormhole: rd_abcdef " + label)
        assert q.startswith('"!wormhole: rd_abcdef ') and q.endswith('"')
        assert len(q[1:-1].encode("utf-8")) <= 128
        q[1:-1].encode("utf-8").decode("utf-8")     # cut at a character boundary


def test_mss_in_superscript_digits_is_rejected_with_our_message(env):
    env.reset()
    err = judged(env, "add", {"type": "redirect", "src_dport": "80", "dest_ip": "10.0.0.5", "mss": "¹⁴⁰⁰"})["error"]
    assert err["field"] == "mss" and "is not a number" in err["message"], err


@pytest.mark.parametrize("args", [
    {"port": "80\n"},
    {"port": "80", "interface": "wan\n"},
    {"type": "redirect", "src_dport": "80", "dest_ip": "10.0.0.5", "mss": "1400\n"},
])
def test_a_final_newline_is_not_accepted(env, args):
    """`$` in the allow-list regexes also matched before a final newline."""
    env.reset()
    assert "error" in judged(env, "add", args)


def test_a_section_name_with_a_newline_does_not_reach_the_ruleset(env):
    """A quoted section name may span lines: 'rd_x<newline>' passed NAME_RE and became a
    chain name with a newline in it, which broke the whole ruleset."""
    env.reset(BASE + "\nconfig redirect 'rd_x\n'\n\toption src_dport '80'\n\toption dest_ip '192.168.1.5'\n")
    cfg = config.load()
    assert cfg.error and "invalid section name" in cfg.error     # as libuci: the file is refused
    before = env.config_bytes()
    reply = judged(env, "add", {"port": "80"})
    assert reply["error"]["code"] == "config_error" and env.config_bytes() == before


def test_an_uplink_device_with_a_newline_is_skipped(env):
    env.reset(BASE.replace("option device 'wan1'", "option device 'wan1\n'"))
    cfg = config.load()
    assert "wan_b" not in cfg.uplinks and any("wan_b" in p for p in cfg.problems)


def test_carriage_returns_survive_an_edit(env):
    """The config was read in universal-newline mode: every '\\r' came back as '\\n' after
    any change through the API, in sections the change did not touch."""
    crlf = BASE.replace("\n", "\r\n") + "\r\nconfig exemption 'ex_cr'\r\n\toption port '2222'\r\n\toption label 'a\rb'\r\n"
    env.reset(crlf)
    cfg = config.load()
    assert cfg.error is None, cfg.error
    assert cfg.find("ex_web").rec["port"] == (443, 443) and cfg.find("ex_web").valid
    assert cfg.find("ex_cr").errors == [("label", "contains control or unprintable characters")]
    before = env.config_bytes()
    reply = judged(env, "add", {"port": "3333"})
    assert "error" not in reply, reply
    after = env.config_bytes()
    assert after.startswith(before) and b"'a\rb'" in after
