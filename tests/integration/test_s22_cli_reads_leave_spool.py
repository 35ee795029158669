"""``tokenbudget budgets`` and ``report`` only read: run while an app's commits wait in its spool
(the store was down, the app exited before replaying), they neither replay them nor send (and
mark sent) the budget alerts those commits cross. The app replays them later, and its own alert
sink gets the alerts. Review s22 #12."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_support import run
from redis_server import RedisServer
from tokenbudget_core.alerts import Alert
from tokenbudget_core.budgets import load_policy
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.usage import Usage

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("isolated")]

HALF_A_DOLLAR = Usage(input_tokens=200_000, output_tokens=0)  # gpt-4o: $2.50 per million input tokens


@pytest.fixture
def halting_server(redis_server_binary: str) -> Iterator[RedisServer]:
    s = RedisServer(redis_server_binary, persistent=True).start()
    yield s
    s.stop()


@pytest.mark.parametrize("command", ["budgets", "report"])
def test_a_read_command_leaves_the_apps_spool_and_alerts_to_the_app(
    halting_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    policy_path = tmp_path / "budgets.toml"
    policy_path.write_text('daily_usd = "1"\n', encoding="utf-8")
    spool = tmp_path / "app-spool.jsonl"
    monkeypatch.setenv("TOKENBUDGET_SPOOL", str(spool))  # the app's spool, where the CLI would look too
    got: list[Alert] = []
    app = Ledger(
        halting_server.url,
        policy=load_policy(str(policy_path)),
        on_unavailable="open",
        alerts=[got.append],
    )
    try:
        _spool_then_read(app, halting_server, policy_path, command, got)
    finally:
        app.store.close()


def _spool_then_read(
    app: Ledger, halting_server: RedisServer, policy_path: Path, command: str, got: list[Alert]
) -> None:
    app.record(HALF_A_DOLLAR, model="gpt-4o", user="u")
    halting_server.halt()
    assert app.record(HALF_A_DOLLAR, model="gpt-4o", user="u").spooled
    assert len(app.spool) == 1
    halting_server.resume()

    args = ["--store", halting_server.url]
    if command == "budgets":
        args += ["--policy", str(policy_path)]
    result = run(command, *args)

    assert result.exit_code == 0, result.output
    assert "passed" not in result.stderr  # no alert told on the operator's terminal
    if command == "budgets":
        assert "50%" in result.stdout  # the store's figure: $0.50 of $1
    assert len(app.spool) == 1, "the app's spooled commit was replayed by a read command"
    assert app.replay_spool() == 1
    assert sorted(a.threshold for a in got) == [0.8, 1.0]  # the app's own sink gets both alerts
