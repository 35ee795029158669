"""The ledger's fast paths give the same answers as the general ones.

* :func:`~tokenbudget_core.pricing.cost_nanos` (integer arithmetic on cached, scaled rates)
  against ``usd_to_nanos(cost_or_none(...))`` (Decimal), for tiered, cached and overridden prices;
* the memory store's tuple path (used by the ledger) against its contract methods;
* LangChain message conversion reused for plain-text messages.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from langchain_tokenbudget.messages import to_core_message, to_core_messages
from tokenbudget_core.money import usd_to_nanos
from tokenbudget_core.price_overrides import PriceOverride, PriceTable
from tokenbudget_core.pricing import cost_nanos, cost_or_none
from tokenbudget_core.stores.base import Check, CommitRequest, ReserveRequest
from tokenbudget_core.stores.memory import MemoryStore
from tokenbudget_core.usage import Usage

MODELS = ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5", "claude-3-5-haiku-latest", "gemini-2.5-pro"]
TABLE = PriceTable(
    {"acme-7b": PriceOverride(input_mtok="0.0375", output_mtok="0.6", cache_read_mtok="0.00375")}
)


@st.composite
def usages(draw: st.DrawFn) -> Usage:
    inp = draw(st.integers(0, 2_000_000))
    read = draw(st.integers(0, inp))
    write = draw(st.integers(0, inp - read))
    out = draw(st.integers(0, 200_000))
    return Usage(
        input_tokens=inp,
        output_tokens=out,
        cache_read_tokens=read,
        cache_write_tokens=write,
        cache_write_1h_tokens=draw(st.integers(0, write)),
        reasoning_tokens=draw(st.integers(0, out)),
        requests=draw(st.integers(1, 3)),
    )


@settings(max_examples=300, deadline=None)
@given(usage=usages(), model=st.sampled_from([*MODELS, "acme-7b"]), round_up=st.booleans())
def test_cost_nanos_matches_the_decimal_path(usage: Usage, model: str, round_up: bool) -> None:
    usd = cost_or_none(usage, model, prices=TABLE)
    expected = None if usd is None else usd_to_nanos(usd, round_up=round_up)
    got = cost_nanos(
        model,
        usage.input_tokens,
        usage.output_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        cache_write_1h_tokens=usage.cache_write_1h_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        requests=usage.requests,
        round_up=round_up,
        prices=TABLE,
    )
    assert got == expected


def test_cost_nanos_rounds_half_to_even_and_up() -> None:
    table = PriceTable({"half": PriceOverride(input_mtok="0.0005", output_mtok="0.0015")})
    # 1 input token at $0.0005/Mtok = 0.5 nano-USD: half to even gives 0, up gives 1.
    assert cost_nanos("half", 1, 0, prices=table) == 0 == usd_to_nanos(Decimal("0.0000000005"))
    assert cost_nanos("half", 1, 0, prices=table, round_up=True) == 1
    # 1 output token: 1.5 nano-USD -> 2 either way.
    assert cost_nanos("half", 0, 1, prices=table) == 2


def test_memory_tuple_path_and_contract_methods_agree() -> None:
    fast, slow = MemoryStore(), MemoryStore()
    checks = (
        Check(scope="u/a/b", metric="tokens", amount=10, limit=25),
        Check(scope="g", metric="nanos", amount=7, limit=None),
    )
    for i in range(3):  # the third reservation does not fit the token limit
        a = fast.reserve_checks("d", f"r{i}", checks, 0, 1_000)
        b = slow.reserve(ReserveRequest(day="d", request_id=f"r{i}", checks=checks, now_ms=0, lease_ms=1_000))
        if isinstance(a, tuple):
            assert b.ok
            assert b.usage == a
        else:
            assert a == b
    assert not b.ok
    assert b.failed == checks[0]
    assert b.used == 20
    dup = fast.reserve_checks("d", "r0", checks, 0, 1_000)
    assert not isinstance(dup, tuple)
    assert dup.duplicate
    assert dup.state == "reserved"
    for _ in range(2):  # a second commit changes nothing
        applied, previous, spent = fast.commit_amounts(
            "d", "r0", [("u/a/b", "tokens", 4), ("g", "nanos", 3)], "f/u/m", {"requests": 1}, "f"
        )
        outcome = slow.commit(
            CommitRequest(
                day="d",
                request_id="r0",
                charges=[
                    Check(scope="u/a/b", metric="tokens", amount=4),
                    Check(scope="g", metric="nanos", amount=3),
                ],
                rollup_key="f/u/m",
                rollup={"requests": 1},
                now_ms=0,
                call_cost_key="f",
            )
        )
        assert (applied, previous, spent) == (outcome.applied, outcome.previous, outcome.spent)
    for store in (fast, slow):
        assert store.totals("d", [("u/a/b", "tokens"), ("g", "nanos")], 0) == {
            ("u/a/b", "tokens"): (4, 10),
            ("g", "nanos"): (3, 7),
        }
        assert store.call_costs("d", "f") == [0]
        assert [r.values for r in store.rollup(["d"])] == [{"requests": 1}]


@pytest.mark.parametrize(
    "message",
    [SystemMessage("be terse"), HumanMessage("hi", name="ann"), AIMessage("hello")],
)
def test_plain_messages_convert_once_and_alike(message: SystemMessage | HumanMessage | AIMessage) -> None:
    first, second = to_core_messages([message]), to_core_messages([message.model_copy()])
    assert first == second == [to_core_message(message)]
    assert first[0] is second[0]  # reused, not converted again


def test_messages_with_tool_calls_are_converted_each_time() -> None:
    call = AIMessage("", tool_calls=[{"id": "c1", "name": "lookup", "args": {"q": "x"}}])
    converted = to_core_messages([call])[0]
    assert converted.tool_calls[0].name == "lookup"
    assert to_core_messages([call])[0] is not converted
