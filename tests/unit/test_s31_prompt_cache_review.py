"""Review s31 of Anthropic prompt-cache breakpoints: a block the caller shares between places
(one document dict in several turns, one block in the system prompt and a message) got the
marker everywhere it was, so a request planned with 4 breakpoints carried 5, which Anthropic
refuses; and Claude served by Bedrock was refused as "an aws model"."""

from __future__ import annotations

from typing import Any

import pytest

from tokenbudget_core import plan_prompt_cache
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.prompt_caching import min_cacheable_tokens

BIG = "word " * 3000


def markers(o: Any) -> int:
    if isinstance(o, dict):
        return ("cache_control" in o) + sum(markers(v) for v in o.values())
    if isinstance(o, list | tuple):
        return sum(markers(v) for v in o)
    return 0


def test_one_block_in_the_system_prompt_and_a_message_is_marked_once() -> None:
    block = {"type": "text", "text": BIG}
    request = {
        "model": "claude-sonnet-4-5",
        "system": [block],
        "messages": [{"role": "user", "content": [block, {"type": "text", "text": "q"}]}],
    }
    plan = plan_prompt_cache(request, documents=False)
    assert [b.path for b in plan.breakpoints] == ["system[0]"]
    assert markers(plan.request) == 1
    assert markers(request) == 0  # the caller's request is untouched


def test_a_document_shared_by_several_turns_never_takes_the_request_past_4_markers() -> None:
    doc = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": BIG}}
    messages: list[dict[str, Any]] = []
    for k in range(3):
        messages += [
            {"role": "user", "content": [doc, {"type": "text", "text": f"q{k}"}]},
            {"role": "assistant", "content": "a"},
        ]
    messages.append({"role": "user", "content": "final"})
    tools = [{"name": "t", "description": BIG, "input_schema": {"type": "object"}}]
    request = {"model": "claude-sonnet-4-5", "system": BIG, "tools": tools, "messages": messages}
    plan = plan_prompt_cache(request, conversation=True)
    assert len(plan.breakpoints) == 4
    assert markers(plan.request) == 4
    assert markers(request) == 0


@pytest.mark.parametrize(
    "model",
    ["global.anthropic.claude-sonnet-4-5-20250929-v1:0", "regional.anthropic.claude-3-5-haiku-20241022-v1:0"],
)
def test_claude_on_bedrock_takes_breakpoints(model: str) -> None:
    assert min_cacheable_tokens(model) in (1024, 2048)
    plan = plan_prompt_cache({"model": model, "system": BIG, "messages": [{"role": "user", "content": "hi"}]})
    assert [b.path for b in plan.breakpoints] == ["system[0]"]


def test_another_providers_model_is_refused_with_advice_for_it() -> None:
    with pytest.raises(InvalidInputError) as e:
        min_cacheable_tokens("gemini-2.5-pro")
    assert e.value.field == "model"
    assert "OpenAI" not in str(e.value)
