"""wormhole: inbound services under a VPN kill-switch, and port forwards over WireGuard.

Data flows one way (README.md "How it works", docs/DESIGN-NOTES.md):
plugin / CLI -> api -> config | facts | render (pure) -> apply.
"""

import os
import sys

VERSION = "0.1.0"


def add_site_packages():
    """Put the interpreter's own site-packages on sys.path, as `site` would.

    The entry points run with `python3 -S`: rpcd starts the plugin for every ubus call
    and `site` is about a sixth of the interpreter's start-up (docs/PERFORMANCE.md, 4).
    What we need from it is the directory OpenWrt's python3-uci and python3-ubus
    install into: <prefix>/<platlibdir or lib>/pythonX.Y/site-packages, site's own formula
    (tests/test_backend_imports.py checks it against sysconfig). Without -S it is
    already there and nothing changes.
    """
    version = "python%d.%d" % sys.version_info[:2]
    for prefix in dict.fromkeys((sys.prefix, sys.exec_prefix)):
        for libdir in dict.fromkeys((sys.platlibdir, "lib")):
            path = os.path.join(prefix, libdir, version, "site-packages")
            if path not in sys.path and os.path.isdir(path):
                sys.path.append(path)
