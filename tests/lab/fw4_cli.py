"""The lab's stand-in for /sbin/fw4, installed as <root>/sbin/fw4.

It runs inside the host's namespace (where the product calls it) and
re-renders the lab's fw4 config (saved as JSON by Lab.fw4_reload) with the
include files found *now*, like a real `fw4 reload`. Commands: reload,
restart, start (load), check (nft -c), print (the ruleset text).
"""

import subprocess
import sys
from pathlib import Path

from . import firewall, fw4_render

STUB = """#!{python}
# fw4 stand-in written by the wormhole lab: reload|restart|start|print|check
import sys
sys.path.insert(0, {repo!r})
from tests.lab.fw4_cli import main
sys.exit(main([{config!r}, {root!r}, *sys.argv[1:]]))
"""


def install_stub(root, config_path):
    """Write <root>/sbin/fw4, running this module with this Python and checkout."""
    repo = Path(__file__).resolve().parents[2]
    path = Path(root) / "sbin/fw4"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(STUB.format(python=sys.executable, repo=str(repo), config=str(config_path),
                                root=str(root)))
    path.chmod(0o755)
    return path


def main(argv):
    config, root, *rest = argv
    command = rest[0] if rest else "print"
    fw = firewall.from_json(Path(config).read_text())
    text = fw4_render.render(fw, root)
    if command == "print":
        sys.stdout.write(text)
        return 0
    nft = ["nft", "-c", "-f", "-"] if command == "check" else ["nft", "-f", "-"]
    if command not in ("check", "reload", "restart", "start"):
        sys.stderr.write(f"fw4 (lab stand-in): unsupported command {command!r}\n")
        return 1
    return subprocess.run(nft, input=text, text=True, timeout=30).returncode
