"""Loading tiktoken encodings, online or off.

tiktoken downloads its BPE files on first use and caches them in
``$TIKTOKEN_CACHE_DIR`` (default: ``<tmp>/data-gym-cache``). Without a network
that download fails. When ``TIKTOKEN_CACHE_DIR`` is not set and the download is
impossible, the verified copies of ``cl100k_base`` and ``o200k_base`` that
``llama-index-core`` ships are placed in tiktoken's default cache and used; tiktoken
checks their SHA-256 as it would a download. When neither works,
:class:`~tokenbudget_core.errors.EncodingUnavailableError` says what to do.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
import threading
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import EncodingUnavailableError, MissingDependencyError

if TYPE_CHECKING:
    import tiktoken

__all__ = ["bundled_bpe_dir", "get_encoding"]

# The BPE file each encoding loads, as tiktoken_ext.openai_public names it: tiktoken caches a
# download under the SHA-1 of this URL, so the error's fix names that file. (``gpt2`` loads two
# files of another format and is left out: its error names no file.)
_BPE_URLS: dict[str, str] = {
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
    # o200k_harmony reuses o200k_base's ranks.
    "o200k_harmony": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
    "r50k_base": "https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken",
    "p50k_base": "https://openaipublic.blob.core.windows.net/encodings/p50k_base.tiktoken",
    # p50k_edit reuses p50k_base's ranks.
    "p50k_edit": "https://openaipublic.blob.core.windows.net/encodings/p50k_base.tiktoken",
}
_BUNDLED = frozenset({"cl100k_base", "o200k_base", "o200k_harmony"})
"""The encodings whose BPE file ``llama-index-core`` ships (cl100k's and o200k's): the error
points at that copy for these only."""

_lock = threading.Lock()
_encodings: dict[str, tiktoken.Encoding] = {}


def bundled_bpe_dir() -> Path | None:
    """The folder of BPE files shipped by ``llama-index-core``, if it is installed."""
    spec = importlib.util.find_spec("llama_index.core") if _has_llama_index() else None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "_static" / "tiktoken_cache"
        if candidate.is_dir():
            return candidate
    return None


def _has_llama_index() -> bool:
    try:
        return importlib.util.find_spec("llama_index") is not None
    except (ImportError, ValueError):
        return False


def _cache_key(url: str) -> str:
    return hashlib.sha1(url.encode()).hexdigest()


def _seed_default_cache(name: str) -> bool:
    """Copy the bundled BPE file for ``name`` into tiktoken's default cache dir."""
    url = _BPE_URLS.get(name)
    source_dir = bundled_bpe_dir()
    if url is None or source_dir is None:
        return False
    source = source_dir / _cache_key(url)
    if not source.is_file():
        return False
    cache_dir = Path(tempfile.gettempdir()) / "data-gym-cache"
    target = cache_dir / _cache_key(url)
    if target.is_file():
        return True
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache_dir / f"{target.name}.{uuid.uuid4().hex}.tmp"
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    except OSError:
        return False
    return True


def get_encoding(name: str) -> tiktoken.Encoding:
    """Return the tiktoken encoding ``name``, loading it offline when needed.

    Args:
        name: A tiktoken encoding name such as ``o200k_base`` or ``cl100k_base``.

    Raises:
        EncodingUnavailableError: The BPE file could not be downloaded and no local
            copy was found; the message says where to put one.
        MissingDependencyError: tiktoken itself is not installed.
    """
    cached = _encodings.get(name)
    if cached is not None:
        return cached
    try:
        import tiktoken
    except ImportError as e:  # pragma: no cover - tiktoken is a hard dependency
        raise MissingDependencyError("tiktoken", "openai") from e
    with _lock:
        cached = _encodings.get(name)
        if cached is not None:
            return cached
        try:
            enc = tiktoken.get_encoding(name)
        except ValueError as e:
            if "Unknown encoding" in str(e):
                raise EncodingUnavailableError(
                    name,
                    f"tiktoken has no such encoding (known: {', '.join(tiktoken.list_encoding_names())})",
                ) from e
            raise EncodingUnavailableError(name, f"the BPE file failed its integrity check ({e})") from e
        except OSError as e:
            enc = _load_offline(name, e)
        _encodings[name] = enc
        return enc


def _load_offline(name: str, download_error: OSError) -> tiktoken.Encoding:
    import tiktoken

    url = _BPE_URLS.get(name)
    failed = type(download_error).__name__
    # The file tiktoken looks up in a cache folder (the SHA-1 of its URL); unknown for an
    # encoding whose URL is not listed, so no made-up name is given for it.
    where = f"the file named {_cache_key(url)!r} (a copy of {url})" if url else "its BPE file"
    bundled = name in _BUNDLED
    # tiktoken's own reading: the first of these that is set, even empty (empty: no cache at all)
    variable = next((v for v in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR") if v in os.environ), None)
    if variable is not None and not os.environ[variable]:
        unset = "Set"
        if bundled:
            unset = f"Unset {variable} to use the copy bundled with llama-index-core, or set"
        raise EncodingUnavailableError(
            name,
            f"the download of {url or 'its BPE file'} failed ({failed}) and {variable} is set but "
            f"empty, which tiktoken reads as 'no cache', so no local copy can be used. {unset} "
            f"it to a folder holding {where}.",
        ) from download_error
    if variable is not None:
        user_dir = os.environ[variable]
        unset = f", or unset {variable} to use the copy bundled with llama-index-core" if bundled else ""
        if url:
            fix = f"Copy {url} there under the name {_cache_key(url)!r}{unset}."
            missing = f"has no file {_cache_key(url)!r}"
        else:
            fix = f"Run once with a network to fill that folder{unset}."
            missing = "has no copy of its BPE file"
        raise EncodingUnavailableError(
            name, f"the download failed ({failed}) and {variable}={user_dir!r} {missing}. {fix}"
        ) from download_error
    if not _seed_default_cache(name):
        install = "Run once with a network (tiktoken caches the download), or set"
        if bundled:
            install = (
                'Install the copy bundled with llama-index-core (pip install "tokenbudget-kit[llamaindex]"), '
                "or set"
            )
        raise EncodingUnavailableError(
            name,
            f"the download of {url or 'its BPE file'} failed ({failed}) and no local copy was found. "
            f"{install} TIKTOKEN_CACHE_DIR to a folder holding {where}.",
        ) from download_error
    try:
        return tiktoken.get_encoding(name)
    except (OSError, ValueError) as e:
        raise EncodingUnavailableError(name, f"the bundled BPE file could not be used ({e})") from e
