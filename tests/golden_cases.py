"""Golden cases: tests/golden/cases/<case>/{wormhole, facts.json} -> expected/<artifact>."""

import json
import os

from wormhole import config, render
from wormhole.uci.filebackend import Document

CASES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden", "cases")

ARTIFACTS = {
    # artifact name: (backend, path in the plan's files)
    "fw4-ruleset.nft": ("fw4", "/usr/share/nftables.d/ruleset-post/50-wormhole.nft"),
    "fw4-chain-pre-input.nft": ("fw4", "/usr/share/nftables.d/chain-pre/input/50-wormhole.nft"),
    "fw4-chain-pre-forward.nft": ("fw4", "/usr/share/nftables.d/chain-pre/forward/50-wormhole.nft"),
    "fw4-chain-pre-mangle_forward.nft": ("fw4", "/usr/share/nftables.d/chain-pre/mangle_forward/50-wormhole.nft"),
    "fw3-ipv4.rules": ("fw3", "/usr/share/wormhole/fw3-ipv4.rules"),
    "fw3-ipv6.rules": ("fw3", "/usr/share/wormhole/fw3-ipv6.rules"),
}


def case_names():
    return sorted(os.listdir(CASES_DIR))


def load_case(name):
    d = os.path.join(CASES_DIR, name)
    with open(os.path.join(d, "wormhole")) as f:
        sections = Document(f.read(), "wormhole").sections()
    with open(os.path.join(d, "facts.json")) as f:
        facts = json.load(f)
    return config.build(sections), facts


def render_case(name):
    """{artifact: text} for one case: every file of both backends, the routing plan, a report."""
    cfg, facts = load_case(name)
    out = {}
    plans = {b: render.render(cfg, facts, b) for b in ("fw4", "fw3")}
    for artifact, (backend, path) in ARTIFACTS.items():
        text = plans[backend]["files"].get(path)
        out[artifact] = "# (file removed)\n" if text is None else text
    live = plans["fw4"]["live"].get(ARTIFACTS["fw4-ruleset.nft"][1])
    if live:
        out["fw4-live.nft"] = live
    out["routing.json"] = json.dumps(plans["fw4"]["routing"], indent=1, sort_keys=True) + "\n"
    report = {
        "skipped": plans["fw4"]["skipped"],
        "warnings": plans["fw4"]["warnings"],
        "errors": {e.id: ["%s: %s" % x for x in e.errors] for e in cfg.entries if e.errors},
        "entry_warnings": {e.id: ["%s: %s" % x for x in e.warnings] for e in cfg.entries if e.warnings},
        "problems": cfg.problems,
    }
    out["report.json"] = json.dumps(report, indent=1, sort_keys=True) + "\n"
    return out


def expected_path(name, artifact):
    return os.path.join(CASES_DIR, name, "expected", artifact)
