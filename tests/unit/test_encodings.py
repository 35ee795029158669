"""tiktoken works without a network, and says what to do when it cannot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import sys
from tokenbudget_core.counting import TokenCounter
from tokenbudget_core.errors import EncodingUnavailableError
try:
    print(int(TokenCounter.for_model(sys.argv[1]).count("hello offline world")))
except EncodingUnavailableError as e:
    print("ERROR", e)
"""


def run_offline(tmp_path: Path, model: str, **env: str) -> str:
    # A fresh temp dir means an empty tiktoken cache; the proxy on a closed loopback port
    # makes any download fail at once, as on a machine without a network.
    clean = {k: v for k, v in os.environ.items() if k not in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR")}
    clean.update(
        TMPDIR=str(tmp_path),
        HTTPS_PROXY="http://127.0.0.1:9",
        HTTP_PROXY="http://127.0.0.1:9",
        NO_PROXY="",
        **env,
    )
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, model],
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return out.stdout.strip()


@pytest.mark.parametrize(("model", "expected"), [("gpt-4o", "3"), ("gpt-4", "3")])
def test_counts_offline_from_bundled_bpe_files(tmp_path: Path, model: str, expected: str) -> None:
    assert run_offline(tmp_path, model) == expected
    assert any((tmp_path / "data-gym-cache").iterdir())


def test_user_cache_dir_without_the_file_gives_a_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty-cache"
    empty.mkdir()
    out = run_offline(tmp_path, "gpt-4o", TIKTOKEN_CACHE_DIR=str(empty))
    assert out.startswith("ERROR")
    assert "TIKTOKEN_CACHE_DIR" in out
    assert "o200k_base" in out


@pytest.mark.parametrize("variable", ["TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"])
def test_a_cache_dir_set_but_empty_is_named_not_blamed_on_the_bundled_file(
    tmp_path: Path, variable: str
) -> None:
    # tiktoken reads an empty value as "no cache": the bundled copy cannot be used through it.
    # The error said "the bundled BPE file could not be used (<a DNS error>)".
    out = run_offline(tmp_path, "gpt-4o", **{variable: ""})
    assert out.startswith("ERROR")
    assert f"{variable} is set but empty" in out
    assert f"Unset {variable}" in out
    assert "bundled BPE file could not be used" not in out
