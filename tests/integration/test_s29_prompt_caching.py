"""Prompt-cache markers read where Anthropic reads them (review s29 route, findings 1, 3, 5, 7).

1. A ``cache_control`` key inside data (a tool's ``input_schema``, a past tool call's ``input``)
   is not a marker: a budgeted call of such an agent goes out (real ``ChatAnthropic`` over
   sockets to the loopback provider server, through ``BudgetCallbackHandler``).
3. A request's top-level ``cache_control`` (automatic caching) is a breakpoint on the last
   cacheable block: it takes one of the 4 slots and its TTL is ordered like the others'.
5. A custom-content document (``source.type == "content"``) is counted by its text, not as a
   binary file.
7. The skip reason names the real ``max_breakpoints``; the docstring says what ``_choose`` does.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from provider_server import AnthropicReply, ProviderServer
from pydantic import SecretStr

from langchain_tokenbudget import BudgetCallbackHandler
from tokenbudget_core import InvalidInputError, plan_prompt_cache
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.prompt_caching import cache_marks_of, cache_writes_of

FIVE = {"type": "ephemeral"}
HOUR = {"type": "ephemeral", "ttl": "1h"}
BIG = "word " * 3000  # ~3k tokens: over Sonnet 4.5's 1,024-token minimum
MANUAL = "The warranty covers parts and labour for two years. " * 2000  # ~20k tokens

# A tool with an argument called cache_control (an HTTP/CDN tool), as each format spells it.
HEADERS_SCHEMA = {
    "type": "object",
    "properties": {"url": {"type": "string"}, "cache_control": {"type": "string"}},
    "required": ["url", "cache_control"],
}
ANTHROPIC_TOOL = {"name": "set_headers", "description": "Set headers.", "input_schema": HEADERS_SCHEMA}
OPENAI_TOOL = {
    "type": "function",
    "function": {"name": "set_headers", "description": "Set headers.", "parameters": HEADERS_SCHEMA},
}
# A conversation that once called it: Claude's tool_use block, LangChain's tool_call block.
TOOL_USE = {"type": "tool_use", "id": "tu1", "name": "set_headers", "input": {"cache_control": "no-store"}}
TOOL_CALL = {"type": "tool_call", "id": "tu1", "name": "set_headers", "args": {"cache_control": "no-store"}}


def controls(req: dict[str, Any]) -> int:
    """How many block-level cache_control markers a (planned) request carries."""
    tools = sum("cache_control" in t for t in req.get("tools", []))
    system = req.get("system")
    blocks = sum("cache_control" in b for b in system) if isinstance(system, list) else 0
    for message in req["messages"]:
        if isinstance(message["content"], list):
            blocks += sum("cache_control" in b for b in message["content"])
    return tools + blocks


# -- 1. cache_control inside data is no marker ------------------------------------------------------


def test_a_tool_parameter_named_cache_control_is_no_marker() -> None:
    assert cache_marks_of([ANTHROPIC_TOOL]) is None
    assert cache_marks_of([OPENAI_TOOL]) is None
    assert cache_writes_of({"tools": [ANTHROPIC_TOOL, OPENAI_TOOL]}) is None
    # the tool definition's own marker still is one
    assert cache_marks_of([{**ANTHROPIC_TOOL, "cache_control": HOUR}]) == "1h"


def test_a_past_tool_call_whose_input_names_cache_control_is_no_marker() -> None:
    assert cache_marks_of([[TOOL_USE]]) is None
    assert cache_marks_of([[TOOL_CALL]]) is None
    assert cache_writes_of({"messages": [{"role": "assistant", "content": [TOOL_USE]}]}) is None
    # a JSON schema or tool input holding a dict-valued cache_control is data too
    assert cache_marks_of([{**TOOL_USE, "input": {"cache_control": {"type": "bogus"}}}]) is None


def test_markers_are_still_read_where_anthropic_reads_them() -> None:
    assert cache_marks_of([[{**TOOL_USE, "cache_control": FIVE}]]) == "5m"  # the block's own
    result = {
        "type": "tool_result",
        "tool_use_id": "tu1",
        "content": [{"type": "text", "text": "ok", "cache_control": HOUR}],
    }
    assert cache_marks_of([[result]]) == "1h"  # nested in a tool result's content
    document = {
        "type": "document",
        "source": {"type": "content", "content": [{"type": "text", "text": "a", "cache_control": FIVE}]},
    }
    assert cache_marks_of([[document]]) == "5m"  # nested in a document's content source
    assert cache_marks_of([{"cache_control": HOUR}]) == "1h"  # the request-level option
    assert cache_marks_of({"system": [{"type": "text", "text": "s", "cache_control": HOUR}]}) == "1h"
    # LangChain standard blocks carry it in extras (langchain_anthropic moves it onto the block)
    file_block = {
        "type": "file",
        "base64": "AAAA",
        "mime_type": "application/pdf",
        "extras": {"cache_control": FIVE},
    }
    assert cache_marks_of([[file_block]]) == "5m"
    assert (
        cache_marks_of(
            [[{**TOOL_USE, "cache_control": HOUR}], [{**result, "content": "x", "cache_control": FIVE}]]
        )
        == "mixed"
    )


def test_a_malformed_marker_where_anthropic_reads_it_is_still_refused() -> None:
    with pytest.raises(InvalidInputError) as caught:
        cache_marks_of([[{**TOOL_USE, "cache_control": "no-store"}]])
    assert caught.value.field == "request[0][0].cache_control"
    with pytest.raises(InvalidInputError, match=r"request\[0\]\.tools\[0\]\.cache_control\.ttl"):
        cache_writes_of(
            [{"tools": [{**ANTHROPIC_TOOL, "cache_control": {"type": "ephemeral", "ttl": "1d"}}]}]
        )


@tool
def set_headers(url: str, cache_control: str) -> str:
    """Set the HTTP Cache-Control header served for a URL."""
    return "ok"


@pytest.mark.integration
def test_a_budgeted_agent_with_a_cache_control_argument_reaches_the_provider(
    tmp_path: Path, provider_server: ProviderServer
) -> None:
    server = provider_server
    ledger = Ledger("memory://", spool_path=tmp_path / "spool.jsonl")
    handler = BudgetCallbackHandler(ledger)
    model = ChatAnthropic(
        base_url=server.url, api_key=SecretStr("t"), model="claude-haiku-4-5", max_retries=0, max_tokens=50
    )
    # a bound tool with a parameter named cache_control
    server.queue(AnthropicReply(input_tokens=20, output_tokens=5))
    model.bind_tools([set_headers]).invoke("hi", config={"callbacks": [handler]})
    sent_tool = server.requests[-1].body["tools"][0]
    assert "cache_control" in sent_tool["input_schema"]["properties"]
    assert "cache_control" not in sent_tool
    # a conversation that once called it: a Claude tool_use whose input has a cache_control argument
    history = [
        HumanMessage("make /a uncacheable"),
        AIMessage(
            content=[{**TOOL_USE, "input": {"url": "/a", "cache_control": "no-store"}}],
            tool_calls=[
                {"id": "tu1", "name": "set_headers", "args": {"url": "/a", "cache_control": "no-store"}}
            ],
        ),
        ToolMessage("ok", tool_call_id="tu1"),
    ]
    server.queue(AnthropicReply(input_tokens=20, output_tokens=5))
    model.bind_tools([set_headers]).invoke(history, config={"callbacks": [handler]})
    assert len(server.requests) == 2


# -- 3. the top-level cache_control (automatic caching) takes a slot ------------------------------


def auto_request(control: dict[str, str] | None = FIVE) -> dict[str, Any]:
    req: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "tools": [{"name": "lookup", "description": BIG, "input_schema": {"type": "object"}}],
        "system": BIG,
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": BIG}, {"type": "text", "text": "summarise"}],
            },
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": BIG},
        ],
    }
    if control is not None:
        req["cache_control"] = dict(control)
    return copy.deepcopy(req)


def test_the_automatic_breakpoint_counts_against_the_limit_of_four() -> None:
    plan = plan_prompt_cache(auto_request(), conversation=True)
    assert plan.existing == 1
    assert [b.path for b in plan.breakpoints] == ["tools[0]", "system[0]", "messages[0].content[0]"]
    assert controls(plan.request) + 1 == 4  # 3 placed + the automatic one
    assert plan.request["cache_control"] == FIVE
    # the automatic one sits on the last cacheable block: the whole prompt is what a hit reads
    assert plan.cached_tokens == plan.prompt_tokens
    # the same request without it: the conversation tail gets the fourth breakpoint
    plain = plan_prompt_cache(auto_request(None), conversation=True)
    assert (plain.existing, len(plain.breakpoints)) == (0, 4)


def test_the_automatic_breakpoint_counts_against_max_breakpoints() -> None:
    plan = plan_prompt_cache(auto_request(), conversation=True, max_breakpoints=2)
    assert [b.path for b in plan.breakpoints] == ["system[0]"]
    assert {s.reason for s in plan.skipped} == {"no breakpoint left (at most 2, 1 already present)"}


def test_four_markers_and_the_automatic_one_are_refused() -> None:
    req = auto_request()
    req["tools"][0]["cache_control"] = FIVE
    req["system"] = [{"type": "text", "text": BIG, "cache_control": FIVE}]
    req["messages"][0]["content"][0]["cache_control"] = FIVE
    req["messages"][0]["content"][1]["cache_control"] = FIVE
    with pytest.raises(InvalidInputError, match="carries 5 cache_control breakpoints") as caught:
        plan_prompt_cache(req)
    where = caught.value.value
    assert isinstance(where, list)
    assert where[-1] == "request.cache_control"  # named as such, after the blocks' markers
    del req["cache_control"]
    assert plan_prompt_cache(req).existing == 4


def test_a_1h_automatic_breakpoint_is_never_placed_after_5m_ones() -> None:
    with pytest.raises(InvalidInputError, match=r"1h breakpoint at messages\[2\]\.content\[0\]") as caught:
        plan_prompt_cache(auto_request(HOUR), conversation=True)
    assert caught.value.field == "ttl"
    assert "cache_control" in str(caught.value)
    plan = plan_prompt_cache(auto_request(HOUR), conversation=True, ttl="1h")
    assert plan.existing == 1
    assert [(b.path, b.ttl) for b in plan.breakpoints] == [
        ("tools[0]", "1h"), ("system[0]", "1h"), ("messages[0].content[0]", "1h")
    ]  # fmt: skip


def test_a_malformed_top_level_cache_control_is_refused() -> None:
    with pytest.raises(InvalidInputError) as caught:
        plan_prompt_cache(auto_request({"type": "persistent"}))
    assert caught.value.field == "request.cache_control"


async def test_the_async_planner_counts_the_automatic_breakpoint_too() -> None:
    from tokenbudget_core import aplan_prompt_cache

    plan = await aplan_prompt_cache(auto_request(), conversation=True)
    assert (plan.existing, len(plan.breakpoints)) == (1, 3)


# -- 5. a custom-content document holds text ------------------------------------------------------


def document_request(source: dict[str, Any]) -> dict[str, Any]:
    doc = {"type": "document", "title": "Manual", "source": source, "citations": {"enabled": True}}
    return {
        "model": "claude-haiku-4-5",
        "max_tokens": 200,
        "messages": [
            {"role": "user", "content": [doc, {"type": "text", "text": "How long is the warranty?"}]}
        ],
    }


def test_a_custom_content_document_is_counted_by_its_text() -> None:
    as_text = plan_prompt_cache(
        document_request({"type": "text", "media_type": "text/plain", "data": MANUAL})
    )
    as_blocks = plan_prompt_cache(
        document_request({"type": "content", "content": [{"type": "text", "text": MANUAL}]})
    )
    as_string = plan_prompt_cache(document_request({"type": "content", "content": MANUAL}))
    assert as_blocks.prompt_tokens == as_text.prompt_tokens == as_string.prompt_tokens > 15_000
    assert [b.path for b in as_blocks.breakpoints] == ["messages[0].content[0]"]  # over Haiku 4.5's 4,096
    assert as_blocks.request["messages"][0]["content"][0]["cache_control"] == FIVE


def test_a_short_custom_content_document_is_not_counted_as_a_binary_file() -> None:
    short = plan_prompt_cache(
        document_request({"type": "content", "content": [{"type": "text", "text": "Two years."}]}),
        min_tokens=1024,
    )
    assert short.prompt_tokens < 100
    assert short.breakpoints == ()  # under the minimum: no breakpoint spent on it
    # a real binary document keeps its page-sized floor
    pdf = plan_prompt_cache(
        document_request({"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}),
        min_tokens=1024,
    )
    assert pdf.prompt_tokens >= 1600


def test_a_custom_content_document_with_a_malformed_content_is_refused() -> None:
    with pytest.raises(InvalidInputError) as caught:
        plan_prompt_cache(document_request({"type": "content", "content": 42}))
    assert caught.value.field == "messages[0].content[0].source.content"
    with pytest.raises(InvalidInputError) as caught:
        plan_prompt_cache(document_request({"type": "content", "content": [{"type": "text", "text": 7}]}))
    assert caught.value.field == "messages[0].content[0].source.content[0].text"


# -- 7. what the docstring and the skip reason say --------------------------------------------------


def test_the_skip_reason_names_the_real_max_breakpoints() -> None:
    req = auto_request(None)
    req["system"] = "You are a support agent. " * 300
    plan = plan_prompt_cache(req, conversation=True, max_breakpoints=2)
    # the system's breakpoint covers the tools; the tools' own competes on size and loses here
    assert [b.path for b in plan.breakpoints] == ["system[0]", "messages[2].content[0]"]
    assert {s.reason for s in plan.skipped} == {"no breakpoint left (at most 2, 0 already present)"}
    assert "tools" in {s.section for s in plan.skipped}


def test_the_docstring_says_the_tools_compete_on_size() -> None:
    doc = " ".join((plan_prompt_cache.__doc__ or "").split())
    assert "then the tools" not in doc
    assert "the tools' own breakpoint included" in doc
    assert "top-level ``cache_control``" in doc
