"""RouterChatModel.with_structured_output sends the router's max_tokens / temperature to the tier
model it routes to (routing assumes that cap), through the real ChatOpenAI on the loopback server."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_openai import ChatOpenAI
from provider_server import OpenAIReply, ProviderServer
from pydantic import BaseModel, Field, SecretStr

from langchain_tokenbudget import RouterChatModel

pytestmark = pytest.mark.integration


class Person(BaseModel):
    name: str
    age: int


def chat(server: ProviderServer, name: str, **kw: Any) -> ChatOpenAI:
    return ChatOpenAI(model=name, base_url=server.url + "/v1", api_key=SecretStr("t"), max_retries=0, **kw)


@pytest.mark.parametrize("include_raw", [False, True])
@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_structured_output_sends_the_routers_cap_and_temperature(
    provider_server: ProviderServer, include_raw: bool, mode: str
) -> None:
    aclient = httpx.AsyncClient()  # this test's own: closed before its event loop is
    router = RouterChatModel(
        {
            "small": chat(provider_server, "gpt-4o-mini", max_tokens=4000, http_async_client=aclient),
            "large": chat(provider_server, "gpt-4o", http_async_client=aclient),
        },
        max_tokens=300,
        temperature=0.25,
    )
    structured = router.with_structured_output(Person, include_raw=include_raw)
    provider_server.queue(OpenAIReply(text='{"name": "Ada", "age": 36}'))
    question = "Who wrote the first program? Name and age."
    try:
        out = structured.invoke(question) if mode == "sync" else await structured.ainvoke(question)
    finally:
        await aclient.aclose()
    assert (out["parsed"] if include_raw else out) == Person(name="Ada", age=36)
    (request,) = [r for r in provider_server.requests if r.path.endswith("/chat/completions")]
    assert request.body["model"] == "gpt-4o-mini"
    assert request.body.get("max_completion_tokens", request.body.get("max_tokens")) == 300
    assert request.body["temperature"] == 0.25
    assert router.max_tokens == 300  # the tier models themselves are not changed
    assert router.tiers["small"].max_tokens == 4000


def test_a_call_keyword_reaches_the_tier_as_langchain_passes_it(provider_server: ProviderServer) -> None:
    router = RouterChatModel(
        {"small": chat(provider_server, "gpt-4o-mini"), "large": chat(provider_server, "gpt-4o")}
    )
    provider_server.queue(OpenAIReply(text='{"name": "Ada", "age": 36}'))
    router.with_structured_output(Person).invoke("Who wrote the first program?", max_tokens=120)
    (request,) = [r for r in provider_server.requests if r.path.endswith("/chat/completions")]
    assert request.body.get("max_completion_tokens", request.body.get("max_tokens")) == 120


def test_a_tier_without_an_output_cap_field_is_sent_it_with_the_call(provider_server: ProviderServer) -> None:
    class Plain(GenericFakeChatModel):
        """No max_tokens field: records the keywords each call brings."""

        model_name: str = "gpt-4o-mini"
        seen: list[dict[str, Any]] = Field(default_factory=list)

        def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> Any:
            self.seen.append(kwargs)
            return super()._generate(messages, stop, run_manager, **kwargs)

        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    plain = Plain(
        messages=iter(
            [AIMessage("", tool_calls=[{"name": "Person", "args": {"name": "Ada", "age": 36}, "id": "p"}])]
        )
    )
    router = RouterChatModel({"small": plain, "large": chat(provider_server, "gpt-4o")}, max_tokens=300)
    assert router.with_structured_output(Person).invoke("Who wrote the first program?") == Person(
        name="Ada", age=36
    )
    assert plain.seen[-1]["max_tokens"] == 300
