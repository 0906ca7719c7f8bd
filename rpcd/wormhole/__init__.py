"""wormhole: inbound services under a VPN kill-switch, and port forwards over WireGuard.

Data flows one way (see docs/ARCHITECTURE.md):
plugin / CLI -> api -> config | facts | render (pure) -> apply.
"""

VERSION = "0.1.0"
