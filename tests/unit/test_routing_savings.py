"""What routing saved: the ledger prices a routed call's actual usage on its premium model, the
stores keep it per rollup row, reports, the CLI and the HTTP service show it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from tokenbudget_core import InvalidInputError, Ledger, UnknownModelError, Usage
from tokenbudget_core.cli import cli
from tokenbudget_core.pricing import cost_of, format_usd
from tokenbudget_core.reports import build_report
from tokenbudget_core.routing import TierRouter, current_route, premium_model_of, using_route
from tokenbudget_core.server.app import create_app
from tokenbudget_core.server.dashboard import dashboard_data
from tokenbudget_core.stores.base import Check, CommitRequest

AT = 1_795_000_000.0
SMALL = Usage(input_tokens=2_000, output_tokens=400)


def saved(usage: Usage, model: str, premium: str = "gpt-4o") -> Decimal:
    return cost_of(usage, premium) - cost_of(usage, model)


@pytest.fixture(params=["memory", "sqlite"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'ledger.db'}"
    led = Ledger(url, clock=lambda: AT, spool_path=tmp_path / "spool")
    yield led
    led.close()


def test_a_routed_commit_records_the_saving_on_the_actual_usage_once(ledger: Ledger) -> None:
    r = ledger.reserve(model="gpt-4o", input_tokens=2_000, max_output_tokens=1_000, feature="chat")
    charge = ledger.commit(r, SMALL, model="gpt-4o-mini", premium_model="gpt-4o")
    assert charge.cost_usd == cost_of(SMALL, "gpt-4o-mini")  # priced on the model that answered
    assert charge.routing_saved_usd == saved(SMALL, "gpt-4o-mini")
    again = ledger.commit(r, SMALL, model="gpt-4o-mini", premium_model="gpt-4o")
    assert not again.applied
    t = build_report(ledger, last_days=1).totals
    assert (t.requests, t.routed_requests, t.routing_saved_usd) == (1, 1, saved(SMALL, "gpt-4o-mini"))
    [row] = build_report(ledger, last_days=1).breakdown("model").rows
    assert row.key == "gpt-4o-mini"


def test_a_call_pricier_than_the_premium_model_counts_negative(ledger: Ledger) -> None:
    ledger.record(SMALL, model="gpt-4o", premium_model="gpt-4o-mini")
    ledger.record(SMALL, model="gpt-4.1-mini", premium_model="gpt-4o")
    expected = saved(SMALL, "gpt-4o", "gpt-4o-mini") + saved(SMALL, "gpt-4.1-mini")
    t = build_report(ledger, last_days=1).totals
    assert saved(SMALL, "gpt-4o", "gpt-4o-mini") < 0
    assert (t.routed_requests, t.routing_saved_usd) == (2, expected)


def test_no_saving_when_the_premium_window_could_not_hold_the_call(ledger: Ledger) -> None:
    big = Usage(input_tokens=20_000, output_tokens=100)  # over gpt-3.5-turbo's 16,385 window
    charge = ledger.record(big, model="gpt-4o-mini", premium_model="gpt-3.5-turbo")
    assert charge.routing_saved_usd == 0
    assert build_report(ledger, last_days=1).totals.routed_requests == 1


def test_unrouted_calls_and_cache_hits_record_no_routing(ledger: Ledger) -> None:
    ledger.record(SMALL, model="gpt-4o-mini")
    r = ledger.reserve(model="gpt-4o-mini", input_tokens=10, max_output_tokens=10)
    hit = ledger.settle(r, SMALL, cache_hit=True, premium_model="gpt-4o")
    assert hit is not None
    assert hit.routing_saved_usd is None
    [row] = ledger.store.rollup([ledger.day()])
    assert "routed_requests" not in row.values  # nothing written for calls that were not routed
    t = build_report(ledger, last_days=1).totals
    assert (t.routed_requests, t.routing_saved_usd, t.cache_hits) == (0, 0, 1)


def test_settle_and_commit_many_pass_the_route_on(ledger: Ledger) -> None:
    r1 = ledger.reserve(model="gpt-4o", input_tokens=2_000, max_output_tokens=1_000)
    ledger.settle(r1, SMALL, model="gpt-4o-mini", premium_model="gpt-4o")
    r2 = ledger.reserve(model="gpt-4o", input_tokens=2_000, max_output_tokens=1_000)
    r3 = ledger.reserve(model="gpt-4o", input_tokens=2_000, max_output_tokens=1_000)
    out = ledger.commit_many(
        [
            (r2, SMALL, {"model": "gpt-4.1-mini", "premium_model": "gpt-4o"}),
            (r3, SMALL),
            (r3, SMALL, {"x": 1}),
        ]
    )
    assert isinstance(out[2], InvalidInputError)
    t = build_report(ledger, last_days=1).totals
    assert t.routed_requests == 2
    assert t.routing_saved_usd == saved(SMALL, "gpt-4o-mini") + saved(SMALL, "gpt-4.1-mini")


async def test_async_twins_pass_the_route_on(ledger: Ledger) -> None:
    r = await ledger.areserve(model="gpt-4o", input_tokens=2_000, max_output_tokens=1_000)
    await ledger.acommit(r, SMALL, model="gpt-4o-mini", premium_model="gpt-4o")
    r = await ledger.areserve(model="gpt-4o", input_tokens=2_000, max_output_tokens=1_000)
    await ledger.asettle(r, SMALL, model="gpt-4o-mini", premium_model="gpt-4o")
    assert build_report(ledger, last_days=1).totals.routing_saved_usd == 2 * saved(SMALL, "gpt-4o-mini")


def test_bad_route_arguments_are_named(ledger: Ledger) -> None:
    r = ledger.reserve(model="gpt-4o", input_tokens=10, max_output_tokens=10)
    with pytest.raises(InvalidInputError, match="premium_model"):
        ledger.commit(r, SMALL, premium_model="")
    with pytest.raises(InvalidInputError, match="model"):
        ledger.commit(r, SMALL, model=42)  # type: ignore[arg-type]
    with pytest.raises(UnknownModelError):
        ledger.commit(r, SMALL, premium_model="no-such-model")
    assert ledger.store.rollup([ledger.day()]) == []  # nothing charged by a refused commit


def test_rows_written_before_routing_was_recorded_read_as_zero(ledger: Ledger) -> None:
    ledger.store.commit(
        CommitRequest(
            day=ledger.day(),
            request_id="old",
            charges=[Check(scope="g", metric="nanos", amount=1)],
            rollup_key="chat//gpt-4o",
            rollup={"requests": 1, "cost_nanos": 1},
            now_ms=0,
        )
    )
    report = build_report(ledger, last_days=1)
    assert (report.totals.routed_requests, report.totals.routing_saved_usd) == (0, 0)
    assert report.breakdown("feature").rows[0].routing_saved_usd == 0


def test_the_route_helpers() -> None:
    decision = TierRouter({"small": "gpt-4o-mini", "large": "gpt-4o"}).route("Hi")
    assert premium_model_of(decision) == premium_model_of(decision.as_metadata()) == "gpt-4o"
    assert premium_model_of(None) is None
    assert premium_model_of({"premium_model": ""}) is None
    assert current_route() is None
    with using_route(decision):
        assert current_route() is decision
    assert current_route() is None
    with pytest.raises(InvalidInputError, match="decision"), using_route("gpt-4o"):  # type: ignore[arg-type]
        pass


def test_cli_report_and_http_report_show_the_saving(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    ledger = Ledger(f"sqlite:///{db}", spool_path=tmp_path / "spool")
    ledger.record(SMALL, model="gpt-4o-mini", premium_model="gpt-4o", feature="chat")
    ledger.record(SMALL, model="gpt-4o", feature="chat")
    expected = saved(SMALL, "gpt-4o-mini")

    result = CliRunner().invoke(cli, ["report", "--store", f"sqlite:///{db}", "--days", "1", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["totals"]["routed_requests"], Decimal(data["totals"]["routing_saved_usd"])) == (1, expected)
    [chat] = data["breakdowns"][0]["rows"]
    assert (chat["routed_requests"], Decimal(chat["routing_saved_usd"])) == (1, expected)

    table = CliRunner().invoke(cli, ["report", "--store", f"sqlite:///{db}", "--days", "1", "--by", "model"])
    assert table.exit_code == 0, table.output
    assert "routed requests (saved vs premium)" in table.stdout
    assert f"1 ({format_usd(expected)})" in table.stdout
    assert "hit rate" in table.stdout
    assert "routing" in table.stdout

    with TestClient(create_app(ledger)) as client:
        body = client.get("/usage/report", params={"last_days": 1}).json()
        assert (body["totals"]["routed_requests"], Decimal(body["totals"]["routing_saved_usd"])) == (
            1,
            expected,
        )
        recorded = client.post(
            "/usage/record",
            json={
                "model": "gpt-4o-mini",
                "usage": {"input_tokens": 2_000, "output_tokens": 400},
                "premium_model": "gpt-4o",
                "request_id": "http-1",
            },
        ).json()
        assert Decimal(recorded["routing_saved_usd"]) == expected
    dash = dashboard_data(ledger, last_days=1)
    assert (dash["totals"]["routed_requests"], Decimal(dash["totals"]["routing_saved_usd"])) == (
        2,
        2 * expected,
    )
    mix = {m["model"]: m for m in dash["routing_mix"]}
    assert mix["gpt-4o-mini"]["routed_requests"] == 2
    assert Decimal(mix["gpt-4o-mini"]["routing_saved_usd"]) == 2 * expected
    ledger.close()
