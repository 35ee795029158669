"""Claude's count request holds the whitespace the real call sends, and no more.

The Messages API refuses a text block that is empty or whitespace-only ("text content blocks must
contain non-whitespace text") and a final assistant turn (a prefill) that ends with whitespace
("final assistant content cannot end with trailing whitespace"); langchain-anthropic drops the one
and strips the other before sending. The count request must do the same, and change nothing else.
"""

from __future__ import annotations

from typing import Any

from tokenbudget_core.anthropic_format import build_anthropic_request, to_anthropic_request


def text(t: str) -> dict[str, Any]:
    return {"type": "text", "text": t}


def test_a_whitespace_only_text_block_among_others_in_a_user_turn_is_dropped() -> None:
    body = to_anthropic_request(
        [
            {"role": "user", "content": [text("Look at this: "), text(" \n\t "), text("  and this.")]},
        ]
    )
    assert body == {"messages": [{"role": "user", "content": [text("Look at this: "), text("  and this.")]}]}


def test_a_turn_whose_only_block_is_whitespace_is_dropped_and_its_neighbours_merged() -> None:
    body = to_anthropic_request(
        [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [text("  \n")]},
            {"role": "user", "content": [text("again")]},
        ]
    )
    assert body == {"messages": [{"role": "user", "content": [text("hi"), text("again")]}]}


def test_a_whitespace_only_user_message_mid_conversation_is_dropped() -> None:
    body = to_anthropic_request(
        [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "   "},
            {"role": "assistant", "content": "still here"},
            {"role": "user", "content": "bye"},
        ]
    )
    assert body == {
        "messages": [
            {"role": "user", "content": [text("hi")]},
            {"role": "assistant", "content": [text("hello"), text("still here")]},
            {"role": "user", "content": [text("bye")]},
        ]
    }


def test_a_final_assistant_prefill_string_loses_its_trailing_whitespace() -> None:
    request = build_anthropic_request(
        [
            {"role": "system", "content": "Be brief. "},
            {"role": "user", "content": " Say yes. "},
            {"role": "assistant", "content": "Sure, "},
        ]
    )
    assert request.body == {
        "system": "Be brief. ",
        "messages": [
            {"role": "user", "content": [text(" Say yes. ")]},
            {"role": "assistant", "content": [text("Sure,")]},
        ],
    }
    assert request.guessed == ()


def test_a_final_assistant_prefill_of_blocks_ending_in_whitespace_text_is_stripped() -> None:
    body = to_anthropic_request(
        [
            {"role": "user", "content": "Answer in JSON."},
            {"role": "assistant", "content": [text("  Here it is:\n"), text("{ "), text(" \n ")]},
        ]
    )
    assert body == {
        "messages": [
            {"role": "user", "content": [text("Answer in JSON.")]},
            {"role": "assistant", "content": [text("  Here it is:\n"), text("{")]},
        ]
    }


def test_a_non_final_assistant_turn_keeps_its_trailing_whitespace() -> None:
    body = to_anthropic_request(
        [
            {"role": "user", "content": "hi "},
            {"role": "assistant", "content": [text("Hello! \n"), text(" \n")]},
            {"role": "user", "content": "and? "},
        ]
    )
    assert body == {
        "messages": [
            {"role": "user", "content": [text("hi ")]},
            {"role": "assistant", "content": [text("Hello! \n")]},
            {"role": "user", "content": [text("and? ")]},
        ]
    }
