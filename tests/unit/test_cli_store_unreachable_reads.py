"""``report`` and ``budgets`` only read: an unreachable store says nothing was read and how to
point at the right one, not the write path's "the call was not sent ... on_unavailable='open'"
(no call exists, and that option is the app's)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from cli_support import assert_one_line_error, run
from tokenbudget_core.cli import EXIT_UNAVAILABLE

pytestmark = pytest.mark.usefixtures("isolated")


def closed_port() -> int:
    """A local port nothing listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("command", ["report", "budgets"])
def test_an_unreachable_store_for_a_read(command: str, tmp_path: Path) -> None:
    policy = tmp_path / "budgets.toml"
    policy.write_text('daily_usd = "5"\n', encoding="utf-8")
    extra = ["--policy", str(policy)] if command == "budgets" else []
    url = f"redis://127.0.0.1:{closed_port()}/0"
    result = run(command, "--store", url, *extra)
    assert_one_line_error(result, EXIT_UNAVAILABLE, url, "unreachable", "nothing was read", "--store")
    assert "not sent" not in result.stderr
    assert "on_unavailable" not in result.stderr
