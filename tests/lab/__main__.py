"""Command line: python3 -m tests.lab {check|cleanup|up} ...

  check                     say whether the lab can run here (exit 1 if not)
  cleanup                   remove namespaces/processes of labs whose owner died
  up [router|gateway]       build a lab, print its description, keep it until
     [--hold SECONDS]       Ctrl-C (or SECONDS), then tear it down
"""

import argparse
import signal
import sys
import time

from .gateway_lab import GatewayLab
from .netns import lab_unavailable_reason
from .router_lab import RouterLab
from .state import cleanup_stale


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m tests.lab")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("check")
    sub.add_parser("cleanup")
    up = sub.add_parser("up")
    up.add_argument("kind", nargs="?", choices=["router", "gateway"], default="router")
    up.add_argument("--hold", type=float, default=None)
    args = parser.parse_args(argv)
    if args.cmd == "check":
        reason = lab_unavailable_reason()
        print(reason or "lab available")
        return 1 if reason else 0
    if args.cmd == "cleanup":
        removed = cleanup_stale()
        print("\n".join(removed) if removed else "nothing to clean up")
        return 0
    # make `kill` (e.g. from make) tear the lab down like Ctrl-C does
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with (RouterLab() if args.kind == "router" else GatewayLab()) as lab:
        print(lab.describe(), flush=True)
        try:
            time.sleep(args.hold if args.hold is not None else 1e9)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
