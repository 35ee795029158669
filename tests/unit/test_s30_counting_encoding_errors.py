"""``EncodingUnavailableError`` names the file tiktoken really looks up, for every encoding.

For ``p50k_base``, ``r50k_base`` and ``p50k_edit`` (which ``ModelRegistry.register(encoding=...)``
accepts) the error named the SHA-1 of a placeholder text as the file to copy, and pointed at a
``llama-index-core`` copy that does not exist (it ships cl100k's and o200k's files only). The URLs
below are read from tiktoken's own registry (``tiktoken_ext.openai_public``), not from ours.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tiktoken_ext.openai_public as openai_public

SCRIPT = """
import sys
from tokenbudget_core.encodings import get_encoding
from tokenbudget_core.errors import EncodingUnavailableError
try:
    get_encoding(sys.argv[1])
    print("LOADED")
except EncodingUnavailableError as e:
    print("ERROR", e)
"""


def tiktoken_file(name: str) -> str:
    """The cache file name tiktoken reads for ``name``: the SHA-1 of the URL its constructor loads."""
    source = inspect.getsource(getattr(openai_public, name))
    [url] = re.findall(r'"(https://[^"]+\.tiktoken)"', source)
    return hashlib.sha1(url.encode()).hexdigest()


def run_offline(tmp_path: Path, name: str, **env: str) -> str:
    # a proxy on a closed loopback port: every download fails at once, as without a network
    clean = {k: v for k, v in os.environ.items() if k not in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR")}
    clean.update(TMPDIR=str(tmp_path), HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9")
    clean.update(NO_PROXY="", **env)
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, name],
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return out.stdout.strip()


@pytest.mark.parametrize("name", ["p50k_base", "r50k_base", "p50k_edit"])
def test_a_cache_dir_without_the_file_names_the_file_tiktoken_reads(tmp_path: Path, name: str) -> None:
    empty = tmp_path / "cache"
    empty.mkdir()
    out = run_offline(tmp_path, name, TIKTOKEN_CACHE_DIR=str(empty))
    assert out.startswith("ERROR")
    named = re.findall(r"'([0-9a-f]{40})'", out)
    assert named
    assert set(named) == {tiktoken_file(name)}
    assert "https://openaipublic.blob.core.windows.net/encodings/" in out
    assert "llama-index" not in out  # it ships no copy of these


@pytest.mark.parametrize("name", ["p50k_base", "r50k_base"])
def test_without_a_cache_dir_the_fix_names_the_file_and_no_bundled_copy(tmp_path: Path, name: str) -> None:
    out = run_offline(tmp_path, name)
    assert out.startswith("ERROR")
    assert re.findall(r"'([0-9a-f]{40})'", out) == [tiktoken_file(name)]
    assert "llama-index" not in out


def test_an_empty_cache_dir_variable_names_the_file_and_no_bundled_copy(tmp_path: Path) -> None:
    out = run_offline(tmp_path, "p50k_base", TIKTOKEN_CACHE_DIR="")
    assert out.startswith("ERROR")
    assert "TIKTOKEN_CACHE_DIR is set but empty" in out
    assert re.findall(r"'([0-9a-f]{40})'", out) == [tiktoken_file("p50k_base")]
    assert "llama-index" not in out


def test_the_bundled_encodings_still_point_at_the_llama_index_copy(tmp_path: Path) -> None:
    empty = tmp_path / "cache"
    empty.mkdir()
    out = run_offline(tmp_path, "o200k_base", TIKTOKEN_CACHE_DIR=str(empty))
    assert "llama-index-core" in out
    assert re.findall(r"'([0-9a-f]{40})'", out) == [tiktoken_file("o200k_base")] * 2
