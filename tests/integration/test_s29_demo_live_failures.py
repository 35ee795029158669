"""``tokenbudget demo --live`` when OpenAI refuses the key or cannot be reached: one ``error:``
line with the documented exit code (it was a 70-140 line traceback and exit 1)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from provider_server import ErrorReply, ProviderServer

from cli_support import assert_one_line_error, isolate, run

ARGS = ("demo", "--live", "--users", "1", "--turns", "1", "--no-progress", "--html", "-")


def live(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, base_url: str) -> None:
    isolate(monkeypatch, tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-revoked")
    monkeypatch.setenv("OPENAI_BASE_URL", base_url)


def test_a_refused_key_is_one_line_naming_openai_api_key(
    provider_server: ProviderServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live(monkeypatch, tmp_path, provider_server.url + "/v1")
    provider_server.queue(*[ErrorReply(status=401, message="Incorrect API key provided") for _ in range(4)])
    result = run(*ARGS)
    assert_one_line_error(result, 1, "--live", "HTTP 401", "OPENAI_API_KEY")


def test_an_unreachable_provider_is_unavailable_exit_4(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as s:  # a loopback port nothing listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    live(monkeypatch, tmp_path, f"http://127.0.0.1:{port}/v1")
    result = run(*ARGS)
    assert_one_line_error(result, 4, "--live", "OpenAI API is unavailable")
