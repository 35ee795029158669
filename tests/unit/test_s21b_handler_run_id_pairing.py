"""Two calls open at once under one caller-supplied ``config["run_id"]`` (an app using its request id
as run id): each payer is charged its own call, whichever ends first (review s21 saving, finding 0).
Real LangChain runs on a fake chat model, checked in the ledger's per-user report."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import RunnableLambda

from langchain_tokenbudget import AsyncBudgetCallbackHandler, BudgetCallbackHandler
from tokenbudget_core.attribution import attribute
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import build_report

BIG = {"input_tokens": 50_000, "output_tokens": 8_000, "total_tokens": 58_000}
SMALL = {"input_tokens": 10, "output_tokens": 2, "total_tokens": 12}


class GatedModel(BaseChatModel):
    """Answers an "essay" prompt only once ``gate`` is set (the other call has ended by then);
    reports BIG usage for it and SMALL for anything else."""

    gate: Any = None
    started: Any = None

    @property
    def _llm_type(self) -> str:
        return "gated-fake"

    def _reply(self, messages: list[BaseMessage]) -> ChatResult:
        big = "essay" in str(messages[-1].content)
        usage = BIG if big else SMALL
        message = AIMessage("x", usage_metadata=usage, response_metadata={"model_name": "gpt-4o"})  # type: ignore[arg-type]
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        if "essay" in str(messages[-1].content):
            self.started.set()
            assert self.gate.wait(10)
        return self._reply(messages)

    async def _agenerate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        if "essay" in str(messages[-1].content):
            self.started.set()
            await asyncio.wait_for(self.gate.wait(), 10)
        return self._reply(messages)


def _by_user(ledger: Ledger) -> dict[str | None, tuple[int, int, int]]:
    return {
        r.key: (r.requests, r.input_tokens, r.output_tokens)
        for r in build_report(ledger).breakdown("user").rows
    }


EXPECTED = {"alice": (1, 50_000, 8_000), "bob": (1, 10, 2)}


def test_threads_reusing_a_run_id_each_charged_their_own_call() -> None:
    ledger = Ledger("memory://")
    handler = BudgetCallbackHandler(ledger, model="gpt-4o")
    model = GatedModel(gate=threading.Event(), started=threading.Event())
    rid = uuid.uuid4()
    errors: list[BaseException] = []

    def call(user: str, text: str) -> None:
        try:
            with attribute(feature="chat", user=user):
                model.invoke(text, config={"callbacks": [handler], "run_id": rid})
        except BaseException as e:  # noqa: BLE001  (shown by the assertion below)
            errors.append(e)

    alice = threading.Thread(target=call, args=("alice", "write me a long essay"))
    alice.start()
    assert model.started.wait(10)
    call("bob", "hi")  # starts while alice's call is open under the same run id, ends first
    model.gate.set()
    alice.join()
    assert not errors
    assert _by_user(ledger) == EXPECTED


def test_tasks_reusing_a_run_id_each_charged_their_own_call() -> None:
    async def main() -> dict[str | None, tuple[int, int, int]]:
        ledger = Ledger("memory://")
        handler = AsyncBudgetCallbackHandler(ledger, model="gpt-4o")
        model = GatedModel(gate=asyncio.Event(), started=asyncio.Event())
        rid = uuid.uuid4()

        async def call(user: str, text: str) -> None:
            with attribute(feature="chat", user=user):
                await model.ainvoke(text, config={"callbacks": [handler], "run_id": rid})

        alice = asyncio.create_task(call("alice", "write me a long essay"))
        await model.started.wait()
        await call("bob", "hi")
        model.gate.set()
        await alice
        return _by_user(ledger)

    assert asyncio.run(main()) == EXPECTED


def test_chains_reusing_a_run_id_each_charged_to_their_own_metadata_payer() -> None:
    ledger = Ledger("memory://")
    handler = BudgetCallbackHandler(ledger, model="gpt-4o")
    model = GatedModel(gate=threading.Event(), started=threading.Event())
    bob_noted, alice_done = threading.Event(), threading.Event()

    def prep(x: str) -> str:
        if x.startswith("bob"):
            bob_noted.set()  # bob's chain has started (its payer noted) under alice's run id
            assert alice_done.wait(10)
        else:
            assert bob_noted.wait(10)
        return x

    chain = RunnableLambda(prep) | model
    rid = uuid.uuid4()

    def call(user: str) -> None:
        meta = {"feature": "chat", "user": user}
        chain.invoke(f"{user}: hi", config={"callbacks": [handler], "run_id": rid, "metadata": meta})
        if user == "alice":
            alice_done.set()

    threads = [threading.Thread(target=call, args=(u,)) for u in ("alice", "bob")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = _by_user(ledger)
    assert {k: v[0] for k, v in rows.items()} == {"alice": 1, "bob": 1}
