"""Token counts of tool schemas with ``$defs``, Responses-API function tools, and PDFs whose
pages sit in compressed object streams: none may be counted below what is sent.

* A tool schema with ``$defs`` / ``definitions`` and ``$ref`` (nested pydantic models, as
  ``openai.pydantic_function_tool`` and LlamaIndex's ``FunctionTool`` send them) was counted
  without its definitions: a ``$ref`` property cost its ref string.
* A Responses-API function tool (the flat ``{"type": "function", "name": ..., "parameters": ...}``)
  was dropped as a built-in tool by ``countable_tools`` and refused by the tiktoken counter.
* A PDF whose page objects sit in a Flate-compressed object stream (PDF 1.5+, pdflatex's
  default) was estimated as one page.

Expected figures are computed here independently: the schema inlined by hand (or by the small
inliner below), the nested shape of the same tool, pages times ``PDF_PAGE_TOKENS``.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import time
import zlib
from pathlib import Path
from typing import Any

import openai
import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from pydantic import BaseModel, Field

from langchain_tokenbudget import BudgetCallbackHandler
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.counting import (
    FILE_TOKENS,
    PDF_PAGE_TOKENS,
    TokenCounter,
    countable_tools,
    estimate_block,
    is_function_tool,
)
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.ledger import Ledger, Reservation

COUNTER = TokenCounter.for_model("gpt-4o")
MSGS = [{"role": "user", "content": "Ship it"}]
BASE = int(COUNTER.count_messages(MSGS))


def tool_tokens(tool: dict[str, Any]) -> int:
    """What one tool adds to a request's count."""
    return int(COUNTER.count_messages(MSGS, [tool])) - BASE


def nested(name: str, parameters: dict[str, Any], description: str = "") -> dict[str, Any]:
    fn: dict[str, Any] = {"name": name, "parameters": parameters}
    if description:
        fn["description"] = description
    return {"type": "function", "function": fn}


def inline(schema: Any, root: dict[str, Any] | None = None) -> Any:
    """The schema with every local ``$ref`` replaced by its target (siblings merged) and the
    definitions dropped: the same schema written out in full (no recursion here)."""
    root = schema if root is None else root
    if isinstance(schema, dict):
        if "$ref" in schema:
            target: Any = root
            for part in schema["$ref"].split("/")[1:]:
                target = target[part]
            return {**inline(target, root), **{k: inline(v, root) for k, v in schema.items() if k != "$ref"}}
        return {k: inline(v, root) for k, v in schema.items() if k not in ("$defs", "definitions")}
    if isinstance(schema, list):
        return [inline(v, root) for v in schema]
    return schema


def json_tokens(value: Any) -> int:
    return len(COUNTER.encode(json.dumps(value, separators=(",", ":"), sort_keys=True)))


# -- finding 2: $defs / $ref -------------------------------------------------------------------

ADDRESS = {
    "type": "object",
    "properties": {
        f"field_{i}": {
            "type": "string",
            "description": f"The {i}th line of a very detailed postal address, as printed on the envelope.",
        }
        for i in range(30)
    },
}


def test_a_defs_schema_counts_as_the_same_schema_written_out() -> None:
    written_out = {
        "type": "object",
        "properties": {"to": ADDRESS, "sender": ADDRESS},
        "required": ["to", "sender"],
    }
    with_defs = {
        "type": "object",
        "$defs": {"Address": ADDRESS},
        "properties": {"to": {"$ref": "#/$defs/Address"}, "sender": {"$ref": "#/$defs/Address"}},
        "required": ["to", "sender"],
    }
    expected = tool_tokens(nested("ship", written_out, "Ship a parcel."))
    assert tool_tokens(nested("ship", with_defs, "Ship a parcel.")) == expected
    assert expected > 2 * json_tokens(ADDRESS)  # not a ref string's worth


def test_draft7_definitions_are_inlined_too() -> None:
    schema = {
        "type": "object",
        "definitions": {"Address": ADDRESS},
        "properties": {"to": {"$ref": "#/definitions/Address", "description": "Where it goes"}},
    }
    written_out = {"type": "object", "properties": {"to": {**ADDRESS, "description": "Where it goes"}}}
    assert tool_tokens(nested("ship", schema)) == tool_tokens(nested("ship", written_out))


def test_refs_in_arrays_unions_and_other_definitions_are_inlined() -> None:
    schema = {
        "type": "object",
        "$defs": {
            "Line": {"type": "object", "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}}},
            "Order": {
                "type": "object",
                "properties": {
                    "lines": {"type": "array", "items": {"$ref": "#/$defs/Line"}},
                    "gift": {"anyOf": [{"$ref": "#/$defs/Line"}, {"type": "null"}]},
                },
            },
        },
        "properties": {
            "order": {"$ref": "#/$defs/Order"},
            "note": {"type": "string", "description": "Free text"},
        },
    }
    assert tool_tokens(nested("order", schema)) == tool_tokens(nested("order", inline(schema)))
    without_defs = {k: v for k, v in schema.items() if k != "$defs"}
    assert tool_tokens(nested("order", schema)) > tool_tokens(nested("order", without_defs))


class Address(BaseModel):
    street: str = Field(description="Street, number, building, floor and any delivery instructions")
    city: str = Field(description="City or town, spelled as on official documents")
    postcode: str = Field(description="Postal code in the destination country's format")
    country: str = Field(description="ISO 3166-1 alpha-2 country code of the destination")


class Parcel(BaseModel):
    to: Address
    sender: Address
    items: list[Address] = Field(default_factory=list, description="Return addresses, one per item")


def test_openai_pydantic_function_tool_with_nested_models_counts_its_definitions() -> None:
    tool = openai.pydantic_function_tool(Parcel)
    params = tool["function"]["parameters"]
    assert "$defs" in params  # what the SDK sends
    written_out = nested(tool["function"]["name"], inline(params))
    written_out["function"]["strict"] = True
    stripped = copy.deepcopy(dict(tool))
    del stripped["function"]["parameters"]["$defs"]
    assert tool_tokens(dict(tool)) == tool_tokens(written_out)
    assert tool_tokens(dict(tool)) > tool_tokens(stripped) + json_tokens(params["$defs"]["Address"])


class Node(BaseModel):
    label: str = Field(description="What this node of the tree is called")
    children: list[Node] = Field(default_factory=list)


def test_a_recursive_schema_terminates_and_counts_its_definition() -> None:
    defs = Node.model_json_schema()["$defs"]
    params = {"type": "object", "properties": {"tree": {"$ref": "#/$defs/Node"}}, "$defs": defs}
    node = defs["Node"]
    assert "#/$defs/Node" in json.dumps(node)  # it refers to itself
    once = {"type": "object", "properties": {"tree": copy.deepcopy(node)}}  # inner $ref left as it is
    started = time.monotonic()
    n = tool_tokens(nested("walk", params))
    assert time.monotonic() - started < 5
    # inlined once, and the recursive definition counted as its JSON on top
    assert n >= tool_tokens(nested("walk", once)) + json_tokens(node)


def test_mutually_recursive_and_root_refs_terminate_and_count_every_definition() -> None:
    params = {
        "type": "object",
        "$defs": {
            "A": {"type": "object", "properties": {"b": {"$ref": "#/$defs/B"}, "me": {"$ref": "#"}}},
            "B": {"type": "object", "properties": {"a": {"$ref": "#/$defs/A"}, "note": {"type": "string"}}},
        },
        "properties": {"start": {"$ref": "#/$defs/A"}},
    }
    n = tool_tokens(nested("loop", params))
    assert n >= tool_tokens(nested("loop", {k: v for k, v in params.items() if k != "$defs"})) + json_tokens(
        params["$defs"]
    )


def test_definitions_shared_at_every_level_do_not_blow_up_and_are_counted() -> None:
    """30 levels, each referencing the next twice: 2**30 copies if inlined naively."""
    defs: dict[str, Any] = {"L30": {"type": "string", "description": "leaf"}}
    for i in range(29, -1, -1):
        defs[f"L{i}"] = {
            "type": "object",
            "properties": {"x": {"$ref": f"#/$defs/L{i + 1}"}, "y": {"$ref": f"#/$defs/L{i + 1}"}},
        }
    params = {"type": "object", "$defs": defs, "properties": {"root": {"$ref": "#/$defs/L0"}}}
    started = time.monotonic()
    n = tool_tokens(nested("deep", params))
    assert time.monotonic() - started < 10
    assert n >= json_tokens(defs)


def test_an_unused_definition_is_counted_and_one_that_is_not_json_is_refused() -> None:
    params = {"type": "object", "$defs": {"Address": ADDRESS}, "properties": {"n": {"type": "integer"}}}
    assert tool_tokens(nested("f", params)) >= tool_tokens(
        nested("f", {"type": "object", "properties": {"n": {"type": "integer"}}})
    ) + json_tokens(ADDRESS)
    bad = {"type": "object", "$defs": {"Odd": {"type": "string", "default": {1, 2}}}, "properties": {}}
    with pytest.raises(InvalidInputError) as caught:
        COUNTER.count_messages(MSGS, [nested("f", bad)])
    assert caught.value.field == "tools[0].function.parameters.$defs"


# -- finding 4: Responses-API (flat) function tools --------------------------------------------

PROPS = {f"p{i}": {"type": "string", "description": "A long parameter description " * 5} for i in range(20)}
FLAT = {
    "type": "function",
    "name": "lookup",
    "description": "Look it up",
    "parameters": {"type": "object", "properties": PROPS},
    "strict": False,
}
NESTED = nested("lookup", {"type": "object", "properties": PROPS}, "Look it up")


def test_a_flat_function_tool_is_a_function_tool_and_is_kept() -> None:
    assert is_function_tool(FLAT)
    assert countable_tools(COUNTER, "gpt-4o", [FLAT]) == [FLAT]
    # built-in tools stay built-in, a name alone (Anthropic's typed tools) does not make a function
    assert not is_function_tool({"type": "web_search_preview"})
    assert not is_function_tool({"type": "web_search_20250305", "name": "web_search"})


def test_a_flat_function_tool_counts_like_the_nested_shape() -> None:
    expected = int(COUNTER.count_messages(MSGS, [NESTED]))
    assert int(COUNTER.count_messages(MSGS, [FLAT])) == expected
    assert int(COUNTER.count_messages(MSGS, countable_tools(COUNTER, "gpt-4o", [FLAT]))) == expected
    assert expected > BASE + json_tokens(PROPS) // 2


def test_a_flat_tool_with_defs_counts_like_the_nested_tool_written_out() -> None:
    params = {
        "type": "object",
        "$defs": {"Address": ADDRESS},
        "properties": {"to": {"$ref": "#/$defs/Address"}},
    }
    flat = {"type": "function", "name": "ship", "description": "Ship a parcel.", "parameters": params}
    assert tool_tokens(flat) == tool_tokens(nested("ship", inline(params), "Ship a parcel."))


def test_a_flat_tool_with_a_schema_that_is_not_json_names_its_field() -> None:
    flat = {"type": "function", "name": "f", "parameters": {"properties": {"x": {"default": {1}}}}}
    with pytest.raises(InvalidInputError) as caught:
        COUNTER.count_messages(MSGS, [flat])
    assert caught.value.field == "tools[0].parameters.properties.x"


class RecordingLedger(Ledger):
    reservations: list[Reservation]

    def reserve(self, **kwargs: Any) -> Reservation:
        r = super().reserve(**kwargs)
        self.reservations = [*getattr(self, "reservations", []), r]
        return r


def reserved_input(tmp_path: Path, tools: list[dict[str, Any]] | None) -> int:
    ledger = RecordingLedger(
        "memory://", policy=BudgetPolicy(user_daily_tokens=100_000), spool_path=tmp_path / "spool"
    )
    handler = BudgetCallbackHandler(ledger, model="gpt-4o", user="u", max_output_tokens=10)
    reply = AIMessage("done", usage_metadata={"input_tokens": 9, "output_tokens": 1, "total_tokens": 10})
    model: Any = GenericFakeChatModel(messages=itertools.repeat(reply))
    if tools is not None:
        model = model.bind(tools=tools)
    model.invoke("Look it up", config={"callbacks": [handler]})
    [r] = ledger.reservations
    return int(r.input_tokens)


def test_the_langchain_budget_handler_reserves_a_flat_tool(tmp_path: Path) -> None:
    without = reserved_input(tmp_path / "a", None)
    with_nested = reserved_input(tmp_path / "b", [NESTED])
    with_flat = reserved_input(tmp_path / "c", [FLAT])
    assert with_flat == with_nested > without + 200


# -- finding 6: PDFs with object streams -------------------------------------------------------


def objstm_pdf(n: int, *, plain_pages: int = 0) -> bytes:
    """A PDF 1.5 whose catalog, page tree and ``n`` pages sit in one Flate-compressed object
    stream (ISO 32000 7.5.7), with ``plain_pages`` more pages written as plain objects."""
    total = n + plain_pages
    first_plain = 3 + n
    kids = b" ".join(b"%d 0 R" % (3 + i) for i in range(total))
    objs = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: b"<< /Type /Pages /Count %d /Kids [%s] >>" % (total, kids),
    }
    for i in range(n):
        objs[3 + i] = b"<< /Type/Page /Parent 2 0 R /MediaBox [0 0 612 792] >>"
    nums = sorted(objs)
    body, header = b"", []
    for k in nums:
        header.append(b"%d %d" % (k, len(body)))
        body += objs[k] + b"\n"
    head = b" ".join(header) + b"\n"
    raw = zlib.compress(head + body)
    stm = first_plain + plain_pages
    out = bytearray(b"%PDF-1.5\n%\xe2\xe3\xcf\xd3\n")
    for i in range(plain_pages):
        out += b"%d 0 obj\n<< /Type /Page /Parent 2 0 R >>\nendobj\n" % (first_plain + i)
    out += (
        b"%d 0 obj\n<< /Type /ObjStm /N %d /First %d /Filter /FlateDecode /Length %d >>\nstream\n"
        % (stm, len(nums), len(head), len(raw))
        + raw
        + b"\nendstream\nendobj\n"
    )
    out += b"trailer\n<< /Root 1 0 R /Size %d >>\n%%%%EOF\n" % (stm + 1)
    return bytes(out)


def pdf_block(pdf: bytes) -> dict[str, Any]:
    return {"type": "file", "base64": base64.b64encode(pdf).decode(), "mime_type": "application/pdf"}


def test_pages_in_a_compressed_object_stream_are_counted() -> None:
    assert estimate_block(pdf_block(objstm_pdf(20))).file_tokens == 20 * PDF_PAGE_TOKENS


def test_pages_plain_and_compressed_are_all_counted() -> None:
    assert estimate_block(pdf_block(objstm_pdf(7, plain_pages=3))).file_tokens == 10 * PDF_PAGE_TOKENS
    assert estimate_block({"type": "file", "data": objstm_pdf(5)}).file_tokens == 5 * PDF_PAGE_TOKENS


def test_a_damaged_or_bomb_object_stream_is_skipped_quickly() -> None:
    damaged = objstm_pdf(4).replace(b"stream\n", b"stream\nXX", 1)
    assert estimate_block(pdf_block(damaged)).file_tokens == FILE_TOKENS  # one page: not countable
    squeeze = zlib.compressobj(9)
    bomb_data = b"".join(squeeze.compress(bytes(1 << 20)) for _ in range(96)) + squeeze.flush()  # 96 MiB
    bomb = (
        b"%PDF-1.5\n1 0 obj\n<< /Type /ObjStm /N 1 /First 4 /Filter /FlateDecode >>\nstream\n"
        + bomb_data
        + b"\nendstream\nendobj\n%%EOF\n"
    )
    started = time.monotonic()
    assert estimate_block(pdf_block(bomb)).file_tokens == FILE_TOKENS
    assert time.monotonic() - started < 10


def test_claude_requests_take_a_flat_responses_api_tool_like_the_nested_one() -> None:
    """The Anthropic translation refused the flat shape ('a tool needs a name'), so a Claude
    counter given a tool bound with ChatOpenAI(use_responses_api=True)-style tools raised."""
    from tokenbudget_core.anthropic_format import to_anthropic_tools

    params = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    nested = {
        "type": "function",
        "function": {"name": "weather", "description": "Weather.", "parameters": params},
    }
    flat = {"type": "function", "name": "weather", "description": "Weather.", "parameters": params}
    assert to_anthropic_tools([flat]) == to_anthropic_tools([nested])
    assert to_anthropic_tools([flat])[0]["input_schema"] == params
