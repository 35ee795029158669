"""A ``RoutedLLM`` nested as a tier of another (review s22b adapters #7): the answer's
``tokenbudget_route["answered_by"]`` names the model that answered (the inner router's tier),
not the outer tier's pricing name, and the call is charged on that model with the saving
recorded against the premium model the answer's route names (the outermost one: what the call
would have cost without routing), in every mode and for both handlers. It used to name the outer
tier's model, and the saving was against the inner router's premium tier.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from llama_index.core.callbacks import CallbackManager
from llama_index.core.instrumentation import get_dispatcher
from test_llamaindex_routed_llm import EASY
from test_s22_llamaindex_routed_astream import MESSAGES, MODES, USAGE, UsageLLM, by_model

from llamaindex_tokenbudget import BudgetCallbackHandler, CostEventHandler, RoutedLLM
from tokenbudget_core import Ledger
from tokenbudget_core.pricing import cost_of
from tokenbudget_core.reports import build_report


async def last_route(llm: RoutedLLM, mode: str) -> dict[str, Any]:
    """Call ``llm`` in ``mode``: the ``tokenbudget_route`` of its (last) response."""
    args: tuple[Any, ...] = (MESSAGES,) if mode.endswith("chat") else (EASY,)
    if mode in ("chat", "complete", "achat", "acomplete"):
        result = getattr(llm, mode)(*args)
        responses = [await result if mode.startswith("a") else result]
    elif mode.startswith("a"):
        responses = [c async for c in await getattr(llm, mode)(*args)]
    else:
        responses = list(getattr(llm, mode)(*args))
    route: dict[str, Any] = responses[-1].additional_kwargs["tokenbudget_route"]
    return route


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger("memory://", spool_path=tmp_path / "spool")


@pytest.fixture
def event_handler(ledger: Ledger) -> Iterator[None]:
    handler = CostEventHandler(ledger=ledger, feature="f")
    get_dispatcher().add_event_handler(handler)
    yield
    get_dispatcher().event_handlers.remove(handler)


def nested(cm: CallbackManager) -> RoutedLLM:
    """An outer router whose small tier (priced as gpt-4o-mini) is a router of nano / mini."""
    inner = RoutedLLM(
        tiers={
            "small": UsageLLM(model_name="gpt-4.1-nano", callback_manager=cm),
            "large": UsageLLM(model_name="gpt-4o-mini", callback_manager=cm),
        }
    )
    return RoutedLLM(
        tiers={"small": inner, "large": UsageLLM(model_name="gpt-4o", callback_manager=cm)},
        models={"small": "gpt-4o-mini", "large": "gpt-4o"},
    )


def check(ledger: Ledger, route: dict[str, Any]) -> None:
    assert route["answered_by"] == "gpt-4.1-nano"
    assert route["premium_model"] == "gpt-4o"
    assert by_model(ledger) == {"gpt-4.1-nano": 1}
    t = build_report(ledger, last_days=1).totals
    assert t.cost_usd == cost_of(USAGE, "gpt-4.1-nano")
    assert (t.routed_requests, t.routing_saved_usd) == (
        1,
        cost_of(USAGE, route["premium_model"]) - cost_of(USAGE, "gpt-4.1-nano"),
    )


@pytest.mark.parametrize("mode", MODES)
async def test_a_nested_router_names_the_model_that_answered_budget_handler(
    ledger: Ledger, mode: str
) -> None:
    llm = nested(CallbackManager([BudgetCallbackHandler(ledger, feature="f")]))
    check(ledger, await last_route(llm, mode))


@pytest.mark.parametrize("mode", MODES)
async def test_a_nested_router_names_the_model_that_answered_event_handler(
    ledger: Ledger, event_handler: None, mode: str
) -> None:
    llm = nested(CallbackManager([]))
    check(ledger, await last_route(llm, mode))


def test_the_nested_routers_answerer_is_found_for_its_tool_calls() -> None:
    llm = nested(CallbackManager([]))
    inner = llm.tiers["small"]
    assert llm._answerer("gpt-4.1-nano") is inner
    assert inner._answerer("gpt-4.1-nano") is inner.tiers["small"]
    assert llm._answerer("gpt-4o") is llm.tiers["large"]
    assert llm._answerer("claude") is None
