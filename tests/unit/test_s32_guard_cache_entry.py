"""The semantic cache reads a prompt with the guard only when it may store it, and never on the
event loop (review s32, finding 1).

``_entry`` computed the guard features before the ``max_entry_bytes`` check, so a prompt too large
to store was read whole by the guard (11 s for 1 MB) and then refused; and ``astore`` built its
entry on the event loop, stalling every other task for that time (``alookup`` already ran the
guard in a worker thread). The calls to :func:`guard_features` made on the calling thread are
counted with a profiler hook: the real functions run, nothing is replaced, no time is measured.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import numpy as np

from tokenbudget_core import Usage
from tokenbudget_core.cache_keys import CacheRequest, CacheScope
from tokenbudget_core.cached_response import CachedResponse
from tokenbudget_core.semantic_cache import SemanticCache
from tokenbudget_core.semantic_guard import guard_features

S = CacheScope(tenant="acme", user="u-1")
ANSWER = CachedResponse(content="ok", model="gpt-4o-mini", usage=Usage(output_tokens=1))


class Flat:
    """A cheap embedder (every text the same unit vector): the guard alone tells prompts apart."""

    name = "flat"

    def __init__(self) -> None:
        self.embedded: list[str] = []

    def embed(self, texts: list[str]) -> np.ndarray:
        self.embedded.extend(texts)
        return np.ones((len(texts), 8), dtype=np.float32) / np.sqrt(8)

    async def aembed(self, texts: list[str]) -> np.ndarray:
        return self.embed(texts)


def ask(text: str) -> CacheRequest:
    return CacheRequest.from_text(model="gpt-4o-mini", prompt=text, params={"temperature": 0})


@contextmanager
def guard_reads_on_this_thread() -> Iterator[list[str]]:
    """The prompts :func:`guard_features` reads on the calling thread while the block runs."""
    target = guard_features.__code__
    seen: list[str] = []
    previous = sys.getprofile()

    def hook(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code is target:
            seen.append(frame.f_locals["text"])

    sys.setprofile(hook)
    try:
        yield seen
    finally:
        sys.setprofile(previous)


def test_a_prompt_over_max_entry_bytes_is_refused_before_the_guard_reads_it() -> None:
    cache = SemanticCache(embedder=Flat(), threshold=0.9, max_entry_bytes=10_000)
    big = "please summarise this report. " * 1_000  # 30 KB
    with guard_reads_on_this_thread() as reads:
        assert cache.store(ask(big), ANSWER, scope=S) is False
    assert reads == []
    with guard_reads_on_this_thread() as reads:  # an entry within the limit is still guarded
        assert cache.store(ask("please summarise this memo."), ANSWER, scope=S) is True
    assert reads == ["please summarise this memo."]
    assert cache.lookup(ask("please summarise this memo."), scope=S) is not None
    assert cache.lookup(ask("please summarise this memo about 3 things."), scope=S) is None  # guarded


def test_a_prompt_over_max_entry_bytes_is_not_embedded_for_a_store_either() -> None:
    # The embedding (a paid call with a remote embedder) would be thrown away with the entry.
    embedder = Flat()
    cache = SemanticCache(embedder=embedder, threshold=0.9, max_entry_bytes=10_000)
    big = "please summarise this report. " * 1_000
    assert cache.store(ask(big), ANSWER, scope=S) is False
    assert asyncio.run(cache.astore(ask(big), ANSWER, scope=S)) is False
    assert embedder.embedded == []
    assert cache.store(ask("a memo"), ANSWER, scope=S) is True
    assert embedder.embedded == ["a memo"]


def test_an_entry_whose_guard_features_make_it_too_large_is_still_refused() -> None:
    # The prompt alone fits; with its guard features (a hash per distinct word) it does not.
    words = " ".join(f"w{i}" for i in range(600))  # ~4.3 KB of prompt, ~12 KB of word hashes
    cache = SemanticCache(embedder=Flat(), threshold=0.9, max_entry_bytes=8_000)
    assert len(words.encode()) < 8_000
    assert cache.store(ask(words), ANSWER, scope=S) is False
    assert cache.lookup(ask(words), scope=S) is None


def test_hashed_prompts_are_refused_by_size_only_with_their_guard_features() -> None:
    # With hash_prompts the entry holds no prompt: a long prompt of few words is stored.
    cache = SemanticCache(embedder=Flat(), threshold=0.9, max_entry_bytes=4_000, hash_prompts=True)
    long_word = "a" * 20_000
    assert cache.store(ask(long_word), ANSWER, scope=S) is True
    assert cache.lookup(ask(long_word), scope=S) is not None


def run_on_loop(make: Callable[[], Any]) -> tuple[Any, list[str], list[str]]:
    """Run ``make()``'s coroutine; the guard's reads on the loop's thread and anywhere else."""
    elsewhere: list[str] = []
    target = guard_features.__code__

    def hook(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code is target:
            elsewhere.append(frame.f_locals["text"])

    threading.setprofile(hook)  # (threads started from now on: the loop's worker threads)
    try:
        with guard_reads_on_this_thread() as on_loop:
            result = asyncio.run(make())
    finally:
        threading.setprofile(None)  # type: ignore[arg-type]
    return result, on_loop, elsewhere


def test_astore_reads_the_prompt_with_the_guard_off_the_event_loop() -> None:
    cache = SemanticCache(embedder=Flat(), threshold=0.9)
    text = "How do I reset my password?"
    stored, on_loop, elsewhere = run_on_loop(lambda: cache.astore(ask(text), ANSWER, scope=S))
    assert stored is True
    assert on_loop == []  # (it was read on the loop's thread before the fix)
    assert elsewhere == [text]  # read once, in a worker thread
    hit, on_loop, _ = run_on_loop(lambda: cache.alookup(ask(text), scope=S))
    assert hit is not None
    assert hit.response.content == "ok"
    assert on_loop == []
    missed, _, _ = run_on_loop(lambda: cache.alookup(ask("How do I reset my 2 passwords?"), scope=S))
    assert missed is None  # (the stored entry carries its guard features)


def test_astore_refuses_an_entry_over_max_entry_bytes_without_the_guard() -> None:
    cache = SemanticCache(embedder=Flat(), threshold=0.9, max_entry_bytes=10_000)
    big = "please summarise this report. " * 1_000
    stored, on_loop, elsewhere = run_on_loop(lambda: cache.astore(ask(big), ANSWER, scope=S))
    assert stored is False
    assert on_loop == []
    assert elsewhere == []
