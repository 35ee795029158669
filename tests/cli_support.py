"""What the CLI and HTTP service tests share: a process environment of their own, and the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tokenbudget_core import price_overrides, registry
from tokenbudget_core.cli import cli


def isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Offline and fresh: no API key, store, prices or models from the environment, a fresh
    process-wide registry and price table, and a private spool."""
    for name in ("ANTHROPIC_API_KEY", "TOKENBUDGET_PRICES", "TOKENBUDGET_MODELS", "TOKENBUDGET_STORE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TOKENBUDGET_SPOOL", str(tmp_path / "spool.jsonl"))
    monkeypatch.setattr(price_overrides, "_default_table", None)
    monkeypatch.setattr(registry, "_default", None)


def run(*args: str, stdin: str | None = None) -> Result:
    """``tokenbudget <args>`` in-process."""
    return CliRunner().invoke(cli, list(args), input=stdin)


def assert_one_line_error(result: Result, code: int, *needles: str) -> None:
    """The command failed with exit ``code`` and one ``error: ...`` line on stderr containing ``needles``."""
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert result.exception is None or isinstance(result.exception, SystemExit)
