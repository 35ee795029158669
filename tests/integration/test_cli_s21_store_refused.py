"""``report`` and ``budgets`` against a store that is up but refuses the ledger (a real Redis
started with a password, the URL giving none or a wrong one) fail with the "unavailable" exit
code 4 and one ``error:`` line saying what to check (the credentials in ``--store``, the ACL),
not with code 1, which says the user's input is wrong."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_support import assert_one_line_error, run
from redis_server import RedisServer
from tokenbudget_core.cli import EXIT_OK, EXIT_UNAVAILABLE

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("isolated")]

PASSWORD = "right-pass"


@pytest.fixture
def server(redis_server_binary: str) -> Iterator[RedisServer]:
    """A Redis of this test alone that requires a password (``requirepass``)."""
    import redis

    s = RedisServer(redis_server_binary).start()
    try:
        client = redis.Redis.from_url(s.url)
        client.config_set("requirepass", PASSWORD)
        client.close()
        yield s
    finally:
        s.stop()


def _url(server: RedisServer, password: str | None) -> str:
    auth = "" if password is None else f":{password}@"
    return f"redis://{auth}127.0.0.1:{server.port}/0"


def _args(command: str, url: str, tmp_path: Path) -> list[str]:
    if command == "report":
        return [command, "--store", url]
    policy = tmp_path / "budgets.toml"
    policy.write_text('daily_usd = "5"\n', encoding="utf-8")
    return [command, "--store", url, "--policy", str(policy)]


@pytest.mark.parametrize("command", ["report", "budgets"])
@pytest.mark.parametrize("password", ["wrong-pass", None], ids=["wrong password", "no password"])
def test_a_store_refusing_the_credentials_is_unavailable_not_bad_input(
    server: RedisServer, tmp_path: Path, command: str, password: str | None
) -> None:
    result = run(*_args(command, _url(server, password), tmp_path))
    assert_one_line_error(
        result, EXIT_UNAVAILABLE, f"127.0.0.1:{server.port}", "password", "ACL", "--store", "Nothing was read"
    )
    assert "wrong-pass" not in result.stderr  # the URL's password is redacted


@pytest.mark.parametrize("command", ["report", "budgets"])
def test_the_right_password_reads(server: RedisServer, tmp_path: Path, command: str) -> None:
    result = run(*_args(command, _url(server, PASSWORD), tmp_path))
    assert result.exit_code == EXIT_OK, result.output


def test_the_terminal_sees_one_error_line(server: RedisServer, tmp_path: Path) -> None:
    """In a real process (no test logging handler), the store's own ERROR record about the
    credentials is not printed before the command's ``error:`` line: one line in all."""
    env = dict(os.environ, TOKENBUDGET_SPOOL=str(tmp_path / "spool.jsonl"))
    code = "from tokenbudget_core.cli import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", code, "report", "--store", _url(server, "wrong-pass")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == EXIT_UNAVAILABLE, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: Redis at redis://:***@127.0.0.1:")
