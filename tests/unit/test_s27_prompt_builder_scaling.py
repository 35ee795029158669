"""PromptBuilder fits many context documents and few-shot examples in near-linear work.

Fitting context used to scan k = n, n-1, ... 1 documents, tokenising the template with
k - 1 separators and re-summing k document floors for every k (quadratic: 16,000 small
documents, a valid 877 KiB /prompt/build body, took minutes); fitting examples re-summed
the kept examples after every drop. The fix must not change a single result, so the old
code is kept here verbatim as the reference and compared with the builder on randomised
inputs; the scaling tests count work (characters tokenised, cost reads), never time.
"""

from __future__ import annotations

import itertools
import random
import string
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, get_args

import pytest
import regex

from tokenbudget_core import TiktokenCounter, TokenCount, TokenCounter, get_model
from tokenbudget_core.calibration import Calibration
from tokenbudget_core.counting import ToolLike
from tokenbudget_core.errors import ContextOverflowError
from tokenbudget_core.fitting import fit_messages
from tokenbudget_core.messages import MessageLike
from tokenbudget_core.prompt_builder import _MIN_DOCUMENT_TOKENS as MIN_DOC
from tokenbudget_core.prompt_builder import (
    DEFAULT_CONTEXT_TEMPLATE,
    DOCUMENT_SEPARATOR,
    PromptBuilder,
    _equal_shares,
    _Plan,
)
from tokenbudget_core.truncation import Strategy, truncate_text

MODELS = ("gpt-4o", "gpt-4", "claude-sonnet-4-5", "gemini-2.5-pro")  # o200k, cl100k, two estimates
STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)  # Claude counts stay local estimates


def counter_for(model: str) -> TokenCounter:
    # Own calibration: estimates must not move between the two builds compared.
    return TokenCounter.for_model(model, calibration=Calibration())


# -- the reference: PromptBuilder's fits as they were before the fix (verbatim) ---------------


def _old_fit(self: Any, part: str, room: int) -> None:
    if part == "context":
        self._fit_context(room)
    elif part == "history":
        kept: list[dict[str, Any]] = []
        if room > 0 and self.history:
            try:
                kept = list(fit_messages(self.history, room + self.counter.reply_priming, self.counter))
            except ContextOverflowError:
                kept = []  # not even the newest message fits
        self.kept_history, self.used["history"] = kept, self._cost(kept)
    else:
        keep = list(range(len(self.examples)))
        while keep and sum(self.ex_costs[i] for i in keep) > room:
            keep.pop(0 if self.b.example_policy == "drop_oldest" else -1)
        self.kept_examples, self.used["examples"] = keep, sum(self.ex_costs[i] for i in keep)


def _old_fit_context(self: Any, room: int) -> None:
    docs, full = self.docs, self._context_cost(self.docs)
    if full <= room:
        self.kept_docs, self.docs_truncated, self.used["context"] = docs, 0, full
        return
    sizes = [int(self.text_counter.count(d)) for d in docs]
    for k in range(len(docs), 0, -1):
        avail = room - self._context_cost([""] * k)
        if avail < sum(min(s, MIN_DOC) for s in sizes[:k]):
            continue  # too little for k documents: drop the last one
        for _ in range(4):  # a seam may tokenise differently: shrink by the excess and retry
            caps = _equal_shares(sizes[:k], avail)
            strategy = self.b.context_strategy
            kept = [
                d if c >= s else truncate_text(d, c, strategy, counter=self.text_counter)
                for d, c, s in zip(docs, caps, sizes, strict=False)
            ]
            cost = self._context_cost(kept)
            if cost <= room:
                self.kept_docs, self.used["context"] = kept, cost
                self.docs_truncated = sum(c < s for c, s in zip(caps, sizes, strict=False))
                return
            avail -= cost - room
            if avail < 0:
                break
    self.kept_docs, self.docs_truncated, self.used["context"] = [], 0, 0


@contextmanager
def old_fits() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_Plan, "_fit", _old_fit)
        mp.setattr(_Plan, "_fit_context", _old_fit_context)
        yield


def outcome(builder: PromptBuilder, **inputs: Any) -> Any:
    try:
        return builder.build(**inputs).as_dict()
    except Exception as e:  # noqa: BLE001 (the same refusal, or the same result)
        return (type(e).__name__, str(e))


# -- random inputs ---------------------------------------------------------------------------

WORDS = [
    *("alpha", "beta", "gamma", "delta.", "epsilon", "zeta", "eta?", "theta", "iota", "kappa!"),
    *("lambda", "mu", "nu", "xi", "omicron", "pi", "rho", "sigma", "tau", "---", "\n", "\n\n"),
    *("12", "3.5", "café", "naïve", "東京", "```code```", "-", "*", "#", ":"),
]


def text(rnd: random.Random, n: int) -> str:
    if rnd.random() < 0.05:
        return "".join(rnd.choice(string.printable) for _ in range(n))
    return " ".join(rnd.choice(WORDS) for _ in range(n))


def doc(rnd: random.Random) -> str:
    r = rnd.random()
    if r < 0.1:
        return ""
    if r < 0.6:
        return text(rnd, rnd.randint(1, 14))
    if r < 0.9:
        return text(rnd, rnd.randint(15, 90))
    return text(rnd, rnd.randint(90, 600))


def random_case(seed: int) -> tuple[PromptBuilder, dict[str, Any]]:
    rnd = random.Random(seed)
    model = MODELS[seed % len(MODELS)]
    config: dict[str, Any] = {
        "max_tokens": rnd.choice([300, 800, 1_500, 3_000, 6_000, rnd.randint(200, 8_000)]),
        "reserve_output": rnd.choice([None, 0, 100]),
        "context_strategy": STRATEGIES[(seed // len(MODELS)) % len(STRATEGIES)],
        "example_policy": rnd.choice(["drop_oldest", "drop_newest"]),
        "on_overflow": rnd.choice(["raise", "truncate"]),
        "shares": rnd.choice(
            [None, {"context": 0.3, "examples": 0.3}, {"context": 0.8}, {"examples": 150, "context": 0.5}]
        ),
    }
    if rnd.random() < 0.3:  # other templates and separators, some tokenising non-monotonically
        config["context_template"] = rnd.choice(
            [
                DEFAULT_CONTEXT_TEMPLATE,
                "Docs:\n{documents}\nEnd of docs.",
                "{documents}",
                "<ctx>{documents}</ctx>",
            ]
        )
        config["document_separator"] = rnd.choice([DOCUMENT_SEPARATOR, "\n\n", " ", "", "\n---\n", "|"])
    n_docs = rnd.choice([0, 1, 2, 5, 20, 60, rnd.randint(0, 150), rnd.randint(150, 400)])
    n_examples = rnd.choice([0, 0, 1, 4, 15, rnd.randint(0, 80)])
    examples: list[Any] = []
    for _ in range(n_examples):
        pair = (text(rnd, rnd.randint(1, 40)), text(rnd, rnd.randint(1, 40)))
        examples.append(pair if rnd.random() < 0.8 else [{"role": "user", "content": pair[0]}])
    history = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": text(rnd, rnd.randint(1, 80))}
        for i in range(rnd.choice([0, 0, 2, 5]))
    ]
    inputs = {
        "system": rnd.choice([None, "", "Answer from the context.", text(rnd, rnd.randint(1, 60))]),
        "examples": examples,
        "context": [doc(rnd) for _ in range(n_docs)],
        "history": history,
        "user": text(rnd, rnd.choice([1, 10, 50])),
    }
    return PromptBuilder(counter_for(model), **config), inputs


@pytest.mark.parametrize("seed", range(160))
def test_random_builds_equal_the_old_fits(seed: int) -> None:
    builder, inputs = random_case(seed)
    new = outcome(builder, **inputs)
    with old_fits():
        old = outcome(builder, **inputs)
    assert new == old


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_many_small_documents_equal_the_old_fit(model: str, strategy: Strategy) -> None:
    """The binary search stops where the old downward scan did (hundreds of documents dropped)."""
    rnd = random.Random(f"{model}/{strategy}")
    for n, max_tokens, words in ((700, 2_000, 10), (400, 1_000, 40), (300, 1_200, 3)):
        builder = PromptBuilder(counter_for(model), max_tokens=max_tokens, context_strategy=strategy)
        inputs = {
            "system": rnd.choice([None, "Be brief."]),
            "context": [text(rnd, rnd.randint(1, words)) for _ in range(n)],
            "examples": [("q", "a")] * 5,
            "user": "q",
        }
        new = outcome(builder, **inputs)
        with old_fits():
            old = outcome(builder, **inputs)
        assert new == old
        assert new["documents_dropped"] > 0


@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest"])
def test_many_examples_equal_the_old_fit(policy: str) -> None:
    rnd = random.Random(policy)
    for n, max_tokens in ((2_000, 4_000), (300, 900), (50, 100_000)):
        builder = PromptBuilder("gpt-4o", max_tokens=max_tokens, example_policy=policy)  # type: ignore[arg-type]
        inputs = {
            "examples": [(text(rnd, rnd.randint(1, 30)), text(rnd, rnd.randint(1, 30))) for _ in range(n)],
            "context": [text(rnd, 20) for _ in range(10)],
            "user": "q",
        }
        new = outcome(builder, **inputs)
        with old_fits():
            old = outcome(builder, **inputs)
        assert new == old


# -- why the binary search is exact: the default template's overhead never falls with k ---------


def _overheads(builder: PromptBuilder, system: str | None, ks: Sequence[int]) -> list[int]:
    plan = _Plan(builder, system, (), (), (), "q")
    return [plan._context_cost([""] * k) for k in ks]


SYSTEMS = [
    None,
    "",
    "Be brief.",
    "x",
    "trailing space ",
    "ends\n",
    "ends\n\n\n",
    "Context",
    "---",
    "été",
    "12",
]


@pytest.mark.parametrize("model", MODELS)
def test_default_template_overhead_never_falls(model: str) -> None:
    builder = PromptBuilder(counter_for(model), max_tokens=8_000)  # (within gpt-4's 8,192 window)
    for system in SYSTEMS:
        costs = _overheads(builder, system, range(1, 260))
        assert all(a <= b for a, b in itertools.pairwise(costs)), system
        plan = _Plan(builder, system, (), ["a"] * 3, (), "q")
        assert plan._overhead_grows([0, 3, 20])
        assert not plan._overhead_grows([0, -1, 20])


@pytest.mark.parametrize("encoding", ["cl100k_base", "o200k_base"])
def test_default_template_splits_into_periodic_pieces(encoding: str) -> None:
    """tiktoken merges tokens only within the pieces its pattern splits text into: after the
    word ``Context`` the pieces are the same for every separator but the last, so each further
    document adds the same tokens, whatever the system prompt before it."""
    enc = get_model("gpt-4o" if encoding == "o200k_base" else "gpt-4")
    assert enc.encoding == encoding
    pattern = regex.compile(TiktokenCounter(enc)._enc._pat_str)
    for system in SYSTEMS:
        heads = []
        for k in (1, 2, 3, 5_000):
            block = DEFAULT_CONTEXT_TEMPLATE.replace("{documents}", DOCUMENT_SEPARATOR.join([""] * k))
            pieces = pattern.findall(f"{system}\n\n{block}" if system else block)
            at = len(pieces) - pieces[::-1].index("Context")  # just after the template's word
            tail = [":\n"] if k == 1 else [":\n\n\n", *["---\n\n\n\n"] * (k - 2), "---\n\n"]
            assert pieces[at:] == tail
            heads.append(pieces[:at])
        assert all(head == heads[0] for head in heads)  # what precedes costs the same for every k


def test_a_repeated_character_separator_does_fall_so_every_k_is_tried() -> None:
    builder = PromptBuilder("gpt-4o", max_tokens=100_000, document_separator=" ")
    costs = _overheads(builder, "Be brief.", range(1, 300))
    assert any(a > b for a, b in itertools.pairwise(costs))
    assert not _Plan(builder, None, (), ["a"], (), "q")._overhead_grows([1])
    other = PromptBuilder("gpt-4o", max_tokens=100_000, context_template="Docs:\n{documents}")
    assert not _Plan(other, None, (), ["a"], (), "q")._overhead_grows([1])


# -- scaling: work counted, not timed ---------------------------------------------------------


class CountingCounter(TiktokenCounter):
    """gpt-4o's counter, recording how many calls and characters it was given to tokenise."""

    def __init__(self) -> None:
        super().__init__(get_model("gpt-4o"))
        self.calls = 0
        self.chars = 0

    def count(self, text: str) -> TokenCount:
        self.calls += 1
        self.chars += len(text)
        return super().count(text)

    def count_messages(
        self, messages: Sequence[MessageLike], tools: Sequence[ToolLike] | None = None
    ) -> TokenCount:  # count_message goes through here too
        self.calls += 1
        self.chars += sum(len(m["content"]) for m in messages if isinstance(m, dict))
        return super().count_messages(messages, tools)


@pytest.mark.parametrize("strategy", ["smart", "keep_start"])
def test_fitting_many_documents_tokenises_near_linear_text(strategy: Strategy) -> None:
    """4,000 documents of 10 words (219 KiB): the old fit tokenised ~56 million characters
    of separators (k - 1 of them for each k); now a few times the input."""
    rnd = random.Random(0)
    words = WORDS[:14]
    n = 4_000
    context = [" ".join(rnd.choice(words) for _ in range(10)) for _ in range(n)]
    counter = CountingCounter()
    built = PromptBuilder(counter, max_tokens=4_000, context_strategy=strategy).build(
        user="q", context=context
    )
    assert built.documents_dropped > n // 2
    assert built.tokens <= built.budget
    assert counter.calls < 20 * n
    assert counter.chars < 20 * sum(map(len, context)), counter.chars


class CountingList(list[int]):
    """The example costs, counting the elements read."""

    reads = 0

    def __getitem__(self, i: Any) -> Any:
        CountingList.reads += 1
        return super().__getitem__(i)

    def __iter__(self) -> Iterator[int]:
        CountingList.reads += len(self)
        return super().__iter__()


@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest"])
def test_dropping_many_examples_reads_each_cost_a_few_times(
    policy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """4,000 examples, ~300 kept: the old fit re-summed the kept ones after every drop."""
    fit = _Plan._fit

    def counting_fit(self: Any, part: str, room: int) -> None:
        self.ex_costs = CountingList(self.ex_costs)
        fit(self, part, room)

    monkeypatch.setattr(_Plan, "_fit", counting_fit)
    monkeypatch.setattr(CountingList, "reads", 0)
    n = 4_000
    builder = PromptBuilder("gpt-4o", max_tokens=4_000, example_policy=policy)  # type: ignore[arg-type]
    built = builder.build(user="q", examples=[("a b", "c d")] * n)
    assert n // 2 < built.examples_dropped < n
    assert CountingList.reads < 20 * n, CountingList.reads
