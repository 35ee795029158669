"""CachedLLM keys the wrapped LLM's prompt-formatting functions by what decides their output: two
closures of one factory (or two lambdas of one name) baking different instructions into the prompt
never share an answer; a formatter whose output depends on an object the key cannot capture is
never served from the cache (the call goes through)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.llms.custom import CustomLLM

from llamaindex_tokenbudget import CachedLLM
from tokenbudget_core.cache_keys import CacheScope
from tokenbudget_core.response_cache import ExactCache

ACME = CacheScope(tenant="acme")
QUESTION = "What is the refund window?"


class EchoLLM(CustomLLM):
    """Answers with the prompt it was sent (after its own prompt formatting)."""

    temperature: float = 0.0

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="gpt-4o-mini")

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        if not formatted:
            prompt = self.completion_to_prompt(prompt)
        return CompletionResponse(text=f"<saw: {prompt}>")

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        yield self.complete(prompt, formatted=formatted)


def persona(text: str) -> Callable[[str], str]:
    return lambda p: f"[INST] {text} {p} [/INST]"


def chat_persona(text: str) -> Callable[[Sequence[ChatMessage]], str]:
    def to_prompt(messages: Sequence[ChatMessage]) -> str:
        return text + " " + " ".join(str(m.content) for m in messages)

    return to_prompt


def test_closures_of_one_completion_formatting_factory_get_their_own_answers() -> None:
    cache = ExactCache()
    english = CachedLLM(EchoLLM(completion_to_prompt=persona("Answer in English.")), cache, scope=ACME)
    french = CachedLLM(EchoLLM(completion_to_prompt=persona("Réponds en français.")), cache, scope=ACME)
    assert "Answer in English." in english.complete(QUESTION).text
    reply = french.complete(QUESTION)
    assert "Réponds en français." in reply.text
    assert "cache_hit" not in reply.additional_kwargs
    # the same formatting (another closure of the same factory, same text) still shares the cache
    again = CachedLLM(EchoLLM(completion_to_prompt=persona("Answer in English.")), cache, scope=ACME)
    hit = again.complete(QUESTION)
    assert "Answer in English." in hit.text
    assert hit.additional_kwargs["cache_hit"]["kind"] == "exact"


def test_closures_of_one_messages_formatting_factory_get_their_own_answers() -> None:
    cache = ExactCache()
    question = [ChatMessage(role="user", content=QUESTION)]
    terse = CachedLLM(EchoLLM(messages_to_prompt=chat_persona("Be terse.")), cache, scope=ACME)
    verbose = CachedLLM(EchoLLM(messages_to_prompt=chat_persona("Be verbose.")), cache, scope=ACME)
    assert "Be terse." in str(terse.chat(question).message.content)
    assert "Be verbose." in str(verbose.chat(question).message.content)


def test_formatters_differing_in_defaults_code_or_bound_arguments_get_their_own_answers() -> None:
    """A default bound in a loop, a lambda with other code under the same name, a partial."""
    cache = ExactCache()
    loop = [lambda p, t=t: f"{t} {p}" for t in ("Tone: formal.", "Tone: casual.")]
    upper, lower = (lambda p: p.upper()), (lambda p: p.lower())

    def wrap(prefix: str, p: str) -> str:
        return f"{prefix} {p}"

    partials = [functools.partial(wrap, "Audience: experts."), functools.partial(wrap, "Audience: kids.")]
    for a, b in (loop, (upper, lower), partials):
        first = CachedLLM(EchoLLM(completion_to_prompt=a), cache, scope=ACME).complete(QUESTION).text
        second = CachedLLM(EchoLLM(completion_to_prompt=b), cache, scope=ACME).complete(QUESTION).text
        assert first == f"<saw: {a(QUESTION)}>"
        assert second == f"<saw: {b(QUESTION)}>"


class Style:
    """An object a formatter reads: its state can change, and no cache key can capture it."""

    def __init__(self, rule: str) -> None:
        self.rule = rule


def test_a_formatter_depending_on_an_object_is_never_answered_from_the_cache() -> None:
    style = Style("Answer in English.")
    llm = CachedLLM(EchoLLM(completion_to_prompt=lambda p: f"{style.rule} {p}"), ExactCache(), scope=ACME)
    assert "Answer in English." in llm.complete(QUESTION).text
    style.rule = "Réponds en français."
    reply = llm.complete(QUESTION)
    assert "Réponds en français." in reply.text
    assert "cache_hit" not in reply.additional_kwargs
