"""A call cut off after its request reached the provider (the client's read timeout, a
cancelled task) is billed by the provider: every budget adapter charges it the ledger's flagged
estimate instead of releasing it (review s28). A call that never reached the provider (its
connection refused) is still released. Driven over sockets: the official OpenAI SDK, through
``ChatOpenAI``, against the loopback provider server, whose reply comes after the timeout."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from langchain.agents import create_agent
from langchain_core.messages import HumanMessage
from langchain_openai import ChatOpenAI
from provider_server import OpenAIReply, ProviderServer
from pydantic import SecretStr

from langchain_tokenbudget import BudgetCallbackHandler, BudgetMiddleware
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.failures import may_have_been_billed
from tokenbudget_core.ledger import Ledger

pytestmark = pytest.mark.integration

GPT = "gpt-4o-mini"
QUESTION = "What is the weather in Oslo today? " * 20


def ledger_at(tmp_path: Path) -> Ledger:
    return Ledger("memory://", policy=BudgetPolicy(user_daily_tokens=10**6), spool_path=tmp_path / "spool")


def charged(ledger: Ledger) -> dict[str, int]:
    rows = [r.values for r in ledger.store.rollup([ledger.day()])]
    return {k: sum(r.get(k, 0) for r in rows) for k in {k for r in rows for k in r}}


def gpt(url: str, **kwargs: Any) -> ChatOpenAI:
    return ChatOpenAI(base_url=url, api_key=SecretStr("test"), model=GPT, max_retries=0, **kwargs)


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


def assert_estimate_charged(ledger: Ledger) -> None:
    """One call charged: its counted input, no output, flagged estimated; nothing left reserved."""
    got = charged(ledger)
    assert got["requests"] == 1
    assert got["estimated"] == 1
    assert got["input_tokens"] > 100  # the question, counted
    assert got["output_tokens"] == 0
    assert ledger.state(user="u").used["user_daily_tokens (all features)"] == got["input_tokens"]


def assert_released(ledger: Ledger) -> None:
    assert charged(ledger).get("requests", 0) == 0
    assert ledger.state(user="u").used["user_daily_tokens (all features)"] == 0


def test_a_read_timeout_is_charged_the_estimate(provider_server: ProviderServer, tmp_path: Path) -> None:
    provider_server.queue(OpenAIReply(delay=3.0))
    ledger = ledger_at(tmp_path)
    model = gpt(provider_server.url + "/v1", timeout=0.3)
    with pytest.raises(openai.APITimeoutError):
        model.invoke(
            [HumanMessage(QUESTION)], config={"callbacks": [BudgetCallbackHandler(ledger, user="u")]}
        )
    assert len(provider_server.requests) == 1  # the provider got it, and bills it
    assert_estimate_charged(ledger)


def test_a_refused_connection_is_released(tmp_path: Path) -> None:
    ledger = ledger_at(tmp_path)
    with pytest.raises(openai.APIConnectionError):
        gpt(_closed_port()).invoke(
            [HumanMessage(QUESTION)], config={"callbacks": [BudgetCallbackHandler(ledger, user="u")]}
        )
    assert_released(ledger)


def test_a_cancelled_agent_call_is_charged_the_estimate(
    provider_server: ProviderServer, tmp_path: Path
) -> None:
    """``asyncio.wait_for`` gives up on the agent while the model is answering: the middleware's
    call is cancelled after the request went out."""
    provider_server.queue(OpenAIReply(delay=3.0))
    ledger = ledger_at(tmp_path)
    agent = create_agent(gpt(provider_server.url + "/v1"), middleware=[BudgetMiddleware(ledger, user="u")])

    async def call() -> None:
        await asyncio.wait_for(agent.ainvoke({"messages": [HumanMessage(QUESTION)]}), 0.5)

    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(call())
    assert len(provider_server.requests) == 1
    assert_estimate_charged(ledger)


@pytest.mark.parametrize("how", ["invoke", "ainvoke"])
def test_the_agent_middleware_charges_a_timed_out_call(
    provider_server: ProviderServer, tmp_path: Path, how: str
) -> None:
    provider_server.queue(OpenAIReply(delay=3.0))
    ledger = ledger_at(tmp_path)
    agent = create_agent(
        gpt(provider_server.url + "/v1", timeout=0.3), middleware=[BudgetMiddleware(ledger, user="u")]
    )
    payload = {"messages": [HumanMessage(QUESTION)]}
    with pytest.raises(openai.APITimeoutError):
        agent.invoke(payload) if how == "invoke" else asyncio.run(agent.ainvoke(payload))
    assert_estimate_charged(ledger)


# -- the rule ----------------------------------------------------------------------------------------


def _chained(outer: BaseException, cause: BaseException) -> BaseException:
    outer.__cause__ = cause
    return outer


REQUEST = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")


@pytest.mark.parametrize(
    ("error", "billed"),
    [
        (asyncio.CancelledError(), True),
        (TimeoutError(), True),
        (httpx.ReadTimeout("slow", request=REQUEST), True),
        (httpx.RemoteProtocolError("dropped mid-answer", request=REQUEST), True),
        (_chained(openai.APITimeoutError(request=REQUEST), httpx.ReadTimeout("slow", request=REQUEST)), True),
        (openai.APITimeoutError(request=REQUEST), True),  # no cause: the SDK's read timeout
        (httpx.ConnectTimeout("no route", request=REQUEST), False),
        (httpx.ConnectError("refused", request=REQUEST), False),
        (httpx.PoolTimeout("pool", request=REQUEST), False),
        (
            _chained(openai.APITimeoutError(request=REQUEST), httpx.ConnectTimeout("x", request=REQUEST)),
            False,
        ),
        (_chained(TimeoutError(), httpx.ConnectError("refused", request=REQUEST)), False),
        (ConnectionRefusedError(), False),
        (ValueError("bad request"), False),
        (openai.BadRequestError("bad", response=httpx.Response(400, request=REQUEST), body=None), False),
        (None, False),
    ],
)
def test_which_failures_the_provider_bills(error: BaseException | None, billed: bool) -> None:
    assert may_have_been_billed(error) is billed
