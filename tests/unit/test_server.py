"""The HTTP service, endpoint by endpoint, through FastAPI's TestClient (in process, no sockets).

Expected figures come from the core itself (``TokenCounter``, ``cost_of``, ``build_report``,
``Ledger.state``) on the same ledger, so the service is checked to translate, not to compute.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from tokenbudget_core import TokenCounter, Usage, cost_of
from tokenbudget_core.budgets import BudgetPolicy, FeatureBudget
from tokenbudget_core.cli import EXIT_BAD_INPUT, cli
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.money import decimal_text
from tokenbudget_core.reports import build_report
from tokenbudget_core.server import create_app

pytestmark = pytest.mark.usefixtures("isolated")

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
AT = datetime(2026, 11, 18, 12, tzinfo=UTC).timestamp()
DAY = "2026-11-18"


@pytest.fixture
def ledger() -> Ledger:
    policy = BudgetPolicy(
        daily_usd=Decimal("1"),
        features={"support": FeatureBudget(user_daily_usd=Decimal("0.02"), feature_daily_usd=Decimal("0.5"))},
    )
    return Ledger("memory://", policy=policy, clock=lambda: AT)


@pytest.fixture
def client(ledger: Ledger) -> Iterator[TestClient]:
    with TestClient(create_app(ledger, token=TOKEN, max_body_bytes=16_384), headers=AUTH) as c:
        yield c


def _reserve(client: TestClient, **body: Any) -> dict[str, Any]:
    body = {"model": "gpt-4o", "input_tokens": 1_000, "max_output_tokens": 500} | body
    response = client.post("/budget/reserve", json=body)
    assert response.status_code == 201, response.text
    reservation: dict[str, Any] = response.json()
    return reservation


def _headroom(client: TestClient, budget: str, **params: str) -> Decimal:
    rows = client.get("/budgets", params=params).json()["budgets"]
    return Decimal(next(r["headroom"] for r in rows if r["budget"] == budget))


# -- tokens, prompts, prices ----------------------------------------------------------------------


def test_count_tokens_of_text_and_of_a_chat_request(client: TestClient) -> None:
    counter = TokenCounter.for_model("gpt-4o")
    text = client.post("/tokens/count", json={"model": "gpt-4o", "text": "Hello, world!"}).json()
    assert text == counter.count("Hello, world!").as_dict()
    messages = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "How many tokens?"}]
    chat = client.post("/tokens/count", json={"model": "gpt-4o", "messages": messages}).json()
    assert chat["tokens"] == counter.count_messages(messages)
    assert chat["exact"] is True


def test_count_needs_exactly_one_of_text_and_messages(client: TestClient) -> None:
    for body in ({"model": "gpt-4o"}, {"text": "a", "messages": []}):
        response = client.post("/tokens/count", json=body)
        assert response.status_code == 422
        assert response.json()["field"] == "text"


def test_a_malformed_message_is_422_naming_it(client: TestClient) -> None:
    response = client.post(
        "/tokens/count", json={"messages": [{"role": "user", "content": "hi"}, {"content": "x"}]}
    )
    assert response.status_code == 422
    assert response.json()["field"].startswith("messages[1]")


def test_unknown_model_is_422_with_close_matches(client: TestClient) -> None:
    response = client.post("/tokens/count", json={"model": "gpt-4oo", "text": "hi"})
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "unknown_model"
    assert body["field"] == "model"
    assert "gpt-4o" in body["suggestions"]


def test_truncate_keeps_within_budget(client: TestClient) -> None:
    text = "The cat sat. The dog ran after it all day long. " * 20
    body = client.post("/tokens/truncate", json={"text": text, "max_tokens": 12, "strategy": "smart"}).json()
    assert body["truncated"] is True
    assert body["tokens_after"] <= 12
    assert TokenCounter.for_model("gpt-4o").count(body["text"]) == body["tokens_after"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"text": "a", "max_tokens": -1}, "body.max_tokens"),
        ({"text": "a", "max_tokens": True}, "body.max_tokens"),
        ({"text": "a", "max_tokens": 1.5}, "body.max_tokens"),
        ({"text": "a", "max_tokens": 5, "strategy": "middle"}, "body.strategy"),
        ({"text": "a", "max_tokens": 5, "stratgey": "smart"}, "body.stratgey"),
        ({"max_tokens": 5}, "body.text"),
    ],
)
def test_schema_violations_are_422_naming_the_field(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    response = client.post("/tokens/truncate", json=body)
    assert response.status_code == 422
    assert response.json()["field"] == field
    assert response.json()["error"] == "validation_error"


def test_malformed_json_is_422(client: TestClient) -> None:
    response = client.post(
        "/tokens/truncate", content=b'{"text": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["field"].startswith("body")


def test_prompt_build_fits_and_overflow_is_422_with_figures(client: TestClient) -> None:
    body = {
        "model": "gpt-4o",
        "max_tokens": 300,
        "reserve_output": 50,
        "system": "Answer from the context.",
        "context": ["Paris is the capital of France. " * 100],
        "history": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
        "user": "What is the capital of France?",
    }
    built = client.post("/prompt/build", json=body).json()
    assert built["tokens"] <= built["budget"] == 250
    assert built["messages"][-1] == {"role": "user", "content": "What is the capital of France?"}
    assert built["documents_truncated"] == 1
    overflow = client.post("/prompt/build", json=body | {"user": "word " * 400})
    assert overflow.status_code == 422
    assert overflow.json()["error"] == "context_overflow"
    assert overflow.json()["required"] > overflow.json()["limit"] == 250


def test_cost_estimate_is_the_core_price(client: TestClient) -> None:
    body = {"model": "gpt-4o", "input_tokens": 1_200, "output_tokens": 300, "cache_read_tokens": 1_000}
    priced = client.post("/cost/estimate", json=body).json()
    usage = Usage(input_tokens=1_200, output_tokens=300, cache_read_tokens=1_000)
    assert Decimal(priced["total"]) == cost_of(usage, "gpt-4o")
    bad = client.post("/cost/estimate", json=body | {"cache_read_tokens": 5_000})
    assert bad.status_code == 422
    assert bad.json()["field"] == "cache_read_tokens"  # the body's own (flat) field


# -- reserve, commit, release, record -------------------------------------------------------------


def test_reserve_then_commit_is_idempotent(client: TestClient, ledger: Ledger) -> None:
    r = _reserve(client, feature="support", user="u1", request_id="req-1")
    assert r["day"] == DAY
    assert r["step"] == "normal"
    assert Decimal(r["reserved_usd"]) > 0
    body = {"reservation": r, "usage": {"input_tokens": 1_000, "output_tokens": 100}}  # sent back as is
    first = client.post("/budget/commit", json=body).json()
    again = client.post("/budget/commit", json=body).json()
    assert first["applied"] is True
    assert again["applied"] is False
    bigger = {**body, "usage": {"input_tokens": 99_999, "output_tokens": 100}}  # a retry with other figures
    repeat = client.post("/budget/commit", json=bigger).json()
    assert (again["cost_usd"], repeat["applied"], repeat["cost_usd"]) == (
        None,
        False,
        None,
    )  # nothing charged
    assert Decimal(first["cost_usd"]) == cost_of(Usage(input_tokens=1_000, output_tokens=100), "gpt-4o")
    assert build_report(ledger, day=DAY).totals.requests == 1


def test_reserve_is_idempotent_per_request_id(client: TestClient) -> None:
    before = _headroom(client, "feature_daily_usd", feature="support")
    a = _reserve(client, feature="support", user="u1", request_id="same")
    b = _reserve(client, feature="support", user="u1", request_id="same")
    assert a == b
    assert before - _headroom(client, "feature_daily_usd", feature="support") == Decimal(a["reserved_usd"])


def test_a_refused_reservation_is_429_with_figures(client: TestClient) -> None:
    response = client.post(
        "/budget/reserve",
        json={
            "model": "gpt-4o",
            "input_tokens": 5_000,
            "max_output_tokens": 1_000,
            "feature": "support",
            "user": "u1",
        },
    )
    assert response.status_code == 429
    body = response.json()
    assert body["budget"] == "user_daily_usd"
    assert body["limit"] == "0.02"
    assert Decimal(body["requested"]) > Decimal(body["limit"])
    assert body["scope"] == "feature=support user=u1"


def test_check_answers_without_holding_budget(client: TestClient) -> None:
    before = _headroom(client, "daily_usd")
    ok = client.post("/budget/check", json={"model": "gpt-4o", "input_tokens": 100, "max_output_tokens": 100})
    assert ok.json()["allowed"] is True
    too_big = {
        "model": "gpt-4o",
        "input_tokens": 5_000,
        "max_output_tokens": 1_000,
        "feature": "support",
        "user": "u",
    }
    refused = client.post("/budget/check", json=too_big)
    assert refused.status_code == 200
    assert refused.json()["allowed"] is False
    assert refused.json()["budget"] == "user_daily_usd"
    assert _headroom(client, "daily_usd") == before


def test_release_gives_the_reservation_back_once(client: TestClient) -> None:
    before = _headroom(client, "daily_usd")
    r = _reserve(client)
    assert _headroom(client, "daily_usd") < before
    ident = {k: r[k] for k in ("request_id", "day", "model")}
    assert client.post("/budget/release", json={"reservation": ident}).json()["released"] is True
    assert client.post("/budget/release", json={"reservation": ident}).json()["released"] is False
    assert _headroom(client, "daily_usd") == before


def test_a_reservation_with_a_bad_day_is_422(client: TestClient) -> None:
    response = client.post(
        "/budget/release", json={"reservation": {"request_id": "x", "day": "18/11", "model": "gpt-4o"}}
    )
    assert response.status_code == 422
    assert response.json()["field"] == "body.reservation.day"


def test_recorded_usage_shows_in_the_report(client: TestClient, ledger: Ledger) -> None:
    calls = [
        ("support", "alice", "gpt-4o", 2_000, 300),
        ("support", "bob", "gpt-4o-mini", 1_000, 100),
        ("search", "alice", "gpt-4o-mini", 400, 40),
    ]
    for i, (feature, user, model, i_tok, o_tok) in enumerate(calls):
        body = {
            "model": model,
            "usage": {"input_tokens": i_tok, "output_tokens": o_tok},
            "feature": feature,
            "user": user,
            "request_id": f"r{i}",
        }
        assert client.post("/usage/record", json=body).json()["applied"] is True
    assert client.post("/usage/record", json=body).json()["applied"] is False  # same request id
    report = client.get("/usage/report", params={"day": DAY}).json()
    assert report == json.loads(json.dumps(build_report(ledger, day=DAY).as_dict()))
    day = report["per_day"][0]
    assert day["active_users"] == 2
    assert day["requests"] == 3
    total = sum((cost_of(Usage(input_tokens=i, output_tokens=o), m) for _, _, m, i, o in calls), Decimal(0))
    assert Decimal(day["cost_per_active_user_usd"]) == (total / 2).quantize(Decimal("1e-9"))
    by_user = client.get("/usage/report", params={"day": DAY, "by": "user", "top": 1}).json()["breakdowns"]
    assert [b["dimension"] for b in by_user] == ["user"]
    assert by_user[0]["rows"][0]["key"] == "alice"
    assert client.get("/usage/report", params={"day": "yesterday"}).json()["field"] == "day"


def test_recorded_usage_is_charged_to_the_day_it_happened(client: TestClient, ledger: Ledger) -> None:
    """``at``: a retry sent after midnight with the call's time is applied once, on that day."""
    yesterday = datetime.fromtimestamp(AT, UTC).replace(hour=23, minute=59) - timedelta(days=1)
    body = {
        "model": "gpt-4o",
        "usage": {"input_tokens": 1_000, "output_tokens": 10},
        "request_id": "late",
        "at": yesterday.isoformat(),
    }
    assert client.post("/usage/record", json=body).json()["applied"] is True
    assert client.post("/usage/record", json=body).json()["applied"] is False
    report = client.get("/usage/report", params={"last_days": 2}).json()
    assert [d["requests"] for d in report["per_day"]] == [1, 0]
    naive = client.post("/usage/record", json={**body, "at": "2026-11-17T23:59:00", "request_id": "n"})
    assert naive.status_code == 422
    assert naive.json()["field"] == "body.at"


def test_budgets_show_the_ledgers_headroom(client: TestClient, ledger: Ledger) -> None:
    client.post(
        "/usage/record",
        json={"model": "gpt-4o", "usage": {"input_tokens": 1_000}, "feature": "support", "user": "u1"},
    )
    body = client.get("/budgets", params={"user": "u1"}).json()
    assert body["day"] == DAY
    state = ledger.state(feature="support", user="u1")
    rows = {r["budget"]: r for r in body["budgets"]}
    assert Decimal(rows["user_daily_usd"]["headroom"]) == state.headroom["user_daily_usd"]
    assert Decimal(rows["daily_usd"]["used"]) == Decimal("1") - state.headroom["daily_usd"]


# -- auth, limits, operations ---------------------------------------------------------------------


def test_auth_requires_the_bearer_token(ledger: Ledger) -> None:
    with TestClient(create_app(ledger, token=TOKEN)) as anonymous:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
            response = anonymous.post("/tokens/count", json={"text": "hi"}, headers=headers)
            assert response.status_code == 401
            assert response.headers["www-authenticate"].startswith("Bearer")
        assert anonymous.get("/usage/report").status_code == 401
        assert anonymous.get("/metrics").status_code == 401
        assert anonymous.get("/health").status_code == 200
        assert anonymous.get("/openapi.json").status_code == 200
        assert anonymous.get("/dashboard").status_code == 200
        assert anonymous.get("/dashboard/data").status_code == 401
        assert anonymous.post("/tokens/count", json={"text": "hi"}, headers=AUTH).status_code == 200


def test_no_token_means_no_auth(ledger: Ledger) -> None:
    with TestClient(create_app(ledger)) as open_client:
        assert open_client.post("/tokens/count", json={"text": "hi"}).status_code == 200


def test_a_large_body_is_413_before_parsing(client: TestClient) -> None:
    big = json.dumps({"text": "x" * 20_000, "model": "gpt-4o"}).encode()
    response = client.post("/tokens/count", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["limit"] == 16_384

    def chunks() -> Iterator[bytes]:  # no Content-Length: the stream itself is measured
        yield b'{"text": "'
        for _ in range(10):
            yield b"x" * 2_000
        yield b'"}'

    streamed = client.post("/tokens/count", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    small = client.post(
        "/tokens/count", content=b'{"text": "hi"}', headers={"content-type": "application/json"}
    )
    assert small.status_code == 200


def test_create_app_validates_its_options(ledger: Ledger) -> None:
    with pytest.raises(InvalidInputError) as e:
        create_app(ledger, max_body_bytes=0)
    assert e.value.field == "max_body_bytes"
    with pytest.raises(InvalidInputError) as e:
        create_app(ledger, token="  ")
    assert e.value.field == "token"
    with pytest.raises(InvalidInputError) as e:
        create_app(ledger, policy=BudgetPolicy())
    assert e.value.field == "policy"


def test_health_is_503_when_the_store_is_down(tmp_path: Path) -> None:
    down = Ledger("redis://127.0.0.1:1/0", spool_path=tmp_path / "spool.jsonl")
    with TestClient(create_app(down)) as c:
        response = c.get("/health")
        assert response.status_code == 503
        assert response.json()["error"] == "budget_unavailable"
        refused = c.post(
            "/budget/reserve", json={"model": "gpt-4o", "input_tokens": 10, "max_output_tokens": 10}
        )
        assert refused.status_code == 503
        assert "tokenbudget_store_up 0" in c.get("/metrics").text


def test_metrics_in_prometheus_text_format(client: TestClient, ledger: Ledger) -> None:
    client.post("/usage/record", json={"model": "gpt-4o", "usage": {"input_tokens": 1_000}, "user": "u1"})
    client.post("/tokens/count", json={"text": 1})  # a 422, counted too
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    lines = response.text.splitlines()
    assert 'tokenbudget_http_requests_total{method="POST",route="/usage/record",status="200"} 1' in lines
    assert 'tokenbudget_http_requests_total{method="POST",route="/tokens/count",status="422"} 1' in lines
    assert "# TYPE tokenbudget_http_request_duration_seconds histogram" in lines
    spend = build_report(ledger, last_days=1).totals.cost_usd
    assert f"tokenbudget_spend_usd_today {decimal_text(spend)}" in lines
    assert "tokenbudget_store_up 1" in lines
    assert any(line.startswith('tokenbudget_budget_headroom{budget="daily_usd"') for line in lines)
    assert not [line for line in lines if "E-" in line]  # plain digits (0, not 0E-9)


def test_an_empty_id_in_a_budgets_query_is_refused(client: TestClient) -> None:
    for query in ("user=", "feature="):
        response = client.get(f"/budgets?{query}")
        assert response.status_code == 422
        assert query.rstrip("=") in response.text


def test_openapi_schema_publishes_the_seed_paths(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/tokens/count", "/tokens/truncate", "/prompt/build", "/cost/estimate"):
        assert "post" in paths[path]
    for path in ("/usage/report", "/budgets", "/health", "/metrics", "/dashboard/data"):
        assert "get" in paths[path]
    for path in ("/budget/check", "/budget/reserve", "/budget/commit", "/budget/release", "/usage/record"):
        assert "post" in paths[path]


# -- dashboard ------------------------------------------------------------------------------------


def test_dashboard_page_loads_nothing_from_elsewhere(client: TestClient) -> None:
    page = client.get("/dashboard")
    assert page.headers["content-type"].startswith("text/html")
    for name in ("dashboard.html", "dashboard.js", "dashboard.css"):
        text = client.get(f"/dashboard/static/{name}").text
        external = [u for u in ("http://", "https://", "//cdn", "@import", "fonts.") if u in text]
        assert external in ([], ["http://"])
        assert "http://" not in text or "http://www.w3.org/2000/svg" in text
    assert client.get("/dashboard/static/secrets.txt").status_code == 404


def test_dashboard_data_matches_the_report(client: TestClient, ledger: Ledger) -> None:
    for user, model, cache_hit in (
        ("alice", "gpt-4o", False),
        ("bob", "gpt-4o-mini", True),
        ("bob", "gpt-4o-mini", False),
    ):
        client.post(
            "/usage/record",
            json={
                "model": model,
                "usage": {"input_tokens": 1_000, "output_tokens": 100},
                "feature": "support",
                "user": user,
                "cache_hit": cache_hit,
                "saved_usd": "0.01" if cache_hit else None,
            },
        )
    data = client.get("/dashboard/data", params={"last_days": 3}).json()
    report = build_report(ledger, last_days=3)
    assert data["days"] == list(report.days)
    assert (
        Decimal(data["per_day"][-1]["cost_per_active_user_usd"])
        == report.per_day[-1].cost_per_active_user_usd
    )
    assert data["totals"]["cache_hit_rate"] == "0.333333"
    assert data["totals"]["saved_usd"] == "0.01"
    assert {m["model"]: m["requests"] for m in data["routing_mix"]} == {"gpt-4o": 1, "gpt-4o-mini": 2}
    assert data["top_users"][0]["key"] == report.breakdown("user").rows[0].key
    assert {b["budget"] for b in data["budgets"]} >= {"daily_usd", "feature_daily_usd"}


# -- packaging and the command --------------------------------------------------------------------


def test_the_core_does_not_import_fastapi() -> None:
    code = "import sys, tokenbudget_core, tokenbudget_core.server; print('fastapi' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_without_fastapi_the_server_names_its_extra() -> None:
    code = (
        "import sys; sys.modules['fastapi'] = None\n"
        "from tokenbudget_core.errors import MissingDependencyError\n"
        "try:\n    from tokenbudget_core.server import create_app\n"
        "except MissingDependencyError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert 'pip install "tokenbudget-kit[server]"' in out.stdout


def test_serve_rejects_a_bad_port() -> None:
    result = CliRunner().invoke(cli, ["serve", "--port", "70000"])
    assert result.exit_code == EXIT_BAD_INPUT
    assert "--port" in result.output


def test_the_server_package_api_is_pinned() -> None:
    import tokenbudget_core.server

    assert tokenbudget_core.server.__all__ == ["create_app", "serve"]


def test_metrics_of_a_day_that_cost_nothing_print_plain_zeros() -> None:
    with TestClient(create_app("memory://")) as fresh:
        fresh.post("/usage/record", json={"model": "gpt-4o", "usage": {"input_tokens": 0}, "user": "u1"})
        lines = fresh.get("/metrics").text.splitlines()
    assert "tokenbudget_spend_usd_today 0" in lines
    assert "tokenbudget_cost_per_active_user_usd_today 0" in lines
    assert not [line for line in lines if "E-" in line]  # 0, not 0E-9
