"""Tool runner: argv only, bounded time, errors that name the tool."""

import pytest

from wormhole import system


@pytest.fixture(autouse=True)
def no_deadline(monkeypatch):
    monkeypatch.setattr(system, "_deadline", None)


def test_missing_tool_is_named():
    with pytest.raises(system.ToolError) as e:
        system.run(["wormhole-no-such-tool", "x"])
    assert "wormhole-no-such-tool: not installed" in str(e.value)


def test_failure_carries_the_tools_message():
    with pytest.raises(system.ToolError) as e:
        system.run(["sh", "-c", "echo boom >&2; exit 3"])
    assert "boom" in str(e.value)


def test_timeout_is_enforced():
    with pytest.raises(system.ToolError) as e:
        system.run(["sleep", "30"], timeout=0.2)
    assert "timed out" in str(e.value)


def test_request_deadline_bounds_every_later_call():
    system.set_deadline(0.3)
    with pytest.raises(system.ToolError) as e:
        system.run(["sleep", "30"], timeout=20)
    assert "timed out" in str(e.value)
    with pytest.raises(system.ToolError) as e:
        system.run(["true"])
    assert "ran out of time" in str(e.value)


def test_no_shell_interpretation():
    rc, out, _ = system.run(["echo", "$(id) `id` ; x"])
    assert out.strip() == "$(id) `id` ; x"
