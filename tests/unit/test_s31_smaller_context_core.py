"""The ladder's ``smaller_context`` step has a core rule to act on (issue 4, section 6): a payer's
budget past that share makes a memory keep ``Ladder.context_share`` of its token budget
(``Ledger.context_tokens``), and ``ConversationWindow.messages(within=)`` reads the window trimmed
to it without moving the window. Before, no component acted on the step."""

from __future__ import annotations

import asyncio

import pytest

from tokenbudget_core import BudgetPolicy, FeatureBudget, Ledger, Usage, attribute
from tokenbudget_core.budgets import Ladder, load_policy
from tokenbudget_core.errors import BudgetUnavailableError, InvalidInputError
from tokenbudget_core.window import ConversationWindow

PAYER = {"feature": "chat", "user": "u1"}


def ledger(**ladder: float | None) -> Ledger:
    policy = BudgetPolicy(features={"chat": FeatureBudget(user_daily_tokens=1_000)}, ladder=Ladder(**ladder))
    return Ledger("memory://", policy=policy, alerts=[])


def spend(led: Ledger, tokens: int, **payer: str) -> None:
    led.record(Usage(input_tokens=tokens), model="gpt-4o-mini", **(payer or PAYER))


@pytest.mark.parametrize(
    ("step", "kept"),
    [
        ("normal", 4_000),
        ("cheaper_tier", 4_000),
        ("smaller_context", 2_000),
        ("cache_only", 2_000),
        ("soft_refusal", 2_000),
        ("hard_refusal", 2_000),
    ],
)
def test_the_ladder_keeps_its_context_share_from_smaller_context_up(step: str, kept: int) -> None:
    assert Ladder().context_tokens(4_000, step) == kept  # type: ignore[arg-type]


def test_a_skipped_smaller_context_step_keeps_the_whole_budget() -> None:
    assert Ladder(smaller_context=None).context_tokens(4_000, "cache_only") == 4_000


def test_the_share_is_a_setting_in_code_and_in_toml() -> None:
    assert Ladder(context_share=0.25).context_tokens(4_000, "smaller_context") == 1_000
    policy = load_policy({"user_daily_tokens": 100, "ladder": {"context_share": 0.25}})
    assert policy.ladder.context_share == 0.25
    assert Ladder(context_share=0.0001).context_tokens(100, "smaller_context") == 1  # never nothing


@pytest.mark.parametrize("share", [0, 1.5, -0.1, True, "half", None])
def test_a_bad_share_is_named(share: object) -> None:
    with pytest.raises(InvalidInputError) as e:
        Ladder(context_share=share)  # type: ignore[arg-type]
    assert e.value.field == "ladder.context_share"


def test_toml_refuses_false_for_the_share_and_names_it_among_the_keys() -> None:
    with pytest.raises(InvalidInputError) as e:
        load_policy({"ladder": {"context_share": False}})
    assert e.value.field == "ladder.context_share"
    with pytest.raises(InvalidInputError) as e:
        load_policy({"ladder": {"context_shar": 0.5}})
    assert "context_share" in (e.value.fix or "")


@pytest.mark.parametrize("bad", [0, -5, 2.5, True, "100"])
def test_bad_max_tokens_are_named(bad: object) -> None:
    with pytest.raises(InvalidInputError) as e:
        ledger().context_tokens(bad)  # type: ignore[arg-type]
    assert e.value.field == "max_tokens"
    with pytest.raises(InvalidInputError) as e:
        Ladder().context_tokens(bad, "normal")  # type: ignore[arg-type]
    assert e.value.field == "max_tokens"
    with pytest.raises(InvalidInputError) as e:
        Ladder().context_tokens(10, "tiny")  # type: ignore[arg-type]
    assert e.value.field == "step"


def test_the_ledger_shrinks_a_payers_context_past_smaller_context_only() -> None:
    led = ledger()
    assert led.context_tokens(4_000, **PAYER) == 4_000
    spend(led, 700)  # cheaper_tier
    assert led.context_tokens(4_000, **PAYER) == 4_000
    spend(led, 100)  # 80%: smaller_context
    assert led.context_tokens(4_000, **PAYER) == 2_000
    assert led.context_tokens(4_000, feature="chat", user="u2") == 4_000  # another payer
    with attribute(user="u2"):  # the block's payer wins, as for state()
        assert led.context_tokens(4_000, **PAYER) == 4_000
    assert asyncio.run(led.acontext_tokens(4_000, **PAYER)) == 2_000
    with pytest.raises(InvalidInputError) as e:
        led.context_tokens(4_000, usr="u1")  # type: ignore[call-arg]
    assert e.value.field == "usr"


def test_a_ledger_without_the_step_reads_no_store() -> None:
    """A store that cannot be reached (nothing listens on the port) is never asked: the budget is
    kept whole without a read, where the step is configured the ledger fails closed."""
    policy = BudgetPolicy(user_daily_tokens=100, ladder=Ladder(smaller_context=None))
    led = Ledger("redis://127.0.0.1:9/0?socket_connect_timeout=0.2", policy=policy)
    assert led.context_tokens(4_000) == 4_000
    led.policy = BudgetPolicy(user_daily_tokens=100)
    with pytest.raises(BudgetUnavailableError):
        led.context_tokens(4_000)


def turns(n: int) -> list[dict[str, object]]:
    return [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i} " * 15} for i in range(n)
    ]


def test_a_window_read_within_a_smaller_budget_keeps_the_rules_and_does_not_move() -> None:
    window: ConversationWindow[dict[str, object]] = ConversationWindow("gpt-4o", max_tokens=3_000)
    window.append({"role": "system", "content": "Be brief."})
    for m in turns(8):
        window.append(m)
    window.append({"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
    ]})  # fmt: skip
    window.append({"role": "tool", "tool_call_id": "c1", "content": "result " * 40})
    for m in turns(40):
        window.append(m)
    full = window.messages()
    start, changes = window.start, window.prefix_changes
    counter = window.counter
    half = window.budget // 2
    small = window.messages(within=half)
    assert int(counter.count_messages(small)) <= half < int(counter.count_messages(full))
    assert small[0]["content"] == "Be brief."  # system kept
    assert small[1]["content"] == turns(1)[0]["content"]  # the first user message is pinned
    assert small[-1] is full[-1]
    assert small[2]["role"] == "user"  # the trimmed part starts on a user turn
    assert (window.start, window.prefix_changes) == (start, changes)  # nothing moved
    assert window.messages() == full
    assert window.messages(within=window.budget * 2) == full
    assert asyncio.run(window.amessages(within=half)) == small


def test_a_window_read_within_never_splits_a_tool_call_from_its_result() -> None:
    window: ConversationWindow[dict[str, object]] = ConversationWindow("gpt-4o", max_tokens=3_000)
    for m in turns(4):
        window.append(m)
    window.append({"role": "user", "content": "look it up"})
    window.append({"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
    ]})  # fmt: skip
    window.append({"role": "tool", "tool_call_id": "c1", "content": "result " * 200})
    window.append({"role": "assistant", "content": "done"})
    for within in range(50, window.tokens, 25):
        kept = window.messages(within=within)
        roles = [m["role"] for m in kept]
        if "tool" in roles:
            assert roles[roles.index("tool") - 1] == "assistant"
            assert "tool_calls" in kept[roles.index("tool") - 1]


@pytest.mark.parametrize("bad", [-1, 1.5, True, "10"])
def test_a_bad_within_is_named(bad: object) -> None:
    window: ConversationWindow[dict[str, object]] = ConversationWindow("gpt-4o", max_tokens=3_000)
    with pytest.raises(InvalidInputError) as e:
        window.messages(within=bad)  # type: ignore[arg-type]
    assert e.value.field == "within"


def test_a_window_whose_must_keep_part_needs_more_than_within_is_read_whole() -> None:
    """(review s31) Trimmed as far as the rules let it and still over ``within``, the read had
    dropped the turns it could not make room with: it is now the whole window."""
    window: ConversationWindow[dict[str, object]] = ConversationWindow(
        "gpt-4o", max_tokens=3_000, first_user="slide"
    )
    window.append({"role": "system", "content": "Follow the policy. " * 80})
    for m in turns(10):
        window.append(m)
    full = window.messages()
    must = int(window.counter.count_messages([full[0], full[-1]]))
    assert window.messages(within=must - 1) == full
    fits = window.messages(within=must + 200)
    assert len(fits) < len(full)
    assert int(window.counter.count_messages(fits)) <= must + 200


def test_fit_smaller_or_whole_falls_back_only_on_an_overflow_of_the_smaller_budget() -> None:
    from tokenbudget_core.errors import ContextOverflowError
    from tokenbudget_core.fitting import fit_smaller_or_whole

    asked: list[int | None] = []

    def fit(room: int | None) -> str:
        asked.append(room)
        if room is not None and room < 100:
            raise ContextOverflowError(limit=room, required=100)
        return f"within {room}"

    assert fit_smaller_or_whole(fit, 150, 400) == "within 150"
    assert fit_smaller_or_whole(fit, 50, 400) == "within None"  # what must be kept needs 100
    assert fit_smaller_or_whole(fit, None, 400) == "within None"
    assert fit_smaller_or_whole(fit, 400, 400) == "within None"  # not smaller: the whole budget
    assert asked == [150, 50, None, None, None]
