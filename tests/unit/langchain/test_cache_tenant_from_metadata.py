"""A run's tenant named in its metadata (``tenant`` / ``tokenbudget_tenant``) or tags
(``tenant:x``) scopes its response-cache entries, as ``attribute(tenant=...)`` does: one
process-wide ``TokenBudgetLLMCache`` with per-tenant handlers served tenant globex the answer
cached for tenant acme (the handler read feature, user and conversation from the metadata, and
the tenant only from an ``attribute()`` block)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.globals import get_llm_cache, set_llm_cache
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from langchain_tokenbudget import BudgetCallbackHandler, TokenBudgetLLMCache
from tokenbudget_core import ExactCache, Ledger, attribute
from tokenbudget_core.errors import InvalidInputError


@pytest.fixture(autouse=True)
def shared_cache() -> Iterator[None]:
    before = get_llm_cache()
    set_llm_cache(TokenBudgetLLMCache(ExactCache()))
    yield
    set_llm_cache(before)


def model() -> GenericFakeChatModel:
    return GenericFakeChatModel(
        messages=iter([AIMessage("acme's answer: Alice (acme internal)"), AIMessage("globex's own answer")])
    )


def ask(llm: GenericFakeChatModel, handler: BudgetCallbackHandler, **config: Any) -> str:
    return str(llm.invoke("Who is my account manager?", config={"callbacks": [handler], **config}).content)


@pytest.mark.parametrize(
    "named",
    [
        lambda t: {"metadata": {"tenant": t, "feature": "support", "user": "u-1"}},
        lambda t: {"metadata": {"tokenbudget_tenant": t, "user": "u-1"}},
        lambda t: {"metadata": {"user": "u-1"}, "tags": [f"tenant:{t}"]},
    ],
    ids=["metadata tenant", "metadata tokenbudget_tenant", "tag"],
)
@pytest.mark.parametrize("plain", [True, False], ids=["common call", "general path (tools bound)"])
def test_tenants_named_in_run_metadata_never_share_cached_answers(named: Any, plain: bool) -> None:
    llm = model()
    runnable: Any = (
        llm if plain else llm.bind(tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])
    )
    handlers = {
        t: BudgetCallbackHandler(Ledger("memory://"), model="gpt-4o-mini") for t in ("acme", "globex")
    }
    first = str(
        runnable.invoke(
            "Who is my account manager?", config={"callbacks": [handlers["acme"]], **named("acme")}
        ).content
    )
    second = str(
        runnable.invoke(
            "Who is my account manager?", config={"callbacks": [handlers["globex"]], **named("globex")}
        ).content
    )
    assert first.startswith("acme's answer")
    assert second == "globex's own answer"


def test_the_same_tenant_is_still_served_from_the_cache() -> None:
    llm = model()
    handler = BudgetCallbackHandler(Ledger("memory://"), model="gpt-4o-mini")
    config = {"metadata": {"tenant": "acme", "user": "u-1"}}
    assert ask(llm, handler, **config) == ask(llm, handler, **config)


def test_an_attribute_blocks_tenant_wins_over_metadata() -> None:
    llm = model()
    handler = BudgetCallbackHandler(Ledger("memory://"), model="gpt-4o-mini")
    with attribute(tenant="acme"):
        first = ask(llm, handler, metadata={"tenant": "globex", "user": "u-1"})
        second = ask(llm, handler, metadata={"tenant": "initech", "user": "u-1"})
    assert first == second  # both in acme's scope


def test_a_tenant_that_is_no_id_is_named() -> None:
    handler = BudgetCallbackHandler(Ledger("memory://"), model="gpt-4o-mini")
    with pytest.raises(InvalidInputError) as info:
        ask(model(), handler, metadata={"tokenbudget_tenant": 3.5, "user": "u-1"})
    assert info.value.field == "metadata.tokenbudget_tenant"
