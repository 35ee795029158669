"""Which candidates get Anthropic's scarce cache breakpoints (at most 4, existing ones included).

Each breakpoint caches the prefix up to it (tools -> system -> messages), so what a breakpoint adds
is the tokens since the breakpoint before it; the prefix every request shares is tools + system.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tokenbudget_core import aplan_prompt_cache, plan_prompt_cache

SYSTEM = "You are the support assistant of ACME. Follow the policy below. " * 450  # ~7.5k tokens


def contract(n: int) -> str:
    return f"Contract {n}: " + "clause text " * 700  # ~1.7k tokens


def support_request(first: int = 0) -> dict[str, Any]:
    """A conversation about four contracts, under the shared system prompt."""
    docs = [{"type": "text", "text": contract(first + i)} for i in range(4)]
    return {
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "system": SYSTEM,
        "messages": [{"role": "user", "content": [*docs, {"type": "text", "text": "Compare them."}]}],
    }


class Words:
    """A counter with exact, predictable counts: one token per word."""

    def count(self, text: str) -> int:
        return len(text.split())


def cached_prefixes(req: dict[str, Any]) -> list[str]:
    """What each cache_control marker of a request caches: the prefix up to it, tools -> system ->
    messages, as one comparable string per marker."""
    parts: list[tuple[str, bool]] = []
    for tool in req.get("tools", []):
        parts.append(
            (json.dumps({k: v for k, v in tool.items() if k != "cache_control"}), "cache_control" in tool)
        )
    system = req.get("system")
    blocks = [{"type": "text", "text": system}] if isinstance(system, str) else (system or [])
    for block in blocks:
        parts.append((block["text"], "cache_control" in block))
    for message in req["messages"]:
        content = message["content"]
        content = [{"type": "text", "text": content}] if isinstance(content, str) else content
        for block in content:
            parts.append((message["role"] + ":" + block["text"], "cache_control" in block))
    return ["\x00".join(text for text, _ in parts[: n + 1]) for n, (_, marked) in enumerate(parts) if marked]


def test_the_shared_system_prompt_gets_a_breakpoint_when_slots_are_scarce() -> None:
    plan = plan_prompt_cache(support_request(), conversation=True)
    assert len(plan.breakpoints) == 4
    assert plan.breakpoints[0].section == "system"
    assert plan.request["system"] == [
        {"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}
    ]
    assert "system" not in {s.section for s in plan.skipped}


def test_another_conversation_with_other_documents_reuses_the_system_prompt_cache() -> None:
    first = plan_prompt_cache(support_request(first=0), conversation=True).request
    other = plan_prompt_cache(support_request(first=10), conversation=True).request
    shared = set(cached_prefixes(first)) & set(cached_prefixes(other))
    assert shared == {SYSTEM}  # the other conversation reads the system prompt from the cache


def test_no_breakpoint_is_spent_on_a_few_tokens_over_the_previous_one() -> None:
    plan = plan_prompt_cache(support_request(), conversation=True)
    # "Compare them." adds a few tokens over the last contract: the last contract's breakpoint
    # caches nearly the same prefix, so the scarce slot is not spent on it
    assert min(b.new_tokens for b in plan.breakpoints) >= plan.min_tokens
    assert [(s.path, s.new_tokens) for s in plan.skipped if s.section == "conversation"] == [
        ("messages[0].content[4]", 4)
    ]
    assert plan.breakpoints[-1].path == "messages[0].content[3]"
    assert plan.prompt_tokens - plan.cached_tokens == 4
    # placed breakpoints add up to what a full hit reads: each is measured from the one before it
    assert sum(b.new_tokens for b in plan.breakpoints) == plan.cached_tokens


def test_the_async_twin_chooses_the_same_breakpoints() -> None:
    req = support_request()
    plan = asyncio.run(aplan_prompt_cache(req, conversation=True))
    assert [b.path for b in plan.breakpoints] == [
        b.path for b in plan_prompt_cache(req, conversation=True).breakpoints
    ]
    assert plan.breakpoints[0].path == "system[0]"


def test_one_breakpoint_goes_to_the_system_prompt_not_the_furthest_document() -> None:
    req = support_request()
    plan = plan_prompt_cache(req, max_breakpoints=1)
    assert [(b.section, b.path) for b in plan.breakpoints] == [("system", "system[0]")]
    assert {s.section for s in plan.skipped} == {"document"}


def test_the_system_prompt_and_the_furthest_prefix_are_kept_before_tools_and_documents() -> None:
    # The system breakpoint caches the tools too (tools -> system): a tools breakpoint of its own
    # competes on size, and the furthest prefix caches the most for the conversation.
    tool = {
        "name": "lookup",
        "description": "word " * 1500,
        "input_schema": {"type": "object", "properties": {}},
    }
    docs = [{"type": "text", "text": "page " * 3000 + str(i)} for i in range(3)]
    req = {
        "model": "claude-sonnet-4-5",
        "tools": [tool],
        "system": "rule " * 2000,
        "messages": [{"role": "user", "content": docs}],
    }
    plan = plan_prompt_cache(req, max_breakpoints=2, counter=Words())
    assert [(b.section, b.path) for b in plan.breakpoints] == [
        ("system", "system[0]"),
        ("document", "messages[0].content[2]"),
    ]
    assert "cache_control" not in plan.request["tools"][0]
    assert "cache_control" in plan.request["system"][0]
    assert sorted(b.section for b in plan.skipped) == ["document", "document", "tools"]


def test_an_existing_marker_is_the_previous_breakpoint_of_the_next_candidate() -> None:
    req = support_request()
    req["messages"][0]["content"][3]["cache_control"] = {"type": "ephemeral"}  # the caller's own marker
    plan = plan_prompt_cache(req, conversation=True)
    assert plan.existing == 1
    assert plan.breakpoints[0].path == "system[0]"
    assert len(plan.breakpoints) == 3
    # the conversation adds 4 tokens over the caller's marker: no slot is spent on it
    assert [(s.path, s.new_tokens) for s in plan.skipped if s.section == "conversation"] == [
        ("messages[0].content[4]", 4)
    ]


def test_a_long_last_turn_still_keeps_the_furthest_prefix() -> None:
    docs = [{"type": "text", "text": "page " * 2000 + str(i)} for i in range(5)]
    req = {
        "model": "claude-sonnet-4-5",
        "system": "rule " * 2000,
        "messages": [
            {"role": "user", "content": docs},
            {"role": "assistant", "content": "answer " * 1500},
        ],
    }
    plan = plan_prompt_cache(req, conversation=True, document_tokens=1800, counter=Words())
    # the last turn adds 1,500 tokens (over the 1,024 minimum): the next turn's prefix is cached
    assert [b.section for b in plan.breakpoints] == ["system", "document", "document", "conversation"]
    assert plan.breakpoints[-1].path == "messages[1].content[0]"
    assert plan.cached_tokens == plan.prompt_tokens
    # it adds the assistant turn (and its message framing) over the last document's breakpoint
    assert plan.breakpoints[-2].path == "messages[0].content[4]"
    assert plan.breakpoints[-1].new_tokens == 1500 + 3
