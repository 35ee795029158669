"""``/metrics`` and ``/dashboard/data`` show every feature, model and user's spend: past the top
rows the rest is one "other" series / row, so the parts always add up to the total."""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal

import pytest
from fastapi.testclient import TestClient

from tokenbudget_core.ledger import Ledger
from tokenbudget_core.server import create_app
from tokenbudget_core.usage import Usage

pytestmark = pytest.mark.usefixtures("isolated")

MODELS = (
    *("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "o3", "o4-mini", "gpt-4-turbo"),
    *("o1", "o3-mini", "gpt-3.5-turbo", "claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1", "gpt-5"),
)  # more than the dashboard's top 10
N = 150  # features and users: far past any top-N cut


@pytest.fixture
def ledger() -> Ledger:
    led = Ledger("memory://")
    for i in range(N):
        for j, model in enumerate(MODELS[: 1 + i % len(MODELS)]):
            led.record(
                Usage(input_tokens=1_000 + i, output_tokens=100 + j),
                model=model,
                feature=f"feat-{i:03d}",
                user=f"user-{i:03d}",
            )
    return led


@pytest.fixture
def client(ledger: Ledger) -> Iterator[TestClient]:
    with TestClient(create_app(ledger)) as c:
        yield c


def _samples(text: str, name: str) -> list[tuple[str, Decimal]]:
    found = []
    for line in text.splitlines():
        m = re.fullmatch(rf"{name}\{{(\w+)=\"(.*)\"\}} (\S+)", line)
        if m:
            found.append((m.group(2), Decimal(m.group(3))))
    return found


@pytest.mark.parametrize("dimension", ["feature", "model"])
def test_metrics_spend_series_add_up_to_the_total(client: TestClient, dimension: str) -> None:
    text = client.get("/metrics").text
    (total,) = [
        Decimal(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("tokenbudget_spend_usd_today ")
    ]
    series = _samples(text, f"tokenbudget_spend_usd_today_by_{dimension}")
    assert sum(v for _, v in series) == total
    labels = [label for label, _ in series]
    assert len(labels) == len(set(labels))  # no duplicate series


def test_every_model_has_its_own_metric_series(client: TestClient) -> None:
    text = client.get("/metrics").text
    assert {label for label, _ in _samples(text, "tokenbudget_spend_usd_today_by_model")} == set(MODELS)


def test_dashboard_rows_add_up_to_the_total(client: TestClient) -> None:
    data = client.get("/dashboard/data", params={"last_days": 1}).json()
    totals = data["totals"]
    for name in ("by_feature", "by_model", "top_users"):
        rows = data[name]
        assert sum(Decimal(r["cost_usd"]) for r in rows) == Decimal(totals["cost_usd"]), name
        assert sum(r["requests"] for r in rows) == totals["requests"], name
    other = data["by_feature"][-1]
    assert other["key"] is None
    assert other["omitted"] == N - (len(data["by_feature"]) - 1)
    assert all(r["omitted"] == 0 for r in data["by_feature"][:-1])


def test_routing_mix_shares_are_of_all_calls(client: TestClient) -> None:
    data = client.get("/dashboard/data", params={"last_days": 1}).json()
    mix = data["routing_mix"]
    assert sum(m["requests"] for m in mix) == data["totals"]["requests"]
    assert sum(Decimal(m["share"]) for m in mix) == pytest.approx(Decimal(1), abs=Decimal("1e-5"))
