"""Claude's exact count of a tool result that carries an image (a screenshot or chart tool).

The count request must hold the image inside the ``tool_result``'s content, as langchain-anthropic
sends it in the real request: a count without it is about a thousand tokens short per image and
still flagged exact. The loopback server stands in for the API and charges each image block.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import anthropic
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from provider_server import ProviderServer, default_count_tokens

from langchain_tokenbudget import to_core_messages
from tokenbudget_core.calibration import Calibration
from tokenbudget_core.counting import TokenCounter
from tokenbudget_core.images import anthropic_image_tokens
from tokenbudget_core.messages import ImagePart

pytestmark = pytest.mark.integration

IMAGE_TOKENS = 1067  # what Claude charges for a 1000x800 image


def png(width: int, height: int) -> str:
    """A data URL of a PNG header: enough for the size to be read from it."""
    header = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + width.to_bytes(4, "big") + height.to_bytes(4, "big")
    return (
        "data:image/png;base64," + base64.b64encode(header + b"\x08\x02\x00\x00\x00" + b"\x00" * 20).decode()
    )


SHOT = png(1000, 800)
CALL = {
    "role": "assistant",
    "content": "",
    "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "screenshot", "arguments": "{}"}}],
}


def with_images(body: dict[str, Any]) -> int:
    """The API's answer, roughly: the text as the default stand-in counts it, plus each image."""
    return default_count_tokens(body) + IMAGE_TOKENS * json.dumps(body).count('"type": "image"')


def tool_result(content: Any) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": "Take a screenshot"},
        CALL,
        {"role": "tool", "tool_call_id": "c1", "content": content},
    ]


def test_an_image_in_a_tool_result_is_counted(
    provider_server: ProviderServer, anthropic_client: anthropic.Anthropic
) -> None:
    provider_server.count_tokens = with_images
    counter = TokenCounter.for_model("claude-sonnet-4-5", anthropic_client=anthropic_client)
    text_only = counter.count_messages(tool_result("here"))
    n = counter.count_messages(
        tool_result([{"type": "text", "text": "here"}, {"type": "image_url", "image_url": {"url": SHOT}}])
    )
    assert n.exact
    assert int(n) == int(text_only) + IMAGE_TOKENS
    [result] = provider_server.requests[-1].body["messages"][-1]["content"]
    assert result == {
        "type": "tool_result",
        "tool_use_id": "c1",
        "content": [
            {"type": "text", "text": "here"},
            {
                "type": "image",
                "source": {"type": "base64", "media_type": "image/png", "data": SHOT.split(",", 1)[1]},
            },
        ],
    }


def test_a_text_only_tool_result_is_still_sent_as_a_string(
    provider_server: ProviderServer, anthropic_client: anthropic.Anthropic
) -> None:
    counter = TokenCounter.for_model("claude-sonnet-4-5", anthropic_client=anthropic_client)
    counter.count_messages(tool_result([{"type": "text", "text": "18C "}, {"type": "text", "text": "sunny"}]))
    [result] = provider_server.requests[-1].body["messages"][-1]["content"]
    assert result == {"type": "tool_result", "tool_use_id": "c1", "content": "18C sunny"}


def test_a_langchain_screenshot_tool_message_is_counted_with_its_image(
    provider_server: ProviderServer, anthropic_client: anthropic.Anthropic
) -> None:
    provider_server.count_tokens = with_images
    counter = TokenCounter.for_model("claude-sonnet-4-5", anthropic_client=anthropic_client)
    history = [
        HumanMessage("What is on screen?"),
        AIMessage("", tool_calls=[{"name": "screenshot", "args": {}, "id": "c1"}]),
        ToolMessage(
            content=[{"type": "text", "text": "here"}, {"type": "image_url", "image_url": {"url": SHOT}}],
            tool_call_id="c1",
        ),
    ]
    n = counter.count_messages(to_core_messages(history))
    assert n.exact
    assert json.dumps(provider_server.requests[-1].body).count('"type": "image"') == 1
    assert int(n) > IMAGE_TOKENS


def test_the_offline_estimate_counts_the_same_image() -> None:
    offline = TokenCounter.for_model(
        "claude-sonnet-4-5", anthropic_client=None, calibration=Calibration(prior=1.0)
    )
    text_only = offline.count_messages(tool_result("here"))
    image = {"type": "image_url", "image_url": {"url": SHOT}}
    n = offline.count_messages(tool_result([{"type": "text", "text": "here"}, image]))
    assert not n.exact
    assert int(n) - int(text_only) == anthropic_image_tokens(ImagePart(url=SHOT)).tokens
