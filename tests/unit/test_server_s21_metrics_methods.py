"""``/metrics`` counts requests by method, route and status, and every label is bounded: a client
(authenticated or not) inventing HTTP methods adds no series, they are all counted as ``other``,
like paths that are no endpoint. The standard methods keep their own series."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from tokenbudget_core.server import create_app

pytestmark = pytest.mark.usefixtures("isolated")

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SERIES = re.compile(
    r'^tokenbudget_http_requests_total\{method="([^"]*)",route="([^"]*)",status="(\d+)"\} (\d+)$'
)


def _requests_total(client: TestClient) -> dict[tuple[str, str, str], int]:
    text = client.get("/metrics", headers=AUTH).text
    found = {}
    for line in text.splitlines():
        if m := SERIES.match(line):
            found[(m[1], m[2], m[3])] = int(m[4])
    return found


def test_invented_methods_are_counted_as_other() -> None:
    with TestClient(create_app("memory://", token=TOKEN), raise_server_exceptions=False) as client:
        for i in range(40):  # unauthenticated, on a path and on an endpoint
            assert client.request(f"M{i:06d}XXXX", "/x").status_code == 401
            assert client.request(f"BREW{i}", "/budgets").status_code == 401
        assert client.request("PROPFIND", "/budgets", headers=AUTH).status_code == 405
        assert client.get("/budgets", headers=AUTH).status_code == 200
        assert client.delete("/budgets").status_code == 401
        series = _requests_total(client)
    methods = {method for method, _, _ in series}
    assert methods <= {"GET", "POST", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH", "other"}, methods
    assert series[("other", "other", "401")] == 40
    assert series[("other", "/budgets", "401")] == 40
    assert series[("other", "/budgets", "405")] == 1
    assert series[("GET", "/budgets", "200")] == 1
    assert series[("DELETE", "/budgets", "401")] == 1
