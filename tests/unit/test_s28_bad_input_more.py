"""Bad input to the public API (review s28, F9-F15): refused by name as an ``InvalidInputError``
(or another ``TokenBudgetError``), never a bare exception nor a silent wrong answer; the valid
input next to each still works.

F9 ``at`` of ``cost_of`` / ``price_of``, F10 counting timeouts, F11 ``HashingEmbedder(dim)``,
F12 deeply nested input (and the CLI on it), F13 unchecked arguments, F14 the field an error
names, F15 flags and exported value types.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import tokenbudget_core as t
from cli_support import assert_one_line_error, run
from tokenbudget_core.allocation import PARTS
from tokenbudget_core.anthropic_counting import AnthropicTokenCounter
from tokenbudget_core.anthropic_format import to_anthropic_request
from tokenbudget_core.cli import EXIT_BAD_INPUT
from tokenbudget_core.errors import InvalidInputError, InvalidMessageError, UnknownModelError
from tokenbudget_core.images import anthropic_image_tokens, max_image_tokens, openai_image_tokens
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.money import nanos_to_usd
from tokenbudget_core.pricing import cost_nanos, format_usd
from tokenbudget_core.registry import get_model
from tokenbudget_core.usage import Usage

pytestmark = pytest.mark.usefixtures("isolated")

USAGE = Usage(input_tokens=1000, output_tokens=200)


def _deep(levels: int) -> dict[str, Any]:
    top: dict[str, Any] = {}
    cur = top
    for _ in range(levels):
        cur["a"] = {}
        cur = cur["a"]
    return top


# -- F9: at ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "at", [1_700_000_000, date(2024, 1, 1), "2024-01-01", datetime(2024, 1, 1)], ids=repr
)
def test_cost_of_and_price_of_refuse_an_at_that_is_no_aware_datetime(at: object) -> None:
    for call in (
        lambda: t.cost_of(USAGE, "gpt-4o", at=at),  # type: ignore[arg-type]
        lambda: t.price_of(USAGE, "gpt-4o", at=at),  # type: ignore[arg-type]
        lambda: t.prompt_cache_report(USAGE, "gpt-4o", at=at),  # type: ignore[arg-type]
    ):
        with pytest.raises(InvalidInputError) as e:
            call()
        assert e.value.field == "at"


def test_an_aware_at_still_prices() -> None:
    assert t.cost_of(USAGE, "gpt-4o", at=datetime(2025, 1, 1, tzinfo=UTC)) > 0
    assert t.price_of(USAGE, "gpt-4o", at=datetime(2025, 1, 1, tzinfo=UTC)).total is not None


# -- F10: timeouts ---------------------------------------------------------------------------------

BAD_TIMEOUTS = [float("nan"), float("inf"), -1, 0, True, "5", None]


@pytest.mark.parametrize("timeout", BAD_TIMEOUTS, ids=repr)
def test_counting_timeouts_must_be_finite_and_positive(timeout: object) -> None:
    with pytest.raises(InvalidInputError) as e:
        t.TokenCounter.for_model("claude-sonnet-4-5", timeout=timeout)  # type: ignore[arg-type]
    assert e.value.field == "timeout"
    with pytest.raises(InvalidInputError) as e2:
        AnthropicTokenCounter(get_model("claude-sonnet-4-5"), timeout=timeout)  # type: ignore[arg-type]
    assert e2.value.field == "timeout"


def test_a_good_timeout_and_strict_flag_still_work() -> None:
    counter = AnthropicTokenCounter(get_model("claude-sonnet-4-5"), timeout=2.5, strict=False)
    assert counter.timeout == 2.5
    with pytest.raises(InvalidInputError) as e:
        AnthropicTokenCounter(get_model("claude-sonnet-4-5"), strict="no")  # type: ignore[arg-type]
    assert e.value.field == "strict"


# -- F11: HashingEmbedder(dim) ---------------------------------------------------------------------


@pytest.mark.parametrize("dim", [2**70, 2**33, 65_537, 63, True, 512.0])
def test_hashing_embedder_dim_is_bounded(dim: object) -> None:
    with pytest.raises(InvalidInputError) as e:
        t.HashingEmbedder(dim=dim)  # type: ignore[arg-type]
    assert e.value.field == "dim"


def test_hashing_embedder_takes_the_largest_dim() -> None:
    from tokenbudget_core.embeddings import MAX_HASHING_DIM

    assert MAX_HASHING_DIM == 65_536
    assert t.HashingEmbedder(dim=MAX_HASHING_DIM).embed(["a b"]).shape == (1, MAX_HASHING_DIM)


# -- F12: deeply nested input ----------------------------------------------------------------------


def test_a_cache_refuses_deeply_nested_params_by_name() -> None:
    with pytest.raises(InvalidInputError) as e:
        t.ExactCache().lookup(
            t.CacheRequest(
                model="gpt-4o", messages=(t.Message(role="user", content="hi"),), params={"x": _deep(5000)}
            )
        )
    assert e.value.field.startswith("params")
    assert "nested too deeply" in str(e.value)
    # a realistic depth is still a key
    shallow = t.CacheRequest(
        model="gpt-4o", messages=(t.Message(role="user", content="hi"),), params={"x": _deep(20)}
    )
    assert t.ExactCache().lookup(shallow) is None


def test_model_settings_refuse_deep_nesting_by_name() -> None:
    from tokenbudget_core.cache_keys import model_settings

    with pytest.raises(InvalidInputError) as e:
        model_settings({"x": _deep(5000)})
    assert e.value.field.startswith("settings")


def test_plan_prompt_cache_refuses_a_deeply_nested_tool_by_name() -> None:
    request = {
        "model": "claude-sonnet-4-5",
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"name": "f", "input_schema": _deep(5000)}],
    }
    with pytest.raises(InvalidInputError) as e:
        t.plan_prompt_cache(request)
    assert e.value.field == "tools[0]"
    blocks = {
        "model": "claude-sonnet-4-5",
        "messages": [
            {"role": "user", "content": [{"type": "tool_use", "id": "1", "name": "f", "input": _deep(5000)}]}
        ],
    }
    with pytest.raises(InvalidInputError) as e2:
        t.plan_prompt_cache(blocks)
    assert e2.value.field.startswith("messages[0]")


def test_the_cli_prints_one_error_line_for_deeply_nested_json(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    result = run("count", str(path), "--model", "gpt-4o")
    assert_one_line_error(result, EXIT_BAD_INPUT, "nested too deeply")
    ok = tmp_path / "ok.json"
    ok.write_text('[{"role": "user", "content": "hi"}]')
    assert run("count", str(ok), "--model", "gpt-4o").exit_code == 0


# -- F13: unchecked arguments ----------------------------------------------------------------------


@pytest.mark.parametrize("messages", [None, 5, 1.5, object()], ids=repr)
def test_window_and_buffer_extend_refuse_what_is_no_list(messages: object) -> None:
    window = t.ConversationWindow("gpt-4o", max_tokens=300)
    with pytest.raises(InvalidInputError) as e:
        window.extend(messages)  # type: ignore[arg-type]
    assert e.value.field == "messages"
    buffer = t.SummaryBuffer(lambda p, m: "s", "gpt-4o", max_tokens=400)
    with pytest.raises(InvalidInputError) as e2:
        buffer.extend(messages)  # type: ignore[arg-type]
    assert e2.value.field == "messages"
    with pytest.raises(InvalidInputError) as e3:
        asyncio.run(buffer.aextend(messages))  # type: ignore[arg-type]
    assert e3.value.field == "messages"
    window.extend([{"role": "user", "content": "hi"}])
    assert len(window.messages()) == 1


@pytest.mark.parametrize("summary_message", ["x", 5])
def test_summary_message_must_be_callable(summary_message: object) -> None:
    with pytest.raises(InvalidInputError) as e:
        t.SummaryBuffer(lambda p, m: "s", "gpt-4o", max_tokens=400, summary_message=summary_message)  # type: ignore[arg-type]
    assert e.value.field == "summary_message"


@pytest.mark.parametrize("detail", [{}, [], 5, None])
def test_image_detail_must_be_a_known_string(detail: object) -> None:
    with pytest.raises(InvalidMessageError) as e:
        t.ImagePart(url="https://x/y.png", detail=detail)  # type: ignore[arg-type]
    assert e.value.field == "image.detail"


def test_router_call_refuses_a_non_callable_or_async_fn() -> None:
    router = t.TierRouter({"small": "gpt-4o-mini", "large": "gpt-4o"})
    decision = router.route("hi")

    async def afn(model: str) -> str:
        return model

    for fn in (None, 5, afn):
        with pytest.raises(InvalidInputError) as e:
            router.call(decision, fn)  # type: ignore[arg-type]
        assert e.value.field == "fn"
    with pytest.raises(InvalidInputError) as e2:
        asyncio.run(router.acall(decision, lambda m: m))  # type: ignore[arg-type,return-value]
    assert e2.value.field == "fn"
    assert router.call(decision, lambda m: m) == decision.model
    assert asyncio.run(router.acall(decision, afn)) == decision.model


@pytest.mark.parametrize("tools", [1.5, object(), "x", {"name": "f"}], ids=lambda v: type(v).__name__)
def test_langchain_adapters_refuse_tools_that_are_no_list(tools: object) -> None:
    import langchain_tokenbudget as lc

    with pytest.raises(InvalidInputError) as e:
        lc.TrimMessagesRunnable("gpt-4o", max_tokens=1000, tools=tools)
    assert e.value.field == "tools"
    with pytest.raises(InvalidInputError) as e2:
        lc.TokenBudgetChatMessageHistory(model="gpt-4o", max_tokens=1000, tools=tools)
    assert e2.value.field == "tools"


def test_public_helpers_refuse_bad_arguments_by_name() -> None:
    cases: list[tuple[Any, str]] = [
        (lambda: nanos_to_usd("x"), "nanos"),  # type: ignore[arg-type]
        (lambda: nanos_to_usd(None), "nanos"),  # type: ignore[arg-type]
        (lambda: cost_nanos(None, 1, 1), "model"),  # type: ignore[arg-type]
        (lambda: cost_nanos("gpt-4o", None, 1), "input_tokens"),  # type: ignore[arg-type]
        (lambda: format_usd(1.5), "amount"),  # type: ignore[arg-type]
        (lambda: openai_image_tokens(None, "gpt-4o"), "part"),  # type: ignore[arg-type]
        (lambda: anthropic_image_tokens(None), "part"),  # type: ignore[arg-type]
        (lambda: max_image_tokens("x"), "part"),  # type: ignore[arg-type]
        (lambda: to_anthropic_request([{"role": "user", "content": "hi"}], tools="x"), "tools"),  # type: ignore[arg-type]
        (lambda: to_anthropic_request([{"role": "user", "content": "hi"}], tools=1.5), "tools"),  # type: ignore[arg-type]
    ]
    for call, field in cases:
        with pytest.raises(InvalidInputError) as e:
            call()
        assert e.value.field == field
    assert nanos_to_usd(1_500_000_000) == Decimal("1.5")
    assert format_usd(Decimal("0.00325")) == "$0.003250"
    assert cost_nanos("gpt-4o", 1000, 10) == cost_nanos(
        "gpt-4o", t.TokenCount(1000, exact=True, model="gpt-4o", method="tiktoken"), 10
    )
    assert to_anthropic_request([{"role": "user", "content": "hi"}], tools=None)["messages"]


# -- F14: the field an error names -----------------------------------------------------------------


def test_premium_model_errors_name_premium_model() -> None:
    ledger = Ledger("memory://")
    with pytest.raises(InvalidInputError) as e:
        ledger.record(model="gpt-4o", usage=Usage(input_tokens=1), premium_model="  ")
    assert e.value.field == "premium_model"
    with pytest.raises(UnknownModelError) as e2:
        ledger.record(model="gpt-4o", usage=Usage(input_tokens=1), premium_model="nope-zz-9")
    assert e2.value.field == "premium_model"
    assert str(e2.value).startswith("premium_model: ")


@pytest.mark.parametrize("fallback", [-1, "", object()], ids=repr)
def test_a_bad_fallback_is_named_fallback_whether_used_or_not(fallback: object) -> None:
    for name in ("nope-zz-9", "gpt-4o"):
        with pytest.raises(InvalidInputError) as e:
            get_model(name, fallback=fallback)  # type: ignore[arg-type]
        assert e.value.field == "fallback"
        with pytest.raises(InvalidInputError) as e2:
            t.TokenCounter.for_model(name, fallback=fallback)  # type: ignore[arg-type]
        assert e2.value.field == "fallback"
    with pytest.raises(UnknownModelError) as e3:
        get_model("nope-zz-9", fallback="also-nope-zz")
    assert e3.value.field == "fallback"
    assert get_model("nope-zz-9", fallback="gpt-4o").fallback_for == "nope-zz-9"


def test_an_empty_or_unknown_counter_name_is_named_counter() -> None:
    ledger = Ledger("memory://")
    res = ledger.reserve(model="gpt-4o", input_tokens=10, max_output_tokens=50)
    stream = t.OpenAIStreamUsage()
    for call in (
        lambda: t.truncate_text("hi", 5, counter=""),  # type: ignore[arg-type]
        lambda: t.compress_prompt("hi", counter="  "),  # type: ignore[arg-type]
        lambda: ledger.settle(res, None, reply_text="hello", counter=""),
        lambda: stream.result(prompt_tokens_estimate=1, counter=""),
    ):
        with pytest.raises(InvalidInputError) as e:
            call()
        assert e.value.field == "counter"
    with pytest.raises(UnknownModelError) as e2:
        t.truncate_text("hi", 5, counter="nope-zz-9")  # type: ignore[arg-type]
    assert e2.value.field == "counter"


def test_a_bool_saved_usd_is_called_a_bool() -> None:
    ledger = Ledger("memory://")
    res = ledger.reserve(model="gpt-4o", input_tokens=1)
    with pytest.raises(InvalidInputError) as e:
        ledger.settle(res, Usage(input_tokens=1), cache_hit=True, saved_usd=True)  # type: ignore[arg-type]
    assert e.value.field == "saved_usd"
    assert "not a bool" in str(e.value)


def test_load_policy_refuses_an_empty_path_by_name() -> None:
    for source in ("", "  "):
        with pytest.raises(InvalidInputError) as e:
            t.load_policy(source)
        assert e.value.field == "source"


# -- F15: flags and exported value types ------------------------------------------------------------


@pytest.mark.parametrize("flag", ["no", [1], 0, None], ids=repr)
def test_bool_options_take_only_bools(flag: object) -> None:
    cases: list[tuple[Any, str]] = [
        (lambda: t.split_sentences("a\nb", split_on_newlines=flag), "split_on_newlines"),
        (lambda: t.fit_messages([{"role": "user", "content": "hi"}], 100, pin_first_user=flag),
         "pin_first_user"),
        (lambda: t.SemanticCache(embedder=t.HashingEmbedder(dim=64), guard=flag), "guard"),
        (lambda: t.SemanticCache(embedder=t.HashingEmbedder(dim=64), shadow=flag), "shadow"),
        (lambda: t.TierRouter({"small": "gpt-4o-mini", "large": "gpt-4o"}, refuse_at_soft_refusal=flag),
         "refuse_at_soft_refusal"),
    ]  # fmt: skip
    for call, field in cases:
        with pytest.raises(InvalidInputError) as e:
            call()
        assert e.value.field == field
    assert t.split_sentences("a\nb", split_on_newlines=False) == ["a\nb"]
    assert t.SemanticCache(embedder=t.HashingEmbedder(dim=64), guard=False, shadow=True).shadow is True


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"total": -1}, "total"),
        ({"system": float("nan")}, "system"),
        ({"user": True}, "user"),
        ({"output": 5}, "total"),  # the parts no longer sum to the total
        ({"leftover": "nowhere"}, "leftover"),
    ],
)
def test_allocation_checks_its_fields(fields: dict[str, Any], named: str) -> None:
    good = t.allocate_budget(1000, reserve_output=200)
    values = {**{p: getattr(good, p) for p in ("total", *PARTS)}, "leftover": good.leftover, **fields}
    with pytest.raises(InvalidInputError) as e:
        t.Allocation(**values)
    assert e.value.field == named
    assert t.Allocation(**{p: getattr(good, p) for p in ("total", *PARTS)}) == t.Allocation(
        **{p: getattr(good, p) for p in ("total", *PARTS)}
    )
