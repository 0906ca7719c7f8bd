"""Pure rendering: config records + system facts -> generated files and the routing plan.

No I/O and no clock here; golden tests pin the complete output (tests/golden/).
"""

from .. import paths
from . import iptables, nft, routing
from .common import build_model


def render(cfg, facts, backend):
    """{"files": {path: text|None}, "live": {path: text}, "routing": {...},
    "skipped": {id: reason}, "warnings": [...]}.

    `backend` is "fw4" or "fw3". A file mapped to None is to be removed. "live" holds what
    apply loads instead of a file's text when they differ (hit counters carried over).
    """
    model = build_model(cfg, facts)
    files = nft.render(model) if backend == "fw4" else iptables.render(model)
    live = nft.live_ruleset(model) if backend == "fw4" else None
    return {
        "files": files,
        "live": {paths.NFT_RULESET: live} if live else {},
        "routing": routing.plan(model),
        "skipped": dict(model.skipped),
        "warnings": list(model.warnings),
    }
