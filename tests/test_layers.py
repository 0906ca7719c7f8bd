"""The house plan holds (docs/DESIGN-NOTES.md, "Layers"): faces -> api -> config / facts /
pure render -> apply, and what each section type is, said once, in schema.

- imports: render is pure (no config, facts, apply, state, system, UCI), the faces
  (plugin, CLI, method table) reach the system only through api, and nothing below api
  imports it;
- the option tables are the one list of options: the plugin's method table, its JSON
  types and the LuCI view's parameter list are held equal to them here;
- facts are checked once, in build_model: a device name netifd gives that cannot go into
  a rule skips that uplink on both backends, with a warning, never a crash.
"""

import ast
import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if __name__ == "__main__":      # run as a script: the package is not on the path yet
    sys.path.insert(0, os.path.join(ROOT, "rpcd"))

from wormhole import config, methods, render, schema  # noqa: E402
from wormhole.uci import Section  # noqa: E402

PKG = os.environ.get("WORMHOLE_PKG") or os.path.join(ROOT, "rpcd", "wormhole")
VIEW = os.path.join(ROOT, "luci-app-wormhole", "htdocs", "luci-static", "resources", "view", "wormhole", "inbound.js")

FACES = {"plugin", "cli", "methods"}
# What each layer must not import (module names relative to the package; a name covers
# its submodules: "render" forbids render.nft too).
FORBIDDEN = {
    "render": {"config", "facts", "apply", "api", "state", "system", "sysctls", "diagnostics", "uci", "fsutil",
               "rtnl", "nfnl"},
    "face": {"config", "apply", "facts", "render", "state", "sysctls", "diagnostics", "uci"},
    "lower": {"api"},
    "facts": {"render", "apply", "sysctls", "api"},
}


def layer_of(module):
    top = module.split(".")[0]
    if top == "render":
        return "render"
    if top in FACES:
        return "face"
    if top == "api":
        return "api"
    if top == "facts":
        return "facts"
    return "lower"


def imports_of(source, module, is_package):
    """The package modules `source` imports, relative names ("render.nft", "config")."""
    parts = module.split(".") if module else []
    here = parts if is_package else parts[:-1]
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = here[:len(here) - node.level + 1] if node.level > 1 else list(here)
            target = base + (node.module.split(".") if node.module else [])
            if node.module:
                out.add(".".join(target))
            for alias in node.names:
                out.add(".".join(target + [alias.name]))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            out.update(n[len("wormhole."):] for n in names if n.startswith("wormhole."))
    return {m for m in out if m}


def modules():
    for dirpath, _dirs, files in os.walk(PKG):
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, name), PKG)[:-3].split(os.sep)
            is_package = rel[-1] == "__init__"
            if is_package:
                rel = rel[:-1]
            with open(os.path.join(dirpath, name)) as f:
                yield ".".join(rel) or "", f.read(), is_package


def violations(module, source, is_package):
    layer = layer_of(module) if module else "lower"
    if layer == "api":
        return []
    rules = FORBIDDEN[layer] | (FORBIDDEN["lower"] if layer in ("facts", "render") else set())
    bad = []
    for target in sorted(imports_of(source, module, is_package)):
        head = target.split(".")[0]
        if head in rules and head != module.split(".")[0]:
            bad.append("%s (%s) imports %s" % (module, layer, target))
    return bad


def graph():
    """Module -> the package modules it imports (a submodule of render or uci by its own name)."""
    def module_of(target):
        parts = target.split(".")
        sub = os.path.join(PKG, *parts[:2])
        is_module = len(parts) > 1 and (os.path.isfile(sub + ".py") or os.path.isdir(sub))
        return ".".join(parts[:2]) if is_module else parts[0]
    return {m: sorted({module_of(t) for t in imports_of(s, m, p)} - {m}) for m, s, p in modules()}


def test_no_module_imports_across_the_layers():
    bad = [v for m, s, p in modules() for v in violations(m, s, p)]
    assert bad == [], "\n".join(bad)


@pytest.mark.parametrize("module,source", [
    ("render.nft", "from ..config import load\n"),
    ("render.common", "def f():\n    from .. import facts\n"),
    ("cli", "from . import apply as applier\n"),
    ("plugin", "from .config import load\n"),
    ("facts", "from .render.common import build_model\n"),
    ("config", "from . import api\n"),
    ("apply", "from .api import write\n"),
])
def test_the_layer_check_sees_a_crossing(module, source):
    """The checker itself: each forbidden edge, at top level or inside a function, is seen."""
    assert violations(module, source, False)


def test_the_graph_printed_for_the_design_notes_is_current():
    """`python -m tests.test_layers` prints the graph; render's modules import only pure ones."""
    g = graph()
    for module, deps in g.items():
        if module.startswith("render"):
            assert set(d.split(".")[0] for d in deps) <= {"chars", "schema", "paths", "layout", "render"}, module


# --- one list of options ----------------------------------------------------------------------

@pytest.mark.parametrize("stype", sorted(schema.ENTRY_TYPES))
def test_the_method_table_lists_every_option_of_the_schema(stype):
    assert methods.ENTRY_OPTIONS[stype] == tuple(schema.ENTRY_TYPES[stype].options)


def test_every_option_has_the_json_types_its_parser_takes():
    for kind in schema.ENTRY_TYPES.values():
        for name, opt in kind.options.items():
            assert methods.ARG_TYPES[name] == schema.json_types(opt), name


def test_every_method_argument_has_a_type():
    """A name missing here makes `wormhole list` fail, and rpcd then registers no object."""
    for method, args in methods.METHODS.items():
        for arg in args:
            assert arg in methods.ARG_TYPES, "%s.%s" % (method, arg)
    out = subprocess.run([sys.executable, os.path.join(ROOT, "rpcd", "libexec", "wormhole"), "list"],
                         capture_output=True, text=True, check=True).stdout
    assert set(json.loads(out)) == set(methods.METHODS)


def test_the_view_sends_every_option_of_the_schema():
    with open(VIEW) as f:
        text = f.read()
    block = re.search(r"var ENTRY_OPTIONS = \[(.*?)\];", text, re.S)
    assert block, "inbound.js has no ENTRY_OPTIONS list"
    sent = re.findall(r"'(\w+)'", block.group(1))
    wanted = list(dict.fromkeys(o for k in schema.ENTRY_TYPES.values() for o in k.options))
    assert sorted(sent) == sorted(wanted)
    assert len(sent) == len(set(sent))


def test_the_entry_types_name_their_own_fields():
    for kind in schema.ENTRY_TYPES.values():
        assert kind.port_field in kind.options and kind.options[kind.port_field].required
        assert kind.uplink_field in kind.options and kind.options[kind.uplink_field].parse is schema.parse_network


def test_check_reads_the_firewall_s_false_words_as_the_schema_does():
    """`enabled 'disabled'` switches a firewall redirect off, as fw4 reads it."""
    from wormhole import diagnostics
    for word in schema.FALSE_WORDS:
        sec = Section("r", "redirect", False, {"enabled": word, "src_dport": "443", "proto": "tcp"})
        assert diagnostics._fw_ports([sec], "redirect", "src_dport", None) == [], word
    on = Section("r", "redirect", False, {"enabled": "1", "src_dport": "443", "proto": "tcpudp"})
    assert diagnostics._fw_ports([on], "redirect", "src_dport", None)[0][0] == ["tcp", "udp"]


# --- facts checked once -----------------------------------------------------------------------

def _cfg():
    return config.build([
        Section("main", "wormhole", False, {}),
        Section("ex_1", "exemption", False, {"port": "443"}),
        Section("rd_1", "redirect", False, {"src_dport": "8080", "dest_ip": "192.168.1.20"}),
        Section("ex_2", "exemption", False, {"port": "22", "interface": "wan2"}),
    ])


def _facts(device):
    up = {"gateway": "192.0.2.1", "gateway6": None, "up": True, "p2p": False, "mtu": 1500, "mtu6": 1500}
    return {"backend": "fw4", "counters": {}, "dest_mtus": {},
            "uplinks": {"wan": dict(up, device=device), "wan2": dict(up, device="eth2")},
            "uplink_index": {"wan": 1, "wan2": 2}}


@pytest.mark.parametrize("backend", ["fw4", "fw3"])
@pytest.mark.parametrize("device", ['eth0"; drop', "a" * 16, "eth 0", ""])
def test_a_device_name_that_cannot_go_into_a_rule_skips_its_uplink(backend, device):
    plan = render.render(_cfg(), _facts(device), backend)
    text = "".join(t for t in plan["files"].values() if t)
    if not device:          # no device: the uplink is unknown, as before
        assert set(plan["skipped"]) == {"ex_1", "rd_1"}
        return
    assert set(plan["skipped"]) == {"ex_1", "rd_1"}
    assert all("unusable device name" in why for why in plan["skipped"].values())
    assert any(w.startswith("uplink wan skipped: device") for w in plan["warnings"])
    assert device not in text and "eth2" in text       # the other uplink still renders


if __name__ == "__main__":
    for mod, deps in sorted(graph().items()):
        print("%-16s -> %s" % (mod or "wormhole", ", ".join(deps)))
