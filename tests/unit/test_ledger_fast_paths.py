"""The ledger's fast paths give the same answers as the general ones.

* :func:`~tokenbudget_core.pricing.cost_nanos` (integer arithmetic on cached, scaled rates)
  against ``usd_to_nanos(cost_or_none(...))`` (Decimal), for tiered, cached and overridden prices;
* the memory store's tuple path (used by the ledger) against its contract methods;
* LangChain message conversion reused for plain-text messages;
* the ledger's lane on the memory store and on Redis (one script call per operation, from
  tuples) against the ledger driving the same kind of store through its contract methods, and
  the positional constructors it builds with.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import uuid
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, Generation, LLMResult

from langchain_tokenbudget import BudgetCallbackHandler
from langchain_tokenbudget.budget_callback import (
    ROUTE_KEY,
    _plain_reply,
    _Run,
    cache_hit_of,
    reply_text,
    reported,
    route_of,
)
from langchain_tokenbudget.llm_cache import CACHE_HIT_KEY
from langchain_tokenbudget.messages import to_core_message, to_core_messages
from tokenbudget_core._frozen import positional_maker
from tokenbudget_core.attribution import attribute
from tokenbudget_core.budgets import BudgetPolicy, FeatureBudget, Ladder
from tokenbudget_core.counting import TokenCount, TokenCounter
from tokenbudget_core.errors import InvalidInputError, UnknownModelError
from tokenbudget_core.ledger import Ledger, Reservation
from tokenbudget_core.messages import Message
from tokenbudget_core.money import usd_to_nanos
from tokenbudget_core.price_overrides import PriceOverride, PriceTable
from tokenbudget_core.pricing import cost_nanos, cost_or_none
from tokenbudget_core.registry import ModelRegistry
from tokenbudget_core.routing import premium_model_of
from tokenbudget_core.stores.base import Check, CommitRequest, ReserveRequest
from tokenbudget_core.stores.memory import MemoryStore
from tokenbudget_core.stores.redis import RedisStore
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
    keys = (("u/a/b", "tokens"), ("g", "nanos"))
    for i in range(3):  # the third reservation does not fit the token limit
        a = fast.reserve_cells("d", f"r{i}", keys, fast.cells("d", keys), (10, 7), (25, None), 0, 1_000)
        b = slow.reserve(ReserveRequest(day="d", request_id=f"r{i}", checks=checks, now_ms=0, lease_ms=1_000))
        if isinstance(a, tuple):
            assert b.ok
            assert b.usage == a
        else:
            assert a == b
    assert not b.ok
    assert b.failed == checks[0]
    assert b.used == 20
    dup = fast.reserve_cells("d", "r0", keys, fast.cells("d", keys), (10, 7), (25, None), 0, 1_000)
    assert not isinstance(dup, tuple)
    assert dup.duplicate
    assert dup.state == "reserved"
    for _ in range(2):  # a second commit changes nothing
        applied, previous, spent = fast.commit_cells(
            "d", "r0", fast.cells("d", keys), (4, 3), "f/u/m", {"requests": 1}, "f"
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
    # A commit on cells looked up apart from the reservation's gives back what it held and
    # charges its own.
    assert isinstance(
        fast.reserve_cells("d", "r9", keys, fast.cells("d", keys), (1, 1), (None, None), 0, 1_000), tuple
    )
    other = fast.cells("d", (("u/a/b", "tokens"), ("g", "nanos")))  # the same cells, another list
    assert fast.commit_cells("d", "r9", other, (2, 2), "f/u/m", {"requests": 1}, None)[2] == (6, 5)
    assert fast.totals("d", list(keys), 0) == {("u/a/b", "tokens"): (6, 10), ("g", "nanos"): (5, 7)}


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


@dataclasses.dataclass(slots=True)
class _Mutable:
    x: int


def test_positional_maker_builds_the_same_frozen_objects() -> None:
    make = positional_maker(Reservation)
    values = {
        "request_id": "r1", "day": "2026-11-23", "model": "gpt-4o", "feature": "chat", "user": None,
        "conversation": "c", "overhead": None, "input_tokens": 3, "max_output_tokens": 5,
        "reserved_usd": Decimal("0.01"), "step": "normal",
        "unchecked": False, "held": ((("g", "nanos", None),), (1,)), "priced_minute": 29_000_000,
    }  # fmt: skip
    built = make(*values.values())
    assert built == Reservation(**values)
    assert repr(built) == repr(Reservation(**values))
    assert built.checks == (Check(scope="g", metric="nanos", amount=1, limit=None),)
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.day = "x"  # type: ignore[misc]
    assert positional_maker(Check)("g", "nanos", 1, 2) == Check(scope="g", metric="nanos", amount=1, limit=2)


@pytest.mark.parametrize("cls", [_Mutable, Message, object])
def test_positional_maker_refuses_what_it_cannot_build(cls: type) -> None:
    with pytest.raises(TypeError):  # not frozen; a field __init__ does not set (Message._hash); no dataclass
        positional_maker(cls)


@given(usage=usages(), estimated=st.booleans())
def test_positional_maker_validates_like_the_class(usage: Usage, estimated: bool) -> None:
    make = positional_maker(Usage)
    values = [getattr(usage, f.name) for f in dataclasses.fields(Usage)][:-1]
    assert make(*values, estimated) == dataclasses.replace(usage, estimated=estimated)
    with pytest.raises(InvalidInputError):
        make(*values[:-1], -1, estimated)  # requests < 0: refused by Usage.__post_init__


class _GeneralMemoryStore(MemoryStore):
    """The memory store seen as any store: the ledger drives its contract methods, no fast path."""


class _GeneralRedisStore(RedisStore):
    """The Redis store seen as any store: the ledger sends its contract requests, no lane."""


Op = tuple[Any, ...]


@st.composite
def ledger_ops(draw: st.DrawFn) -> list[Op]:
    ops: list[Op] = []
    for _ in range(draw(st.integers(1, 25))):
        kind = draw(st.sampled_from(["reserve", "reserve", "commit", "settle", "release", "tick"]))
        if kind == "reserve":
            ops.append(
                (
                    kind,
                    draw(st.sampled_from(["gpt-4o-mini", "gpt-4o", "claude-sonnet-4-5", "acme-free"])),
                    draw(st.integers(0, 30_000)),
                    draw(st.one_of(st.none(), st.integers(0, 5_000))),
                    draw(st.sampled_from([None, "chat", "search"])),
                    draw(st.sampled_from([None, "u-1", "u/2"])),
                    draw(st.sampled_from([None, "conv-1"])),
                    draw(st.sampled_from([f"op-{len(ops)}", "r1", "r2"])),  # a repeated id is a duplicate
                    # inside an attribute() block: its ids win over the arguments (or fill them)
                    draw(
                        st.sampled_from([None, {"user": "u-ctx"}, {"feature": "search", "conversation": "c"}])
                    ),
                )
            )
        elif kind == "tick":
            ops.append((kind, draw(st.integers(0, 200_000))))
        else:
            usage = st.builds(Usage, input_tokens=st.integers(0, 40_000), output_tokens=st.integers(0, 6_000))
            reported = draw(st.one_of(st.none(), usage))
            ops.append((kind, draw(st.integers(0, 30)), reported, draw(st.booleans()), draw(st.booleans())))
    return ops


def _outcome(fn: Any) -> Any:
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - compared between the two ledgers
        return (type(e).__name__, str(e), getattr(e, "step", None))


@pytest.fixture(params=["memory", "redis"])
def store_pair(request: pytest.FixtureRequest) -> Any:
    """Makes the two stores of one example: one the ledger takes its lane on, one it drives
    through the contract (on Redis: two namespaces of one server, fresh per example)."""
    if request.param == "memory":
        return lambda: (MemoryStore(), _GeneralMemoryStore())
    url = request.getfixturevalue("redis_url")

    def redis_pair() -> tuple[RedisStore, RedisStore]:
        space = uuid.uuid4().hex
        lane = RedisStore(url, namespace=f"lane-{space}")
        return lane, _GeneralRedisStore(url, namespace=f"general-{space}")

    return redis_pair


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=ledger_ops())
def test_fast_paths_behave_like_the_general_path(ops: list[Op], store_pair: Any) -> None:
    """Reserve, commit, settle and release on the ledger's lane (memory store and Redis) give the
    same reservations, charges, refusals, alerts, balances and attribution rows as the general path."""
    policy = BudgetPolicy(
        daily_usd="0.5",
        user_daily_tokens=60_000,
        features={"chat": FeatureBudget(user_daily_usd="0.05", max_output_tokens_per_call=4_000)},
        ladder=Ladder(cheaper_tier=0.2, smaller_context=0.3, cache_only=0.4, soft_refusal=0.6),
        alert_thresholds=(0.1, 0.5, 1.0),
    )
    prices = PriceTable({"acme-free": PriceOverride(input_mtok="0", output_mtok="0")})
    registry = ModelRegistry()
    registry.register("acme-free", provider="acme", context_window=32_000, max_output_tokens=4_096)
    now = [1_763_856_000.0]
    alerts: dict[str, list[Any]] = {"fast": [], "general": []}
    stores = store_pair()
    ledgers = {
        name: Ledger(
            store,
            policy=policy,
            prices=prices,
            registry=registry,
            clock=lambda: now[0],
            lease_seconds=60,
            alerts=[alerts[name].append],
        )
        for name, store in zip(("fast", "general"), stores, strict=True)
    }
    assert (ledgers["fast"]._memory or ledgers["fast"]._keyed) is not None
    assert ledgers["general"]._memory is ledgers["general"]._keyed is None
    reservations: dict[str, list[Any]] = {"fast": [], "general": []}
    for op in ops:
        if op[0] == "tick":
            now[0] += op[1] / 1000
            continue
        results = {}
        for name, led in ledgers.items():
            mine = reservations[name]
            if op[0] == "reserve":
                _, model, inp, out, feature, user, conversation, rid, block = op
                with attribute(**block) if block else contextlib.nullcontext():
                    result = _outcome(
                        lambda led=led: led.reserve(
                            model=model, input_tokens=inp, max_output_tokens=out, feature=feature, user=user,
                            conversation=conversation, request_id=rid,
                        )
                    )  # fmt: skip
                if isinstance(result, Reservation):
                    mine.append(result)
            elif not mine:
                continue
            else:
                _, i, reported, failed, routed = op
                r = mine[i % len(mine)]
                premium = "gpt-4o" if routed else None
                if op[0] == "commit":
                    result = _outcome(
                        lambda led=led, r=r: led.commit(r, reported or Usage(), premium_model=premium)
                    )
                elif op[0] == "settle":
                    result = _outcome(
                        lambda led=led, r=r: led.settle(
                            r, reported, failed=failed, reply_text="" if failed else "some reply",
                            premium_model=premium,
                        )
                    )  # fmt: skip
                else:
                    result = _outcome(lambda led=led, r=r: led.release(r))
            results[name] = result
        assert results.get("fast") == results.get("general"), op
        result = results.get("fast")
        event(f"{op[0]}: {result[2] or result[0] if isinstance(result, tuple) else type(result).__name__}")
    fast, general = ledgers["fast"], ledgers["general"]
    day = fast.day()
    assert sorted(map(repr, fast.store.rollup([day]))) == sorted(map(repr, general.store.rollup([day])))
    scopes = [(c.scope, c.metric) for r in reservations["fast"] for c in r.checks]
    now_ms = int(now[0] * 1000)
    assert fast.store.totals(day, scopes, now_ms) == general.store.totals(day, scopes, now_ms)
    assert alerts["fast"] == alerts["general"]
    event(f"alerts: {min(len(alerts['fast']), 3)}")
    assert fast.state(feature="chat", user="u-1") == general.state(feature="chat", user="u-1")
    for led in ledgers.values():
        led.close()


def test_cost_nanos_sees_price_and_registry_changes_at_once() -> None:
    """Resolved prices are remembered per model, registry and table, never past a change to them."""
    table, registry = PriceTable(), ModelRegistry()
    before = cost_nanos("gpt-4o", 1_000_000, 0, registry=registry, prices=table)
    assert before == usd_to_nanos(Decimal("2.5"))
    table.register("gpt-4o", PriceOverride(input_mtok="1", output_mtok="2"))
    assert cost_nanos("gpt-4o", 1_000_000, 0, registry=registry, prices=table) == usd_to_nanos(Decimal(1))
    table.unregister("gpt-4o")
    assert cost_nanos("gpt-4o", 1_000_000, 0, registry=registry, prices=table) == before
    with pytest.raises(UnknownModelError):
        cost_nanos("acme-9b", 1, 0, registry=registry, prices=table)
    registry.register(
        "acme-9b", provider="openai", context_window=8_000, max_output_tokens=1_000, canonical="gpt-4o"
    )
    assert cost_nanos("acme-9b", 1_000_000, 0, registry=registry, prices=table) == before  # priced as gpt-4o
    other = PriceTable({"gpt-4o": PriceOverride(input_mtok="3", output_mtok="4")})
    assert cost_nanos("gpt-4o", 1_000_000, 0, registry=registry, prices=other) == usd_to_nanos(Decimal(3))
    assert cost_nanos("gpt-4o", 1_000_000, 0, registry=registry, prices=table) == before


@st.composite
def llm_results(draw: st.DrawFn) -> LLMResult:
    def reply() -> Generation:
        if draw(st.integers(0, 9)) == 0:
            return Generation(text="completion text")
        usage = draw(
            st.sampled_from(
                [
                    None,
                    {"input_tokens": 40, "output_tokens": 8, "total_tokens": 48},
                    {"input_tokens": 40, "output_tokens": 8, "total_tokens": 48, "total_cost": 0},
                    {"input_tokens": 0, "output_tokens": 3, "total_tokens": 3},
                ]
            )
        )
        meta: dict[str, Any] = {"model_name": "gpt-4o-mini"}
        if draw(st.booleans()):
            meta[CACHE_HIT_KEY] = draw(st.sampled_from([{"saved_usd": "0.01", "recorded": True}, "odd"]))
        if draw(st.booleans()):
            meta[ROUTE_KEY] = draw(st.sampled_from([{"premium_model": "gpt-4o"}, None]))
        cls = draw(st.sampled_from([AIMessage, AIMessageChunk]))
        message = cls(content="the reply", usage_metadata=usage, response_metadata=meta)
        return ChatGeneration(message=message)

    if draw(st.booleans()):  # the common case: one chat reply with plain usage
        usage = {"input_tokens": 40, "output_tokens": 8, "total_tokens": 48}
        message = AIMessage(
            content="hi", usage_metadata=usage, response_metadata={"model_name": "gpt-4o-mini"}
        )
        return LLMResult(generations=[[ChatGeneration(message=message)]])
    lists = draw(st.integers(1, 2))
    return LLMResult(generations=[[reply() for _ in range(draw(st.integers(1, 2)))] for _ in range(lists)])


@settings(max_examples=200, deadline=None)
@given(response=llm_results(), routed=st.booleans(), failed=st.booleans())
def test_budget_handler_reads_a_plain_reply_like_any_other(
    response: LLMResult, routed: bool, failed: bool
) -> None:
    """The handler's one-reply shortcut closes a run exactly as the general reading would."""
    handler = BudgetCallbackHandler(Ledger("memory://"), model="gpt-4o-mini")
    reservation = handler.ledger.reserve(model="gpt-4o-mini", input_tokens=10)
    run_id = uuid.uuid4()
    premium = "gpt-4.1" if routed else None
    counter = TokenCounter.for_model("gpt-4o-mini")
    handler._runs[run_id] = _Run(reservation=reservation, counter=counter, premium_model=premium)
    settle = handler._settle(run_id, response, failed=failed)
    generations = [g for gs in response.generations for g in gs]
    chat = [g.message for g in generations if isinstance(g, ChatGeneration)]
    replies = chat + [AIMessage(g.text) for g in generations if not isinstance(g, ChatGeneration)]
    event("one plain reply" if _plain_reply(response) is not None else "general reading")
    usage = reported(replies)
    assert settle is not None
    assert settle.usage == usage
    assert settle.text == ("" if usage is not None else reply_text(replies))
    assert settle.hit == cache_hit_of(replies)
    assert settle.premium_model == (premium or premium_model_of(route_of(replies)))
    assert (settle.reservation, settle.failed) == (reservation, failed)


class _GeneralHandler(BudgetCallbackHandler):
    """The budget handler with its one-pass paths turned off: every call is read in full."""

    def _start_plain(self, *args: Any) -> bool:
        return False

    def _end_plain(self, *args: Any) -> bool:
        return False


_PLAIN_PROMPT = [SystemMessage("You are terse."), HumanMessage("What is a token budget?")]
_TOOL_PROMPT = [
    HumanMessage("Weather in Paris?"),
    AIMessage("", tool_calls=[{"name": "weather", "args": {"city": "Paris"}, "id": "call_1"}]),
    ToolMessage("18C, sunny", tool_call_id="call_1"),
]
_BLOCK_PROMPT = [
    HumanMessage([{"type": "text", "text": "A long shared context.", "cache_control": {"type": "ephemeral"}}])
]
_RUN_IDS = [uuid.UUID(int=1), uuid.UUID(int=2)]


@st.composite
def lc_calls(draw: st.DrawFn) -> list[dict[str, Any]]:
    return [
        {
            "how": draw(st.sampled_from(["invoke", "invoke", "stream", "generate"])),
            "prompt": draw(st.sampled_from([_PLAIN_PROMPT, _PLAIN_PROMPT[1:], _TOOL_PROMPT, _BLOCK_PROMPT])),
            "metadata": draw(
                st.sampled_from(
                    [{}, {"feature": "chat", "user": "u-1"}, {"user_id": "u-2", "thread_id": "t-1"}]
                )
            ),
            "tags": draw(st.sampled_from([[], ["user:u-3"]])),
            "max_tokens": draw(st.sampled_from([None, 50, 400])),
            "run_id": draw(st.sampled_from([None, None, *_RUN_IDS])),  # a reused run id
            "reported": draw(st.booleans()),
        }
        for _ in range(draw(st.integers(1, 12)))
    ]


def _lc_outcome(handler: BudgetCallbackHandler, call: dict[str, Any]) -> Any:
    usage = {"input_tokens": 40, "output_tokens": 8, "total_tokens": 48} if call["reported"] else None
    reply = AIMessage(
        "Sure, here is the answer.", usage_metadata=usage, response_metadata={"model_name": "gpt-4o-mini"}
    )
    model = GenericFakeChatModel(messages=itertools.repeat(reply))
    config: Any = {"callbacks": [handler], "metadata": call["metadata"], "tags": call["tags"]}
    if call["run_id"] is not None:
        config["run_id"] = call["run_id"]
    options = {} if call["max_tokens"] is None else {"max_tokens": call["max_tokens"]}
    try:
        if call["how"] == "invoke":
            return model.invoke(call["prompt"], config=config, **options).content
        if call["how"] == "stream":
            return "".join(str(c.content) for c in model.stream(call["prompt"], config=config, **options))
        result = model.generate(
            [call["prompt"]] * 2, callbacks=[handler], metadata=call["metadata"], **options
        )
        return [g[0].text for g in result.generations]
    except Exception as e:  # noqa: BLE001 - compared between the two handlers
        return (type(e).__name__, str(e))


@settings(max_examples=60, deadline=None)
@given(calls=lc_calls())
def test_budget_handler_one_pass_calls_charge_like_the_general_path(calls: list[dict[str, Any]]) -> None:
    """The handler's one-pass start and end (plain prompts, plain replies) reserve, refuse and
    charge exactly what its general reading does, on any mix of call shapes, payers, reused run
    ids and refusals."""
    policy = BudgetPolicy(
        user_daily_tokens=3_000,
        features={"chat": FeatureBudget(user_daily_usd="0.0004", max_output_tokens_per_call=400)},
        ladder=Ladder(cheaper_tier=0.3, soft_refusal=0.9),
    )
    handlers = {
        "one_pass": BudgetCallbackHandler(Ledger("memory://", policy=policy), model="gpt-4o-mini"),
        "general": _GeneralHandler(Ledger("memory://", policy=policy), model="gpt-4o-mini"),
    }
    for call in calls:
        outcomes = {name: _lc_outcome(h, call) for name, h in handlers.items()}
        assert outcomes["one_pass"] == outcomes["general"], call
        event(str(outcomes["one_pass"][0]) if isinstance(outcomes["one_pass"], tuple) else "answered")
    fast, general = (h.ledger for h in handlers.values())
    day = fast.day()
    assert sorted(map(repr, fast.store.rollup([day]))) == sorted(map(repr, general.store.rollup([day])))
    assert fast.store._bal == general.store._bal  # type: ignore[attr-defined]
    assert handlers["one_pass"]._runs == handlers["general"]._runs == {}


@pytest.mark.parametrize("exact", [True, False])
def test_token_count_maker_builds_what_the_class_builds(exact: bool) -> None:
    make = TokenCount.maker(model="gpt-4o", method="tiktoken", encoding="o200k_base")
    built, expected = (
        make(42, exact),
        TokenCount(42, exact=exact, model="gpt-4o", method="tiktoken", encoding="o200k_base"),
    )
    assert (built, repr(built), built.as_dict()) == (expected, repr(expected), expected.as_dict())
    assert type(built) is TokenCount
    built.exact = not exact  # each count is its own object
    assert make(42, exact).exact is exact
