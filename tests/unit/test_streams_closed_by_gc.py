"""A stream abandoned inside a reference cycle is closed by the garbage collector, at any
allocation of the thread that triggers a collection: maybe half way through a ledger call, with
a lock held that the abandoned call's end needs. The program must not hang, and every abandoned
call must still be charged (it produced output) with nothing left reserved.

Real framework call paths (LlamaIndex's ``MockLLM`` through its own wrappers, LangChain's
``GenericFakeChatModel``), our handlers and the in-memory ledger; a low GC threshold makes
collections frequent, so a collection lands inside our locked sections within a few rounds.
"""

from __future__ import annotations

import gc
import itertools
import random
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.callbacks import CallbackManager
from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
from llama_index.core.llms import MockLLM

from langchain_tokenbudget import AsyncBudgetCallbackHandler
from langchain_tokenbudget import BudgetCallbackHandler as LangChainHandler
from llamaindex_tokenbudget import BudgetCallbackHandler, CostEventHandler
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.finalizing import wait_deferred
from tokenbudget_core.ledger import Ledger

ROUNDS = 150


class Cycle:
    """Keeps what it holds alive until the cyclic garbage collector runs."""

    def __init__(self, held: object) -> None:
        self.me = self
        self.held = held


def rows(ledger: Ledger) -> dict[str, int]:
    totals: dict[str, int] = {}
    for row in ledger.store.rollup([ledger.day()]):
        for k in ("requests", "estimated"):
            totals[k] = totals.get(k, 0) + row.values.get(k, 0)
    return totals


def without_hanging(work: Callable[[], None], seconds: float = 30.0) -> None:
    """Run ``work`` in a thread with small, random GC thresholds; fail if it does not finish."""
    failed: list[BaseException] = []
    threshold = gc.get_threshold()

    def run() -> None:
        random.seed(7)
        try:
            for _ in range(ROUNDS):
                gc.set_threshold(random.randint(1, 60))
                work()
        except BaseException as e:  # noqa: BLE001 - reported by the test
            failed.append(e)
        finally:
            gc.set_threshold(*threshold)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    gc.set_threshold(*threshold)
    assert not worker.is_alive(), "the thread hung: a collection closed a stream inside a lock its end needs"
    assert not failed, failed
    for _ in range(3):  # the abandoned streams still in cycles (a closed one may free another)
        gc.collect()
        assert wait_deferred(10)


def held(ledger: Ledger) -> int:
    """Tokens still reserved for the user: used (spent + reserved) less what was charged."""
    used = ledger.state(user="u").used["user_daily_tokens (all features)"]
    charged = sum(
        r.values.get("input_tokens", 0) + r.values.get("output_tokens", 0)
        for r in ledger.store.rollup([ledger.day()])
    )
    return int(used) - charged


def tokens_ledger() -> Ledger:
    return Ledger("memory://", policy=BudgetPolicy(user_daily_tokens=10**12))


MESSAGES = [ChatMessage(role="user", content="tell me something")]


def test_llamaindex_callback_handler_streams_closed_by_the_collector() -> None:
    ledger = tokens_ledger()
    llm = MockLLM(
        max_tokens=8,
        callback_manager=CallbackManager([BudgetCallbackHandler(ledger, model="gpt-4o", user="u")]),
    )

    def work() -> None:
        stream = llm.stream_chat(MESSAGES)
        next(stream)  # output came back: the call was sent
        Cycle(stream)
        del stream
        llm.chat(MESSAGES)

    without_hanging(work)
    totals = rows(ledger)
    assert totals["requests"] == 2 * ROUNDS  # every abandoned stream charged too, once
    assert totals["estimated"] >= ROUNDS
    assert held(ledger) == 0


def test_llamaindex_event_handler_streams_closed_by_the_collector() -> None:
    ledger = tokens_ledger()
    handler = CostEventHandler(ledger=ledger, model="gpt-4o", user="u")
    dispatcher = get_dispatcher()
    dispatcher.add_event_handler(handler)
    llm = MockLLM(max_tokens=8)

    def work() -> None:
        stream = llm.stream_chat(MESSAGES)
        next(stream)
        Cycle(stream)
        del stream
        llm.chat(MESSAGES)

    try:
        without_hanging(work)
    finally:
        dispatcher.event_handlers.remove(handler)
    assert rows(ledger)["requests"] == 2 * ROUNDS


REPLY = AIMessage(
    "one two three four", usage_metadata={"input_tokens": 9, "output_tokens": 4, "total_tokens": 13}
)


@pytest.mark.parametrize("handler_class", [LangChainHandler, AsyncBudgetCallbackHandler])
def test_langchain_streams_closed_by_the_collector(handler_class: Any) -> None:
    ledger = tokens_ledger()
    handler = handler_class(ledger, model="gpt-4o", user="u")
    model = GenericFakeChatModel(messages=itertools.repeat(REPLY), callbacks=[handler])

    def work() -> None:
        stream: Iterator[Any] = model.stream("tell me something")
        next(stream)
        Cycle(stream)
        del stream
        model.invoke("tell me something")

    without_hanging(work)
    totals = rows(ledger)
    assert totals["requests"] == 2 * ROUNDS
    assert held(ledger) == 0


EXITS_AFTER_A_COLLECTION = """
import gc, sys, warnings
from typing import Any
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_tokenbudget import BudgetCallbackHandler
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.ledger import Ledger
warnings.filterwarnings("ignore")
ledger = Ledger(f"sqlite:///{sys.argv[1]}", policy=BudgetPolicy(user_daily_tokens=10**6))
handler = BudgetCallbackHandler(ledger, model="gpt-4o-mini", user="u", max_output_tokens=100)
model = GenericFakeChatModel(messages=iter(["one two three four five six"]), callbacks=[handler])
stream = model.stream("hi"); next(stream); next(stream)
holder: list[Any] = [stream]; holder.append(holder)
del stream, holder
gc.collect()  # its end is deferred; the script ends right after
"""


def test_a_stream_end_deferred_just_before_the_process_exits_is_settled(tmp_path: Any) -> None:
    import subprocess
    import sys

    db = tmp_path / "ledger.db"
    child = subprocess.run(
        [sys.executable, "-c", EXITS_AFTER_A_COLLECTION, str(db)], capture_output=True, text=True, timeout=60
    )
    assert child.returncode == 0, child.stderr
    ledger = Ledger(f"sqlite:///{db}")
    ((spent, reserved),) = ledger.store.totals(ledger.day(), [("U/u", "tokens")], 0).values()
    assert (spent > 0, reserved) == (True, 0)  # charged what it streamed, nothing held


FORKS_WITH_WORK_QUEUED = """
import os, sys, threading, time
from tokenbudget_core import finalizing

finalizing.start_worker()
busy = threading.Event()
finalizing.defer(lambda: (busy.set(), time.sleep(0.3)))  # the worker is busy
finalizing.defer(lambda: print(f"ran in {'child' if os.getpid() != parent else 'parent'}", flush=True))
parent = os.getpid()
busy.wait()
pid = os.fork()
if pid == 0:
    finalizing.start_worker()
    finalizing.wait_deferred(2)
    os._exit(0)
os.waitpid(pid, 0)
finalizing.wait_deferred(2)
"""


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="fork")
def test_work_deferred_before_a_fork_runs_in_the_parent_only() -> None:
    import subprocess
    import sys

    child = subprocess.run(
        [sys.executable, "-c", FORKS_WITH_WORK_QUEUED], capture_output=True, text=True, timeout=60
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.splitlines() == ["ran in parent"]


def test_with_no_thread_to_start_deferred_work_runs_when_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    from tokenbudget_core import finalizing

    def no_thread(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(finalizing, "_worker_started", False)
    monkeypatch.setattr(finalizing, "_queue", __import__("queue").SimpleQueue())
    ran: list[int] = []
    with monkeypatch.context() as patched:
        patched.setattr(threading.Thread, "start", no_thread)
        finalizing.start_worker()  # does not raise: a handler can still be made
        finalizing.defer(ran.append, 1)
    assert ran == []
    assert finalizing.wait_deferred(1)  # run here, outside any collection
    assert ran == [1]


MP_WORKER_EXITS_AFTER_A_COLLECTION = """
import multiprocessing as mp, sys

def job():
    exec(sys.argv[2], {"__name__": "job"})  # the script above (its sys.argv[1]: the ledger file)

if __name__ == "__main__":
    worker = mp.get_context("fork").Process(target=job)
    worker.start()
    worker.join()
    sys.exit(worker.exitcode)
"""


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="fork")
def test_a_multiprocessing_worker_settles_its_deferred_stream_end_before_it_exits(tmp_path: Any) -> None:
    """A fork-started worker ends with ``os._exit`` (no ``atexit``): its exit waits all the same."""
    import subprocess
    import sys

    db = tmp_path / "ledger.db"
    Ledger(f"sqlite:///{db}").close()
    child = subprocess.run(
        [sys.executable, "-c", MP_WORKER_EXITS_AFTER_A_COLLECTION, str(db), EXITS_AFTER_A_COLLECTION],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == 0, child.stderr
    ledger = Ledger(f"sqlite:///{db}")
    ((spent, reserved),) = ledger.store.totals(ledger.day(), [("U/u", "tokens")], 0).values()
    assert (spent > 0, reserved) == (True, 0)
