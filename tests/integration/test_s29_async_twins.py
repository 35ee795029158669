"""The async twins answer as the sync ones, without blocking the event loop or losing paid work.

- AnthropicTokenCounter given only a sync client counts through that very client (its headers and
  Bearer token included) in its async twins, and the counter's own clients (from the environment)
  work on every event loop a process runs, one ``asyncio.run`` after another.
- TierRouter.aroute and AsyncBudgetCallbackHandler (completion-model prompts) await the counters'
  async twins: a Claude counter's HTTP round trip does not stall the loop.
- A cancelled async summary fold keeps the rounds the summariser finished (core SummaryBuffer and
  LangChain's SummaryChatMessageHistory), as a summariser error does.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.language_models.fake import FakeListLLM
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from provider_server import ProviderServer
from pydantic import Field

from langchain_tokenbudget import AsyncBudgetCallbackHandler, SummaryChatMessageHistory
from tokenbudget_core import Ledger, Message, SummaryBuffer, TierRouter, TokenCounter
from tokenbudget_core.anthropic_counting import AnthropicTokenCounter

CLAUDE = "claude-sonnet-4-5"
HI = [{"role": "user", "content": "Hi there, how are you?"}]


class _Watchdog:
    """Ticks every 10 ms on the loop and keeps the largest gap between ticks (a stall)."""

    def __init__(self) -> None:
        self.max_gap = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            self.max_gap = max(self.max_gap, now - last - 0.01)
            last = now

    async def __aenter__(self) -> _Watchdog:
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0.03)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.sleep(0.03)
        assert self._task is not None
        self._task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self._task


def _claude(**clients: Any) -> AnthropicTokenCounter:
    """The counter ``TokenCounter.for_model`` makes for Claude."""
    counter = TokenCounter.for_model(CLAUDE, **clients)
    assert isinstance(counter, AnthropicTokenCounter)
    return counter


def _count_requests(server: ProviderServer) -> list[Any]:
    return [r for r in server.requests if r.path.endswith("/count_tokens")]


# -- F1: the async twins count through the caller's sync client, with all its settings ------------


@pytest.fixture
def gateway_client(provider_server: ProviderServer) -> Iterator[anthropic.Anthropic]:
    """A sync client as a gateway user makes it: a Bearer token and a header of the gateway's."""
    client = anthropic.Anthropic(
        base_url=provider_server.url,
        auth_token="gw-token",
        default_headers={"X-Gateway-Key": "secret-42"},
        max_retries=0,
    )
    with client:
        yield client


async def test_acount_messages_sends_the_sync_clients_headers_and_token(
    provider_server: ProviderServer, gateway_client: anthropic.Anthropic
) -> None:
    provider_server.count_tokens = lambda body: 12
    sync_counter = _claude(anthropic_client=gateway_client)
    async_counter = _claude(anthropic_client=gateway_client)
    n = sync_counter.count_messages(HI)
    an = await async_counter.acount_messages(HI)
    assert (int(n), n.exact) == (int(an), an.exact) == (12, True)
    sync_req, async_req = _count_requests(provider_server)
    for req in (sync_req, async_req):
        headers = {k.lower(): v for k, v in req.headers.items()}
        assert headers.get("x-gateway-key") == "secret-42"
        assert headers.get("authorization") == "Bearer gw-token"


async def test_async_handler_lets_through_what_the_sync_client_can_count(
    provider_server: ProviderServer, gateway_client: anthropic.Anthropic
) -> None:
    provider_server.count_tokens = lambda body: 12
    counter = _claude(anthropic_client=gateway_client)
    ledger = Ledger("memory://")
    handler = AsyncBudgetCallbackHandler(ledger, model=CLAUDE, counter=counter)
    chat = GenericFakeChatModel(messages=iter([AIMessage("fine")]), callbacks=[handler])
    assert (await chat.ainvoke("how are you?")).content == "fine"
    headers = {k.lower(): v for k, v in _count_requests(provider_server)[-1].headers.items()}
    assert headers.get("x-gateway-key") == "secret-42"
    assert counter.last_error is None


# -- F2: the counter's own async client works on every event loop ---------------------------------


def test_counter_from_the_environment_is_exact_on_every_event_loop(
    provider_server: ProviderServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", provider_server.url)
    provider_server.count_tokens = lambda body: 42
    counter = _claude()
    counter.strict = True  # an estimate would raise
    for job in range(3):  # one asyncio.run per job, as a worker or a CLI does
        text = f"job {job}: count me"  # a new request each time: no cache hit
        n = asyncio.run(counter.acount_messages([{"role": "user", "content": text}]))
        assert (int(n), n.exact, counter.last_error) == (42, True, None), job
    assert counter.api_calls == 3

    async def last_job() -> Any:
        await counter.acount_messages([{"role": "user", "content": "last job"}])
        return await counter._aclient()  # the client this loop's count went through

    client = asyncio.run(last_job())
    assert client.is_closed()  # closed by asyncio.run, on its loop: no connection left behind
    assert len(_count_requests(provider_server)) == 4


def test_counter_from_the_environment_counts_on_loops_of_several_threads(
    provider_server: ProviderServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    monkeypatch.setenv("ANTHROPIC_API_KEY", "test")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", provider_server.url)
    provider_server.count_tokens = lambda body: 42
    counter = _claude()
    counter.strict = True
    results: list[tuple[int, bool]] = []

    def job(i: int) -> None:
        for k in range(2):
            n = asyncio.run(counter.acount_messages([{"role": "user", "content": f"thread {i} job {k}"}]))
            results.append((int(n), n.exact))

    threads = [threading.Thread(target=job, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [(42, True)] * 6


# -- F3: TierRouter.aroute awaits the counters' async twins ---------------------------------------


async def test_aroute_does_not_block_the_loop_on_a_claude_counter(
    provider_server: ProviderServer,
    anthropic_client: anthropic.Anthropic,
    async_anthropic_client: anthropic.AsyncAnthropic,
) -> None:
    provider_server.count_tokens = lambda body: 42
    counter = _claude(anthropic_client=anthropic_client, anthropic_async_client=async_anthropic_client)
    router = TierRouter({"small": "gpt-4o-mini", "large": CLAUDE}, counters={CLAUDE: counter})
    prompt = "Write a detailed proof of the four colour theorem, step by step, please."
    expected = router.route(prompt, force_tier="large")
    counter._cache.clear()  # count again, over the network, in aroute
    provider_server.count_tokens_delay = 0.4
    async with _Watchdog() as dog:
        decision = await router.aroute(prompt, force_tier="large")
    assert decision == expected
    assert (decision.model, decision.input_tokens, decision.exact) == (CLAUDE, 42, True)
    assert len(_count_requests(provider_server)) == 2
    assert dog.max_gap < 0.2, f"the loop stalled {dog.max_gap * 1000:.0f} ms"


async def test_aroute_decides_as_route_when_a_tier_overflows(
    provider_server: ProviderServer,
    anthropic_client: anthropic.Anthropic,
    async_anthropic_client: anthropic.AsyncAnthropic,
) -> None:
    """Escalation past a window the request does not fit: the same models counted, the same
    decision (reasons, counts, exactness) through both twins."""
    provider_server.count_tokens = lambda body: 150_000
    sync_counter = _claude(anthropic_client=anthropic_client)
    async_counter = _claude(anthropic_async_client=async_anthropic_client)
    tiers = {"small": CLAUDE, "large": "gemini-2.5-pro"}
    sync_router = TierRouter(tiers, counters={CLAUDE: sync_counter})
    async_router = TierRouter(tiers, counters={CLAUDE: async_counter})
    expected = sync_router.route("hello there", force_tier=None, max_output_tokens=60_000)
    decision = await async_router.aroute("hello there", force_tier=None, max_output_tokens=60_000)
    assert decision == expected
    assert sync_counter.api_calls == async_counter.api_calls == 1


# -- F4: a cancelled async fold keeps the rounds already paid for ---------------------------------


def _turns(n: int) -> list[dict[str, str]]:
    return [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " + "word " * 60}
        for i in range(n)
    ]


async def test_cancelled_fold_keeps_the_finished_rounds() -> None:
    calls: list[list[int]] = []

    async def summariser(previous: str | None, chunk: list[Message]) -> str:
        calls.append([int(str(m.content).split()[1]) for m in chunk if str(m.content).startswith("turn")])
        if len(calls) == 2:  # round 2: a slow provider, and the caller's timeout runs out
            await asyncio.sleep(10)
        return f"summary of turns {calls[-1]}"

    buffer: SummaryBuffer[dict[str, str]] = SummaryBuffer(
        summariser, "gpt-4o", max_tokens=600, chunk_tokens=200, max_rounds=4
    )
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(buffer.aextend(_turns(20)), timeout=0.5)
    first_round = calls[0]
    assert buffer.summary == f"summary of turns {first_round}"
    assert buffer.folded > 0  # round 1's messages are folded into the summary: not pending
    done = len(calls)
    await buffer.aappend({"role": "user", "content": "next"})
    again = [t for c in calls[done:] for t in c]
    assert not set(first_round) & set(again), "round 1 was summarised (paid for) again"


async def test_cancelled_fold_keeps_the_same_state_as_a_failed_one() -> None:
    async def run(cancel: bool) -> tuple[int, str | None]:
        calls = 0

        async def summariser(previous: str | None, chunk: list[Message]) -> str:
            nonlocal calls
            calls += 1
            if calls == 2:
                if cancel:
                    await asyncio.sleep(10)
                raise RuntimeError("provider error")
            return f"summary {calls}"

        buffer: SummaryBuffer[dict[str, str]] = SummaryBuffer(
            summariser, "gpt-4o", max_tokens=600, chunk_tokens=200, max_rounds=4
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(buffer.aextend(_turns(20)), timeout=0.5)
        return buffer.folded, buffer.summary

    assert await run(cancel=True) == await run(cancel=False)


class _Writer(BaseChatModel):
    """A summariser chat model whose second call is slow (the caller times out)."""

    calls: list[list[int]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "writer"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> Any:
        raise NotImplementedError

    async def _agenerate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        text = str(messages[-1].content)
        turns = sorted({int(w[1:]) for w in text.split() if w.startswith("#") and w[1:].isdigit()})
        self.calls.append(turns)
        if len(self.calls) == 2:
            await asyncio.sleep(10)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(f"summary of turns {turns}"))])


async def test_langchain_summary_history_keeps_the_paid_round_when_cancelled() -> None:
    writer = _Writer(calls=[])
    history = SummaryChatMessageHistory(summariser=writer, model="gpt-4o", max_tokens=8000)
    msgs = [(HumanMessage if i % 2 == 0 else AIMessage)(f"#{i} " + "word " * 1500) for i in range(14)]
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(history.aadd_messages(msgs), 1.0)
    first_round = writer.calls[0]
    assert history.summary == f"summary of turns {first_round}"
    done = len(writer.calls)
    await history.aadd_messages([HumanMessage("#99 next")])
    again = [t for c in writer.calls[done:] for t in c]
    assert not set(first_round) & set(again), "round 1 was summarised (paid for) again"


# -- F5: AsyncBudgetCallbackHandler awaits acount for completion-model prompts --------------------


async def test_async_handler_counts_completion_prompts_without_blocking_the_loop(
    provider_server: ProviderServer,
    anthropic_client: anthropic.Anthropic,
    async_anthropic_client: anthropic.AsyncAnthropic,
) -> None:
    provider_server.count_tokens = lambda body: 42
    provider_server.count_tokens_delay = 0.4
    counter = _claude(anthropic_client=anthropic_client, anthropic_async_client=async_anthropic_client)
    ledger = Ledger("memory://")
    handler = AsyncBudgetCallbackHandler(ledger, model=CLAUDE, counter=counter)
    llm = FakeListLLM(responses=["fine"], callbacks=[handler])
    async with _Watchdog() as dog:
        assert await llm.ainvoke("how are you, old friend?") == "fine"
    assert len(_count_requests(provider_server)) == 1
    assert counter.last_error is None
    assert dog.max_gap < 0.2, f"the loop stalled {dog.max_gap * 1000:.0f} ms"
