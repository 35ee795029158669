"""CachedLLM: a LlamaIndex LLM answered from tokenbudget's response caches, on real runs of a
counting custom LLM (chat, complete, sync, async, streaming)."""

from __future__ import annotations

import doctest
from pathlib import Path
from typing import Any

import pytest
from llama_index.core.base.llms.types import (
    AudioBlock,
    ChatMessage,
    CompletionResponse,
    CompletionResponseGen,
    DocumentBlock,
    LLMMetadata,
    TextBlock,
)
from llama_index.core.llms import MockLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from pydantic import Field, PrivateAttr

from llamaindex_tokenbudget import CachedLLM, cached_llm
from tokenbudget_core import InvalidInputError, attribute
from tokenbudget_core.cache_keys import CacheScope
from tokenbudget_core.errors import UnknownModelError
from tokenbudget_core.response_cache import ExactCache
from tokenbudget_core.semantic_cache import SemanticCache

ACME = CacheScope(tenant="acme")


class CountingLLM(CustomLLM):
    """Answers 'answer <n>' and counts its calls (chat goes through complete in CustomLLM).

    The count is private state, not a setting: every field of the wrapped LLM keys the cache."""

    _calls: int = PrivateAttr(default=0)

    @property
    def calls(self) -> int:
        return self._calls

    @calls.setter
    def calls(self, value: int) -> None:
        self._calls = value

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="gpt-4o-mini", is_chat_model=False)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self.calls += 1
        raw = {"model": "gpt-4o-mini", "choices": [{"finish_reason": "stop"}],
               "usage": {"prompt_tokens": 20, "completion_tokens": 5}}  # fmt: skip
        return CompletionResponse(text=f"answer {self.calls}", raw=raw)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        self.calls += 1
        text = f"answer {self.calls}"
        for i in range(1, len(text) + 1):
            yield CompletionResponse(text=text[:i], delta=text[i - 1])


def user(text: str) -> list[ChatMessage]:
    return [ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content=text)]


def test_repeated_chat_and_complete_make_no_second_call() -> None:
    inner = CountingLLM()
    llm = CachedLLM(inner, ExactCache(), scope=ACME)
    first = llm.chat(user("What is a token?"))
    again = llm.chat(user("What is a token?"))
    assert inner.calls == 1
    assert again.message.content == first.message.content == "answer 1"
    audit = again.additional_kwargs["cache_hit"]
    assert audit["kind"] == "exact"
    assert audit["saved_usd"] is not None  # priced from the original call's usage
    assert llm.complete("What is a token?").text == "answer 2"  # complete is another request than chat
    assert llm.complete("What is a token?").text == "answer 2"
    assert inner.calls == 2
    assert llm.chat(user("What is a byte?")).message.content == "answer 3"


async def test_async_twins() -> None:
    inner = CountingLLM()
    llm = CachedLLM(inner, ExactCache(), scope=ACME)
    assert (await llm.achat(user("Hi"))).message.content == "answer 1"
    assert (await llm.achat(user("Hi"))).message.content == "answer 1"
    assert (await llm.acomplete("Hi")).text == "answer 2"
    assert (await llm.acomplete("Hi")).text == "answer 2"
    assert inner.calls == 2


def test_streaming_stores_the_final_answer_and_replays_a_hit_as_one_chunk() -> None:
    inner = CountingLLM()
    llm = CachedLLM(inner, ExactCache(), scope=ACME)
    chunks = list(llm.stream_complete("Tell me"))
    assert len(chunks) > 1
    assert chunks[-1].text == "answer 1"
    [replay] = list(llm.stream_complete("Tell me"))
    assert (replay.text, replay.delta) == ("answer 1", "answer 1")
    assert llm.complete("Tell me").text == "answer 1"  # the streamed answer serves plain calls too
    assert inner.calls == 1
    chat_chunks = list(llm.stream_chat(user("Tell me")))
    assert chat_chunks[-1].message.content == "answer 2"
    [chat_replay] = list(llm.stream_chat(user("Tell me")))
    assert chat_replay.delta == "answer 2"
    assert inner.calls == 2


async def test_async_streaming() -> None:
    inner = CountingLLM()
    llm = CachedLLM(inner, ExactCache(), scope=ACME)
    texts = [c.text async for c in await llm.astream_complete("Tell me")]
    assert texts[-1] == "answer 1"
    replay = [c.text async for c in await llm.astream_complete("Tell me")]
    assert replay == ["answer 1"]
    chat = [c.message.content async for c in await llm.astream_chat(user("Tell me"))]
    assert chat[-1] == "answer 2"
    assert [c.delta async for c in await llm.astream_chat(user("Tell me"))] == ["answer 2"]
    assert inner.calls == 2


def test_near_duplicate_hits_only_above_the_threshold() -> None:
    inner = CountingLLM()
    llm = CachedLLM(inner, SemanticCache(threshold=0.9), scope=ACME)
    assert llm.chat(user("What is a token?")).message.content == "answer 1"
    hit = llm.chat(user("what is a TOKEN"))
    assert hit.message.content == "answer 1"
    assert hit.additional_kwargs["cache_hit"]["kind"] == "semantic"
    assert llm.chat(user("How are images priced?")).message.content == "answer 2"
    assert llm.chat(user("What is not a token?")).message.content == "answer 3"  # guard: negation
    assert inner.calls == 3


def test_nothing_crosses_tenants_or_users() -> None:
    inner = CountingLLM()
    cache = SemanticCache()
    acme = CachedLLM(inner, cache, scope=ACME)
    globex = CachedLLM(inner, cache, scope=CacheScope(tenant="globex"))
    assert acme.chat(user("What is a token?")).message.content == "answer 1"
    assert globex.chat(user("What is a token?")).message.content == "answer 2"
    assert acme.chat(user("What is a token?")).message.content == "answer 1"
    by_user = CachedLLM(inner, ExactCache())  # scope from the attribution
    with attribute(user="ada"):
        assert by_user.complete("Hi").text == "answer 3"
        assert by_user.complete("Hi").text == "answer 3"
    with attribute(user="bob"):
        assert by_user.complete("Hi").text == "answer 4"
    assert inner.calls == 4


PDF_A = b"%PDF-1.4\n1 0 obj <</Type /Pages /Count 1>>\n2 0 obj <</Type /Page>>\n% report A\n"
PDF_B = b"%PDF-1.4\n1 0 obj <</Type /Pages /Count 1>>\n2 0 obj <</Type /Page>>\n% report B\n"


def ask_about(block: Any, question: str = "Summarise this report.") -> list[ChatMessage]:
    return [ChatMessage(role="user", blocks=[block, TextBlock(text=question)])]


@pytest.mark.parametrize("cache", [ExactCache, SemanticCache])
def test_a_document_conversation_is_cached_for_the_very_same_bytes_only(cache: type[Any]) -> None:
    """A PDF question is cached (it used to call through every time) as an opaque request: the
    same document and question are served, another document's bytes never are, even with a
    semantic cache and the same question."""
    inner = CountingLLM()
    llm = CachedLLM(inner, cache(), scope=ACME)
    pdf = DocumentBlock(data=PDF_A, document_mimetype="application/pdf")
    assert llm.chat(ask_about(pdf)).message.content == "answer 1"
    hit = llm.chat(ask_about(DocumentBlock(data=PDF_A, document_mimetype="application/pdf")))
    assert hit.message.content == "answer 1"
    assert hit.additional_kwargs["cache_hit"]["kind"] == "exact"
    other = DocumentBlock(data=PDF_B, document_mimetype="application/pdf")
    assert llm.chat(ask_about(other)).message.content == "answer 2"
    assert llm.chat(ask_about(pdf, "Summarise this report!")).message.content == "answer 3"  # never similar
    assert (
        llm.chat(ask_about(AudioBlock(audio=b"RIFF....WAVEfmt ", format="wav"))).message.content == "answer 4"
    )
    assert (
        llm.chat(ask_about(AudioBlock(audio=b"RIFF....WAVEfmt ", format="wav"))).message.content == "answer 4"
    )
    assert inner.calls == 4


async def test_a_document_on_disk_is_keyed_by_its_bytes(tmp_path: Path) -> None:
    inner = CountingLLM()
    llm = CachedLLM(inner, ExactCache(), scope=ACME)
    report = tmp_path / "report.pdf"
    report.write_bytes(PDF_A)
    assert (await llm.achat(ask_about(DocumentBlock(path=report)))).message.content == "answer 1"
    assert (await llm.achat(ask_about(DocumentBlock(path=report)))).message.content == "answer 1"
    report.write_bytes(PDF_B)  # the same path, another document: not the cached answer
    assert (await llm.achat(ask_about(DocumentBlock(path=report)))).message.content == "answer 2"
    chunks = [c.message.content async for c in await llm.astream_chat(ask_about(DocumentBlock(path=report)))]
    assert chunks == ["answer 2"]  # a streamed hit: one chunk
    gone = tmp_path / "gone.pdf"
    gone.write_bytes(PDF_A)
    missing = ask_about(DocumentBlock(path=gone))
    gone.unlink()  # deleted after the block was made
    # a file that cannot be read cannot be keyed: every call goes through, uncached
    assert (await llm.achat(missing)).message.content == "answer 3"
    assert (await llm.achat(missing)).message.content == "answer 4"


def test_mock_llm_and_bad_arguments() -> None:
    llm = CachedLLM(MockLLM(), ExactCache(), scope=ACME, model="gpt-4o-mini")
    assert llm.metadata == MockLLM().metadata
    assert llm.complete("same").text == llm.complete("same").text
    with pytest.raises(InvalidInputError) as e:
        CachedLLM("gpt-4o", ExactCache())  # type: ignore[arg-type]
    assert e.value.field == "llm"
    with pytest.raises(InvalidInputError) as e:
        CachedLLM(MockLLM(), {})  # type: ignore[arg-type]
    assert e.value.field == "cache"
    with pytest.raises(InvalidInputError) as e:
        CachedLLM(MockLLM(), ExactCache(), scope="acme")  # type: ignore[arg-type]
    assert e.value.field == "scope"


def test_an_explicit_model_must_be_known_and_an_llm_naming_none_needs_one() -> None:
    with pytest.raises(UnknownModelError):
        CachedLLM(CountingLLM(), ExactCache(), scope=ACME, model="gpt-4o-typo")
    with pytest.raises(InvalidInputError) as e:
        CachedLLM(MockLLM(), ExactCache(), scope=ACME)  # MockLLM names its model "unknown"
    assert e.value.field == "model"
    with pytest.raises(InvalidInputError) as e:
        CachedLLM(MockLLM(), ExactCache(), scope=ACME, model=5)  # type: ignore[arg-type]
    assert e.value.field == "model"


def test_docstring_example_runs() -> None:
    result = doctest.testmod(cached_llm)
    assert result.attempted > 0
    assert result.failed == 0


def test_a_stream_is_cached_in_the_scope_of_the_call_not_of_where_it_is_consumed() -> None:
    """A stream started inside acme's ``attribute()`` and read after the block (a web framework's
    streaming response) is acme's answer: never served to an unattributed caller or another tenant."""
    inner = CountingLLM()
    llm = CachedLLM(inner, ExactCache())  # scope from the attribution
    with attribute(tenant="acme", user="u1"):
        chat = llm.stream_chat(user("What is on my invoice?"))
        complete = llm.stream_complete("What is on my invoice?")
    assert list(chat)[-1].message.content == "answer 1"
    with attribute(tenant="globex", user="u1"):
        assert list(complete)[-1].text == "answer 2"  # consumed inside another tenant's block
        assert llm.chat(user("What is on my invoice?")).message.content == "answer 3"
        assert llm.complete("What is on my invoice?").text == "answer 4"
    assert llm.chat(user("What is on my invoice?")).message.content == "answer 5"
    assert llm.complete("What is on my invoice?").text == "answer 6"
    with attribute(tenant="acme", user="u1"):  # acme's own answers were stored for acme
        assert llm.chat(user("What is on my invoice?")).message.content == "answer 1"
        assert llm.complete("What is on my invoice?").text == "answer 2"
    assert inner.calls == 6


async def test_an_async_stream_is_cached_in_the_scope_of_the_call() -> None:
    inner = CountingLLM()
    llm = CachedLLM(inner, ExactCache())
    with attribute(tenant="acme", user="u1"):
        chat = await llm.astream_chat(user("What is on my invoice?"))
        complete = await llm.astream_complete("What is on my invoice?")
    assert [c.message.content async for c in chat][-1] == "answer 1"
    with attribute(tenant="globex", user="u1"):
        assert [c.text async for c in complete][-1] == "answer 2"
    assert (await llm.achat(user("What is on my invoice?"))).message.content == "answer 3"
    assert (await llm.acomplete("What is on my invoice?")).text == "answer 4"
    with attribute(tenant="acme", user="u1"):
        assert (await llm.achat(user("What is on my invoice?"))).message.content == "answer 1"
        assert (await llm.acomplete("What is on my invoice?")).text == "answer 2"
    assert inner.calls == 4


class ConfiguredLLM(CountingLLM):
    """Answers JSON when its ``additional_kwargs`` ask for it (as OpenAI's ``response_format``)."""

    additional_kwargs: dict[str, Any] = Field(default_factory=dict)
    api_key: str | None = None

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="gpt-4o-mini", num_output=256)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self.calls += 1
        json_mode = self.additional_kwargs.get("response_format", {}).get("type") == "json_object"
        return CompletionResponse(text='{"city": "Paris"}' if json_mode else "The city is Paris.")

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        yield self.complete(prompt)


class OtherConfiguredLLM(ConfiguredLLM):
    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self.calls += 1
        return CompletionResponse(text="Paris, France.")


def test_wrapped_llms_that_differ_in_any_setting_never_share_answers() -> None:
    """Every setting of the wrapped LLM keys the cache (not only its temperature): a JSON-mode LLM
    and a plain one on one store get their own answers; another LLM class as well. Its API key is
    no setting of the answer: a rotated key keeps the cache."""
    shared = ExactCache()
    question = [ChatMessage(role="user", content="Which city is the Eiffel Tower in?")]
    json_llm = CachedLLM(
        ConfiguredLLM(additional_kwargs={"response_format": {"type": "json_object"}}), shared, scope=ACME
    )
    assert json_llm.chat(question).message.content == '{"city": "Paris"}'
    text_llm = CachedLLM(ConfiguredLLM(api_key="sk-one"), shared, scope=ACME)
    reply = text_llm.chat(question)
    assert reply.message.content == "The city is Paris."
    assert "cache_hit" not in reply.additional_kwargs
    assert (
        CachedLLM(OtherConfiguredLLM(), shared, scope=ACME).chat(question).message.content == "Paris, France."
    )
    rotated = CachedLLM(ConfiguredLLM(api_key="sk-two"), shared, scope=ACME).chat(question)
    assert rotated.message.content == "The city is Paris."
    assert rotated.additional_kwargs["cache_hit"]["kind"] == "exact"
    assert json_llm.chat(question).additional_kwargs["cache_hit"]["kind"] == "exact"


class ColdLLM(CountingLLM):
    temperature: float = 0.0


def test_a_per_call_temperature_decides_whether_the_call_is_sampled() -> None:
    """A temperature passed to the call overrides the wrapped LLM's own (0 here)."""
    inner = ColdLLM()
    llm = CachedLLM(inner, ExactCache(), scope=ACME)
    assert llm.complete("Hi", temperature=0.9).text == "answer 1"
    assert llm.complete("Hi", temperature=0.9).text == "answer 2"  # sampled: not cached
    assert llm.complete("Hi", temperature=0).text == "answer 3"
    assert llm.complete("Hi", temperature=0).text == "answer 3"


class RawLLM(CountingLLM):
    """Answers with a provider's raw response (its stop reason under the provider's own key)."""

    raw: dict[str, Any] = Field(default_factory=dict)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self.calls += 1
        return CompletionResponse(text=f"answer {self.calls}", raw=self.raw)


@pytest.mark.parametrize(
    "raw",
    [
        {"done_reason": "length"},  # Ollama
        {"stopReason": "max_tokens"},  # Bedrock Converse
        {"stop_reason": "max_tokens"},  # Anthropic
        {"choices": [{"finish_reason": "length"}]},  # OpenAI
        {"candidates": [{"finish_reason": "MAX_TOKENS"}]},  # Gemini
    ],
)
def test_an_answer_cut_off_at_the_length_limit_is_never_cached(raw: dict[str, Any]) -> None:
    inner = RawLLM(raw=raw)
    llm = CachedLLM(inner, ExactCache(), scope=ACME)
    assert llm.chat(user("List the steps.")).message.content == "answer 1"
    assert llm.chat(user("List the steps.")).message.content == "answer 2"
    assert llm.complete("List the steps.").text == "answer 3"
    assert llm.complete("List the steps.").text == "answer 4"


def test_a_hit_on_an_answer_without_reported_usage_saved_an_unknown_amount() -> None:
    llm = CachedLLM(MockLLM(max_tokens=8), ExactCache(), scope=ACME, model="gpt-4o-mini")
    llm.chat([ChatMessage(role="user", content="Write the runbook")])
    hit = llm.chat([ChatMessage(role="user", content="Write the runbook")])
    assert hit.additional_kwargs["cache_hit"]["kind"] == "exact"
    assert hit.additional_kwargs["cache_hit"]["saved_usd"] is None  # unknown, not $0
    priced = CachedLLM(CountingLLM(), ExactCache(), scope=ACME)  # its raw response reports usage
    priced.chat(user("Hi"))
    assert priced.chat(user("Hi")).additional_kwargs["cache_hit"]["saved_usd"] is not None
