"""A TokenCount survives pickle, copy and deepcopy with its flags, and crosses a process pool.

``TokenCount.__new__`` takes its flags as keyword-only arguments, which ``int``'s reduce protocol
does not pass: copying or pickling one raised a bare ``TypeError`` and a process pool counting a
batch broke (``BrokenProcessPool``).
"""

from __future__ import annotations

import copy
import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass

import pytest

from tokenbudget_core.counting import TokenCount, TokenCounter

DOCS = ["a b c", "d e f", "the quick brown fox"]


def _count(text: str) -> TokenCount:
    """A worker of a batch count: one document, counted in the child process."""
    return TokenCounter.for_model("gpt-4o").count(text)


def _flags(n: TokenCount) -> tuple[int, bool, str, str, str | None, type]:
    return int(n), n.exact, n.model, n.method, n.encoding, type(n)


COUNTS = [
    TokenCount(7, exact=True, model="gpt-4o", method="tiktoken", encoding="o200k_base"),
    TokenCount(0, exact=False, model="claude-sonnet-4-5", method="estimate"),
    TokenCount.maker(model="gpt-4o-mini", method="tiktoken", encoding="o200k_base")(12, False),
]


@pytest.mark.parametrize("n", COUNTS, ids=["exact", "estimate", "maker"])
@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_keeps_the_value_and_the_flags(n: TokenCount, protocol: int) -> None:
    assert _flags(pickle.loads(pickle.dumps(n, protocol=protocol))) == _flags(n)


@pytest.mark.parametrize("n", COUNTS, ids=["exact", "estimate", "maker"])
def test_copy_and_deepcopy_keep_the_value_and_the_flags(n: TokenCount) -> None:
    assert _flags(copy.copy(n)) == _flags(n)
    assert _flags(copy.deepcopy(n)) == _flags(n)
    assert _flags(copy.deepcopy({"counts": [n, n]})["counts"][1]) == _flags(n)


def test_a_dataclass_holding_a_count_can_be_turned_into_a_dict() -> None:
    @dataclass
    class Doc:
        tokens: TokenCount

    n = TokenCounter.for_model("gpt-4o").count("hello world")
    assert _flags(asdict(Doc(n))["tokens"]) == _flags(n)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_process_pool_counts_a_batch(method: str) -> None:
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context(method)) as pool:
        counts = list(pool.map(_count, DOCS))
    here = [_count(d) for d in DOCS]
    assert [_flags(n) for n in counts] == [_flags(n) for n in here]
    assert sum(counts) == sum(here)
