"""Anthropic cache breakpoints placed within the API's rules; what provider caching saved or cost."""

from __future__ import annotations

import copy
import doctest
from decimal import Decimal
from typing import Any

import pytest

from tokenbudget_core import (
    InvalidInputError,
    ModelRegistry,
    PriceOverride,
    PriceTable,
    UnknownModelError,
    Usage,
    aplan_prompt_cache,
    min_cacheable_tokens,
    plan_prompt_cache,
    price_of,
    prompt_cache_report,
    prompt_cache_savings,
    prompt_caching,
    with_prompt_cache_key,
)

MANUAL = "The device resets when the red button is held for ten seconds. " * 200  # ~2.6k tokens
TOOLS = [
    {
        "name": f"tool_{i}",
        "description": "Looks things up in the catalogue by name, colour and size. " * 40,
        "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
    }
    for i in range(3)
]


def request(**kw: Any) -> dict[str, Any]:
    return copy.deepcopy(
        {
            "model": "claude-sonnet-4-5",
            "max_tokens": 100,
            "messages": [{"role": "user", "content": "How do I reset it?"}],
            **kw,
        }
    )


def controls(req: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
    """Every cache_control in a request, with where it sits."""
    out = [
        (f"tools[{i}]", t["cache_control"])
        for i, t in enumerate(req.get("tools", []))
        if "cache_control" in t
    ]
    system = req.get("system")
    if isinstance(system, list):
        out += [(f"system[{i}]", b["cache_control"]) for i, b in enumerate(system) if "cache_control" in b]
    for m, msg in enumerate(req["messages"]):
        if isinstance(msg["content"], list):
            out += [
                (f"messages[{m}].content[{j}]", b["cache_control"])
                for j, b in enumerate(msg["content"])
                if "cache_control" in b
            ]
    return out


def test_long_system_prompt_gets_one_breakpoint_and_the_input_is_untouched() -> None:
    original = request(system=MANUAL)
    snapshot = copy.deepcopy(original)
    plan = plan_prompt_cache(original)
    assert original == snapshot
    assert plan.request["system"] == [
        {"type": "text", "text": MANUAL, "cache_control": {"type": "ephemeral"}}
    ]
    assert controls(plan.request) == [("system[0]", {"type": "ephemeral"})]
    [bp] = plan.breakpoints
    assert (bp.section, bp.ttl) == ("system", "5m")
    assert bp.prefix_tokens >= plan.min_tokens == 1024
    assert plan.cached_tokens == bp.prefix_tokens < plan.prompt_tokens
    assert not plan.skipped


def test_short_prefix_is_not_spent_a_breakpoint() -> None:
    plan = plan_prompt_cache(request(system="You are terse."))
    assert plan.breakpoints == ()
    assert controls(plan.request) == []
    [skip] = plan.skipped
    assert skip.section == "system"
    assert "1024-token minimum" in skip.reason


def test_minimum_depends_on_the_model() -> None:
    assert min_cacheable_tokens("claude-sonnet-4-5-20250929") == 1024
    assert min_cacheable_tokens("claude-opus-4-1") == 1024
    assert min_cacheable_tokens("claude-3-7-sonnet-latest") == 1024
    assert min_cacheable_tokens("claude-sonnet-4-6") == 2048
    assert min_cacheable_tokens("claude-3-5-haiku-latest") == 2048
    assert min_cacheable_tokens("claude-3-haiku-20240307") == 2048
    assert min_cacheable_tokens("claude-haiku-4-5") == 4096
    assert min_cacheable_tokens("claude-opus-4-5") == 4096
    # ~2.6k tokens: cached on Sonnet 4.5, too short for Haiku 4.5
    assert plan_prompt_cache(request(system=MANUAL)).breakpoints
    haiku = plan_prompt_cache(request(system=MANUAL, model="claude-haiku-4-5"))
    assert haiku.breakpoints == ()
    assert "4096-token minimum of claude-haiku-4-5" in haiku.skipped[0].reason
    # an explicit minimum wins
    assert plan_prompt_cache(request(system=MANUAL, model="claude-haiku-4-5"), min_tokens=1024).breakpoints


def test_openai_model_is_refused_with_the_openai_way() -> None:
    with pytest.raises(InvalidInputError, match="with_prompt_cache_key") as e:
        plan_prompt_cache(request(system=MANUAL, model="gpt-4o"))
    assert e.value.field == "model"
    with pytest.raises(UnknownModelError):
        min_cacheable_tokens("claude-nonexistent-9")


def test_tools_then_system_then_document_in_prompt_order() -> None:
    doc = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": MANUAL}}
    req = request(
        tools=TOOLS,
        system="You answer from the manual only.",
        messages=[{"role": "user", "content": [doc, {"type": "text", "text": "How do I reset it?"}]}],
    )
    plan = plan_prompt_cache(req)
    assert [(b.section, b.path) for b in plan.breakpoints] == [
        ("tools", "tools[2]"),
        ("system", "system[0]"),
        ("document", "messages[0].content[0]"),
    ]
    assert [p for p, _ in controls(plan.request)] == ["tools[2]", "system[0]", "messages[0].content[0]"]
    tokens = [b.prefix_tokens for b in plan.breakpoints]
    assert tokens == sorted(tokens)
    assert sum(b.new_tokens for b in plan.breakpoints) == tokens[-1] == plan.cached_tokens
    assert "tools" not in req["tools"][2].get("cache_control", {})  # input untouched


def test_conversation_breakpoint_on_the_last_message() -> None:
    req = request(
        system=MANUAL,
        messages=[
            {"role": "user", "content": "How do I reset it?"},
            {"role": "assistant", "content": "Hold the red button."},
            {"role": "user", "content": "For how long?"},
        ],
    )
    plan = plan_prompt_cache(req, conversation=True)
    assert [b.section for b in plan.breakpoints] == ["system", "conversation"]
    assert plan.request["messages"][2]["content"] == [
        {"type": "text", "text": "For how long?", "cache_control": {"type": "ephemeral"}}
    ]
    assert plan.cached_tokens == plan.prompt_tokens
    assert req["messages"][2]["content"] == "For how long?"


def test_never_more_than_four_breakpoints_existing_ones_included() -> None:
    docs = [{"type": "text", "text": MANUAL + str(i)} for i in range(5)]
    req = request(tools=TOOLS, system=MANUAL, messages=[{"role": "user", "content": docs}])
    plan = plan_prompt_cache(req)
    assert len(controls(plan.request)) == 4
    assert plan.breakpoints[-1].path == "messages[0].content[4]"  # the furthest prefix is always kept
    assert {s.reason for s in plan.skipped} == {"no breakpoint left (at most 4, 0 already present)"}
    assert len(plan.breakpoints) + len(plan.skipped) == 7
    # two already present: two left
    req["messages"][0]["content"][0]["cache_control"] = {"type": "ephemeral"}
    req["tools"][0]["cache_control"] = {"type": "ephemeral"}
    plan = plan_prompt_cache(req)
    assert plan.existing == 2
    assert len(plan.breakpoints) == 2
    assert len(controls(plan.request)) == 4
    # max_breakpoints lowers the limit
    assert len(controls(plan_prompt_cache(req, max_breakpoints=3).request)) == 3


def test_more_than_four_existing_breakpoints_is_an_error() -> None:
    blocks = [{"type": "text", "text": f"part {i}", "cache_control": {"type": "ephemeral"}} for i in range(5)]
    with pytest.raises(InvalidInputError, match="carries 5 cache_control breakpoints; Anthropic allows 4"):
        plan_prompt_cache(request(messages=[{"role": "user", "content": blocks}]))


def test_one_hour_ttl_and_its_ordering_rule() -> None:
    req = request(tools=TOOLS, system=MANUAL)
    plan = plan_prompt_cache(req, ttl={"tools": "1h", "system": "1h"})
    assert controls(plan.request) == [
        ("tools[2]", {"type": "ephemeral", "ttl": "1h"}),
        ("system[0]", {"type": "ephemeral", "ttl": "1h"}),
    ]
    plan = plan_prompt_cache(req, ttl={"tools": "1h"})
    assert [b.ttl for b in plan.breakpoints] == ["1h", "5m"]
    with pytest.raises(InvalidInputError, match="1h breakpoint at system\\[0\\] would follow a 5m one"):
        plan_prompt_cache(req, ttl={"system": "1h"})
    with pytest.raises(InvalidInputError, match="'5m' or '1h'") as e:
        plan_prompt_cache(req, ttl="10m")  # type: ignore[arg-type]
    assert e.value.field == "ttl.tools"


@pytest.mark.parametrize(
    ("req", "field"),
    [
        ("not a dict", "request"),
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "claude-sonnet-4-5", "messages": []}, "request.messages"),
        ({"model": "claude-sonnet-4-5", "messages": [{"role": "system", "content": "x"}]},
         "messages[0].role"),
        ({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
        ({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": [{"text": "x"}]}]},
         "messages[0].content[0]"),
        ({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "x"}], "tools": ["t"]},
         "tools[0]"),
        ({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "x"}], "system": 7},
         "request.system"),
        ({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "x", "cache_control": {"type": "persistent"}}]}]},
         "messages[0].content[0].cache_control"),
    ],
)  # fmt: skip
def test_bad_requests_name_the_field(req: Any, field: str) -> None:
    with pytest.raises(InvalidInputError) as e:
        plan_prompt_cache(req)
    assert e.value.field == field


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"max_breakpoints": 5}, "max_breakpoints"),
        ({"max_breakpoints": 0}, "max_breakpoints"),
        ({"min_tokens": -1}, "min_tokens"),
        ({"document_tokens": True}, "document_tokens"),
        ({"conversation": "yes"}, "conversation"),
        ({"ttl": {"history": "1h"}}, "ttl"),
        ({"counter": object()}, "counter"),
    ],
)
def test_bad_options_name_the_field(kw: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInputError) as e:
        plan_prompt_cache(request(system=MANUAL), **kw)
    assert e.value.field == field


class WordCounter:
    """A counter the caller injects: one token per word."""

    def count(self, text: str) -> int:
        return len(text.split())

    async def acount(self, text: str) -> int:
        return len(text.split())


async def test_injected_counter_and_async_twin_agree() -> None:
    req = request(system="word " * 1500)
    sync = plan_prompt_cache(req, counter=WordCounter())
    assert sync.breakpoints[0].prefix_tokens == 1500
    assert await aplan_prompt_cache(req, counter=WordCounter()) == sync
    below = plan_prompt_cache(request(system="word " * 1000), counter=WordCounter())
    assert below.breakpoints == ()


def test_images_and_thinking_blocks() -> None:
    image = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
    thinking = {"type": "thinking", "thinking": "hmm", "signature": "sig"}
    req = request(
        system=MANUAL,
        messages=[
            {"role": "user", "content": [image, {"type": "text", "text": "What is this?"}]},
            {"role": "assistant", "content": [thinking, {"type": "text", "text": "A cat."}]},
            {"role": "user", "content": [{"type": "text", "text": "Sure?"}]},
        ],
    )
    plan = plan_prompt_cache(req, conversation=True)
    # the image counts (Claude's 1,600-token cap for an unknown size): a long block, cached as one;
    # the thinking block cannot carry cache_control
    assert [(b.section, b.path) for b in plan.breakpoints] == [
        ("system", "system[0]"),
        ("document", "messages[0].content[0]"),
        ("conversation", "messages[2].content[0]"),
    ]
    assert plan.breakpoints[1].new_tokens >= 1600
    assert "cache_control" not in plan.request["messages"][1]["content"][0]


# -- reporting ------------------------------------------------------------------------------------


def test_report_with_an_override_price() -> None:
    table = PriceTable()
    table.register("claude-sonnet-4-5", PriceOverride(input_mtok=10, output_mtok=10, cache_read_mtok=1))
    r = prompt_cache_report(Usage(input_tokens=1_000_000, cache_read_tokens=500_000), "claude-sonnet-4-5",
                            prices=table)  # fmt: skip
    assert (r.cost, r.uncached_cost, r.read_savings) == (Decimal("5.5"), Decimal(10), Decimal("4.5"))


def test_report_prices_read_savings_and_write_premium() -> None:
    # Sonnet 4.5: input $3/MTok, cache read $0.30, 5m write $3.75, 1h write $6, output $15
    usage = Usage(input_tokens=12_000, output_tokens=200, cache_read_tokens=8_000, cache_write_tokens=3_000,
                  cache_write_1h_tokens=1_000)  # fmt: skip
    r = prompt_cache_report(usage, "claude-sonnet-4-5")
    assert r.priced
    assert r.read_savings == Decimal("0.0216")  # 8000 * (3 - 0.30) / 1e6
    assert r.write_premium == Decimal("0.0045")  # 2000 * 0.75 / 1e6 + 1000 * 3 / 1e6
    assert r.net_savings == Decimal("0.0171")
    assert r.uncached_cost is not None
    assert r.cost is not None
    assert r.uncached_cost - r.cost == r.net_savings
    assert r.cost == price_of(usage, "claude-sonnet-4-5").total
    assert (r.cache_read_tokens, r.cache_write_tokens, r.cache_write_1h_tokens) == (8000, 3000, 1000)
    assert r.hit_rate == pytest.approx(8000 / 12000)


def test_report_for_openai_cached_tokens() -> None:
    usage = Usage.from_openai(
        {
            "usage": {
                "prompt_tokens": 2048,
                "completion_tokens": 10,
                "prompt_tokens_details": {"cached_tokens": 1024},
            }
        }
    )
    r = prompt_cache_report(usage, "gpt-4o")
    assert r.cache_read_tokens == 1024
    assert r.write_premium == 0
    assert r.read_savings == Decimal("0.00128")  # 1024 * (2.50 - 1.25) / 1e6
    assert r.net_savings == r.read_savings


def test_report_unpriced_is_none_never_zero() -> None:
    registry = ModelRegistry()
    registry.register("acme-7b", provider="acme", context_window=32_000, max_output_tokens=4_096)
    usage = Usage(input_tokens=10, output_tokens=1, cache_read_tokens=5)
    unpriced = prompt_cache_report(usage, "acme-7b", registry=registry, prices=PriceTable())
    assert not unpriced.priced
    assert unpriced.cost is unpriced.read_savings is unpriced.net_savings is None
    with pytest.raises(InvalidInputError, match="must be a Usage"):
        prompt_cache_report({"input_tokens": 3}, "gpt-4o")  # type: ignore[arg-type]


def test_prompt_cache_key_passthrough() -> None:
    req = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    out = with_prompt_cache_key(req, "support-v2", retention="24h")
    assert out == {**req, "prompt_cache_key": "support-v2", "prompt_cache_retention": "24h"}
    assert "prompt_cache_key" not in req
    assert with_prompt_cache_key(out, "support-v2")["prompt_cache_key"] == "support-v2"
    with pytest.raises(InvalidInputError, match="already 'support-v2'"):
        with_prompt_cache_key(out, "other")
    with pytest.raises(InvalidInputError) as e:
        with_prompt_cache_key(req, "")
    assert e.value.field == "key"
    with pytest.raises(InvalidInputError) as e:
        with_prompt_cache_key(req, "k", retention="forever")  # type: ignore[arg-type]
    assert e.value.field == "retention"


@pytest.mark.parametrize("module", [prompt_caching, prompt_cache_savings])
def test_docstring_examples_run(module: Any) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0
    assert result.failed == 0


def test_cache_writes_of_finds_the_longest_marked_ttl_anywhere_in_a_request() -> None:
    from tokenbudget_core.prompt_caching import cache_writes_of

    five = {"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}}
    hour = {"name": "t", "input_schema": {}, "cache_control": {"type": "ephemeral", "ttl": "1h"}}
    assert cache_writes_of([[{"type": "text", "text": "a"}], "plain"]) is None
    assert cache_writes_of([[five]]) == "5m"
    assert cache_writes_of({"tools": [hour], "messages": [{"content": [five]}]}) == "1h"
    with pytest.raises(InvalidInputError, match=r"cache_control\.ttl"):
        cache_writes_of([{"cache_control": {"type": "ephemeral", "ttl": "1d"}}])


def test_cache_marks_of_tells_one_ttl_from_mixed_ttls() -> None:
    from tokenbudget_core.prompt_caching import cache_marks_of, longest_ttl

    five = {"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}}
    hour = {"type": "text", "text": "b", "cache_control": {"type": "ephemeral", "ttl": "1h"}}
    assert cache_marks_of([["plain"]]) is None
    assert cache_marks_of([[five, five]]) == "5m"
    assert cache_marks_of([[hour], {"tools": [hour]}]) == "1h"
    assert cache_marks_of([[hour], [five]]) == "mixed"
    assert [longest_ttl(m) for m in (None, "5m", "1h", "mixed")] == [None, "5m", "1h", "1h"]


def count_markers(value: Any) -> int:
    if isinstance(value, dict):
        return ("cache_control" in value) + sum(count_markers(v) for v in value.values())
    if isinstance(value, list):
        return sum(count_markers(v) for v in value)
    return 0


def test_markers_nested_in_tool_results_count_against_the_limit() -> None:
    """A ``cache_control`` inside a ``tool_result``'s content is a breakpoint too: the planned
    request never carries more than 4, and the nested one is reported as existing."""
    nested = {"type": "text", "text": MANUAL, "cache_control": {"type": "ephemeral"}}
    req = request(
        tools=TOOLS,
        system=MANUAL,
        messages=[
            {"role": "user", "content": [{"type": "text", "text": MANUAL}, {"type": "text", "text": "Go"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "tu1", "name": "tool_0",
                                                "input": {}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "tu1", "content": [nested]},
                {"type": "text", "text": MANUAL},
            ]},
        ],
    )  # fmt: skip
    plan = plan_prompt_cache(req, conversation=True)
    assert plan.existing == 1
    assert count_markers(plan.request) == 4
    assert "messages[2].content[0]" not in [b.path for b in plan.breakpoints]
    five = copy.deepcopy(req)
    for block in (five["tools"][0], five["tools"][1], five["tools"][2], five["messages"][0]["content"][0]):
        block["cache_control"] = {"type": "ephemeral"}
    with pytest.raises(InvalidInputError, match="carries 5 cache_control breakpoints"):
        plan_prompt_cache(five)
    bad = copy.deepcopy(req)
    bad["messages"][2]["content"][0]["content"][0]["cache_control"] = {"type": "persistent"}
    with pytest.raises(InvalidInputError) as e:
        plan_prompt_cache(bad)
    assert e.value.field == "messages[2].content[0].content[0].cache_control"


class WordsAsText:
    def count(self, text: str) -> str:
        return "many"


@pytest.mark.parametrize(
    ("req", "counter", "field"),
    [
        (request(system=MANUAL), WordsAsText(), "counter"),
        (request(tools=[{"name": "x", "input_schema": {"type": "object"}, "fn": object()}]), None,
         "tools[0]"),
        (request(messages=[{"role": "user", "content": [{"type": "document", "source": None}]}]), None,
         "messages[0].content[0].source"),
        (request(messages=[{"role": "user", "content": [{"type": "document", "source": {"type": "text"}}]}]),
         None, "messages[0].content[0].source.data"),
        (request(messages=[{"role": "user", "content": [{"type": "image", "source": "http://x/y.png"}]}]),
         None, "messages[0].content[0].source"),
    ],
)  # fmt: skip
def test_malformed_blocks_and_counters_are_named_errors(req: Any, counter: Any, field: str) -> None:
    with pytest.raises(InvalidInputError) as e:
        plan_prompt_cache(req, counter=counter)
    assert e.value.field == field
