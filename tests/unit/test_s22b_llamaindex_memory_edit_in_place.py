"""LlamaIndex memories: what the module documents about a message edited after put().

A message is counted when it is put; an object edited in place afterwards (a reply filled in
by a streaming loop) is not recounted. ``set()`` of the corrected transcript recounts it, so
the window is within the budget again.
"""

from __future__ import annotations

from llama_index.core.llms import ChatMessage

from llamaindex_tokenbudget import TokenBudgetChatMemory
from llamaindex_tokenbudget.messages import to_countable_message
from tokenbudget_core.counting import resolve_counter


def test_set_recounts_a_message_edited_in_place_after_put() -> None:
    memory = TokenBudgetChatMemory(model="gpt-4o", max_tokens=200)
    memory.put(ChatMessage(role="system", content="Be brief."))
    messages = [ChatMessage(role="user" if i % 2 == 0 else "assistant", content="hi " * 10) for i in range(6)]
    for message in messages:
        memory.put(message)
    messages[1].content = "word " * 150  # edited after put: documented as not recounted
    memory.set(memory.get_all())  # the documented remedy
    counter = resolve_counter("gpt-4o")
    window = memory.get()
    assert counter.count_messages([to_countable_message(m) for m in window]) <= 200
    assert messages[1] not in window  # too long for the budget now: it slid out
    assert window[0].content == "Be brief."
    assert window[-1] is messages[-1]
