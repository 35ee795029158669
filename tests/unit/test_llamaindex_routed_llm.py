"""RoutedLLM over small tier LLMs: chat, complete, streams, a chat engine, budgets, fallbacks, bad input."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from llama_index.core.base.llms.types import (
    ChatMessage,
    CompletionResponse,
    CompletionResponseGen,
    DocumentBlock,
    LLMMetadata,
    TextBlock,
)
from llama_index.core.bridge.pydantic import Field
from llama_index.core.callbacks import CallbackManager
from llama_index.core.chat_engine import SimpleChatEngine
from llama_index.core.llms import MockLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.llms.custom import CustomLLM

from llamaindex_tokenbudget import BudgetCallbackHandler, RoutedLLM, TokenBudgetChatMemory
from tokenbudget_core import (
    BudgetExceededError,
    ContextOverflowError,
    InvalidInputError,
    Ledger,
    UnknownModelError,
    Usage,
    attribute,
)
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.counting import PDF_PAGE_TOKENS

EASY = "What is the capital of France?"
HARD = (
    "Analyze the trade-offs, then design and implement a distributed rate limiter step by step: "
    "compare token bucket and sliding window, debug the race conditions, and explain why. " * 3
)
ROUTE = "tokenbudget_route"


class RateLimited(Exception):
    def __init__(self) -> None:
        super().__init__("HTTP 429")
        self.status_code = 429


class TierLLM(CustomLLM):
    """A named LLM answering ``answer`` (word by word when streamed); records its prompts."""

    model_name: str = "gpt-4o-mini"
    answer: str = "ok"
    fail_with: Any = None
    prompts: list[str] = Field(default_factory=list)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            model_name=self.model_name, context_window=128_000, num_output=300, is_chat_model=True
        )

    def _start(self, prompt: str) -> None:
        self.prompts.append(prompt)
        if self.fail_with is not None:
            raise self.fail_with

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self._start(prompt)
        return CompletionResponse(
            text=self.answer, raw={"usage": {"prompt_tokens": 20, "completion_tokens": 3}}
        )

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        self._start(prompt)

        def gen() -> Iterator[CompletionResponse]:
            text = ""
            for word in self.answer.split(" "):
                delta = word if not text else " " + word
                text += delta
                yield CompletionResponse(text=text, delta=delta)

        return gen()


def tiers(**kwargs: Any) -> dict[str, TierLLM]:
    names = {"small": "gpt-4o-mini", "medium": "gpt-4.1-mini", "large": "gpt-4o"}
    return {t: TierLLM(model_name=n, answer=f"{t} answer", **kwargs) for t, n in names.items()}


def route(response: Any) -> dict[str, Any]:
    return response.additional_kwargs[ROUTE]  # type: ignore[no-any-return]


def test_chat_and_complete_route_easy_cheap_and_hard_up() -> None:
    t = tiers()
    llm = RoutedLLM(tiers=t)
    easy = llm.chat([ChatMessage(role="user", content=EASY)])
    assert easy.message.content == "small answer"
    assert route(easy)["tier"] == "small"
    assert route(easy)["answered_by"] == "gpt-4o-mini"
    hard = llm.complete(HARD)
    assert route(hard)["tier"] != "small"
    assert hard.text == f"{route(hard)['tier']} answer"
    assert len(t["small"].prompts) == 1


def test_force_tier_is_a_call_argument_not_passed_to_the_tier() -> None:
    llm = RoutedLLM(tiers=tiers())
    response = llm.complete(EASY, force_tier="large")
    assert response.text == "large answer"
    assert route(response)["reason"] == "forced: tier large"
    with pytest.raises(InvalidInputError, match="force_tier"):
        llm.chat([ChatMessage(role="user", content=EASY)], force_tier="huge")


def test_stream_chat_and_stream_complete() -> None:
    t = tiers()
    t["small"].answer = "one two three"
    llm = RoutedLLM(tiers=t)
    chunks = list(llm.stream_chat([ChatMessage(role="user", content=EASY)]))
    assert chunks[-1].message.content == "one two three"
    assert "".join(c.delta or "" for c in chunks) == "one two three"
    assert all(route(c)["tier"] == "small" for c in chunks)
    assert list(llm.stream_complete(EASY))[-1].text == "one two three"


async def test_async_chat_complete_and_streams() -> None:
    t = tiers()
    t["medium"].answer = "async reply here"
    llm = RoutedLLM(tiers=t)
    messages = [ChatMessage(role="user", content=EASY)]
    assert (await llm.achat(messages, force_tier="medium")).message.content == "async reply here"
    assert route(await llm.acomplete(EASY))["tier"] == "small"
    chunks = [c async for c in await llm.astream_chat(messages, force_tier="medium")]
    assert chunks[-1].message.content == "async reply here"
    assert route(chunks[0])["tier"] == "medium"
    completions = [c async for c in await llm.astream_complete(EASY, force_tier="medium")]
    assert completions[-1].text == "async reply here"


def test_a_chat_engine_runs_on_the_routed_llm() -> None:
    llm = RoutedLLM(tiers=tiers())
    engine = SimpleChatEngine.from_defaults(llm=llm, memory=TokenBudgetChatMemory(model="gpt-4o"))
    assert str(engine.chat(EASY)) == "small answer"
    assert "".join(engine.stream_chat("And of Italy?").response_gen) == "small answer"
    assert llm.metadata.context_window == 128_000


async def test_a_chat_engine_async() -> None:
    engine = SimpleChatEngine.from_defaults(
        llm=RoutedLLM(tiers=tiers()), memory=TokenBudgetChatMemory(model="gpt-4o")
    )
    assert str(await engine.achat(EASY)) == "small answer"


async def test_a_pdf_document_is_routed_on_its_estimate_not_refused() -> None:
    pdf = b"%PDF-1.4\n1 0 obj <</Type /Pages /Count 2>>\n2 0 obj <</Type /Page>>\n3 0 obj <</Type /Page>>\n"
    document = DocumentBlock(data=pdf, document_mimetype="application/pdf")
    messages = [ChatMessage(role="user", blocks=[TextBlock(text="Summarise this PDF."), document])]
    t = tiers()
    llm = RoutedLLM(tiers=t)
    for response in (llm.chat(messages), await llm.achat(messages)):
        assert route(response)["exact"] is False  # two pages at the core's per-page estimate
        assert route(response)["input_tokens"] > 2 * PDF_PAGE_TOKENS
        assert response.message.content == f"{route(response)['tier']} answer"


def test_mock_llm_tiers_with_explicit_model_names() -> None:
    llm = RoutedLLM(
        tiers={"small": MockLLM(), "large": MockLLM()}, models={"small": "gpt-4o-mini", "large": "gpt-4o"}
    )
    assert route(llm.complete(EASY))["model"] == "gpt-4o-mini"


def test_a_rate_limited_tier_falls_back() -> None:
    t = tiers()
    t["small"].fail_with = RateLimited()
    backup = TierLLM(model_name="gpt-4.1-nano", answer="backup")
    llm = RoutedLLM(tiers=t, fallbacks={"small": [backup]})
    response = llm.complete(EASY)
    assert response.text == "backup"
    assert route(response)["answered_by"] == "gpt-4.1-nano"
    assert list(llm.stream_complete(EASY))[-1].text == "backup"


def test_a_spent_budget_refuses_and_the_tier_is_charged_not_the_router(tmp_path: Path) -> None:
    ledger = Ledger("memory://", policy=BudgetPolicy(user_daily_tokens=1_000), spool_path=tmp_path / "s")
    ledger.record(Usage(input_tokens=990, output_tokens=10), model="gpt-4o", user="spent")
    handler = BudgetCallbackHandler(ledger)
    t = tiers(callback_manager=CallbackManager([handler]))
    llm = RoutedLLM(tiers=t, ledger=ledger)
    with attribute(user="spent"), pytest.raises(BudgetExceededError):
        llm.complete(EASY)
    assert t["small"].prompts == []
    with attribute(user="fresh"):
        llm.complete(EASY, force_tier="large")
    models = {r.rollup_key.rsplit("/", 1)[-1] for r in ledger.store.rollup([ledger.day()])}
    assert "gpt-4o" in models
    fresh = [r for r in ledger.store.rollup([ledger.day()]) if "fresh" in r.rollup_key]
    assert [dict(r.values)["requests"] for r in fresh] == [1]  # one charge for one call


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"tiers": {}}, InvalidInputError, "tiers"),
        ({}, InvalidInputError, "tiers"),
        ({"tiers": {"small": "gpt-4o"}}, InvalidInputError, "LlamaIndex LLM"),
        ({"tiers": {"small": MockLLM()}}, InvalidInputError, "does not name its model"),
        ({"tiers": {"small": TierLLM(model_name="gpt-9000")}}, UnknownModelError, "gpt-9000"),
        ({"tiers": {"small": TierLLM()}, "models": {"huge": "gpt-4o"}}, InvalidInputError, "models"),
        (
            {"tiers": {"small": TierLLM()}, "max_output_tokens": "lots"},
            InvalidInputError,
            "max_output_tokens",
        ),
    ],
)
def test_bad_configuration_is_refused_at_construction(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        RoutedLLM(**kwargs)


def test_a_prompt_that_fits_no_tier_is_refused() -> None:
    t = tiers()
    llm = RoutedLLM(tiers={"small": t["small"], "large": t["large"]})
    with pytest.raises(ContextOverflowError):
        llm.complete("word " * 150_000)
    assert t["small"].prompts == []
    assert t["large"].prompts == []


def test_the_tiers_can_be_the_positional_argument() -> None:
    t = tiers()
    llm = RoutedLLM(t)  # type: ignore[misc]
    assert llm.complete(EASY).text == "small answer"
    with pytest.raises(InvalidInputError, match="keyword"):
        RoutedLLM(t, {"small": "gpt-4o-mini"})  # type: ignore[misc]
    with pytest.raises(InvalidInputError, match="tiers"):
        RoutedLLM(t, tiers=t)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"force_tier": ["large"]}, "force_tier"),
        ({"force_tier": {"large": 1}}, "force_tier"),
        ({"max_tokens": -5}, "max_tokens"),
        ({"max_tokens": "100"}, "max_tokens"),
    ],
)
async def test_bad_call_arguments_are_named_before_any_tier_is_called(
    kwargs: dict[str, Any], field: str
) -> None:
    t = tiers()
    llm = RoutedLLM(tiers=t)
    messages = [ChatMessage(role="user", content=EASY)]
    for call in (lambda: llm.chat(messages, **kwargs), lambda: llm.complete(EASY, **kwargs)):
        with pytest.raises(InvalidInputError) as err:
            call()
        assert err.value.field == field
    with pytest.raises(InvalidInputError, match=field):
        await llm.achat(messages, **kwargs)
    with pytest.raises(InvalidInputError, match=field):
        list(llm.stream_complete(EASY, **kwargs))
    assert all(m.prompts == [] for m in t.values())
