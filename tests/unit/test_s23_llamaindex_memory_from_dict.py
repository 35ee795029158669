"""``from_dict`` / ``from_json`` of a memory (review s22b adapters #7): a chat store that keeps its
connection outside its serialised form (``RedisChatStore``: its dump holds the default URL, not
the one it uses) is not rebuilt from it: an ``InvalidInputError`` names ``chat_store`` and the
fix (pass the store: ``from_dict(data, chat_store=store)``), which then works; so for a
``SummaryChatMemory``'s ``llm``. It used to be a bare ``TypeError`` from pydantic ("Can't
instantiate abstract class BaseChatStore"). A ``SimpleChatStore`` (its messages are its dump)
is rebuilt. Real Redis (``tests/redis_server.py``) through LlamaIndex's ``RedisChatStore``.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("llama_index.storage.chat_store.redis")

import redis
from llama_index.core.llms import ChatMessage, MockLLM
from llama_index.core.storage.chat_store import SimpleChatStore
from llama_index.storage.chat_store.redis import RedisChatStore

from llamaindex_tokenbudget import SummaryChatMemory, TokenBudgetChatMemory
from llamaindex_tokenbudget._memory_base import BudgetMemory
from tokenbudget_core.errors import InvalidInputError

KINDS: dict[str, tuple[type[BudgetMemory], dict[str, Any]]] = {
    "window": (TokenBudgetChatMemory, {}),
    "summary": (SummaryChatMemory, {"llm": MockLLM(max_tokens=5)}),
}


def _store(url: str) -> RedisChatStore:
    return RedisChatStore(redis_url=url, redis_client=redis.Redis.from_url(url))


def _filled(kind: str, store: Any) -> BudgetMemory:
    cls, extra = KINDS[kind]
    memory = cls(model="gpt-4o", max_tokens=300, chat_store=store, chat_store_key="s23", **extra)
    for i in range(30):
        memory.put(ChatMessage(role="user" if i % 2 == 0 else "assistant", content=f"m{i} " + "word " * 20))
    return memory


def _texts(messages: list[ChatMessage]) -> list[str]:
    return [str(m.content) for m in messages]


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("how", ["from_dict", "from_json"])
def test_a_redis_store_is_named_with_the_fix_not_a_bare_type_error(
    redis_url: str, redis_client: Any, kind: str, how: str
) -> None:
    memory = _filled(kind, _store(redis_url))
    cls = type(memory)
    with pytest.raises(InvalidInputError) as raised:
        cls.from_dict(memory.to_dict()) if how == "from_dict" else cls.from_json(memory.to_json())
    assert raised.value.field == "chat_store"
    assert "RedisChatStore" in str(raised.value)
    assert "chat_store=" in str(raised.value.fix)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("how", ["from_dict", "from_json"])
def test_with_the_store_passed_the_memory_is_rebuilt_on_it(
    redis_url: str, redis_client: Any, kind: str, how: str
) -> None:
    memory = _filled(kind, _store(redis_url))
    cls, extra = KINDS[kind]
    passed: dict[str, Any] = {"chat_store": _store(redis_url), **extra}
    if how == "from_dict":
        again = cls.from_dict(memory.to_dict(), **passed)
    else:
        again = cls.from_json(memory.to_json(), **passed)
    assert (again.max_tokens, again.chat_store_key) == (300, "s23")
    assert _texts(again.get()) == _texts(memory.get())
    assert len(again.get_all()) == 30


def test_a_summary_memorys_llm_is_named_when_not_passed(redis_url: str, redis_client: Any) -> None:
    memory = _filled("summary", _store(redis_url))
    with pytest.raises(InvalidInputError) as raised:
        SummaryChatMemory.from_dict(memory.to_dict(), chat_store=_store(redis_url))
    assert raised.value.field == "llm"
    assert "llm=" in str(raised.value.fix)


@pytest.mark.parametrize("how", ["from_dict", "from_json"])
def test_a_simple_chat_store_is_rebuilt_with_its_messages(how: str) -> None:
    memory = _filled("window", SimpleChatStore())
    cls = TokenBudgetChatMemory
    again = cls.from_dict(memory.to_dict()) if how == "from_dict" else cls.from_json(memory.to_json())
    assert isinstance(again.chat_store, SimpleChatStore)
    assert again.chat_store is not memory.chat_store
    assert _texts(again.get_all()) == _texts(memory.get_all())
    assert _texts(again.get()) == _texts(memory.get())


@pytest.mark.parametrize("bad", [None, "{}", ["chat_store"]])
def test_from_dict_of_no_dict_is_named(bad: Any) -> None:
    with pytest.raises(InvalidInputError) as raised:
        TokenBudgetChatMemory.from_dict(bad)
    assert raised.value.field == "data"


@pytest.mark.parametrize("bad", [None, "not json", "[1, 2]"])
def test_from_json_of_no_json_object_is_named(bad: Any) -> None:
    with pytest.raises(InvalidInputError) as raised:
        TokenBudgetChatMemory.from_json(bad)
    assert raised.value.field in ("data_str", "data")
