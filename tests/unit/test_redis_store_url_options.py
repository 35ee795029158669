"""A Redis store's URL options and arguments are checked when the store is built: a value redis-py
would refuse only at the first command (every operation then raising a bare redis-py error, never
spooled), or one that makes every call time out, is an ``InvalidInputError`` naming it."""

from __future__ import annotations

import pytest

from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.stores import open_store
from tokenbudget_core.stores.redis import RedisStore

pytest.importorskip("redis")


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("ssl_cert_reqs=bogus", "ssl_cert_reqs"),
        ("socket_timeout=0", "socket_timeout"),
        ("socket_timeout=-1", "socket_timeout"),
        ("socket_timeout=nan", "socket_timeout"),
        ("socket_timeout=inf", "socket_timeout"),
        ("socket_connect_timeout=0", "socket_connect_timeout"),
    ],
)
def test_a_bad_connection_option_in_the_url_is_refused_when_the_store_is_built(
    query: str, named: str
) -> None:
    url = f"rediss://:s3cret@127.0.0.1:1/0?{query}&namespace=x"
    with pytest.raises(InvalidInputError) as info:
        RedisStore(url)
    assert info.value.field == "store"
    assert named in str(info.value)
    assert "s3cret" not in str(info.value)
    with pytest.raises(InvalidInputError):
        open_store(url)


def test_good_connection_options_are_accepted() -> None:
    for query in (
        "ssl_cert_reqs=required",
        "ssl_cert_reqs=none",
        "socket_timeout=0.5",
        "socket_connect_timeout=3",
    ):
        RedisStore(f"rediss://127.0.0.1:1/0?{query}").close()


@pytest.mark.parametrize("timeout", [None, "2", True, 0, -1, float("nan"), float("inf")])
def test_a_socket_timeout_that_is_not_a_positive_finite_number_is_refused(timeout: object) -> None:
    for build in (RedisStore, open_store):
        with pytest.raises(InvalidInputError) as info:
            build("redis://127.0.0.1:1/0", socket_timeout=timeout)  # type: ignore[operator]
        assert info.value.field == "socket_timeout"


@pytest.mark.parametrize(
    "query", ["ssl_cert_reqs=none", "ssl_ca_certs=/etc/ssl/certs/ca.pem", "timeout=3", "client_name=a%20b"]
)
def test_an_option_the_connection_does_not_take_is_refused_when_the_store_is_built(query: str) -> None:
    """A plain redis:// URL with TLS options (or redis-py's unknown ``timeout``) made every
    command raise a bare TypeError later: a fail-open ledger's usage was neither stored nor spooled."""
    with pytest.raises(InvalidInputError) as refused:
        RedisStore(f"redis://127.0.0.1:1/0?{query}")
    assert refused.value.field == "store"
    assert query.partition("=")[0] in str(refused.value)
