"""The dashboard in a real headless Chromium with the service mounted under a prefix
(``outer.mount("/tb", create_app(...))``) and run by a real uvicorn on loopback: the page, its
script and stylesheet and its data all load from under ``/tb`` (the page's URLs are relative),
the bearer token is asked for when missing, and the page shows the ledger's figures.

Chromium: ``/usr/bin/chromium`` (or ``$TOKENBUDGET_CHROMIUM``), as in ``test_dashboard_browser``
(which installs it with apt-get when it can); missing, the test fails in CI and is skipped elsewhere.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI

from redis_server import in_ci
from tokenbudget_core import Usage
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.server import create_app

pytestmark = pytest.mark.integration

TOKEN = "mounted-dashboard-token"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


@pytest.fixture(scope="module")
def chromium() -> str:
    path = os.environ.get("TOKENBUDGET_CHROMIUM", "/usr/bin/chromium")
    if not Path(path).is_file():
        reason = f"headless Chromium is needed at {path}: apt-get install -y chromium"
        if in_ci():
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture
def mounted_url(tmp_path: Path) -> Iterator[str]:
    """``http://127.0.0.1:<port>/tb``: the service, with two recorded calls, mounted at ``/tb``."""
    ledger = Ledger("memory://", spool_path=tmp_path / "spool.jsonl")
    for user in ("alice", "bob"):
        ledger.record(Usage(input_tokens=1_000, output_tokens=100), model="gpt-4o", user=user)
    outer = FastAPI()
    outer.mount("/tb", create_app(ledger, token=TOKEN))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(outer, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(500):  # readiness, not a timing assertion: up to ~10 s for a slow machine
        if server.started or not thread.is_alive():
            break
        threading.Event().wait(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}/tb"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        ledger.close()


def test_the_dashboard_works_under_a_prefix(chromium: str, mounted_url: str) -> None:
    from playwright.sync_api import sync_playwright

    requested: list[str] = []
    answered: list[tuple[str, int]] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=ARGS)
        try:
            page = browser.new_page()
            page.on("request", lambda r: requested.append(r.url))
            page.on("response", lambda r: answered.append((r.url, r.status)))
            page.goto(f"{mounted_url}/dashboard")  # no token yet: the page asks for it
            page.wait_for_selector("#auth:not([hidden])", timeout=30_000)
            page.fill("#token", TOKEN)
            page.click("#auth button")
            page.wait_for_selector("body[data-ready='true']", timeout=30_000)
            assert page.inner_text("#kpi-requests") == "2"
            assert page.inner_text("#kpi-users") == "2"
        finally:
            browser.close()
    assert requested, "the page made no request"
    outside = [u for u in requested if not u.startswith(f"{mounted_url}/dashboard")]
    assert not outside, f"requests outside the mount point: {outside}"
    paths = {u.split("?")[0].removeprefix(mounted_url) for u in requested}
    assert {"/dashboard", "/dashboard/static/dashboard.css", "/dashboard/static/dashboard.js"} <= paths
    assert "/dashboard/data" in paths
    failed = [
        (u, s)
        for u, s in answered
        if s >= 400 and not (u.startswith(f"{mounted_url}/dashboard/data") and s == 401)
    ]
    assert not failed, failed
