"""pytest helpers for the lab: require_lab() and ready-made fixtures.

In a conftest.py:   from tests.lab.pytest_support import router_lab, gateway_lab
In a test:          def test_x(router_lab): ...
"""

import os

import pytest

from .gateway_lab import GatewayLab
from .netns import lab_unavailable_reason
from .router_lab import RouterLab


def require_lab():
    """Skip the test when the lab cannot run; under CI=true fail it instead."""
    reason = lab_unavailable_reason()
    if reason is None:
        return
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def router_lab():
    require_lab()
    with RouterLab() as lab:
        yield lab


@pytest.fixture
def gateway_lab():
    require_lab()
    with GatewayLab() as lab:
        yield lab
