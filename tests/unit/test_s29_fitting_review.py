"""Review s29 of context fitting (fitting, prompt_builder, transcript_fit, window, allocation).

1. ``PromptBuilder`` refuses a ``max_tokens`` above the model's context window, as every other
   fitting entry point does (it built a 168,030-token prompt for gpt-4o's 128,000 window, and
   a history cut then failed naming a ``max_tokens`` the caller never passed).
2. An error about a malformed message names its real index, not ``messages[0]`` (each message
   is counted as a one-message list) in ``fit_messages``, ``ConversationWindow`` and
   ``TranscriptFit``.
3. ``on_overflow="truncate"`` never reports a fit whose newest (or oldest) message kept no
   visible text of a text-only message: the question vanished (for Claude: ``content: []``,
   which the API refuses). That is an overflow, named as the one without truncation.
6. ``ConversationWindow`` follows fit_messages' rule 4: agent steps whose request slid out
   lead the window only until a user message follows them.
7. A hand-made ``Allocation`` with bad ``weights`` is refused with a named error.
"""

from __future__ import annotations

import math
import random
import time
from typing import Any

import pytest
from langchain_core.messages import HumanMessage, SystemMessage

from langchain_tokenbudget import TrimMessagesRunnable
from tokenbudget_core import TokenCounter, fit_messages
from tokenbudget_core.allocation import Allocation, allocate_budget
from tokenbudget_core.anthropic_format import build_anthropic_request
from tokenbudget_core.errors import ContextOverflowError, InvalidInputError, InvalidMessageError
from tokenbudget_core.messages import Message, TextPart
from tokenbudget_core.prompt_builder import PromptBuilder
from tokenbudget_core.transcript_fit import TranscriptFit
from tokenbudget_core.window import ConversationWindow

GPT = TokenCounter.for_model("gpt-4o")


def visible(text: str) -> bool:
    """Something other than blanks (the test's own check, independent of the package's)."""
    return bool(text.strip().replace("\u200b", ""))


SYSTEM = {"role": "system", "content": "You are a helpful analyst."}
QUESTION = "Please summarise the attached quarterly report and list the three biggest risks. " * 20


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)  # Claude counts stay local estimates


# -- 1. PromptBuilder's max_tokens within the model's window ------------------------------------


def test_prompt_builder_refuses_a_budget_above_the_models_window_as_fit_messages_does() -> None:
    with pytest.raises(InvalidInputError) as built:
        PromptBuilder("gpt-4o", max_tokens=200_000, reserve_output=4_000)
    with pytest.raises(InvalidInputError) as fitted:
        fit_messages([{"role": "user", "content": "hi"}], 200_000, "gpt-4o")
    assert built.value.field == "max_tokens"
    assert built.value.value == 200_000  # the caller's own number
    assert str(built.value) == str(fitted.value)  # the same error, worded alike
    assert "128000" in str(built.value)
    with pytest.raises(InvalidInputError, match="context window"):
        PromptBuilder(TokenCounter.for_model("gpt-4"), max_tokens=8_193)


def test_prompt_builder_at_the_window_still_builds_and_cuts_history_within_it() -> None:
    builder = PromptBuilder("gpt-4", max_tokens=8_192, reserve_output=500)
    assert builder.budget == 8_192 - 500
    history = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " + "word " * 300}
        for i in range(60)
    ]
    prompt = builder.build(system="Be brief.", history=history, user="next?")
    assert prompt.history_dropped > 0
    assert prompt.tokens <= builder.budget <= 8_192
    assert PromptBuilder("gpt-4o").max_tokens == 128_000  # the default is the window


# -- 2. malformed messages named by their index ---------------------------------------------------


def _history_with(bad: dict[str, Any], at: int = 6, n: int = 9) -> list[dict[str, Any]]:
    h = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}"} for i in range(n)]
    h[at] = bad
    return h


BAD_PART = {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url"}]}
BAD_NAME = {"role": "user", "content": "hi", "name": 5}


@pytest.mark.parametrize("model", ["gpt-4o", "claude-sonnet-4-5"])
@pytest.mark.parametrize(
    ("bad", "field"), [(BAD_PART, "messages[6].content[1].image_url"), (BAD_NAME, "messages[6].name")]
)
def test_fit_messages_names_the_malformed_messages_real_index(
    model: str, bad: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidMessageError) as info:
        fit_messages(_history_with(bad), 10_000, model)
    assert info.value.field == field
    assert str(info.value).startswith(field + ":")


def test_the_first_message_keeps_index_zero_and_the_problem_and_fix_stay() -> None:
    with pytest.raises(InvalidMessageError) as info:
        fit_messages(_history_with(BAD_PART, at=0), 10_000, "gpt-4o")
    assert info.value.field == "messages[0].content[1].image_url"
    with pytest.raises(InvalidMessageError) as direct:
        GPT.count_message(BAD_PART)
    with pytest.raises(InvalidMessageError) as renamed:
        fit_messages(_history_with(BAD_PART, at=12, n=14), 10_000, "gpt-4o")
    assert renamed.value.field == "messages[12].content[1].image_url"
    assert (renamed.value.problem, renamed.value.fix) == (direct.value.problem, direct.value.fix)


def test_conversation_window_names_the_index_in_its_transcript() -> None:
    window: ConversationWindow[dict[str, Any]] = ConversationWindow("gpt-4o", max_tokens=10_000)
    with pytest.raises(InvalidMessageError) as info:
        window.extend(_history_with(BAD_PART))
    assert info.value.field == "messages[6].content[1].image_url"
    assert len(window) == 6  # the messages before it were taken, the bad one was not
    window.append({"role": "assistant", "content": "ok"})
    with pytest.raises(InvalidMessageError) as later:
        window.append(BAD_NAME)
    assert later.value.field == "messages[7].name"  # where it would be in transcript()
    assert len(window) == 7
    with pytest.raises(InvalidMessageError) as init:
        ConversationWindow("gpt-4o", max_tokens=10_000, messages=_history_with(BAD_NAME, at=3))
    assert init.value.field == "messages[3].name"


def test_transcript_fit_names_the_index_in_its_transcript() -> None:
    transcript: TranscriptFit[dict[str, Any]] = TranscriptFit(GPT)
    for m in _history_with(BAD_NAME)[:6]:
        transcript.append(m)
    with pytest.raises(InvalidMessageError) as info:
        transcript.append(BAD_PART)
    assert info.value.field == "messages[6].content[1].image_url"
    assert len(transcript) == 6


# -- 3. a truncation that leaves no visible text is an overflow -----------------------------------


def _floor(counter: TokenCounter, system: dict[str, Any] = SYSTEM) -> int:
    return int(counter.count_messages([system, {"role": "user", "content": ""}]))


@pytest.mark.parametrize("model", ["gpt-4o", "claude-sonnet-4-5"])
def test_truncate_never_fits_by_cutting_the_question_to_nothing(model: str) -> None:
    counter = TokenCounter.for_model(model)
    history = [SYSTEM, {"role": "user", "content": QUESTION}]
    full = (
        int(counter.count_messages([SYSTEM])) - counter.reply_priming + int(counter.count_message(history[1]))
    )
    raised = kept = 0
    for budget in range(_floor(counter), _floor(counter) + 25):
        try:
            window = fit_messages(history, budget, model, on_overflow="truncate")
        except ContextOverflowError as e:
            overflow = e
            raised += 1
            # named as the overflow without truncation: the budget, and what the message needs
            assert overflow.limit == budget
            assert overflow.required >= full - 2
            assert "keep none of its text" in str(overflow)
            continue
        kept += 1
        assert window.truncated == 1
        assert visible(window[-1]["content"])
        assert QUESTION.endswith(window[-1]["content"])
        assert window.tokens <= budget
        body = build_anthropic_request(list(window)).body
        assert body["messages"][-1]["content"]  # never the empty turn the API refuses
    assert raised >= 2  # the floor and the next budget raise
    assert kept >= 5  # some text fits later


def test_truncate_never_keeps_only_blanks_keep_end_and_keep_start() -> None:
    floor = _floor(GPT)
    tail_blanks = [
        SYSTEM,
        {"role": "user", "content": "Please summarise the report. " * 20 + "\n\n\n\n" + " " * 40},
    ]
    head_blanks = [SYSTEM, {"role": "user", "content": "   \n\n  \t" * 5 + "Begin here. " * 30}]
    for history, keep in ((tail_blanks, "newest"), (head_blanks, "oldest")):
        for budget in range(floor, floor + 3):  # the blank run is all a cut can keep here
            with pytest.raises(ContextOverflowError, match="keep none of its text") as info:
                fit_messages(history, budget, GPT, on_overflow="truncate", keep=keep)  # type: ignore[arg-type]
            assert info.value.limit == budget
        window = fit_messages(history, floor + 40, GPT, on_overflow="truncate", keep=keep)  # type: ignore[arg-type]
        assert window.truncated == 1
        assert visible(window[-1]["content"])


def test_truncate_of_a_core_message_and_a_message_with_an_image() -> None:
    newest = Message(role="user", content=(TextPart(text=QUESTION),))
    with pytest.raises(ContextOverflowError):
        fit_messages(
            [Message(role="system", content="sys"), newest],
            _floor(GPT, {"role": "system", "content": "sys"}),
            GPT,
            on_overflow="truncate",
        )
    # a message with an image may keep the image alone: it still says something
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}}
    history: list[dict[str, Any]] = [
        SYSTEM,
        {"role": "user", "content": [{"type": "text", "text": QUESTION}, image]},
    ]
    floor = int(GPT.count_messages([SYSTEM, {"role": "user", "content": [image]}]))
    window = fit_messages(history, floor, GPT, on_overflow="truncate")
    assert window.truncated == 1
    assert image in window[-1]["content"]


def test_trim_messages_runnable_refuses_to_cut_the_question_to_nothing() -> None:
    msgs = [SystemMessage(SYSTEM["content"]), HumanMessage(QUESTION)]
    with pytest.raises(ContextOverflowError):
        TrimMessagesRunnable("gpt-4o", max_tokens=_floor(GPT), on_overflow="truncate").invoke(msgs)
    kept = TrimMessagesRunnable("gpt-4o", max_tokens=_floor(GPT) + 20, on_overflow="truncate").invoke(msgs)
    assert visible(str(kept[-1].content))


def test_prompt_builder_truncate_never_sends_an_empty_user_input() -> None:
    sys_cost = _floor(GPT, {"role": "system", "content": "Be brief."})
    for budget in (sys_cost, sys_cost + 1):
        builder = PromptBuilder("gpt-4o", max_tokens=budget, reserve_output=0, on_overflow="truncate")
        with pytest.raises(ContextOverflowError, match="keep none of its text") as info:
            builder.build(system="Be brief.", user=QUESTION + "\n\n\n   ")
        assert info.value.limit == budget
    builder = PromptBuilder("gpt-4o", max_tokens=sys_cost + 15, reserve_output=0, on_overflow="truncate")
    prompt = builder.build(system="Be brief.", user=QUESTION)
    assert prompt.user_truncated
    assert visible(prompt.messages[-1]["content"])
    assert prompt.tokens <= prompt.budget


def test_visible_text() -> None:
    from tokenbudget_core.fitting import has_visible_text

    assert not has_visible_text("")
    assert not has_visible_text(" \n\t\u00a0\u3000")
    assert not has_visible_text("\u200b\u200d\ufeff ")  # zero-width space, joiner, BOM
    assert has_visible_text(" .")
    assert has_visible_text("\u200bé")


# -- 6. ConversationWindow's run starts on a user turn, as fit_messages' does --------------------


def _call(i: int) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": f"c{i}", "type": "function", "function": {"name": "search", "arguments": "{}"}}
        ],
    }


def _result(i: int) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": f"c{i}", "content": "result " * 10}


AGENT = [
    {"role": "system", "content": "You are an agent."},
    {"role": "user", "content": "Research this topic for me please. " * 8},
    _call(1),
    _result(1),
    {"role": "assistant", "content": "Step one done, continuing. " * 3},
    _call(2),
    _result(2),
    {"role": "assistant", "content": "Here is the answer. " * 3},
    {"role": "user", "content": "Thanks!"},
]


@pytest.mark.parametrize("first_user", ["slide", "pin"])
def test_a_user_message_ends_the_lead_of_agent_steps_whose_request_slid_out(first_user: Any) -> None:
    budget = 130 if first_user == "slide" else 150
    window: ConversationWindow[dict[str, Any]] = ConversationWindow(
        "gpt-4o", max_tokens=budget, first_user=first_user
    )
    for m in AGENT[:-1]:
        window.append(m)
    before = window.messages()
    # the request slid out (or is pinned) and earlier steps went: the newest steps lead the
    # window, as no user message follows them yet
    assert window.slid_out()
    assert before[1 if first_user == "slide" else 2]["role"] == "assistant"
    changes = window.prefix_changes
    window.append(AGENT[-1])
    kept = window.messages()
    fitted = fit_messages(AGENT, budget, "gpt-4o", pin_first_user=first_user == "pin")
    assert kept == list(fitted)  # the same rule, the same window
    run = [m for m in kept if m is not AGENT[0] and not (first_user == "pin" and m is AGENT[1])]
    assert run[0]["role"] == "user"
    assert window.prefix_changes == changes + 1  # one cut, for the one append
    assert GPT.count_messages(kept) == window.tokens <= window.budget
    assert [m for _, m, _ in window.slid_out()] == [m for m in AGENT[1:-1] if m not in kept]


def test_an_overflowing_user_message_leaves_the_agent_steps_as_they_were() -> None:
    window: ConversationWindow[dict[str, Any]] = ConversationWindow(
        "gpt-4o", max_tokens=130, first_user="slide"
    )
    for m in AGENT[:-1]:
        window.append(m)
    state = (window.messages(), window.start, window.tokens, window.prefix_changes, len(window))
    with pytest.raises(ContextOverflowError):
        window.append({"role": "user", "content": "far too long " * 200})
    assert (window.messages(), window.start, window.tokens, window.prefix_changes, len(window)) == state


def test_min_messages_is_kept_when_steps_would_go() -> None:
    window: ConversationWindow[dict[str, Any]] = ConversationWindow(
        "gpt-4o", max_tokens=130, first_user="slide", min_messages=4
    )
    for m in AGENT:
        window.append(m)
    assert window.messages()[-4:] == AGENT[-4:]  # the newest 4 are never trimmed
    assert window.tokens <= window.budget


def _random_session(rng: random.Random, n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"role": "system", "content": "sys"}]
    calls = 0
    while len(out) < n:
        kind = rng.random()
        if kind < 0.25:
            out.append({"role": "user", "content": "ask " * rng.randint(1, 30)})
        elif kind < 0.6:
            calls += 1
            k = rng.randint(1, 3)
            ids = [f"t{calls}_{j}" for j in range(k)]
            fn = {"name": "f", "arguments": "{}"}
            out.append({
                "role": "assistant", "content": None,
                "tool_calls": [{"id": i, "type": "function", "function": fn} for i in ids],
            })  # fmt: skip
            out.extend({"role": "tool", "tool_call_id": i, "content": "r " * rng.randint(1, 40)} for i in ids)
        else:
            out.append({"role": "assistant", "content": "say " * rng.randint(1, 30)})
    return out


def test_property_the_run_starts_on_a_user_turn_whenever_one_is_in_it() -> None:
    rng = random.Random(29)
    for _ in range(120):
        budget = rng.randint(120, 600)
        low_water = rng.choice([None, 0.6, 0.8])
        first_user: Any = rng.choice(["pin", "slide"])
        window: ConversationWindow[dict[str, Any]] = ConversationWindow(
            "gpt-4o", max_tokens=budget, low_water=low_water, first_user=first_user
        )
        for m in _random_session(rng, rng.randint(5, 60)):
            try:
                window.append(m)
            except ContextOverflowError:
                continue  # (left as it was)
            kept = window.messages()
            assert GPT.count_messages(kept) == window.tokens <= window.budget
            transcript = window.transcript()
            live = [i for i in range(window.start, len(transcript)) if transcript[i] in kept]
            slid = [i for i, _, _ in window.slid_out()]
            run_roles = [transcript[i]["role"] for i in live if transcript[i]["role"] != "system"]
            pinned_first = first_user == "pin" and next(
                (i for i, x in enumerate(transcript) if x["role"] == "user"), None
            )
            users_in_run = [i for i in live if transcript[i]["role"] == "user" and i != pinned_first]
            if slid and users_in_run and run_roles:
                first = next(i for i in live if transcript[i]["role"] != "system" and i != pinned_first)
                assert transcript[first]["role"] == "user", (budget, low_water, first_user, run_roles)


def test_each_message_is_still_counted_once_and_appends_stay_cheap() -> None:
    calls: list[object] = []
    counter = TokenCounter.for_model("gpt-4o")
    original = counter.count_message

    def spy(message: Any) -> Any:
        calls.append(message)
        return original(message)

    counter.count_message = spy  # type: ignore[method-assign]
    session = _random_session(random.Random(7), 6_000)
    window: ConversationWindow[dict[str, Any]] = ConversationWindow(
        counter, max_tokens=2_000, first_user="slide"
    )
    started = time.perf_counter()
    for m in session:
        window.append(m)
    per_append = (time.perf_counter() - started) / len(session)
    assert len(calls) == len(session)
    assert per_append < 1e-3  # (a quadratic walk of the transcript takes far longer)


# -- 7. Allocation weights ------------------------------------------------------------------------

PARTS: dict[str, Any] = {
    "total": 100,
    "system": 0,
    "examples": 0,
    "context": 50,
    "history": 50,
    "user": 0,
    "output": 0,
}


@pytest.mark.parametrize(
    ("weights", "field"),
    [
        ((("context", math.nan),), "weights[0][1]"),
        ((("context", math.inf),), "weights[0][1]"),
        ((("context", 0.0),), "weights[0][1]"),
        ((("context", 1.5),), "weights[0][1]"),
        ((("context", "0.5"),), "weights[0][1]"),
        ((("context", True),), "weights[0][1]"),
        ((("context",),), "weights[0]"),
        ((("context", 0.5, 1),), "weights[0]"),
        (("context",), "weights[0]"),
        ((("contxt", 0.5),), "weights[0][0]"),
        ((("output", 0.5),), "weights[0][0]"),
        ((("context", 0.5), ("context", 0.5)), "weights[1][0]"),
        ([("context", 0.5)], "weights"),
        (None, "weights"),
    ],
)
def test_allocation_refuses_bad_weights_by_name(weights: Any, field: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        Allocation(**PARTS, weights=weights)
    assert info.value.field == field
    assert info.value.fix


def test_good_weights_still_construct_and_rebalance() -> None:
    a = Allocation(**PARTS, weights=(("context", 0.5), ("history", 1)))
    assert a.rebalance({"history": 10}).context == 90
    made = allocate_budget(1_000, shares={"system": 100, "context": 0.3, "examples": 0.1})
    parts: dict[str, Any] = {**made.as_dict(), "total": made.total}
    assert Allocation(**parts, weights=made.weights) == made  # what allocate_budget makes passes
    assert made.fill({"context": 10, "history": 5_000}).history > made.history
