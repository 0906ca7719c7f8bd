"""Shared pytest set-up: the package on sys.path, scratch roots, scratch namespaces."""

import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "rpcd"))
if REPO not in sys.path:
    sys.path.insert(1, REPO)

from tests import support  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--update-goldens", action="store_true", help="rewrite golden files from the current output")


@pytest.fixture
def update_goldens(request):
    return request.config.getoption("--update-goldens")


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A scratch WORMHOLE_ROOT with an empty config dir, used by in-process tests."""
    r = tmp_path / "root"
    (r / "etc" / "config").mkdir(parents=True)
    monkeypatch.setenv("WORMHOLE_ROOT", str(r))
    monkeypatch.setenv("WORMHOLE_UCI_BACKEND", "file")
    return r


@pytest.fixture
def netns():
    """A scratch network namespace with a dummy uplink `wan0` (192.0.2.2/28 via 192.0.2.1)."""
    support.require_root_tools("ip", "nft")
    ns = support.ScratchNetns()
    try:
        yield ns
    finally:
        ns.close()
