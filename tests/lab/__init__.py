"""The wormhole network-namespace test lab (stdlib only; needs root).

    from tests.lab import RouterLab
    with RouterLab(killswitch="metric") as lab:
        lab.tcp_server("router", 443)
        reply = lab.tcp_request("client", lab.wan4, 443)

See README.md in this directory for the API.
"""

from .base import Lab
from .firewall import Fw4, Redirect, Rule, Zone
from .gateway_lab import GatewayLab
from .netns import CommandError, CommandTimeout, LabError
from .router_lab import RouterLab
from .state import cleanup_stale
from .traffic import BulkResult, Reply, StreamStats

__all__ = ["Lab", "RouterLab", "GatewayLab", "cleanup_stale", "LabError", "CommandError",
           "CommandTimeout", "Fw4", "Zone", "Rule", "Redirect", "Reply", "StreamStats",
           "BulkResult"]
