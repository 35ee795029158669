"""``tokenbudget serve`` never turns auth off by accident: an empty ``--token`` (``--token "$SECRET"``
with ``SECRET`` unset) or an empty ``TOKENBUDGET_TOKEN`` is a one-line ``error:`` naming it, and a
host that is not loopback needs a token unless ``--allow-no-auth`` says a proxy in front
authenticates (then a warning is logged at startup).

The refusals are checked on a port that is already taken: they come before the service listens
(the old code would have reported the port instead, or served without auth)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_support import assert_one_line_error, run
from tokenbudget_core.cli import EXIT_BAD_INPUT
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.server import serve
from tokenbudget_core.server.guards import is_loopback

pytestmark = pytest.mark.usefixtures("isolated")

SCRIPT = Path(sys.executable).with_name("tokenbudget")
AUTH_OFF = ("--allow-no-auth",)


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port something already listens on (every interface)."""
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        yield s.getsockname()[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        port: int = s.getsockname()[1]
    return port


def test_an_empty_token_flag_is_refused_naming_it(taken_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOKENBUDGET_TOKEN", raising=False)
    result = run("serve", "--store", "memory://", "--port", str(taken_port), "--token", "")
    assert_one_line_error(result, EXIT_BAD_INPUT, "--token", "empty", "auth off", "SECRET")


def test_a_blank_token_flag_is_refused_naming_the_flag(
    taken_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TOKENBUDGET_TOKEN", raising=False)
    result = run("serve", "--store", "memory://", "--port", str(taken_port), "--token", "   ")
    assert_one_line_error(result, EXIT_BAD_INPUT, "--token", "empty")


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_token_variable_is_refused_naming_it(
    value: str, taken_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKENBUDGET_TOKEN", value)
    result = run("serve", "--store", "memory://", "--port", str(taken_port))
    assert_one_line_error(result, EXIT_BAD_INPUT, "TOKENBUDGET_TOKEN", "auth off", "unset it")


def test_a_host_that_is_not_loopback_needs_a_token(taken_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOKENBUDGET_TOKEN", raising=False)
    result = run("serve", "--store", "memory://", "--host", "0.0.0.0", "--port", str(taken_port))
    assert_one_line_error(
        result,
        EXIT_BAD_INPUT,
        "--token",
        "'0.0.0.0'",
        "not a loopback",
        "TOKENBUDGET_TOKEN",
        "--allow-no-auth",
    )


def test_the_python_serve_refuses_the_same_before_listening(taken_port: int) -> None:
    with pytest.raises(InvalidInputError) as caught:
        serve("memory://", host="0.0.0.0", port=taken_port)
    assert caught.value.field == "token"
    assert "allow_no_auth=True" in str(caught.value)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "10.1.2.3", "no-such-host.invalid"])
def test_hosts_that_are_not_loopback(host: str) -> None:
    assert not is_loopback(host)


def test_allow_no_auth_serves_without_a_token_and_warns(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "TOKENBUDGET_TOKEN"}
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(SCRIPT),
                "serve",
                "--store",
                "memory://",
                "--host",
                "0.0.0.0",
                "--port",
                str(port),
                *AUTH_OFF,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            for _ in range(600):  # readiness, not a timing assertion: up to ~30 s on a slow machine
                if proc.poll() is not None:
                    pytest.fail(f"serve exited {proc.returncode}: {log.read_text()}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.05)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/budgets", timeout=10) as response:
                assert response.status == 200
                assert "budgets" in json.load(response)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    text = log.read_text()
    warning = [line for line in text.splitlines() if "auth is off" in line]
    assert len(warning) == 1, text
    assert "'0.0.0.0'" in warning[0], warning[0]
    assert "not a loopback" in warning[0], warning[0]
