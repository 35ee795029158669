"""PromptBuilder: the result always fits; shares, truncation, dropping order and accounting."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from conversations import assert_tool_pairs_intact, conversations
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenbudget_core import (
    EstimatingTokenCounter,
    Message,
    TiktokenCounter,
    TokenCount,
    TokenCounter,
    ToolCall,
    get_model,
)
from tokenbudget_core.counting import ToolLike
from tokenbudget_core.errors import ContextOverflowError, InvalidInputError
from tokenbudget_core.messages import MessageLike
from tokenbudget_core.prompt_builder import BuiltPrompt, PromptBuilder

COUNTER = TokenCounter.for_model("gpt-4o")


def turns(n: int, words: int = 30) -> list[dict[str, Any]]:
    return [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " + "lorem ipsum " * words}
        for i in range(n)
    ]


def examples(n: int, words: int = 30) -> list[tuple[str, str]]:
    return [(f"question {i} " + "why " * words, f"answer {i} " + "because " * words) for i in range(n)]


def check(prompt: BuiltPrompt) -> None:
    """What every result guarantees."""
    assert prompt.tokens == COUNTER.count_messages(prompt.messages) <= prompt.budget
    assert sum(prompt.used.values()) == prompt.tokens  # OpenAI counts are additive
    assert prompt.messages[-1]["role"] == "user"
    assert_tool_pairs_intact(prompt.messages)


def test_small_inputs_pass_through_untouched() -> None:
    history = turns(4)
    prompt = PromptBuilder("gpt-4o", max_tokens=8_000).build(
        system="You are terse.",
        examples=examples(1),
        context=["Doc one.", "Doc two."],
        history=history,
        user="Go",
    )
    check(prompt)
    system, *rest = prompt.messages
    assert system == {"role": "system", "content": "You are terse.\n\nContext:\nDoc one.\n\n---\n\nDoc two."}
    assert rest[:2] == [
        {"role": "user", "content": examples(1)[0][0]},
        {"role": "assistant", "content": examples(1)[0][1]},
    ]
    assert rest[2:-1] == history
    assert (prompt.documents_truncated, prompt.documents_dropped, prompt.examples_dropped) == (0, 0, 0)
    assert (prompt.history_dropped, prompt.user_truncated) == (0, False)


def test_context_without_a_system_prompt_is_its_own_system_message() -> None:
    prompt = PromptBuilder("gpt-4o", max_tokens=1_000, context_template="Sources:\n{documents}").build(
        context=["A", "B"], user="Q"
    )
    assert prompt.messages == [
        {"role": "system", "content": "Sources:\nA\n\n---\n\nB"},
        {"role": "user", "content": "Q"},
    ]
    assert prompt.used["system"] == 0
    assert prompt.used["context"] == COUNTER.count_message(prompt.messages[0])


def test_per_part_accounting_is_exact() -> None:
    system, user = "Answer briefly.", "And then?"
    prompt = PromptBuilder("gpt-4o", max_tokens=3_000).build(
        system=system, examples=examples(2, 5), context=["Some context."], history=turns(3, 5), user=user
    )
    check(prompt)
    sys_alone = COUNTER.count_message({"role": "system", "content": system})
    assert prompt.used["system"] == sys_alone
    assert prompt.used["context"] == COUNTER.count_message(prompt.messages[0]) - sys_alone
    assert prompt.used["examples"] == sum(COUNTER.count_message(m) for m in prompt.messages[1:5])
    assert prompt.used["history"] == sum(COUNTER.count_message(m) for m in prompt.messages[5:-1])
    assert prompt.used["user"] == COUNTER.count_message(prompt.messages[-1]) + COUNTER.reply_priming


def test_examples_are_dropped_before_history_is_cut() -> None:
    builder = PromptBuilder("gpt-4o", max_tokens=1_000, reserve_output=0)
    history = turns(16, 10)  # ~40 tokens each
    whole = sum(COUNTER.count_message(m) for m in history)
    prompt = builder.build(examples=examples(6, 40), history=history, user="Next?")
    check(prompt)
    assert prompt.history_dropped == 0
    assert prompt.used["history"] == whole
    assert 0 < prompt.examples_dropped < 6  # some examples fit in what history left
    kept = [m["content"] for m in prompt.messages if m["content"].startswith("question")]
    assert kept[-1].startswith("question 5")  # the oldest go first
    long_history = turns(200, 10)
    prompt = builder.build(examples=examples(6, 40), history=long_history, user="Next?")
    check(prompt)
    assert prompt.history_dropped > 0
    assert prompt.examples_dropped == 6


def test_example_policy_drop_newest_keeps_the_first_examples() -> None:
    builder = PromptBuilder("gpt-4o", max_tokens=600, reserve_output=0, example_policy="drop_newest")
    prompt = builder.build(examples=examples(6, 40), user="Next?")
    check(prompt)
    kept = [m["content"] for m in prompt.messages if m["content"].startswith("question")]
    assert kept
    assert kept[0].startswith("question 0")
    assert prompt.examples_dropped == 6 - len(kept)


def test_an_explicit_examples_share_keeps_examples_beside_a_long_history() -> None:
    builder = PromptBuilder("gpt-4o", max_tokens=2_000, reserve_output=0, shares={"examples": 500})
    prompt = builder.build(examples=examples(6, 40), history=turns(200, 10), user="Next?")
    check(prompt)
    assert prompt.allocation.examples == 500  # a fixed share is kept for them
    assert 0 < prompt.examples_dropped < 6
    assert prompt.used["examples"] > 400
    assert prompt.history_dropped > 0


@pytest.mark.parametrize("strategy", ["keep_start", "keep_end", "keep_both", "smart"])
def test_context_documents_are_cut_by_strategy(strategy: str) -> None:
    start, end = "BEGIN " + "alpha " * 3, " omega" * 3 + " END"
    doc = start + "filler words here. " * 600 + end
    short = "A short note that fits."
    builder = PromptBuilder(
        "gpt-4o",
        max_tokens=1_000,
        reserve_output=0,
        context_strategy=strategy,  # type: ignore[arg-type]
    )
    prompt = builder.build(context=[doc, short], history=turns(40), user="Summarise.")
    check(prompt)
    content = prompt.messages[0]["content"]
    assert short in content  # short documents stay whole
    assert prompt.documents_truncated == 1
    assert prompt.documents_dropped == 0
    assert prompt.used["context"] > 0.9 * prompt.allocation.context  # the share is used, not wasted
    assert (start in content) == (strategy != "keep_end")
    assert (end in content) == (strategy in ("keep_end", "keep_both"))


def test_unused_context_share_flows_to_history() -> None:
    builder = PromptBuilder("gpt-4o", max_tokens=4_000, reserve_output=0)
    history = turns(80)  # more than the window
    without = builder.build(history=history, user="Q")
    check(without)
    with_context = builder.build(context=["tiny"], history=history, user="Q")
    check(with_context)
    assert without.used["history"] > 0.9 * (4_000 - without.used["user"])
    assert with_context.history_dropped - without.history_dropped <= 1
    assert without.allocation.history > 2_000  # beyond its half share


def test_what_whole_message_cuts_leave_over_goes_to_context_and_examples() -> None:
    history = [{"role": "user", "content": f"message {i} " + "lorem " * 300} for i in range(10)]
    builder = PromptBuilder("gpt-4o", max_tokens=2_000, reserve_output=0)
    prompt = builder.build(examples=[("Hi", "Hello")], context=["ctx " * 3_000], history=history, user="Q")
    check(prompt)
    assert prompt.history_dropped > 0
    assert prompt.examples_dropped == 0  # a small example fits in what the history cut left
    assert prompt.used["context"] > prompt.allocation.context  # and context took the rest
    assert prompt.budget - prompt.tokens < 10


def test_the_last_documents_go_when_shares_would_be_tiny() -> None:
    docs = [f"document {i} " + "text " * 200 for i in range(30)]
    prompt = PromptBuilder("gpt-4o", max_tokens=400, reserve_output=0).build(context=docs, user="Q")
    check(prompt)
    assert prompt.documents_dropped > 0
    content = prompt.messages[0]["content"]
    assert "document 0 " in content
    assert "document 29 " not in content


def test_history_trimming_keeps_tool_calls_with_their_results() -> None:
    call = Message(role="assistant", tool_calls=(ToolCall(id="c1", name="lookup", arguments='{"q": 1}'),))
    history: list[MessageLike] = [
        *turns(30),
        {"role": "user", "content": "look it up"},
        call,
        Message(role="tool", tool_call_id="c1", content="result " * 50),
        Message(role="assistant", content="Found it."),
    ]
    prompt = PromptBuilder("gpt-4o", max_tokens=500, reserve_output=0).build(history=history, user="Thanks")
    check(prompt)
    roles = [m["role"] for m in prompt.messages]
    assert roles[-4:] == ["assistant", "tool", "assistant", "user"]
    assert prompt.messages[-4]["tool_calls"] == [
        {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": 1}'}}
    ]
    assert all(isinstance(m, dict) for m in prompt.messages)


def test_overflow_of_system_and_user_carries_the_figures() -> None:
    builder = PromptBuilder("gpt-4o", max_tokens=300, reserve_output=100)
    user = "word " * 400
    with pytest.raises(ContextOverflowError) as info:
        builder.build(system="Be kind.", user=user)
    e = info.value
    assert e.limit == 200
    sys_tokens = COUNTER.count_message({"role": "system", "content": "Be kind."})
    user_tokens = COUNTER.count_message({"role": "user", "content": user})
    assert e.required == sys_tokens + user_tokens + COUNTER.reply_priming
    assert "200" in str(e)
    assert str(e.required) in str(e)
    assert isinstance(e, ValueError)


def test_on_overflow_truncate_keeps_the_end_of_the_user_input() -> None:
    builder = PromptBuilder("gpt-4o", max_tokens=300, reserve_output=100, on_overflow="truncate")
    user = "START " + "word " * 400 + "the question is here?"
    prompt = builder.build(system="Be kind.", history=turns(5), user=user)
    check(prompt)
    assert prompt.user_truncated
    assert prompt.history_dropped == 5
    assert prompt.messages[-1]["content"].endswith("the question is here?")
    assert "START" not in prompt.messages[-1]["content"]
    with pytest.raises(ContextOverflowError):  # the system prompt alone is too long: nothing to cut
        builder.build(system="rule " * 300, user="hi")


class _Overcounting(TiktokenCounter):
    """A counter whose request count exceeds the sum of its message counts (like a provider API)."""

    def count_messages(
        self, messages: Sequence[MessageLike], tools: Sequence[ToolLike] | None = None
    ) -> TokenCount:
        n = super().count_messages(messages, tools)
        return TokenCount(int(n) + 5 * len(messages), exact=False, model=self.name, method="api")

    def count_message(self, message: MessageLike) -> TokenCount:
        return COUNTER.count_message(message)


async def test_final_count_is_enforced_even_when_per_message_counts_disagree() -> None:
    counter = _Overcounting(get_model("gpt-4o"))
    args: dict[str, Any] = {
        "system": "Sys.",
        "examples": examples(3),
        "context": ["ctx " * 900],
        "history": turns(60),
        "user": "Q",
    }
    plain = PromptBuilder("gpt-4o", max_tokens=1_500, reserve_output=0).build(**args)
    builder = PromptBuilder(counter, max_tokens=1_500, reserve_output=0)
    for prompt in (builder.build(**args), await builder.abuild(**args)):
        assert prompt.tokens == counter.count_messages(prompt.messages) <= 1_500
        assert prompt.exact is False
        assert prompt.history_dropped > plain.history_dropped  # history is trimmed further first...
        assert prompt.messages[0] == plain.messages[0]  # ...before context is touched


class _OfflineEstimates(EstimatingTokenCounter):
    """Like Claude's counter: ``count()`` would be an API call; the builder must not use it."""

    def count(self, text: str) -> TokenCount:
        raise AssertionError("count() called")


async def test_counters_without_a_local_tokenizer_are_not_asked_per_cut() -> None:
    counter = _OfflineEstimates(get_model("acme-x", fallback="gpt-4o"))
    builder = PromptBuilder(counter, max_tokens=800, reserve_output=0, on_overflow="truncate")
    args: dict[str, Any] = {"context": ["doc " * 2_000, "more " * 900], "history": turns(30), "user": "q"}
    for prompt in (builder.build(**args), await builder.abuild(**args)):
        assert prompt.tokens == counter.count_messages(prompt.messages) <= 800
        assert prompt.documents_truncated == 2
        assert prompt.exact is False
    prompt = builder.build(history=turns(3), user="q " * 900)
    assert prompt.tokens == counter.count_messages(prompt.messages) <= 800
    assert prompt.user_truncated


async def test_abuild_matches_build() -> None:
    builder = PromptBuilder("gpt-4o", max_tokens=1_200, reserve_output=200)
    args: dict[str, Any] = {
        "system": "S",
        "examples": examples(3),
        "context": ["c " * 800],
        "history": turns(30),
        "user": "U",
    }
    assert await builder.abuild(**args) == builder.build(**args)


def test_fixed_shares_yield_to_system_and_user() -> None:
    builder = PromptBuilder("gpt-4o", max_tokens=1_000, reserve_output=0, shares={"examples": 900})
    prompt = builder.build(system="rule " * 150, examples=examples(20), user="Q")
    check(prompt)
    assert prompt.allocation.examples < 900
    assert prompt.used["examples"] > 0


def test_defaults_come_from_the_model() -> None:
    builder = PromptBuilder("gpt-4o")
    assert (builder.max_tokens, builder.reserve_output, builder.budget) == (128_000, 16_384, 111_616)
    prompt = builder.build(user="hi")
    assert prompt.allocation.total == 128_000
    assert prompt.budget == 111_616
    data = prompt.as_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["allocation"]["output"] == 16_384
    assert data["used"]["user"] == prompt.tokens


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"shares": {"system": 100}}, "shares['system']"),
        ({"shares": {"output": 100}}, "shares['output']"),
        ({"shares": {"context": 2.0}}, "shares['context']"),
        ({"shares": {"contxt": 0.5}}, "shares['contxt']"),
        ({"context_strategy": "middle"}, "context_strategy"),
        ({"example_policy": "random"}, "example_policy"),
        ({"on_overflow": "ignore"}, "on_overflow"),
        ({"context_template": "Context: {docs}"}, "context_template"),
        ({"max_tokens": 100, "reserve_output": 100}, "reserve_output"),
        ({"max_tokens": "lots"}, "max_tokens"),
        ({"max_tokens": -5}, "max_tokens"),
        ({"document_separator": None}, "document_separator"),
    ],
)
def test_builder_errors_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        PromptBuilder("gpt-4o", **kwargs)
    assert info.value.field == field
    assert info.value.fix  # and say what to do


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"user": None}, "user"),
        ({"user": "u", "system": 3}, "system"),
        ({"user": "u", "context": "one doc"}, "context"),
        ({"user": "u", "context": ["ok", 5]}, "context[1]"),
        ({"user": "u", "examples": [("q",)]}, "examples[0]"),
        ({"user": "u", "examples": [[{"role": "robot", "content": "x"}]]}, "examples[0][0].role"),
        ({"user": "u", "history": [{"role": "user", "content": "a"}, {"content": "b"}]}, "history[1].role"),
        ({"user": "u", "history": [{"role": "system", "content": "s"}]}, "history[0].role"),
        (
            {"user": "u", "history": [{"role": "tool", "tool_call_id": "x", "content": "r"}]},
            "history[0].tool_call_id",
        ),
    ],
)
def test_build_errors_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        PromptBuilder("gpt-4o", max_tokens=1_000).build(**kwargs)
    assert info.value.field == field
    assert info.value.fix


vocabulary = st.sampled_from(["alpha", "beta", "gamma", "budget", "token", "ü", "東京", "42", "?", "end."])
short_text = st.lists(vocabulary, max_size=60).map(" ".join)
long_text = st.builds(
    lambda words, n: " ".join(words) * n, st.lists(vocabulary, max_size=60), st.integers(1, 40)
)


@settings(max_examples=60, deadline=None)
@given(
    max_tokens=st.integers(50, 2_500),
    reserve=st.integers(0, 400),
    system=st.none() | short_text,
    user=short_text,
    docs=st.lists(long_text, max_size=5),
    example_pairs=st.lists(st.tuples(short_text, short_text), max_size=6),
    history=conversations(max_turns=20),
    shares=st.sampled_from(
        [None, None, {"context": 0.3, "examples": 0.2}, {"context": 0.9}, {"examples": 200}]
    ),
    strategy=st.sampled_from(["keep_start", "keep_end", "keep_both", "smart"]),
)
def test_the_result_always_fits(
    max_tokens: int,
    reserve: int,
    system: str | None,
    user: str,
    docs: list[str],
    example_pairs: list[tuple[str, str]],
    history: list[dict[str, Any]],
    shares: dict[str, int | float] | None,
    strategy: str,
) -> None:
    history = [m for m in history if m["role"] != "system"]
    try:
        builder = PromptBuilder(
            "gpt-4o",
            max_tokens=max_tokens,
            reserve_output=reserve,
            shares=shares,
            context_strategy=strategy,  # type: ignore[arg-type]
        )
    except InvalidInputError:
        assert reserve >= max_tokens or (shares == {"examples": 200} and 200 + reserve > max_tokens)
        return
    fixed = COUNTER.count_message({"role": "user", "content": user}) + COUNTER.reply_priming
    if system is not None:
        fixed += COUNTER.count_message({"role": "system", "content": system})
    if fixed > max_tokens - reserve:
        with pytest.raises(ContextOverflowError):
            builder.build(system=system, examples=example_pairs, context=docs, history=history, user=user)
        return
    prompt = builder.build(system=system, examples=example_pairs, context=docs, history=history, user=user)
    check(prompt)
    assert prompt.budget == max_tokens - reserve
    assert sum(prompt.allocation.as_dict().values()) == max_tokens
    for part in ("examples", "context", "history"):
        assert prompt.used[part] <= prompt.budget - prompt.used["system"] - prompt.used["user"]
    head = (prompt.messages[0]["role"] == "system") + 2 * (len(example_pairs) - prompt.examples_dropped)
    kept_history = prompt.messages[head:-1]
    assert kept_history == history[len(history) - len(kept_history) :]  # the newest, contiguous
    assert prompt.history_dropped == len(history) - len(kept_history)


def test_a_stand_in_in_the_history_is_refused_not_sent_as_its_estimate() -> None:
    # the built messages go to the provider: a stand-in's text is not the PDF it stands for
    pdf = Message(role="user", content="[a PDF: two pages]", file_tokens=3_000)
    with pytest.raises(InvalidInputError, match=r"history\[1\].*stand-in"):
        PromptBuilder("gpt-4o", max_tokens=8_000).build(
            history=[{"role": "user", "content": "hi"}, pdf], user="q"
        )
