"""Only ``None`` means the default store: an empty or falsy non-URL is refused, named.

Review s22-docs B1: ``open_store("")``, ``open_store(0/False/[]/{})`` and ``Ledger("")``
silently opened ``sqlite:///tokenbudget.db`` in the current directory, so a pod whose
``LEDGER_URL`` was missing kept a private ledger and enforced no shared budget. The same
``model or ...`` pattern let ``cost_of_message`` / ``cost_of_response`` ignore a bad ``model=``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tokenbudget_core import InvalidInputError, Ledger
from tokenbudget_core.stores import open_store


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TOKENBUDGET_STORE", raising=False)
    return tmp_path


@pytest.mark.parametrize("bad", ["", "   ", 0, False, [], {}])
def test_open_store_refuses_an_empty_or_falsy_url(cwd: Path, bad: Any) -> None:
    with pytest.raises(InvalidInputError) as info:
        open_store(bad)
    assert info.value.field == "store"
    assert info.value.fix
    assert list(cwd.iterdir()) == []  # no tokenbudget.db created behind the caller's back


def test_ledger_refuses_an_empty_store_url(cwd: Path) -> None:
    with pytest.raises(InvalidInputError) as info:
        Ledger("")
    assert info.value.field == "store"
    assert list(cwd.iterdir()) == []


def test_none_still_means_the_default(cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENBUDGET_STORE", "memory://")
    assert type(open_store(None)).__name__ == "MemoryStore"
    assert type(open_store()).__name__ == "MemoryStore"
    monkeypatch.delenv("TOKENBUDGET_STORE")
    store = open_store()
    try:
        assert type(store).__name__ == "SQLiteStore"
        assert (cwd / "tokenbudget.db").exists()
    finally:
        store.close()


@pytest.mark.parametrize("bad", ["", "  ", 0, False, [], 123])
def test_cost_of_message_refuses_a_bad_model(bad: Any) -> None:
    pytest.importorskip("langchain_core")
    from langchain_core.messages import AIMessage

    from langchain_tokenbudget import cost_of_message

    reply = AIMessage(
        "x",
        usage_metadata={"input_tokens": 10, "output_tokens": 1, "total_tokens": 11},
        response_metadata={"model_name": "gpt-4o"},
    )
    with pytest.raises(InvalidInputError) as info:
        cost_of_message(reply, model=bad)
    assert info.value.field == "model"
    assert cost_of_message(reply) == cost_of_message(reply, model="gpt-4o")


@pytest.mark.parametrize("bad", ["", "  ", 0, False, [], 123])
def test_cost_of_response_refuses_a_bad_model(bad: Any) -> None:
    pytest.importorskip("llama_index.core")
    from llama_index.core.base.llms.types import ChatMessage, ChatResponse

    from llamaindex_tokenbudget import cost_of_response

    response = ChatResponse(
        message=ChatMessage(role="assistant", content="x"),
        raw={"model": "gpt-4o", "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}},
    )
    with pytest.raises(InvalidInputError) as info:
        cost_of_response(response, model=bad)
    assert info.value.field == "model"
    assert cost_of_response(response) == cost_of_response(response, model="gpt-4o")
