"""CachedLLM tells a sampled call by the temperature the wrapped LLM really sends.

LlamaIndex's provider integrations are not installed here, so the wrapped LLMs are ``CustomLLM``
subclasses shaped like them: a ``temperature`` field with the integration's default and
``additional_kwargs`` merged into the request body (as ``llama-index-llms-openai``'s ``OpenAI``
does: default 0.1), living in the integration's package (``llama_index.llms.<name>``), which
names the provider whose API answers a request that sets no temperature.
"""

from __future__ import annotations

import doctest
from typing import Any

import pytest
from llama_index.core.base.llms.types import CompletionResponse, CompletionResponseGen, LLMMetadata
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from pydantic import Field, PrivateAttr

from llamaindex_tokenbudget import CachedLLM
from tokenbudget_core.cache_keys import CacheScope, integration_provider
from tokenbudget_core.response_cache import ExactCache

ACME = CacheScope(tenant="acme")


class IntegrationLLM(CustomLLM):
    """Answers 'answer <n>' and counts its calls; its settings are sent as an integration's are."""

    temperature: float | None = None
    additional_kwargs: dict[str, Any] = Field(default_factory=dict)
    _calls: int = PrivateAttr(default=0)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="gpt-4o-mini", is_chat_model=False)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self._calls += 1
        return CompletionResponse(text=f"answer {self._calls}")

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        yield self.complete(prompt, formatted, **kwargs)


class OpenAIShaped(IntegrationLLM):
    """Like ``llama_index.llms.openai.OpenAI``: ``temperature`` defaults to 0.1 and is always sent."""

    __module__ = "llama_index.llms.openai.base"
    temperature: float = 0.1


class UnsetTemperature(IntegrationLLM):
    """An integration that sends no temperature unless one is set (the provider's default applies)."""

    __module__ = "llama_index.llms.mistralai.base"


class OpenAICompatibleServer(OpenAIShaped):
    """Like ``OpenAILike`` (a subclass of ``OpenAI``): any OpenAI-compatible server, provider unknown."""

    __module__ = "llama_index.llms.openai_like.base"
    temperature: float | None = None  # type: ignore[assignment]


def served_twice(inner: IntegrationLLM, **call: Any) -> bool:
    """Whether the second identical call is answered from the cache."""
    llm = CachedLLM(inner, ExactCache(), scope=ACME)
    return llm.complete("Tell me a story.", **call).text == llm.complete("Tell me a story.", **call).text


def test_an_integration_sampling_at_its_own_default_temperature_is_not_cached() -> None:
    """OpenAI's LlamaIndex class sends temperature 0.1 when none is set: a sampled request."""
    assert not served_twice(OpenAIShaped())
    assert served_twice(OpenAIShaped(temperature=0))


def test_a_temperature_in_additional_kwargs_is_the_one_sent() -> None:
    """``additional_kwargs`` go into the request body over the ``temperature`` field."""
    assert served_twice(OpenAIShaped(additional_kwargs={"temperature": 0}))
    assert not served_twice(OpenAIShaped(temperature=0, additional_kwargs={"temperature": 0.7}))
    assert not served_twice(OpenAIShaped(temperature=0, additional_kwargs={"top_p": 0.5}))


def test_an_unset_temperature_is_the_provider_default() -> None:
    """No temperature sent: the provider answers at its default (Mistral: 0.7), which samples."""
    assert not served_twice(UnsetTemperature())
    assert served_twice(UnsetTemperature(temperature=0))
    assert served_twice(UnsetTemperature(), temperature=0)  # the call's own temperature wins
    assert served_twice(UnsetTemperature(additional_kwargs={"temperature": 0.0}))


def test_a_sampled_default_is_cached_when_the_cache_opts_in() -> None:
    llm = CachedLLM(UnsetTemperature(), ExactCache(cache_sampled=True), scope=ACME)
    assert llm.complete("Hi").text == llm.complete("Hi").text == "answer 1"


@pytest.mark.parametrize("inner", [IntegrationLLM(), OpenAICompatibleServer()])
def test_an_llm_of_no_known_provider_is_keyed_as_it_sends(inner: IntegrationLLM) -> None:
    """A local or fake LLM (no provider integration), or an OpenAI-compatible server: its default
    is unknown, so only the temperature it sends counts (none here: cached)."""
    assert served_twice(inner)


def test_integration_names_map_to_providers() -> None:
    """One table for both hosts: LangChain namespaces and ``_type``s, LlamaIndex packages."""
    assert integration_provider(["langchain", "chat_models", "openai"]) == "openai"
    assert integration_provider(["anthropic-chat"]) == "anthropic"
    assert integration_provider(["azure_openai"]) == "openai"
    assert integration_provider(["google_genai"]) == integration_provider(["gemini"]) == "google"
    assert integration_provider(["mistralai"]) == "mistral"
    assert integration_provider(["openai_like"]) is None
    assert integration_provider(["langchain", "chat_models"]) is None
    assert integration_provider([]) is None
    assert integration_provider([None, 3, "ollama"]) == "ollama"  # what is not a name is skipped


def test_the_core_rules_docstring_examples() -> None:
    from tokenbudget_core import cache_keys

    result = doctest.testmod(cache_keys)
    assert result.failed == 0
    assert result.attempted > 0
