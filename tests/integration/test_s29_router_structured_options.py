"""A routed structured-output call reads the router's per-call options (``force_tier``, ``model``)
and sends none of them to the provider (they reached the OpenAI SDK: a bare TypeError)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from langchain_openai import ChatOpenAI
from provider_server import OpenAIReply, ProviderServer
from pydantic import BaseModel, SecretStr

from langchain_tokenbudget import RouterChatModel


class Person(BaseModel):
    name: str
    age: int


def chat(server: ProviderServer, name: str, aclient: httpx.AsyncClient) -> ChatOpenAI:
    return ChatOpenAI(
        model=name,
        base_url=server.url + "/v1",
        api_key=SecretStr("t"),
        max_retries=0,
        http_async_client=aclient,
    )


@pytest.mark.parametrize("option", [{"force_tier": "large"}, {"model": "gpt-4o"}])
@pytest.mark.parametrize("how", ["invoke", "ainvoke"])
async def test_structured_output_routes_on_the_call_options_and_sends_none(
    provider_server: ProviderServer, option: dict[str, Any], how: str
) -> None:
    aclient = httpx.AsyncClient()  # this test's own: closed before its event loop is
    tiers = {
        "small": chat(provider_server, "gpt-4o-mini", aclient),
        "large": chat(provider_server, "gpt-4o", aclient),
    }
    structured = RouterChatModel(tiers).with_structured_output(Person, method="json_schema", include_raw=True)
    provider_server.queue(OpenAIReply(text='{"name": "Ada", "age": 36}'))
    question = "Who wrote the first program?"
    try:
        out = (
            structured.invoke(question, **option)
            if how == "invoke"
            else await structured.ainvoke(question, **option)
        )
    finally:
        await aclient.aclose()
    assert out["parsed"] == Person(name="Ada", age=36)
    assert out["raw"].response_metadata["tokenbudget_route"]["tier"] == "large"
    body = provider_server.requests[-1].body
    assert body["model"] == "gpt-4o"
    assert "force_tier" not in body
