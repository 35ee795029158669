"""Edge cases of the LangChain budget adapters, on real LangChain runs and a real ledger.

Refused multi-prompt calls hold nothing, completion models' ``llm_output`` usage is charged,
content the core cannot represent is estimated rather than blocking the call, options are
checked when made, the cost readers validate their argument first, and calls that reuse a run id
are each checked and charged.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import uuid
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake import FakeListLLM
from langchain_core.language_models.llms import BaseLLM
from langchain_core.messages import AIMessage, ChatMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult, Generation, LLMResult
from lc_fakes import COUNTER
from pydantic import Field
from test_lc_budget_callback import RecordingLedger, metered, reply, summed

from langchain_tokenbudget import AsyncBudgetCallbackHandler, BudgetCallbackHandler, BudgetMiddleware
from langchain_tokenbudget.messages import to_core_messages, to_core_request, to_countable_message
from langchain_tokenbudget.usage import cost_of_message
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.counting import FILE_TOKENS, PDF_PAGE_TOKENS, add_file_tokens
from tokenbudget_core.errors import BudgetExceededError, InvalidInputError, InvalidMessageError
from tokenbudget_core.ledger import Ledger

HANDLERS = [BudgetCallbackHandler, AsyncBudgetCallbackHandler]
PROMPT = "hello " * 10
PROMPT_TOKENS = 11  # COUNTER.count(PROMPT): checked below
MAX_OUT = 50
UNSENT_COROUTINES = "ignore:coroutine 'ahandle_event' was never awaited:RuntimeWarning"


def held(ledger: Ledger, user: str = "u1") -> int:
    """Tokens reserved and not settled today for ``user`` (all features)."""
    ((_spent, reserved),) = ledger.store.totals(ledger.day(), [(f"U/{user}", "tokens")], 0).values()
    return int(reserved)


def one_prompt_fits(tmp_path: Path, url: str = "memory://") -> Ledger:
    """A ledger whose user budget holds one prompt's worst case, not two."""
    worst = PROMPT_TOKENS + MAX_OUT
    return Ledger(url, policy=BudgetPolicy(user_daily_tokens=worst + 10), spool_path=tmp_path / "s.jsonl")


# -- 1. a refused multi-prompt call holds nothing ---------------------------------------------------


def test_the_prompt_counts_as_assumed() -> None:
    assert COUNTER.count(PROMPT) == PROMPT_TOKENS


def run_multi(how: str, handler: Any) -> Any:
    """Several prompts in one call: a completion model's ``batch`` / ``abatch``, or a chat model's
    ``generate`` / ``agenerate``."""
    if how in ("batch", "abatch"):
        llm = FakeListLLM(responses=["ok"] * 3)
        if how == "batch":
            return llm.batch([PROMPT] * 3, config={"callbacks": [handler]})
        return asyncio.run(llm.abatch([PROMPT] * 3, config={"callbacks": [handler]}))
    chat = metered(*[reply("ok") for _ in range(3)])
    prompts = [[HumanMessage(PROMPT)] for _ in range(3)]
    if how == "generate":
        chat.generate(prompts, callbacks=[handler])
    else:
        asyncio.run(chat.agenerate(prompts, callbacks=[handler]))
    assert chat.calls == []  # only reached when nothing was refused
    return None


@pytest.mark.filterwarnings(UNSENT_COROUTINES)  # chat agenerate: LangChain drops the prompts after a refusal
@pytest.mark.parametrize("handler_class", HANDLERS)
@pytest.mark.parametrize("how", ["batch", "abatch", "generate", "agenerate"])
def test_a_refused_multi_prompt_call_releases_the_prompts_started_before(
    tmp_path: Path, handler_class: type, how: str
) -> None:
    ledger = one_prompt_fits(tmp_path)
    handler = handler_class(ledger, model="gpt-4o", user="u1", max_output_tokens=MAX_OUT)
    with pytest.raises(BudgetExceededError):
        run_multi(how, handler)
    gc.collect()
    assert held(ledger) == 0
    assert summed(ledger)["requests"] == 0
    # the budget is whole again: one prompt fits
    assert FakeListLLM(responses=["ok"]).invoke(PROMPT, config={"callbacks": [handler]}) == "ok"
    assert (summed(ledger)["requests"], held(ledger)) == (1, 0)


async def test_prompts_reserving_while_their_batch_is_refused_are_released(tmp_path: Path) -> None:
    # SQLite: each reservation runs in a worker thread, so abatch's prompts reserve concurrently
    # and some finish reserving after a sibling was refused (LangChain's gather does not wait).
    ledger = one_prompt_fits(tmp_path, f"sqlite:///{tmp_path / 'ledger.db'}")
    handler = AsyncBudgetCallbackHandler(ledger, model="gpt-4o", user="u1", max_output_tokens=MAX_OUT)
    llm = FakeListLLM(responses=["ok"] * 6)
    with pytest.raises(BudgetExceededError):
        await llm.abatch([PROMPT] * 6, config={"callbacks": [handler]})
    # the prompts still reserving finish on their own: wait for their tasks, not for a moment with
    # nothing held (a sibling can still be reserving then, and release right after)
    pending = asyncio.all_tasks() - {asyncio.current_task()}
    if pending:
        await asyncio.wait(pending, timeout=30)
    assert held(ledger) == 0
    assert await llm.ainvoke(PROMPT, config={"callbacks": [handler]}) == "ok"
    assert (summed(ledger)["requests"], held(ledger)) == (1, 0)


@pytest.mark.parametrize("handler_class", HANDLERS)
@pytest.mark.parametrize("how", ["batch", "abatch"])
def test_a_multi_prompt_call_that_fits_charges_every_prompt(
    tmp_path: Path, handler_class: type, how: str
) -> None:
    ledger = Ledger("memory://", spool_path=tmp_path / "s.jsonl")
    handler = handler_class(ledger, model="gpt-4o", user="u1", max_output_tokens=MAX_OUT)
    llm = FakeListLLM(responses=["ok"] * 3)
    prompts, config = [PROMPT] * 3, {"callbacks": [handler]}
    out = (
        llm.batch(prompts, config=config)
        if how == "batch"
        else asyncio.run(llm.abatch(prompts, config=config))
    )
    assert out == ["ok"] * 3
    totals = summed(ledger)
    assert (totals["requests"], totals["input_tokens"], held(ledger)) == (3, 3 * PROMPT_TOKENS, 0)


# -- 2. completion models' llm_output["token_usage"] --------------------------------------------------


class ReportingLLM(BaseLLM):
    """Shaped like ``langchain_openai.OpenAI``: text generations, the call's usage in ``llm_output``."""

    token_usage: dict[str, Any] = Field(
        default_factory=lambda: {"prompt_tokens": 120, "completion_tokens": 300, "total_tokens": 420}
    )

    @property
    def _llm_type(self) -> str:
        return "reporting-completions"

    def _generate(
        self, prompts: list[str], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> LLMResult:
        return LLMResult(
            generations=[[Generation(text="Paris.")] for _ in prompts],
            llm_output={"token_usage": dict(self.token_usage), "model_name": "gpt-3.5-turbo-instruct"},
        )


@pytest.mark.parametrize("handler_class", HANDLERS)
@pytest.mark.parametrize("how", ["invoke", "ainvoke"])
def test_a_completion_models_reported_usage_is_charged(tmp_path: Path, handler_class: type, how: str) -> None:
    ledger = Ledger("memory://", spool_path=tmp_path / "s.jsonl")
    handler = handler_class(ledger, model="gpt-4o-mini", user="u1", max_output_tokens=400)
    llm, config = ReportingLLM(), {"callbacks": [handler]}
    answer = llm.invoke("Capital of France?", config=config) if how == "invoke" else None
    if how == "ainvoke":
        answer = asyncio.run(llm.ainvoke("Capital of France?", config=config))
    assert answer == "Paris."
    totals = summed(ledger)
    assert (totals["requests"], totals["input_tokens"], totals["output_tokens"], totals["estimated"]) == (
        1,
        120,
        300,
        0,
    )


def test_a_multi_prompt_completion_call_is_estimated_per_prompt_not_double_counted(tmp_path: Path) -> None:
    # LangChain reports the whole call's usage on the first prompt only: it cannot be split.
    ledger = Ledger("memory://", spool_path=tmp_path / "s.jsonl")
    handler = BudgetCallbackHandler(ledger, model="gpt-4o-mini", user="u1", max_output_tokens=400)
    ReportingLLM().batch([PROMPT, PROMPT], config={"callbacks": [handler]})
    totals = summed(ledger)
    assert (totals["requests"], totals["estimated"]) == (2, 2)
    assert totals["input_tokens"] == 2 * PROMPT_TOKENS


def test_an_unknown_llm_output_shape_is_estimated(tmp_path: Path) -> None:
    ledger = Ledger("memory://", spool_path=tmp_path / "s.jsonl")
    handler = BudgetCallbackHandler(ledger, model="gpt-4o-mini", user="u1", max_output_tokens=400)
    llm = ReportingLLM(token_usage={"input": 5, "output": 7})
    assert llm.invoke(PROMPT, config={"callbacks": [handler]}) == "Paris."
    totals = summed(ledger)
    assert (totals["requests"], totals["input_tokens"], totals["estimated"]) == (1, PROMPT_TOKENS, 1)


# -- 3. content the core cannot represent ----------------------------------------------------------

PDF_TWO_PAGES = (
    b"%PDF-1.4\n1 0 obj <</Type /Pages /Count 2>>\n2 0 obj <</Type /Page>>\n3 0 obj <</Type /Page>>\n"
)
PDF_BLOCK = {
    "type": "file",
    "base64": base64.b64encode(PDF_TWO_PAGES).decode(),
    "mime_type": "application/pdf",
}
UNREADABLE_PDF = {"type": "file", "base64": "JVBERi0xLjQK", "mime_type": "application/pdf"}  # "%PDF-1.4"
OSLO = "Oslo: 18C, sunny"
SERVER_TOOL_HISTORY = [
    HumanMessage("Search the web for today's weather in Oslo."),
    AIMessage(
        content=[
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "Oslo"}},
            {
                "type": "web_search_tool_result",
                "tool_use_id": "srvtoolu_1",
                "content": [{"type": "web_search_result", "url": "https://yr.no", "title": OSLO}],
            },
            {"type": "text", "text": "It is 18C and sunny in Oslo."},
        ]
    ),
    HumanMessage("And tomorrow?"),
]


def pdf_question(block: dict[str, Any]) -> list[Any]:
    return [HumanMessage(content=[{"type": "text", "text": "Summarise this PDF."}, block])]


def test_unrepresentable_blocks_are_estimated_by_the_core_rule_not_refused() -> None:
    with pytest.raises(InvalidMessageError, match="file"):
        to_core_messages(pdf_question(PDF_BLOCK))  # the strict translation still refuses
    (stand_in,) = to_core_request(pdf_question(PDF_BLOCK))
    assert stand_in.file_tokens == 2 * PDF_PAGE_TOKENS  # two pages read from the file
    assert to_core_request(pdf_question(UNREADABLE_PDF))[0].file_tokens == FILE_TOKENS  # never zero
    assert to_core_request(pdf_question({"type": "file", "file_id": "file-1"}))[0].file_tokens == FILE_TOKENS
    count = add_file_tokens(COUNTER.count_messages([stand_in]), [stand_in])
    assert count > 2 * PDF_PAGE_TOKENS
    assert not getattr(count, "exact", True)
    history = to_core_request(SERVER_TOOL_HISTORY)
    assert [m.file_tokens for m in history] == [None, 0, None]  # text only, but still a stand-in
    assert OSLO in history[1].text
    plain = [HumanMessage("hi")]
    assert to_core_request(plain) == to_core_messages(plain)
    core = to_core_request(plain)
    assert add_file_tokens(COUNTER.count_messages(core), core).exact


@pytest.mark.parametrize("handler_class", HANDLERS)
@pytest.mark.parametrize("how", ["invoke", "ainvoke"])
def test_the_handler_sends_and_charges_calls_with_unrepresentable_content(
    tmp_path: Path, handler_class: type, how: str
) -> None:
    ledger = RecordingLedger("memory://", policy=BudgetPolicy(user_daily_tokens=10**6))
    handler = handler_class(ledger, model="gpt-4o", user="u1", max_output_tokens=100)
    for messages in (pdf_question(PDF_BLOCK), SERVER_TOOL_HISTORY):
        model, config = metered(reply(inp=9_500, out=12)), {"callbacks": [handler]}
        if how == "invoke":
            model.invoke(messages, config=config)
        else:
            asyncio.run(model.ainvoke(messages, config=config))
        assert len(model.calls) == 1
    pdf_reserved, history_reserved = (r.input_tokens for r in ledger.reservations)
    assert pdf_reserved > 2 * PDF_PAGE_TOKENS
    assert history_reserved > COUNTER.count(OSLO)
    totals = summed(ledger)
    assert (totals["requests"], totals["input_tokens"], totals["estimated"]) == (2, 19_000, 0)
    assert held(ledger) == 0


@pytest.mark.parametrize("how", ["invoke", "ainvoke"])
def test_the_middleware_runs_agents_with_unrepresentable_content(tmp_path: Path, how: str) -> None:
    ledger = RecordingLedger("memory://", policy=BudgetPolicy(user_daily_tokens=10**6))
    model = metered(reply("A PDF about budgets.", inp=9_300, out=6))
    middleware = BudgetMiddleware(ledger, model="gpt-4o", user="u1", max_output_tokens=100)
    graph = create_agent(model, middleware=[middleware])
    payload = {"messages": pdf_question(PDF_BLOCK)}
    out = graph.invoke(payload) if how == "invoke" else asyncio.run(graph.ainvoke(payload))
    assert out["messages"][-1].content == "A PDF about budgets."
    (reservation,) = ledger.reservations
    assert reservation.input_tokens > 2 * PDF_PAGE_TOKENS
    totals = summed(ledger)
    assert (totals["requests"], totals["input_tokens"], totals["estimated"]) == (1, 9_300, 0)


# -- 4. options checked when made -------------------------------------------------------------------


def test_middleware_options_are_checked_when_made(tmp_path: Path) -> None:
    ledger = Ledger("memory://", spool_path=tmp_path / "s.jsonl")
    with pytest.raises(InvalidInputError, match="refusal_message") as e:
        BudgetMiddleware(ledger, model="gpt-4o", on_exceeded="end", refusal_message=5)  # type: ignore[arg-type]
    assert e.value.field == "refusal_message"
    with pytest.raises(InvalidInputError, match="counter") as e:
        BudgetMiddleware(ledger, model="gpt-4o", counter="gpt-4o")  # type: ignore[arg-type]
    assert e.value.field == "counter"
    BudgetMiddleware(ledger, refusal_message="Over budget.", counter=COUNTER)
    BudgetMiddleware(ledger, refusal_message=lambda error: f"Over {error.budget}.")


# -- 5. the cost readers validate first -------------------------------------------------------------


@pytest.mark.parametrize("value", [{"content": "hi", "usage_metadata": {}}, None, "text"])
def test_cost_of_message_refuses_a_non_message_like_usage_of(value: object) -> None:
    with pytest.raises(InvalidInputError) as e:
        cost_of_message(value)  # type: ignore[arg-type]
    assert e.value.field == "message"


# -- 6. a reused run id is a new call -----------------------------------------------------------------


@pytest.mark.parametrize("handler_class", HANDLERS)
@pytest.mark.parametrize("how", ["invoke", "ainvoke"])
def test_calls_that_reuse_a_run_id_are_each_checked_and_charged(
    tmp_path: Path, handler_class: type, how: str
) -> None:
    # config["run_id"] is the caller's to set (to find the run in a trace): reused, it must not
    # make the next call look like a replay of the first, unchecked and uncharged.
    ledger = Ledger("memory://", policy=BudgetPolicy(user_daily_tokens=100), spool_path=tmp_path / "s.jsonl")
    handler = handler_class(ledger, model="gpt-4o-mini", user="u1", max_output_tokens=10)
    model = metered(*[reply(inp=40, out=8) for _ in range(3)])
    config: Any = {"callbacks": [handler], "run_id": uuid.uuid4()}

    def call() -> Any:
        if how == "invoke":
            return model.invoke(PROMPT, config=config)
        return asyncio.run(model.ainvoke(PROMPT, config=config))

    call()
    call()  # 48 + 48 tokens used of 100
    with pytest.raises(BudgetExceededError):
        call()
    totals = summed(ledger)
    assert (totals["requests"], totals["input_tokens"], totals["output_tokens"]) == (2, 80, 16)
    assert len(model.calls) == 2


class SlowChatModel(BaseChatModel):
    """Answers after a pause, so that two calls are open at once."""

    @property
    def _llm_type(self) -> str:
        return "slow"

    def _generate(
        self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        raise NotImplementedError

    async def _agenerate(
        self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        await asyncio.sleep(0.05)
        return ChatResult(generations=[ChatGeneration(message=reply(inp=40, out=8))])


@pytest.mark.parametrize("handler_class", HANDLERS)
def test_concurrent_calls_sharing_a_run_id_are_each_charged_and_settled(
    tmp_path: Path, handler_class: type
) -> None:
    ledger = Ledger(
        "memory://", policy=BudgetPolicy(user_daily_tokens=10_000), spool_path=tmp_path / "s.jsonl"
    )
    handler = handler_class(ledger, model="gpt-4o-mini", user="u1", max_output_tokens=10)
    config: Any = {"callbacks": [handler], "run_id": uuid.uuid4()}
    model = SlowChatModel()

    async def both() -> None:
        await asyncio.gather(model.ainvoke(PROMPT, config=config), model.ainvoke(PROMPT, config=config))

    asyncio.run(both())
    totals = summed(ledger)
    assert (totals["requests"], totals["input_tokens"], held(ledger)) == (2, 80, 0)


def test_only_content_stands_in_a_malformed_message_is_still_refused() -> None:
    with pytest.raises(InvalidMessageError, match="tool_call_id"):
        to_countable_message(ToolMessage("18C", tool_call_id=""))  # its call cannot be found
    unknown = ChatMessage(role="critic", content="Too long.")  # a role LangChain allows, the core does not
    stand_in = to_countable_message(unknown)
    assert (stand_in.role, stand_in.file_tokens) == ("user", 0)
    assert "Too long." in stand_in.text


# -- usage the provider reports that the core cannot charge as it is ---------------------------------

REJECTED_USAGE = {
    "input_tokens": 10,
    "output_tokens": 5,
    "total_tokens": 15,
    "input_token_details": {"cache_read": 50},
}


def run_with(who: str, ledger: Ledger, answer: AIMessage, prompt: Any, model: str = "gpt-4o") -> Any:
    """One call with ``answer`` as the model's reply, budgeted by ``who``; its reply."""
    if who == "middleware":
        agent = create_agent(metered(answer), middleware=[BudgetMiddleware(ledger, model=model)])
        return agent.invoke({"messages": prompt if isinstance(prompt, list) else [prompt]})["messages"][-1]
    if who == "async handler":
        return asyncio.run(
            metered(answer, callbacks=[AsyncBudgetCallbackHandler(ledger, model=model)]).ainvoke(prompt)
        )
    return metered(answer, callbacks=[BudgetCallbackHandler(ledger, model=model)]).invoke(prompt)


@pytest.mark.parametrize("who", ["handler", "async handler", "middleware"])
def test_usage_the_core_rejects_is_charged_as_an_estimate_and_holds_nothing(who: str, tmp_path: Path) -> None:
    """The call went out: its reply reaches the caller, it is charged (flagged estimated) and its
    worst case is not left held until the lease ends."""
    ledger = Ledger("memory://", policy=BudgetPolicy(daily_usd="1"), spool_path=tmp_path / "s.jsonl")
    answer = run_with(who, ledger, AIMessage("It is sunny.", usage_metadata=REJECTED_USAGE), PROMPT)
    assert answer.content == "It is sunny."
    counters = summed(ledger)
    assert (counters["requests"], counters["estimated"]) == (1, 1)
    assert counters["input_tokens"] >= PROMPT_TOKENS
    assert held(ledger, "") == 0


@pytest.mark.parametrize("who", ["handler", "middleware"])
def test_cache_writes_reported_without_their_ttl_are_charged_at_the_marked_ttl(who: str) -> None:
    """A reply reporting cache writes without the 5m/1h split (as Bedrock's do) is charged at the
    TTL the request's cache_control markers named, as the reservation priced it."""
    from langchain_core.messages import HumanMessage

    from tokenbudget_core.pricing import cost_of
    from tokenbudget_core.usage_sources import usage_from_langchain

    model = "claude-sonnet-4-5"
    reported = {
        "input_tokens": 1_100, "output_tokens": 10, "total_tokens": 1_110,
        "input_token_details": {"cache_creation": 1_000},
    }  # fmt: skip
    marked = HumanMessage(
        content=[
            {"type": "text", "text": "long doc " * 50, "cache_control": {"type": "ephemeral", "ttl": "1h"}}
        ]
    )
    ledger = Ledger("memory://")
    run_with(who, ledger, AIMessage("ok", usage_metadata=reported), [marked], model=model)  # type: ignore[arg-type]
    report = ledger.store.rollup([ledger.day()])
    one_hour = cost_of(usage_from_langchain(reported, marked_ttl="1h"), model)  # type: ignore[arg-type]
    assert one_hour > cost_of(usage_from_langchain(reported), model)  # type: ignore[arg-type]
    assert sum(r.values["cost_nanos"] for r in report) == int(one_hour * 10**9)
