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

_BPE_URLS: dict[str, str] = {
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
    # o200k_harmony reuses o200k_base's ranks.
    "o200k_harmony": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
}

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

    url = _BPE_URLS.get(name, f"<the {name} BPE file>")
    # tiktoken's own reading: the first of these that is set, even empty (empty: no cache at all)
    variable = next((v for v in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR") if v in os.environ), None)
    if variable is not None and not os.environ[variable]:
        raise EncodingUnavailableError(
            name,
            f"the download of {url} failed ({type(download_error).__name__}) and {variable} is set but "
            f"empty, which tiktoken reads as 'no cache', so no local copy can be used. Unset {variable} "
            f"to use the copy bundled with llama-index-core, or set it to a folder holding the file "
            f"named {_cache_key(url)!r}.",
        ) from download_error
    if variable is not None:
        user_dir = os.environ[variable]
        raise EncodingUnavailableError(
            name,
            f"the download failed ({type(download_error).__name__}) and {variable}={user_dir!r} "
            f"has no file {_cache_key(url)!r}. Copy {url} there under that name, or unset "
            f"{variable} to use the copy bundled with llama-index-core.",
        ) from download_error
    if not _seed_default_cache(name):
        raise EncodingUnavailableError(
            name,
            f"the download of {url} failed ({type(download_error).__name__}) and no local copy was found. "
            f'Install the copy bundled with llama-index-core (pip install "tokenbudget-kit[llamaindex]"), '
            f"or set TIKTOKEN_CACHE_DIR to a folder holding the file named {_cache_key(url)!r}.",
        ) from download_error
    try:
        return tiktoken.get_encoding(name)
    except (OSError, ValueError) as e:
        raise EncodingUnavailableError(name, f"the bundled BPE file could not be used ({e})") from e
