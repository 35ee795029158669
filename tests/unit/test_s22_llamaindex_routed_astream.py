"""RoutedLLM's async streams over CustomLLM tiers are routed calls like its other modes (review s22 B2).

A ``CustomLLM``'s ``astream_chat`` / ``astream_complete`` (``MockLLM``, every LLM built on it) makes
its provider call, the ``stream_chat`` / ``stream_complete`` the budget handlers charge, only when
the stream is first read. That read (and every later one) must happen with the route in force, so
that the call is charged on the tier's model with the premium counterfactual, in every mode.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from llama_index.core.base.llms.types import (
    ChatMessage,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.callbacks import CallbackManager
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.llms import MockLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from test_llamaindex_routed_llm import EASY, RateLimited

from llamaindex_tokenbudget import BudgetCallbackHandler, CostEventHandler, RoutedLLM
from tokenbudget_core import Ledger, Usage
from tokenbudget_core.pricing import cost_of
from tokenbudget_core.reports import build_report

MODES = (
    "chat",
    "complete",
    "stream_chat",
    "stream_complete",
    "achat",
    "acomplete",
    "astream_chat",
    "astream_complete",
)
ASYNC_STREAMS = ("astream_chat", "astream_complete")
USAGE = Usage(input_tokens=100, output_tokens=10)  # what every UsageLLM call reports
MESSAGES = [ChatMessage(role="user", content=EASY)]


class UsageLLM(CustomLLM):
    """A named LLM reporting OpenAI usage (a stream on its last chunk); ``fail_with`` raises at the call."""

    model_name: str = "gpt-4o-mini"
    fail_with: Any = None

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=self.model_name, context_window=128_000, num_output=50)

    def _raw(self) -> dict[str, Any]:
        return {
            "object": "chat.completion",
            "model": self.model_name,
            "usage": {
                "prompt_tokens": USAGE.input_tokens,
                "completion_tokens": USAGE.output_tokens,
                "total_tokens": USAGE.input_tokens + USAGE.output_tokens,
            },
        }

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        if self.fail_with is not None:
            raise self.fail_with
        return CompletionResponse(text=f"{self.model_name} answer", raw=self._raw())

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        if self.fail_with is not None:
            raise self.fail_with

        def gen() -> Iterator[CompletionResponse]:
            yield CompletionResponse(text=self.model_name, delta=self.model_name)
            yield CompletionResponse(text=f"{self.model_name} answer", delta=" answer", raw=self._raw())

        return gen()


async def run(llm: RoutedLLM, mode: str) -> tuple[str, str]:
    """Call ``llm`` in ``mode``: the answer's text and the model the route says answered."""
    if mode in ("chat", "achat", "stream_chat", "astream_chat"):
        args: tuple[Any, ...] = (MESSAGES,)
    else:
        args = (EASY,)
    if mode in ("chat", "complete", "achat", "acomplete"):
        result = getattr(llm, mode)(*args)
        response = await result if mode.startswith("a") else result
        responses = [response]
    elif mode.startswith("a"):
        responses = [c async for c in await getattr(llm, mode)(*args)]
    else:
        responses = list(getattr(llm, mode)(*args))
    last = responses[-1]
    text = last.message.content if mode.endswith("chat") else last.text
    return str(text), last.additional_kwargs["tokenbudget_route"]["answered_by"]


def by_model(ledger: Ledger) -> dict[str, int]:
    """Requests per model in today's rollup."""
    found: dict[str, int] = {}
    for row in ledger.store.rollup([ledger.day()]):
        model = row.rollup_key.rsplit("/", 1)[1]
        found[model] = found.get(model, 0) + row.values["requests"]
    return found


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger("memory://", spool_path=tmp_path / "spool")


@pytest.fixture
def cost_handler(ledger: Ledger) -> Iterator[CostEventHandler]:
    handler = CostEventHandler(ledger=ledger, feature="f")
    get_dispatcher().add_event_handler(handler)
    yield handler
    get_dispatcher().event_handlers.remove(handler)


@pytest.mark.parametrize("mode", MODES)
async def test_mock_llm_tiers_named_only_by_models_answer_and_are_charged_as_routed(
    ledger: Ledger, mode: str
) -> None:
    """RoutedLLM's own docstring setup (MockLLM tiers, models=) with a handler that names no model."""
    cm = CallbackManager([BudgetCallbackHandler(ledger, feature="f")])
    llm = RoutedLLM(
        tiers={
            "small": MockLLM(max_tokens=5, callback_manager=cm),
            "large": MockLLM(max_tokens=5, callback_manager=cm),
        },
        models={"small": "gpt-4o-mini", "large": "gpt-4o"},
    )
    text, answered_by = await run(llm, mode)  # raised InvalidInputError ("does not name its model")
    assert set(text.split()) == {"text"}  # MockLLM's answer (its streams stop one word short)
    assert answered_by == "gpt-4o-mini"
    assert by_model(ledger) == {"gpt-4o-mini": 1}
    [row] = ledger.store.rollup([ledger.day()])
    estimate = Usage(input_tokens=row.values["input_tokens"], output_tokens=row.values["output_tokens"])
    t = build_report(ledger, last_days=1).totals
    assert (t.requests, t.routed_requests) == (1, 1)
    assert t.routing_saved_usd == cost_of(estimate, "gpt-4o") - cost_of(estimate, "gpt-4o-mini") > 0


@pytest.mark.parametrize("mode", MODES)
async def test_a_handler_built_for_another_model_charges_the_routed_tiers_model(
    ledger: Ledger, mode: str
) -> None:
    """model="gpt-4o" on the handler prices unrouted calls only: the gpt-4o-mini tier's call costs
    gpt-4o-mini's price (not 16x that) in every mode."""
    cm = CallbackManager([BudgetCallbackHandler(ledger, feature="f", model="gpt-4o")])
    llm = RoutedLLM(
        tiers={
            "small": UsageLLM(model_name="gpt-4o-mini", callback_manager=cm),
            "large": UsageLLM(model_name="gpt-4o", callback_manager=cm),
        }
    )
    assert await run(llm, mode) == ("gpt-4o-mini answer", "gpt-4o-mini")
    assert by_model(ledger) == {"gpt-4o-mini": 1}
    t = build_report(ledger, last_days=1).totals
    assert t.cost_usd == cost_of(USAGE, "gpt-4o-mini")
    assert (t.routed_requests, t.routing_saved_usd) == (
        1,
        cost_of(USAGE, "gpt-4o") - cost_of(USAGE, "gpt-4o-mini"),
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("handler_kind", ["callback", "event"])
async def test_both_handlers_record_the_routing_saving_in_every_mode(
    tmp_path: Path, mode: str, handler_kind: str
) -> None:
    ledger = Ledger("memory://", spool_path=tmp_path / "spool")
    handler = CostEventHandler(ledger=ledger, feature="f")
    cm = CallbackManager([BudgetCallbackHandler(ledger, feature="f")] if handler_kind == "callback" else [])
    if handler_kind == "event":
        get_dispatcher().add_event_handler(handler)
    try:
        llm = RoutedLLM(
            tiers={
                "small": UsageLLM(model_name="gpt-4o-mini", callback_manager=cm),
                "large": UsageLLM(model_name="gpt-4o", callback_manager=cm),
            }
        )
        assert await run(llm, mode) == ("gpt-4o-mini answer", "gpt-4o-mini")
    finally:
        if handler_kind == "event":
            get_dispatcher().event_handlers.remove(handler)
    [row] = ledger.store.rollup([ledger.day()])
    assert row.rollup_key == "f//gpt-4o-mini"
    assert row.values["cost_nanos"] == 21_000  # 100 x 150 + 10 x 600 nanos
    assert row.values["routed_requests"] == 1
    assert row.values["routing_saved_nanos"] == 350_000 - 21_000  # the same usage on gpt-4o
    t = build_report(ledger, last_days=1).totals
    assert t.routing_saved_usd == Decimal("0.000329")


@pytest.mark.parametrize("mode", ASYNC_STREAMS)
async def test_an_async_stream_falls_back_and_the_fallback_is_charged_as_routed(
    ledger: Ledger, cost_handler: CostEventHandler, mode: str
) -> None:
    """The small tier's provider refuses (429) when the stream is first read: the fallback answers,
    and both handlers charge it on its own model with the premium counterfactual."""
    callback_ledger = Ledger("memory://")
    cm = CallbackManager([BudgetCallbackHandler(callback_ledger, feature="f")])
    llm = RoutedLLM(
        tiers={
            "small": UsageLLM(model_name="gpt-4o-mini", fail_with=RateLimited(), callback_manager=cm),
            "large": UsageLLM(model_name="gpt-4o", callback_manager=cm),
        },
        fallbacks={"small": [UsageLLM(model_name="gpt-4.1-nano", callback_manager=cm)]},
    )
    assert await run(llm, mode) == ("gpt-4.1-nano answer", "gpt-4.1-nano")
    for charged in (callback_ledger, ledger):
        assert by_model(charged) == {"gpt-4.1-nano": 1}  # the refused call: nothing sent, nothing kept
        t = build_report(charged, last_days=1).totals
        assert t.cost_usd == cost_of(USAGE, "gpt-4.1-nano")
        assert (t.routed_requests, t.routing_saved_usd) == (
            1,
            cost_of(USAGE, "gpt-4o") - cost_of(USAGE, "gpt-4.1-nano"),
        )
    payer = ("u/f/", "tokens")
    now_ms = int(callback_ledger.clock() * 1000)
    spent, reserved = callback_ledger.store.totals(callback_ledger.day(), [payer], now_ms)[payer]
    assert (spent, reserved) == (USAGE.input_tokens + USAGE.output_tokens, 0)  # no reservation held


async def test_an_async_stream_read_leaves_no_route_in_force_for_its_consumer() -> None:
    """The route is in force inside each read of the tier's stream, never while the caller holds a
    chunk: a call the consumer makes between chunks is not taken for the routed one."""
    from tokenbudget_core.routing import current_route

    llm = RoutedLLM(
        tiers={"small": UsageLLM(model_name="gpt-4o-mini"), "large": UsageLLM(model_name="gpt-4o")}
    )
    seen = []
    async for _chunk in await llm.astream_chat(MESSAGES):
        seen.append(current_route())
    assert seen == [None, None]
    assert current_route() is None
