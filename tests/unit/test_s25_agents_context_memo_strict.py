"""``to_core_request``'s memo tells apart in-place edits ``==`` misses: ``1`` -> ``1.0`` / ``True``
and reordered dict keys convert (and count) differently (``json.dumps`` writes ``1``, ``1.0``,
``true``, keys in order) but compared equal to the remembered copy, so the stale conversion was
reused (614 tokens counted for a 1,014-token message)."""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field

from langchain_tokenbudget import ContextWindowMiddleware, to_core_request, to_countable_message
from tokenbudget_core.counting import TokenCounter

COUNTER = TokenCounter.for_model("gpt-4o")


def _fresh(messages: list[BaseMessage]) -> list[object]:
    return [to_countable_message(m, where=f"messages[{i}]") for i, m in enumerate(messages)]


def _transcript() -> list[BaseMessage]:
    return [
        HumanMessage("compute"),
        AIMessage(
            "",
            tool_calls=[
                {
                    "name": "calc",
                    "args": {"xs": [1] * 200, "opts": {"a": 1, "b": 0, "deep": {"k": 1}}},
                    "id": "c1",
                }
            ],
        ),
        ToolMessage("done", tool_call_id="c1"),
        HumanMessage(
            [
                {"type": "text", "text": "and this?"},
                {"type": "mystery", "n": 1, "flags": [0, 1], "x": 1, "y": 2},  # estimated from its JSON
            ]
        ),
        AIMessage(
            [
                {"type": "text", "text": "checking"},
                {"type": "tool_use", "id": "t2", "name": "calc", "input": {"n": 1, "flags": [0, 1], "x": 1}},
            ]
        ),
    ]


def _args(m: list[BaseMessage]) -> dict[str, Any]:
    return m[1].tool_calls[0]["args"]  # type: ignore[attr-defined,no-any-return]


def _block(m: list[BaseMessage]) -> dict[str, Any]:
    return m[3].content[1]  # type: ignore[index,return-value]


def _tool_use_input(m: list[BaseMessage]) -> dict[str, Any]:
    return m[4].content[1]["input"]  # type: ignore[index,no-any-return]


def _args_int_to_float(m: list[BaseMessage]) -> None:
    _args(m)["xs"][:] = [1.0] * 200


def _args_int_to_bool(m: list[BaseMessage]) -> None:
    _args(m)["xs"][:] = [True] * 200


def _args_zero_to_false(m: list[BaseMessage]) -> None:
    _args(m)["opts"]["b"] = False


def _args_nested_int_to_float(m: list[BaseMessage]) -> None:
    _args(m)["opts"]["deep"]["k"] = 1.0


def _args_keys_reordered(m: list[BaseMessage]) -> None:
    args = _args(m)
    xs = args.pop("xs")
    args["xs"] = xs  # same items, "opts" now first


def _args_nested_keys_reordered(m: list[BaseMessage]) -> None:
    opts = _args(m)["opts"]
    a = opts.pop("a")
    opts["a"] = a


def _block_int_to_float(m: list[BaseMessage]) -> None:
    _block(m)["n"] = 1.0


def _block_int_to_bool(m: list[BaseMessage]) -> None:
    _block(m)["flags"][1] = True


def _block_keys_reordered(m: list[BaseMessage]) -> None:
    block = _block(m)
    x = block.pop("x")
    block["x"] = x


def _tool_use_block_int_to_float(m: list[BaseMessage]) -> None:
    _tool_use_input(m)["n"] = 1.0


def _tool_use_block_int_to_bool(m: list[BaseMessage]) -> None:
    _tool_use_input(m)["flags"][0] = False


def _tool_use_block_keys_reordered(m: list[BaseMessage]) -> None:
    block_input = _tool_use_input(m)
    n = block_input.pop("n")
    block_input["n"] = n


EDITS: list[Callable[[list[BaseMessage]], None]] = [
    _args_int_to_float,
    _args_int_to_bool,
    _args_zero_to_false,
    _args_nested_int_to_float,
    _args_keys_reordered,
    _args_nested_keys_reordered,
    _block_int_to_float,
    _block_int_to_bool,
    _block_keys_reordered,
    _tool_use_block_int_to_float,
    _tool_use_block_int_to_bool,
    _tool_use_block_keys_reordered,
]


@pytest.mark.parametrize("edit", EDITS, ids=[e.__name__.strip("_") for e in EDITS])
def test_an_equal_but_different_edit_is_converted_again(edit: Callable[[list[BaseMessage]], None]) -> None:
    messages = _transcript()
    before = to_core_request(messages)
    edit(messages)
    fresh = _fresh(messages)
    assert to_core_request(messages) == fresh
    assert fresh != before  # the edit does change the conversion


def test_one_to_one_point_zero_is_counted_at_its_new_size() -> None:
    messages = _transcript()
    small = COUNTER.count_messages(to_core_request(messages))
    _args_int_to_float(messages)
    assert (
        COUNTER.count_messages(to_core_request(messages)) == COUNTER.count_messages(_fresh(messages)) > small
    )


class _Kind(enum.IntEnum):
    ONE = 1


def test_values_marshal_does_not_take_are_still_compared_strictly() -> None:
    messages = _transcript()
    _args(messages)["kind"] = _Kind.ONE  # an IntEnum: the memo keeps a deep copy for these
    first = to_core_request(messages)
    assert to_core_request(messages)[1] is first[1]  # unchanged: reused
    _args_int_to_bool(messages)
    assert to_core_request(messages) == _fresh(messages)


def test_unchanged_messages_are_still_reused() -> None:
    messages = _transcript()
    first = to_core_request(messages)
    again = to_core_request(messages)
    assert again == first == _fresh(messages)
    assert again[1] is first[1]
    assert again[3] is first[3]
    assert again[4] is first[4]


class _Recording(BaseChatModel):
    received: list[list[BaseMessage]] = Field(default_factory=list)

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        self.received.append(list(messages))
        return ChatResult(generations=[ChatGeneration(message=AIMessage("ok"))])

    def bind_tools(self, tools: Any, **kw: Any) -> Any:
        return self

    @property
    def _llm_type(self) -> str:
        return "recording"


def test_context_middleware_fits_an_edited_transcript_as_it_is_now() -> None:
    """The same message objects sent twice by an agent, the tool call's ints turned to floats in
    between (larger): the second window is fitted to the new size, not the remembered one."""
    messages = _transcript()
    budget = COUNTER.count_messages(_fresh(messages)) + 50  # fits as first sent
    model = _Recording()
    agent = create_agent(model, middleware=[ContextWindowMiddleware("gpt-4o", max_tokens=budget)])
    agent.invoke({"messages": messages})
    assert len(model.received[-1]) == len(messages)
    _args_int_to_float(messages)  # +400 tokens: the tool-call turn no longer fits
    agent.invoke({"messages": messages})
    sent = model.received[-1]
    assert COUNTER.count_messages(_fresh(sent)) <= budget
    assert len(sent) < len(messages)
