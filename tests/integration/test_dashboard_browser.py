"""The dashboard in a real headless Chromium, against a real uvicorn server on loopback.

A SQLite ledger gets known usage over three days (several users, features and models, a cache
hit) through the core; the service runs on a free 127.0.0.1 port; Debian's ``chromium``, driven
by Playwright, opens ``/dashboard`` with the bearer token. The numbers the page shows (cost per
active user per day, spend per feature and model, the top user, cache hit rate, routing mix,
budget headroom) are compared with :func:`build_report` on the same ledger, the page must load
nothing from any other host, and a screenshot is saved (``tmp_path``, and
``$TOKENBUDGET_ARTIFACTS`` when set, for CI to keep).

Chromium: ``/usr/bin/chromium`` (or ``$TOKENBUDGET_CHROMIUM``). When it is missing the fixture
installs Debian's package with ``apt-get`` (as root, or with passwordless sudo); if that is
impossible the test fails in CI (``CI=true``) and is skipped elsewhere. ``playwright install``
(its own browser download) is never used.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import uvicorn

from redis_server import in_ci
from tokenbudget_core import Usage
from tokenbudget_core.budgets import BudgetPolicy, FeatureBudget
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import build_report
from tokenbudget_core.server import create_app

pytestmark = pytest.mark.integration

TOKEN = "dashboard-test-token"
TODAY = datetime(2026, 11, 18, 15, tzinfo=UTC).timestamp()
DAY_S = 86_400
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# (days ago, feature, user, model, input, output, cache hit)
CALLS = (
    (2, "support", "alice", "gpt-4o", 3_000, 400, False),
    (2, "search", "bob", "gpt-4o-mini", 2_000, 200, False),
    (1, "support", "carol", "gpt-4o", 1_500, 300, False),
    (0, "support", "alice", "gpt-4o", 4_000, 800, False),
    (0, "support", "bob", "gpt-4o-mini", 1_000, 100, True),
    (0, "search", "dave", "gpt-4o-mini", 6_000, 500, False),
    (0, "summarise", "alice", "claude-sonnet-4-5", 2_000, 600, False),
)


def _apt_install_chromium() -> str | None:
    """Install Debian's chromium with apt-get; the reason it could not, or None."""
    apt = shutil.which("apt-get")
    if apt is None:
        return "no apt-get on this machine"
    prefix: list[str] = []
    if os.geteuid() != 0:
        sudo = shutil.which("sudo")
        if sudo is None or subprocess.run([sudo, "-n", "true"], capture_output=True).returncode != 0:
            return "not root and no passwordless sudo"
        prefix = [sudo, "-n"]
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    for command in ([apt, "update", "-qq"], [apt, "install", "-y", "-qq", "chromium"]):
        done = subprocess.run([*prefix, *command], capture_output=True, text=True, env=env, timeout=900)
        if done.returncode != 0:
            return f"{' '.join(command)} failed: {done.stderr[-500:]}"
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of Debian's chromium binary, installed with apt-get when missing."""
    path = os.environ.get("TOKENBUDGET_CHROMIUM", "/usr/bin/chromium")
    if not Path(path).is_file():
        problem = _apt_install_chromium()
        if problem is None and not Path(path).is_file():
            problem = f"apt-get installed chromium but {path} is still missing"
        if problem is not None:
            reason = f"headless Chromium is needed at {path} ({problem}): apt-get install -y chromium"
            if in_ci():
                pytest.fail(reason)
            pytest.skip(reason)
    return path


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    """A SQLite ledger with the known calls of the last three days; its clock then stays on today."""
    now = [TODAY]
    policy = BudgetPolicy(
        daily_usd=Decimal("1"),
        features={"support": FeatureBudget(feature_daily_usd=Decimal("0.05"))},
    )
    led = Ledger(
        f"sqlite:///{tmp_path / 'ledger.db'}",
        policy=policy,
        clock=lambda: now[0],
        spool_path=tmp_path / "spool.jsonl",
    )
    for i, (ago, feature, user, model, i_tok, o_tok, hit) in enumerate(CALLS):
        now[0] = TODAY - ago * DAY_S
        led.record(
            Usage(input_tokens=i_tok, output_tokens=o_tok),
            model=model,
            feature=feature,
            user=user,
            request_id=f"call-{i}",
            cache_hit=hit,
            saved_usd=Decimal("0.0125") if hit else None,
        )
    now[0] = TODAY
    yield led
    led.close()


@pytest.fixture
def server_url(ledger: Ledger) -> Iterator[str]:
    """The service on a free loopback port, run by uvicorn in a thread."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(create_app(ledger, token=TOKEN), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(500):  # readiness, not a timing assertion: up to ~10 s for a slow machine
        if server.started or not thread.is_alive():
            break
        threading.Event().wait(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _usd(text: str) -> Decimal:
    assert text.startswith("$"), text
    return Decimal(text[1:].replace(",", ""))


def _close(shown: str, exact: Decimal | None) -> bool:
    """The page shows dollars to 6 decimals: within half a millionth (plus float noise) of the figure."""
    assert exact is not None
    return abs(_usd(shown) - exact) <= Decimal("0.0000005") + Decimal("1e-12")


def test_dashboard_shows_the_ledgers_numbers(
    chromium: str, server_url: str, ledger: Ledger, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    report = build_report(ledger, last_days=14, top=10)
    requested: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.on("request", lambda r: requested.append(r.url))
            page.goto(f"{server_url}/dashboard#token={TOKEN}")
            page.wait_for_selector("body[data-ready='true']", timeout=30_000)

            # The headline: cost per active user, latest day and per day.
            latest = report.per_day[-1]
            assert latest.day == "2026-11-18"
            shown = page.get_attribute("#kpi-cpu", "data-value")
            assert shown is not None
            assert Decimal(shown) == latest.cost_per_active_user_usd
            assert _close(page.inner_text("#kpi-cpu"), latest.cost_per_active_user_usd)
            rows = page.query_selector_all("#per-day tbody tr")
            assert len(rows) == len(report.per_day)
            shown_days = {r.query_selector("td.day").inner_text(): r for r in rows}  # type: ignore[union-attr]
            for d in report.per_day:
                cell = shown_days[d.day].query_selector("td.cpu")
                assert cell is not None
                if d.cost_per_active_user_usd is None:
                    assert cell.inner_text() == "\u2013"  # an en dash: no figure
                else:
                    assert _close(cell.inner_text(), d.cost_per_active_user_usd)
            assert len(page.query_selector_all("#cpu-chart circle.dot")) == 3  # three days had users

            # Spend by feature and by model, as bars with their values.
            for target, dimension in (("#by-feature", "feature"), ("#by-model", "model")):
                bars = page.query_selector_all(f"{target} g.bar-row")
                expected = report.breakdown(dimension).rows  # type: ignore[arg-type]
                assert [b.get_attribute("data-key") for b in bars] == [r.key for r in expected]
                for bar, row in zip(bars, expected, strict=True):
                    value = bar.query_selector("text.value")
                    assert value is not None
                    assert _close(value.text_content() or "", row.cost_usd)

            # Top users.
            users = report.breakdown("user").rows
            first = page.query_selector("#top-users tbody tr td.user")
            assert first is not None
            assert first.inner_text() == users[0].key
            cost = page.query_selector("#top-users tbody tr td.cost")
            assert cost is not None
            assert _close(cost.inner_text(), users[0].cost_usd)

            # Totals, cache and routing mix.
            t = report.totals
            assert _close(page.inner_text("#kpi-cost"), t.cost_usd)
            assert page.inner_text("#kpi-users") == str(t.active_users) == "4"
            assert page.inner_text("#kpi-hit-rate") == f"{t.cache_hits / t.requests * 100:.1f}%" == "14.3%"
            assert _close(page.inner_text("#kpi-saved"), t.saved_usd)
            mix = {
                li.get_attribute("data-key"): li.inner_text()
                for li in page.query_selector_all("#routing-mix li")
            }
            for row in report.breakdown("model").rows:
                assert f"({row.requests})" in mix[row.key]

            # Budget headroom: one bar per budget of today.
            headroom = page.query_selector_all("#budgets g.bar-row")
            keys = {b.get_attribute("data-key") for b in headroom}
            assert keys == {"daily_usd", "support: feature_daily_usd"}
            state = ledger.state(feature="support")
            daily = next(b for b in headroom if b.get_attribute("data-key") == "daily_usd")
            assert Decimal(daily.get_attribute("data-value") or "") == state.headroom["daily_usd"]

            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()

    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if artifacts := os.environ.get("TOKENBUDGET_ARTIFACTS"):
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artifacts) / "dashboard.png")
    foreign = [u for u in requested if not u.startswith(server_url)]
    assert not foreign, f"the dashboard loaded from elsewhere: {foreign}"


def test_dashboard_asks_for_the_token(chromium: str, server_url: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{server_url}/dashboard")
            page.wait_for_selector("#auth:not([hidden])", timeout=30_000)
            page.fill("#token", TOKEN)
            page.click("#auth button")
            page.wait_for_selector("body[data-ready='true']", timeout=30_000)
            assert page.inner_text("#kpi-users") == "4"
        finally:
            browser.close()


def test_dashboard_sums_what_is_past_the_top_ten(chromium: str, server_url: str, ledger: Ledger) -> None:
    from playwright.sync_api import sync_playwright

    for i in range(12):  # 12 more features today, each cheaper than the ones before
        ledger.record(Usage(input_tokens=100 - i, output_tokens=1), model="gpt-4o", feature=f"extra-{i:02d}")
    report = build_report(ledger, last_days=14, top=10)
    features = report.breakdown("feature")
    assert features.omitted == 5  # 2 features before, 12 more: 14
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(f"{server_url}/dashboard#token={TOKEN}")
            page.wait_for_selector("body[data-ready='true']", timeout=30_000)
            bars = page.query_selector_all("#by-feature g.bar-row")
            assert [b.get_attribute("data-key") for b in bars] == [r.key for r in features.rows] + ["(more)"]
            label = bars[-1].query_selector("text.label")
            value = bars[-1].query_selector("text.value")
            assert label is not None
            assert value is not None
            assert label.text_content() == "(5 more)"
            assert _close(value.text_content() or "", features.omitted_cost_usd)
            # the routing mix's segments are shares of all calls: they fill the bar exactly
            widths = [
                float(r.get_attribute("width") or 0) for r in page.query_selector_all("#routing-mix rect")
            ]
            assert sum(widths) == pytest.approx(380)
        finally:
            browser.close()
