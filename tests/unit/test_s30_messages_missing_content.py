"""Review s30 (server #3): a message whose text sits under a misspelt key (``contents``, ``text``,
``message``), or a user/system/developer/tool message with no content at all, was counted as its
framing only and flagged exact; OpenAI's message-level ``refusal`` (an assistant message with
``content`` None, as the API returns a refused answer) was counted as empty. The first are refused
naming ``messages[i].content`` (with the close key), the refusal is counted as its content part is.
Every legitimate shape with extra keys keeps being counted."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tokenbudget_core.counting import TokenCounter
from tokenbudget_core.errors import InvalidMessageError
from tokenbudget_core.messages import TextPart, to_message
from tokenbudget_core.server import create_app

pytestmark = pytest.mark.usefixtures("isolated")

TEXT = "Please summarise the attached quarterly report in three bullet points."
REFUSAL = "I'm sorry, I can't help with that request."


@pytest.mark.parametrize("key", ["contents", "Content", "contnet", "text", "message", "msg", "parts"])
def test_text_under_another_key_is_refused_naming_it(key: str) -> None:
    with pytest.raises(InvalidMessageError) as e:
        TokenCounter.for_model("gpt-4o").count_messages([{"role": "user", key: TEXT}])
    assert e.value.field == "messages[0].content"
    assert repr(key) in e.value.problem
    assert e.value.fix == f"rename {key!r} to 'content' (a string or a list of parts)"


@pytest.mark.parametrize("role", ["user", "system", "developer"])
@pytest.mark.parametrize("message", [{}, {"content": None}])
def test_a_message_without_content_is_refused(role: str, message: dict[str, Any]) -> None:
    with pytest.raises(InvalidMessageError) as e:
        to_message({"role": role, **message}, where="messages[2]")
    assert e.value.field == "messages[2].content"
    assert "framing only" in e.value.problem


def test_a_tool_result_without_content_is_refused() -> None:
    with pytest.raises(InvalidMessageError) as e:
        to_message({"role": "tool", "tool_call_id": "call_1"})
    assert e.value.field == "message.content"


def test_an_assistant_text_under_a_misspelt_key_is_refused_too() -> None:
    with pytest.raises(InvalidMessageError) as e:
        to_message({"role": "assistant", "content": None, "contents": TEXT})
    assert "'contents'" in e.value.problem


def test_message_level_refusal_counts_as_the_refusal_part() -> None:
    counter = TokenCounter.for_model("gpt-4o")
    as_message = counter.count_messages([{"role": "assistant", "content": None, "refusal": REFUSAL}])
    as_part = counter.count_messages(
        [{"role": "assistant", "content": [{"type": "refusal", "refusal": REFUSAL}]}]
    )
    empty = counter.count_messages([{"role": "assistant", "content": ""}])
    assert as_message == as_part > empty
    assert to_message({"role": "assistant", "content": "Partly: ", "refusal": REFUSAL}).content == (
        TextPart(text="Partly: "),
        TextPart(text=REFUSAL),
    )


def test_openai_sdk_message_dump_is_counted_with_its_refusal() -> None:
    from openai.types.chat import ChatCompletionMessage

    dumped = ChatCompletionMessage(role="assistant", content=None, refusal=REFUSAL).model_dump()
    counter = TokenCounter.for_model("gpt-4o")
    assert counter.count_messages([dumped]) == counter.count_messages(
        [{"role": "assistant", "content": REFUSAL}]
    )


def test_a_refusal_that_is_not_text_is_refused() -> None:
    with pytest.raises(InvalidMessageError) as e:
        to_message({"role": "assistant", "content": None, "refusal": 5})
    assert e.value.field == "message.refusal"


CALL = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}


@pytest.mark.parametrize(
    "message",
    [
        {"role": "assistant", "content": None, "tool_calls": [CALL]},  # a tool call and nothing else
        {"role": "assistant", "tool_calls": [CALL]},
        {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": "{}"}},
        {
            "role": "assistant",
            "content": None,
            "refusal": None,
            "tool_calls": [CALL],
            "annotations": [],
            "audio": None,
            "function_call": None,
        },  # an SDK dump of a tool call
        {
            "role": "assistant",
            "content": "hi",
            "reasoning_content": "thinking...",
            "id": "m1",
            "type": "message",
        },
        {"role": "assistant", "content": None},  # an empty assistant turn: its role's framing
        {"role": "function", "name": "f", "content": None},  # a legacy function result may be null
        {"role": "tool", "tool_call_id": "call_1", "content": "42", "name": "lookup"},
        {"role": "user", "content": "", "name": "alice"},  # explicitly empty
        {"role": "user", "content": [{"type": "text", "text": TEXT, "cache_control": {"type": "ephemeral"}}]},
        {"role": "system", "content": TEXT, "cache_control": {"type": "ephemeral"}},
        {"role": "user", "content": TEXT, "additional_kwargs": {}, "response_metadata": {}, "text": TEXT},
        {  # Azure OpenAI "On Your Data": a context beside a tool call (context reads like content)
            "role": "assistant",
            "content": None,
            "tool_calls": [CALL],
            "context": {"intent": "weather", "citations": [{"content": TEXT}]},
        },
        {"role": "assistant", "content": None, "tool_calls": [CALL], "contexts": ["retrieved"]},
    ],
)
def test_legitimate_shapes_are_still_counted(message: dict[str, Any]) -> None:
    assert TokenCounter.for_model("gpt-4o").count_messages([message]) > 0


def test_the_service_answers_422_naming_the_message() -> None:
    with TestClient(create_app("memory://")) as c:
        count = c.post(
            "/tokens/count", json={"model": "gpt-4o", "messages": [{"role": "user", "contents": TEXT}]}
        )
        build = c.post(
            "/prompt/build",
            json={"model": "gpt-4o", "history": [{"role": "user", "contents": TEXT}], "user": "hi"},
        )
    assert count.status_code == 422
    assert count.json()["field"] == "messages[0].content"
    assert "'contents'" in count.json()["fix"]
    assert build.status_code == 422
    assert build.json()["field"].endswith("[0].content")
