"""The app mounted under a prefix (``outer.mount("/tb", create_app(...))``, as docs/service.md
invites) works as it does at the root: the public paths stay public and the others need the
token, ``/metrics`` labels requests by their endpoint, and the dashboard page's files and data
are referenced relative to the page, so they resolve under the prefix (and at the root)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tokenbudget_core.server import create_app

pytestmark = pytest.mark.usefixtures("isolated")

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CALL = {"model": "gpt-4o", "input_tokens": 10, "max_output_tokens": 10}


@pytest.fixture
def mounted() -> Iterator[TestClient]:
    outer = FastAPI()
    outer.mount("/tb", create_app("memory://", token=TOKEN))
    with TestClient(outer, raise_server_exceptions=False) as client:
        yield client


@pytest.mark.parametrize(
    "path",
    ["/tb/health", "/tb/dashboard", "/tb/dashboard/static/dashboard.js", "/tb/openapi.json", "/tb/docs"],
)
def test_public_paths_stay_public_under_the_prefix(mounted: TestClient, path: str) -> None:
    assert mounted.get(path).status_code == 200


def test_a_trailing_slash_redirects_within_the_prefix(mounted: TestClient) -> None:
    response = mounted.get("/tb/dashboard/", follow_redirects=False)
    assert response.status_code == 307
    assert urlsplit(response.headers["location"]).path == "/tb/dashboard"


@pytest.mark.parametrize(("method", "path"), [("POST", "/tb/budget/reserve"), ("GET", "/tb/usage/report")])
def test_other_paths_need_the_token_under_the_prefix(mounted: TestClient, method: str, path: str) -> None:
    body = CALL if method == "POST" else None
    assert mounted.request(method, path, json=body).status_code == 401
    assert mounted.request(method, path, json=body, headers=AUTH).status_code in (200, 201)


def test_metrics_label_requests_by_endpoint_under_the_prefix(mounted: TestClient) -> None:
    mounted.get("/tb/health")
    mounted.post("/tb/budget/reserve", json=CALL, headers=AUTH)
    mounted.get("/tb/no-such-endpoint", headers=AUTH)
    text = mounted.get("/tb/metrics", headers=AUTH).text
    assert 'tokenbudget_http_requests_total{method="GET",route="/health",status="200"} 1' in text
    assert 'tokenbudget_http_requests_total{method="POST",route="/budget/reserve",status="201"} 1' in text
    assert 'tokenbudget_http_requests_total{method="GET",route="other",status="404"} 1' in text


class _Refs(HTMLParser):
    """The ``href`` / ``src`` URLs of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.refs += [v for k, v in attrs if k in ("href", "src") and v]


@pytest.mark.parametrize("prefix", ["", "/tb"])
def test_the_dashboards_files_resolve_where_the_page_is(prefix: str) -> None:
    app = create_app("memory://", token=TOKEN)
    if prefix:
        outer = FastAPI()
        outer.mount(prefix, app)
        app = outer
    with TestClient(app) as client:
        page_url = f"http://testserver{prefix}/dashboard"
        page = client.get(page_url)
        assert page.status_code == 200
        parser = _Refs()
        parser.feed(page.text)
        assert sorted(parser.refs) == ["dashboard/static/dashboard.css", "dashboard/static/dashboard.js"]
        for ref in parser.refs:
            url = urljoin(page_url, ref)
            assert urlsplit(url).path == f"{prefix}/dashboard/static/{ref.rsplit('/', 1)[1]}"
            assert client.get(url).status_code == 200  # public: the browser sends no token for it
        script = client.get(urljoin(page_url, "dashboard/static/dashboard.js")).text
    # The script names no root-absolute URL: it fetches its data relative to its own URL.
    assert not re.search(r"""["'`]/dashboard""", script), "dashboard.js uses a root-absolute URL"
    assert 'new URL("../", document.currentScript.src)' in script
    # …/dashboard/static/dashboard.js + "../" + "data" is the data endpoint, under the prefix too.
    data = urljoin(urljoin(urljoin(page_url, "dashboard/static/dashboard.js"), "../"), "data?last_days=7")
    assert urlsplit(data).path == f"{prefix}/dashboard/data"
