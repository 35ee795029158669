"""``/metrics`` labels a request for one of the dashboard's static files by its route,
``/dashboard/static/{name}`` (one series, whatever the file), not ``other``: before, the known
routes held the pattern and a request's path never equalled it. Paths the route does not match
(a nested path) stay ``other``; mounted under a prefix, the label is the same."""

from __future__ import annotations

import re

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tokenbudget_core.server import create_app

pytestmark = pytest.mark.usefixtures("isolated")

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STATIC = "/dashboard/static/{name}"
SERIES = re.compile(
    r'^tokenbudget_http_requests_total\{method="([^"]*)",route="([^"]*)",status="(\d+)"\} (\d+)$'
)
LATENCY = re.compile(r'^tokenbudget_http_request_duration_seconds_count\{route="([^"]*)"\} (\d+)$')


def _series(text: str) -> tuple[dict[tuple[str, str, str], int], dict[str, int]]:
    counts, latency = {}, {}
    for line in text.splitlines():
        if m := SERIES.match(line):
            counts[(m[1], m[2], m[3])] = int(m[4])
        elif m := LATENCY.match(line):
            latency[m[1]] = int(m[2])
    return counts, latency


def _fetch_static(client: TestClient, prefix: str = "") -> None:
    assert client.get(f"{prefix}/dashboard/static/dashboard.js").status_code == 200
    assert client.get(f"{prefix}/dashboard/static/dashboard.css").status_code == 200
    assert client.get(f"{prefix}/dashboard/static/no-such-file.js").status_code == 404
    assert client.get(f"{prefix}/dashboard/static/a/b.js").status_code == 404  # matches no route


def test_static_files_are_labelled_with_their_route() -> None:
    with TestClient(create_app("memory://", token=TOKEN)) as client:
        _fetch_static(client)
        counts, latency = _series(client.get("/metrics", headers=AUTH).text)
    assert counts[("GET", STATIC, "200")] == 2
    assert counts[("GET", STATIC, "404")] == 1
    assert latency[STATIC] == 3
    assert counts[("GET", "other", "404")] == 1
    assert not any(route.startswith("/dashboard/static/") and route != STATIC for _, route, _ in counts)


def test_the_label_is_the_same_mounted_under_a_prefix() -> None:
    outer = FastAPI()
    outer.mount("/tb", create_app("memory://", token=TOKEN))
    with TestClient(outer) as client:
        _fetch_static(client, "/tb")
        counts, _ = _series(client.get("/tb/metrics", headers=AUTH).text)
    assert counts[("GET", STATIC, "200")] == 2
    assert counts[("GET", STATIC, "404")] == 1
