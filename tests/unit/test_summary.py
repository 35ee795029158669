"""SummaryBuffer: folding into a running summary, caps, failures, async summarisers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tokenbudget_core import TokenCounter
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.messages import Message
from tokenbudget_core.summary import SummaryBuffer, summary_prompt

COUNTER = TokenCounter.for_model("gpt-4o")


def turn(i: int) -> dict[str, Any]:
    return {"role": "user" if i % 2 == 0 else "assistant", "content": f"fact {i}: " + "detail " * 30}


class Recorder:
    """A summariser that lists which facts it has seen (so tests can check nothing is lost)."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, previous: str | None, messages: list[Message]) -> str:
        self.calls.append([m.text.split(":")[0] for m in messages])
        facts = [m.text.split(":")[0] for m in messages]
        return ((previous + "; ") if previous else "") + ", ".join(facts)


def test_everything_that_slides_out_is_in_the_summary_and_the_prompt_fits() -> None:
    summariser = Recorder()
    buffer: SummaryBuffer[dict[str, Any]] = SummaryBuffer(summariser, "gpt-4o", max_tokens=1_200)
    buffer.append({"role": "system", "content": "You are a helpful assistant."})
    for i in range(60):
        buffer.append(turn(i))
        prompt = buffer.messages()
        assert COUNTER.count_messages(prompt) == buffer.tokens <= buffer.budget == 1_200
    prompt = buffer.messages()
    assert prompt[0]["content"] == "You are a helpful assistant."
    assert prompt[1]["content"].startswith("Summary of the earlier conversation:")
    verbatim = {m["content"].split(":")[0] for m in prompt[2:]}
    summarised = {f for call in summariser.calls for f in call}
    assert verbatim | summarised >= {f"fact {i}" for i in range(60)}  # nothing lost
    assert "fact 0" in verbatim  # the first user message is pinned by default
    assert len(summariser.calls) < 30  # folded in batches, not every turn
    assert buffer.events[-1].kind == "summarised"
    assert len(buffer.transcript()) == 61


def test_first_user_can_be_summarised_instead_of_pinned() -> None:
    summariser = Recorder()
    buffer: SummaryBuffer[dict[str, Any]] = SummaryBuffer(
        summariser, "gpt-4o", max_tokens=800, first_user="summarise"
    )
    for i in range(30):
        buffer.append(turn(i))
    assert "fact 0" in summariser.calls[0]
    assert all(not m["content"].startswith("fact 0:") for m in buffer.messages())


def test_summary_is_capped() -> None:
    def verbose(previous: str | None, messages: list[Message]) -> str:
        return "The user said many things. " * 200

    buffer: SummaryBuffer[dict[str, Any]] = SummaryBuffer(
        verbose, "gpt-4o", max_tokens=1_000, summary_tokens=50
    )
    for i in range(30):
        buffer.append(turn(i))
    assert buffer.summary is not None
    assert COUNTER.count(buffer.summary) <= 50
    assert any(e.kind == "capped" for e in buffer.events)
    assert buffer.tokens <= 1_000


def test_failing_summariser_falls_back_to_the_window_and_recovers() -> None:
    state = {"fail": True}
    seen: list[str] = []

    def flaky(previous: str | None, messages: list[Message]) -> str:
        if state["fail"]:
            raise RuntimeError("model overloaded")
        seen.extend(m.text.split(":")[0] for m in messages)
        return f"{len(seen)} facts"

    buffer: SummaryBuffer[dict[str, Any]] = SummaryBuffer(flaky, "gpt-4o", max_tokens=800)
    for i in range(30):
        buffer.append(turn(i))
    assert buffer.degraded
    assert buffer.last_error == "RuntimeError: model overloaded"
    assert buffer.events[-1].kind == "failed"
    assert buffer.tokens <= 800
    assert len(buffer.transcript()) == 30
    state["fail"] = False
    for i in range(30, 34):
        buffer.append(turn(i))
    assert not buffer.degraded
    assert buffer.last_error is None
    assert "fact 1" in seen  # the messages that slid out while it failed were folded later


async def test_async_summariser() -> None:
    async def summarise(previous: str | None, messages: list[Message]) -> str:
        await asyncio.sleep(0)
        return f"{(previous or '')}+{len(messages)}"

    buffer: SummaryBuffer[dict[str, Any]] = SummaryBuffer(summarise, "gpt-4o", max_tokens=600)
    for i in range(30):
        await buffer.aappend(turn(i))
    assert buffer.summary is not None
    assert buffer.tokens <= 600

    def sync_appends() -> None:  # a sync append that must fold, inside a running loop
        for i in range(30, 90):
            buffer.append(turn(i))

    with pytest.raises(InvalidInputError, match="aappend"):
        sync_appends()


def test_summary_prompt_carries_previous_summary_and_messages() -> None:
    prompt = summary_prompt(
        "User is Ana.", [Message(role="user", content="I live in Lisbon")], max_tokens=100
    )
    assert "User is Ana." in prompt[1]["content"]
    assert "user: I live in Lisbon" in prompt[1]["content"]
    assert "100 tokens" in prompt[0]["content"]


def test_bad_arguments() -> None:
    with pytest.raises(InvalidInputError, match="summariser"):
        SummaryBuffer("not callable", max_tokens=100)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="summary_tokens"):
        SummaryBuffer(Recorder(), max_tokens=100, summary_tokens=100)
    with pytest.raises(InvalidInputError, match="first_user"):
        SummaryBuffer(Recorder(), max_tokens=100, first_user="drop")  # type: ignore[arg-type]


def test_extend_folds_once_in_chunks_and_resume_continues_a_saved_summary() -> None:
    summariser = Recorder()
    history = [turn(i) for i in range(80)]
    buffer: SummaryBuffer[dict[str, Any]] = SummaryBuffer(
        summariser, "gpt-4o", max_tokens=1_000, chunk_tokens=2_000
    )
    buffer.extend(history)
    assert not buffer.degraded
    one_by_one = SummaryBuffer(Recorder(), "gpt-4o", max_tokens=1_000, chunk_tokens=2_000)
    for m in history:
        one_by_one.append(m)
    assert len(summariser.calls) < len(one_by_one.summariser.calls)  # type: ignore[attr-defined]
    assert buffer.tokens <= 1_000

    saved_summary, saved_folded = buffer.summary, buffer.folded
    resumed = SummaryBuffer(Recorder(), "gpt-4o", max_tokens=1_000, chunk_tokens=2_000)
    resumed.resume(saved_summary, saved_folded)
    resumed.extend(history)
    assert resumed.summariser.calls == []  # type: ignore[attr-defined]  # nothing new to fold
    assert resumed.messages() == buffer.messages()
    with pytest.raises(InvalidInputError, match="empty"):
        resumed.resume(None, 0)


def test_summariser_calls_are_charged_to_the_payer_as_overhead() -> None:
    """A summariser that calls a model through a budget adapter: the ledger reports it as overhead
    of the feature and user in force, in the sync and the async paths."""
    from tokenbudget_core import Usage
    from tokenbudget_core.attribution import attribute
    from tokenbudget_core.ledger import Ledger
    from tokenbudget_core.reports import build_report

    ledger = Ledger("memory://")

    def charged(previous: str | None, messages: list[Message]) -> str:
        ledger.record(Usage(input_tokens=100, output_tokens=20), model="gpt-4o-mini")
        return "summary"

    async def acharged(previous: str | None, messages: list[Message]) -> str:
        return charged(previous, messages)

    with attribute(feature="support", user="ana"):
        buffer: SummaryBuffer[dict[str, Any]] = SummaryBuffer(charged, "gpt-4o", max_tokens=600)
        for i in range(12):
            buffer.append(turn(i))
        abuffer: SummaryBuffer[dict[str, Any]] = SummaryBuffer(acharged, "gpt-4o", max_tokens=600)
        for i in range(12):
            asyncio.run(abuffer.aappend(turn(i)))
    calls = sum(1 for b in (buffer, abuffer) for e in b.events if e.kind == "summarised")
    assert calls >= 2
    report = build_report(ledger, last_days=1)
    assert report.totals.requests >= calls
    assert report.totals.overhead_usd == report.totals.cost_usd > 0
    assert [r.key for r in report.breakdown("feature").rows] == ["support"]
    assert [r.key for r in report.breakdown("user").rows] == ["ana"]
