"""The dashboard marks a cost that leaves out calls of a model without a known price, as the CLI
does: ``*`` after the figure and a note saying their cost is unknown, not $0; a day whose calls
were all unpriced has no cost per active user (an en dash). A real headless Chromium against uvicorn
on loopback (the fixtures of ``test_dashboard_browser``)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import uvicorn
from test_dashboard_browser import CHROMIUM_ARGS, chromium  # noqa: F401 - the fixture, used by name

from tokenbudget_core import Usage
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.server import create_app

pytestmark = pytest.mark.integration

TODAY = datetime(2026, 11, 18, 15, tzinfo=UTC).timestamp()


@pytest.fixture
def server_url() -> Iterator[str]:
    now = [TODAY - 86_400]
    ledger = Ledger("memory://", clock=lambda: now[0])
    ledger.record(Usage(input_tokens=3_000, output_tokens=400), model="gpt-4o", user="alice")
    now[0] = TODAY  # today: unpriced calls only
    usage = Usage(input_tokens=100_000, output_tokens=10_000)
    ledger.record(usage, model="acme-ft-2026", unknown_model="unpriced", user="bob")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(ledger), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(500):  # readiness, not a timing assertion
        if server.started or not thread.is_alive():
            break
        threading.Event().wait(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        ledger.close()


def test_the_dashboard_never_shows_an_unpriced_model_as_free(chromium: str, server_url: str) -> None:  # noqa: F811
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{server_url}/dashboard")
            page.wait_for_selector("body[data-ready='true']", timeout=30_000)
            assert page.inner_text("#kpi-cost").endswith("*")
            note = page.inner_text("#unpriced-note")
            assert page.is_visible("#unpriced-note")
            assert "unknown, not $0" in note
            today = next(
                row
                for row in page.query_selector_all("#per-day tbody tr")
                if row.query_selector("td.day").inner_text() == "2026-11-18"  # type: ignore[union-attr]
            )
            assert today.query_selector("td.cost").inner_text() == "$0.000000*"  # type: ignore[union-attr]
            assert today.query_selector("td.cpu").inner_text() == "\u2013"  # type: ignore[union-attr]
            bars = {
                bar.get_attribute("data-key"): bar.query_selector("text.value").text_content()  # type: ignore[union-attr]
                for bar in page.query_selector_all("#by-model g.bar-row")
            }
            assert bars["acme-ft-2026"] == "$0.000000*"
            assert not bars["gpt-4o"].endswith("*")
        finally:
            browser.close()
