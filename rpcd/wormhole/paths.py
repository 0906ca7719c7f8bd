"""Every path the product reads or writes, prefixed by $WORMHOLE_ROOT.

Tests and the lab point WORMHOLE_ROOT at a scratch directory; on a router it is unset.
Paths are given as absolute device paths; `under_root()` maps them onto the root.
"""

import os

CONFIG_DIR = "/etc/config"
PACKAGE = "wormhole"
FIREWALL_PACKAGE = "firewall"

NFT_DIR = "/usr/share/nftables.d"
NFT_RULESET = NFT_DIR + "/ruleset-post/50-wormhole.nft"
# fw4 inlines chain-pre/<chain>/*.nft at the top of its own chain <chain>.
NFT_CHAIN_PRE = NFT_DIR + "/chain-pre/{chain}/50-wormhole.nft"

FW3_RULES = "/usr/share/wormhole/fw3-{family}.rules"

STATE_DIR = "/var/run/wormhole"
LAST_APPLY = STATE_DIR + "/last-apply.json"
APPLIED_STATE = STATE_DIR + "/applied.json"
# Present while the service is stopped (init stop, cleanup): the hotplug hook then does not
# re-apply. On tmpfs, so a reboot starts the service again.
STOPPED_FLAG = STATE_DIR + "/stopped"
LOCK_FILE = "/var/lock/wormhole.lock"
UCI_SAVEDIR = STATE_DIR + "/uci"

FW4_BIN = "/sbin/fw4"

# Kernel settings are not under WORMHOLE_ROOT: each network namespace has its own.
FWMARK_ACCEPT = "/proc/sys/net/ipv4/tcp_fwmark_accept"


def root():
    """The scratch root from the environment, without a trailing slash ('' on a router)."""
    return os.environ.get("WORMHOLE_ROOT", "").rstrip("/")


def under_root(device_path):
    """Map an absolute device path onto $WORMHOLE_ROOT."""
    return root() + device_path
