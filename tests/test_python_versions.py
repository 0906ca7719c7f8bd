"""The routers run Python 3.11 (OpenWrt 24.10) or 3.13 (25.12): the plugin must answer the
same under both. Uses whichever of those interpreters this machine has (pyenv or PATH)."""

import glob
import json
import os
import subprocess

import pytest

from tests import support
from tests.golden_cases import CASES_DIR


def _interpreters():
    found = {}
    for minor in ("3.11", "3.13"):
        # Real interpreters only: pyenv's shims need pyenv's environment, which the plugin's
        # clean environment (like rpcd's) does not have.
        cands = ["/usr/bin/python" + minor] + sorted(
            glob.glob(os.path.expanduser("~/.pyenv/versions/%s.*/bin/python%s" % (minor, minor))))
        for c in cands:
            if os.access(c, os.X_OK):
                found[minor] = c
                break
    return found


INTERPRETERS = _interpreters()


def _call(python, root, method, request):
    p = subprocess.run([python, support.PLUGIN, "call", method], input=json.dumps(request), capture_output=True,
                       text=True, timeout=60, cwd="/", env=support.clean_env(root, {"WORMHOLE_PATH": "/nonexistent"}))
    return support.first_json(p.stdout)


@pytest.mark.parametrize("case", ["lan_redirect_remap", "tunnel_redirect_preserve", "broken_section", "label_injection"])
def test_plugin_answers_alike_on_311_and_313(case, tmp_path):
    if len(INTERPRETERS) < 2:
        pytest.skip("needs both python3.11 and python3.13 (found: %s)" % ", ".join(sorted(INTERPRETERS)) or "none")
    root = tmp_path / "root"
    with open(os.path.join(CASES_DIR, case, "wormhole")) as f:
        support.write_config(root, support.UPLINK_WAN + "\n" + f.read())
    replies = {}
    for minor, python in INTERPRETERS.items():
        replies[minor] = [_call(python, root, m, r) for m, r in
                          (("list", {}), ("render", {"backend": "fw4"}), ("render", {"backend": "fw3"}),
                           ("add", {"port": "99999"}), ("del", {"id": "../x"}))]
        lst = subprocess.run([python, support.PLUGIN, "list"], capture_output=True, text=True, timeout=30, cwd="/",
                             env=support.clean_env(root))
        replies[minor].append(json.loads(lst.stdout))
    assert replies["3.11"] == replies["3.13"]
