"""Message parts built by hand are validated like dicts (review s27 E3: an ImagePart of negative
width counted -588 tokens, exact; url=None / text=None / name=5 raised bare AttributeError /
TypeError); an assistant's audio reference is refused like input audio (E8: counted as empty and
exact); Calibration's documented example is what it does (E9)."""

from __future__ import annotations

import doctest
from typing import Any

import pytest

from tokenbudget_core import TokenCounter, calibration
from tokenbudget_core.errors import InvalidMessageError
from tokenbudget_core.messages import ImagePart, Message, TextPart, ToolCall

URL = "https://example.com/a.png"


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: ImagePart(url=URL, width=-1024, height=1024), "image.width"),
        (lambda: ImagePart(url=URL, width=1024, height=0), "image.height"),
        (lambda: ImagePart(url=URL, width=True), "image.width"),
        (lambda: ImagePart(url=None), "image.url"),  # type: ignore[arg-type]
        (lambda: ImagePart(url=URL, detail="ultra"), "image.detail"),  # type: ignore[arg-type]
        (lambda: TextPart(text=None), "text_part.text"),  # type: ignore[arg-type]
        (lambda: ToolCall(id="c1", name=None), "tool_call.name"),  # type: ignore[arg-type]
        (lambda: Message(role="user", content="hi", name=5), "message.name"),  # type: ignore[arg-type]
        (lambda: Message(role="tool", content="x", tool_call_id=7), "message.tool_call_id"),  # type: ignore[arg-type]
        (lambda: Message(role="assistant", tool_calls=[ToolCall(id="c", name="f")]), "message.tool_calls"),  # type: ignore[arg-type]
    ],
)
def test_hand_built_parts_are_refused_naming_the_field(make: Any, field: str) -> None:
    with pytest.raises(InvalidMessageError, match=rf"^{field.replace('.', chr(92) + '.')}: "):
        make()


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4.1-mini"])
def test_a_hand_built_image_counts_as_the_same_image_given_as_a_dict(model: str) -> None:
    counter = TokenCounter.for_model(model)
    built = Message(role="user", content=(ImagePart(url=URL, width=1024, height=1024),))
    given = {
        "role": "user",
        "content": [{"type": "image_url", "image_url": {"url": URL, "width": 1024, "height": 1024}}],
    }
    assert int(counter.count_messages([built])) == int(counter.count_messages([given])) > 0


def test_an_assistants_audio_reference_is_refused_like_input_audio() -> None:
    counter = TokenCounter.for_model("gpt-4o")
    history = [
        {"role": "user", "content": "Say hello"},
        {"role": "assistant", "content": None, "audio": {"id": "audio_abc123"}},
    ]
    with pytest.raises(InvalidMessageError, match=r"messages\[1\]\.audio: .*transcript"):
        counter.count_messages(history)


def test_calibrations_documented_example_holds() -> None:
    assert doctest.testmod(calibration, raise_on_error=True).attempted > 0
