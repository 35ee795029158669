"""A structured-output schema a chat model sends as its ``response_format`` (``ChatOpenAI``'s
default ``with_structured_output`` method, ``json_schema``) is input the provider bills:
``BudgetCallbackHandler`` counts it as it counts the same schema sent as a tool
(``method="function_calling"``), and as ``BudgetMiddleware`` counts an agent's
``ProviderStrategy``: in the reservation the budget checks and in every estimate (review s30,
finding 4). Driven over sockets: the real ``ChatOpenAI`` against the loopback provider server."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import openai
import pytest
from langchain_openai import ChatOpenAI
from provider_server import OpenAIReply, ProviderServer
from pydantic import BaseModel, Field, SecretStr

from langchain_tokenbudget import AsyncBudgetCallbackHandler, BudgetCallbackHandler
from langchain_tokenbudget._bridge import provider_format_tools
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.errors import BudgetExceededError, InvalidInputError
from tokenbudget_core.ledger import Ledger

pytestmark = pytest.mark.integration

GPT = "gpt-4o-mini"
ANSWER = '{"category": "billing", "priority": 2, "summary": "wrong invoice"}'


class Ticket(BaseModel):
    """A support ticket triaged from the customer's message."""

    category: str = Field(description="One of billing, outage, account, feature-request, other. " * 20)
    priority: int = Field(description="1 (low) to 5 (urgent); 5 means production is down for many. " * 20)
    summary: str = Field(description="A one-sentence summary in the customer's language, no PII. " * 20)


def ledger_at(tmp_path: Path, *, limit: int = 10**6) -> Ledger:
    return Ledger("memory://", policy=BudgetPolicy(user_daily_tokens=limit), spool_path=tmp_path / "spool")


def charged(ledger: Ledger) -> dict[str, int]:
    rows = [r.values for r in ledger.store.rollup([ledger.day()])]
    return {k: sum(r.get(k, 0) for r in rows) for k in {k for r in rows for k in r}}


def gpt(url: str, **kwargs: Any) -> ChatOpenAI:
    return ChatOpenAI(base_url=url, api_key=SecretStr("test"), model=GPT, max_retries=0, **kwargs)


def timed_out_input(server: ProviderServer, tmp_path: Path, method: str, *, warm: bool = False) -> int:
    """The input tokens a structured call cut off by a read timeout (billed) is charged; ``warm``:
    the handler answered a call of the model before, so its counter is made (the one-pass path)."""
    ledger = ledger_at(tmp_path / method)
    handler = BudgetCallbackHandler(ledger, user="u")
    model = gpt(server.url + "/v1", timeout=0.5)
    structured = model.with_structured_output(Ticket, method=method)  # type: ignore[arg-type]
    if warm:
        server.queue(OpenAIReply(text=ANSWER, prompt_tokens=20, completion_tokens=5))
        structured.invoke("My invoice is wrong", config={"callbacks": [handler]})
    before = charged(ledger).get("input_tokens", 0)
    server.queue(OpenAIReply(text=ANSWER, delay=3.0))
    with pytest.raises(openai.APITimeoutError):
        structured.invoke("My invoice is wrong", config={"callbacks": [handler]})
    got = charged(ledger)
    assert got["estimated"] == 1
    return got["input_tokens"] - before


def test_the_schema_sent_as_response_format_is_in_the_sent_request(provider_server: ProviderServer) -> None:
    """(What the provider is sent, and bills: the schema in ``response_format``, not in ``tools``.)"""
    provider_server.queue(OpenAIReply(text=ANSWER))
    gpt(provider_server.url + "/v1").with_structured_output(Ticket, method="json_schema").invoke("hi")
    body = provider_server.requests[-1].body
    assert "tools" not in body
    assert body["response_format"]["json_schema"]["name"] == "Ticket"


def test_a_timed_out_json_schema_call_is_estimated_with_its_schema(
    provider_server: ProviderServer, tmp_path: Path
) -> None:
    as_tool = timed_out_input(provider_server, tmp_path, "function_calling")
    as_format = timed_out_input(provider_server, tmp_path, "json_schema")
    assert as_tool > 500  # the schema's descriptions are long
    assert as_format == as_tool  # one schema, counted one way


def test_the_one_pass_path_counts_the_schema_too(provider_server: ProviderServer, tmp_path: Path) -> None:
    """The model's second call (its counter made) would take the handler's one-pass start, which
    counts messages only: a call carrying a response_format schema takes the full one."""
    as_tool = timed_out_input(provider_server, tmp_path, "function_calling", warm=True)
    as_format = timed_out_input(provider_server, tmp_path, "json_schema", warm=True)
    assert as_format == as_tool > 500


def test_the_reservation_counts_the_schema_so_the_budget_refuses_the_call(
    provider_server: ProviderServer, tmp_path: Path
) -> None:
    """The worst case the budget checks includes the schema: a 300-token daily budget refuses a
    call whose schema alone is over 500 tokens, before anything is sent."""
    ledger = ledger_at(tmp_path, limit=300)
    model = gpt(provider_server.url + "/v1", max_tokens=20)
    structured = model.with_structured_output(Ticket, method="json_schema")
    with pytest.raises(BudgetExceededError):
        structured.invoke(
            "My invoice is wrong", config={"callbacks": [BudgetCallbackHandler(ledger, user="u")]}
        )
    assert provider_server.requests == []
    assert charged(ledger).get("requests", 0) == 0


def test_the_async_handler_counts_the_schema(provider_server: ProviderServer, tmp_path: Path) -> None:
    ledger = ledger_at(tmp_path)
    handler = AsyncBudgetCallbackHandler(ledger, user="u")
    provider_server.queue(OpenAIReply(text=ANSWER, delay=3.0))
    structured = gpt(provider_server.url + "/v1", timeout=0.5).with_structured_output(
        Ticket, method="json_schema"
    )

    async def call() -> None:
        await structured.ainvoke("My invoice is wrong", config={"callbacks": [handler]})

    with pytest.raises(openai.APITimeoutError):
        asyncio.run(call())
    got = charged(ledger)
    assert got["estimated"] == 1
    assert got["input_tokens"] > 500


def test_a_reported_call_is_still_charged_its_reported_usage(
    provider_server: ProviderServer, tmp_path: Path
) -> None:
    ledger = ledger_at(tmp_path)
    provider_server.queue(OpenAIReply(text=ANSWER, prompt_tokens=640, completion_tokens=12))
    structured = gpt(provider_server.url + "/v1").with_structured_output(Ticket, method="json_schema")
    reply = structured.invoke(
        "My invoice is wrong", config={"callbacks": [BudgetCallbackHandler(ledger, user="u")]}
    )
    assert isinstance(reply, Ticket)
    got = charged(ledger)
    assert (got["input_tokens"], got["output_tokens"], got.get("estimated", 0)) == (640, 12, 0)


# -- the translation ---------------------------------------------------------------------------------


def test_the_response_format_shapes_are_read_as_one_tool() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    wrapped = {"type": "json_schema", "json_schema": {"name": "A", "description": "d", "schema": schema}}
    expected = [{"type": "function", "function": {"name": "A", "description": "d", "parameters": schema}}]
    assert provider_format_tools(wrapped) == expected
    assert provider_format_tools(wrapped["json_schema"]) == expected
    assert provider_format_tools(Ticket)[0]["function"]["name"] == "Ticket"
    for none in ({"type": "json_object"}, {"type": "text"}, None, "json"):
        assert provider_format_tools(none) == []


def test_a_class_that_is_no_schema_is_named() -> None:
    with pytest.raises(InvalidInputError) as e:
        provider_format_tools(int)
    assert e.value.field == "response_format"
