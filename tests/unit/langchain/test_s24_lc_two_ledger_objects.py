"""Two ``Ledger`` objects on one store are one set of books for the LangChain adapters too: a
``BudgetMiddleware`` on one ``Ledger(url)`` and a ``BudgetCallbackHandler`` on another of the same
SQLite file charge an agent's model call once, as they do on one ``Ledger`` object. Before, the
handler told "its" ledger by object identity and charged the call a second time (2 requests for
one call). Ledgers of two stores still each charge it. Real agent, fake chat model, SQLite."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from langchain_tokenbudget import AsyncBudgetCallbackHandler, BudgetCallbackHandler, BudgetMiddleware
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import build_report


def reply() -> AIMessage:
    return AIMessage("Paris.", usage_metadata={"input_tokens": 100, "output_tokens": 10, "total_tokens": 110})


def run(agent: Any, handler: Any, how: str) -> None:
    config: Any = {"callbacks": [handler], "metadata": {"user": "alice", "feature": "qa"}}
    payload = {"messages": [("user", "Capital of France?")]}
    if how == "invoke":
        agent.invoke(payload, config=config)
    else:
        asyncio.run(agent.ainvoke(payload, config=config))


@pytest.mark.parametrize("how", ["invoke", "ainvoke"])
def test_middleware_and_handler_on_two_ledger_objects_of_one_file_charge_once(
    tmp_path: Path, how: str
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    agent = create_agent(
        GenericFakeChatModel(messages=iter([reply()])),
        middleware=[BudgetMiddleware(Ledger(url), model="gpt-4o")],
    )
    handler_class = BudgetCallbackHandler if how == "invoke" else AsyncBudgetCallbackHandler
    books = Ledger(url)
    run(agent, handler_class(books, model="gpt-4o"), how)
    assert build_report(books).totals.requests == 1


def test_ledgers_of_two_files_each_charge_the_call(tmp_path: Path) -> None:
    ledger, other = Ledger(f"sqlite:///{tmp_path / 'a.db'}"), Ledger(f"sqlite:///{tmp_path / 'b.db'}")
    agent = create_agent(
        GenericFakeChatModel(messages=iter([reply()])), middleware=[BudgetMiddleware(ledger, model="gpt-4o")]
    )
    run(agent, BudgetCallbackHandler(other, model="gpt-4o"), "invoke")
    assert build_report(ledger).totals.requests == 1
    assert build_report(other).totals.requests == 1
