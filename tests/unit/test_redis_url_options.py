"""A ledger's Redis URL names its namespace and retention: ``redis://host/0?namespace=prod``.

The URL alone (``--store``, ``$TOKENBUDGET_STORE``) then names the same data, and the same
store identity (the spool), as ``RedisStore(url, namespace="prod")``. No server is needed:
building a store checks the URL and connects on first use only.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.stores import open_store
from tokenbudget_core.stores.base import redact_url
from tokenbudget_core.stores.redis import RedisStore

URL = "redis://app:s3cret@127.0.0.1:1/0"  # never connected to


@pytest.fixture
def built() -> Iterator[list[RedisStore]]:
    """Stores a test builds, closed after it."""
    stores: list[RedisStore] = []
    yield stores
    for s in stores:
        s.close()


def _store(built: list[RedisStore], url: str, **options: object) -> RedisStore:
    s = RedisStore(url, **options)  # type: ignore[arg-type]
    built.append(s)
    return s


@pytest.mark.parametrize(
    ("with_option", "plain", "as_argument"),
    [
        (f"{URL}?namespace=prod", URL, {"namespace": "prod"}),
        (f"{URL}?socket_timeout=1&namespace=prod", f"{URL}?socket_timeout=1", {"namespace": "prod"}),
        (f"{URL}?namespace=prod&retention_days=30", URL, {"namespace": "prod", "retention_days": 30}),
        (f"{URL}?namespace=pr%C3%B6d%20eu", URL, {"namespace": "pröd eu"}),
        ("redis+cluster://127.0.0.1:1?namespace=prod", "redis+cluster://127.0.0.1:1", {"namespace": "prod"}),
        (
            "rediss://127.0.0.1:1/2?namespace=prod&request_retention_days=3",
            "rediss://127.0.0.1:1/2",
            {"namespace": "prod", "request_retention_days": 3},
        ),
    ],
)
def test_a_namespace_in_the_url_is_the_same_store_as_the_argument(
    built: list[RedisStore], with_option: str, plain: str, as_argument: dict[str, object]
) -> None:
    from_url = _store(built, with_option)
    from_argument = _store(built, plain, **as_argument)
    assert from_url.identity == from_argument.identity
    assert from_url.identity != _store(built, plain).identity  # the default namespace is another store
    assert from_url.identity != _store(built, plain, namespace="other").identity


def test_the_default_namespace_is_the_namespace_tb(built: list[RedisStore]) -> None:
    assert _store(built, URL).identity == "redis://127.0.0.1:1/0?namespace=tb"
    assert _store(built, f"{URL}?namespace=tb").identity == _store(built, URL).identity


@pytest.mark.parametrize(
    "spelling",
    [
        "redis://127.0.0.1:1",  # no database: 0
        "redis://127.0.0.1:1/0",
        "redis://127.0.0.1:1?db=0",
        "redis://other:rotated@127.0.0.1:1/0",  # a rotated password, another ACL user
        "redis://:s3cret@127.0.0.1:1/0?health_check_interval=30&socket_timeout=1",
        "rediss://app:s3cret@127.0.0.1:1/0",  # the same server through TLS
        "redis://app:s3cret@127.0.0.1:1/0?client_name=worker",
    ],
)
def test_the_identity_names_where_the_data_lives_not_the_urls_spelling(
    built: list[RedisStore], spelling: str
) -> None:
    assert _store(built, spelling).identity == _store(built, URL).identity
    assert "s3cret" not in _store(built, spelling).identity


def test_the_identity_tells_other_data_apart(built: list[RedisStore]) -> None:
    identities = {
        _store(built, url).identity
        for url in (
            URL,
            "redis://127.0.0.1:2/0",  # another port
            "redis://127.0.0.1:1/1",  # another database
            "redis://127.0.0.1:1/0?namespace=prod",
            "redis://localhost:1/0",  # not resolved: another spelling of the host is another store
            "redis+cluster://127.0.0.1:1",
        )
    }
    assert len(identities) == 6
    assert _store(built, "redis://LocalHost:1/0").identity == _store(built, "redis://localhost:1/0").identity
    cluster = _store(built, "redis+cluster://u:p@Node-A:7000?namespace=prod")
    assert cluster.identity == "redis+cluster://node-a:7000?namespace=prod"


def test_the_url_of_a_store_still_hides_its_password(built: list[RedisStore]) -> None:
    url = f"{URL}?namespace=prod&retention_days=30"
    store = _store(built, url)
    assert store.url == url
    assert redact_url(url) == "redis://app:***@127.0.0.1:1/0?namespace=prod&retention_days=30"
    assert "s3cret" not in repr(store)


def test_open_store_reads_the_options_too(built: list[RedisStore]) -> None:
    store = open_store(f"{URL}?namespace=prod")
    assert isinstance(store, RedisStore)
    built.append(store)
    assert store.identity == _store(built, URL, namespace="prod").identity


@pytest.mark.parametrize(
    ("query", "needles"),
    [
        ("?namespace=", ["namespace", "no value"]),
        ("?namespace=a&namespace=b", ["namespace", "twice"]),
        ("?retention_days=0", ["retention_days='0'", "positive number of days"]),
        ("?retention_days=-1", ["retention_days='-1'"]),
        ("?retention_days=thirty", ["retention_days='thirty'"]),
        ("?retention_days=1.5", ["retention_days='1.5'"]),
        ("?request_retention_days=0", ["request_retention_days='0'"]),
        ("?namespace=%FF", ["namespace", "UTF-8"]),
        ("?nope=1", ["unknown option 'nope'", "namespace, retention_days, request_retention_days"]),
        ("?Namespace=prod", ["unknown option 'Namespace'"]),
    ],
)
def test_bad_store_options_in_the_url_are_named(query: str, needles: list[str]) -> None:
    with pytest.raises(InvalidInputError) as e:
        RedisStore(URL + query)
    assert e.value.field == "store"
    for needle in needles:
        assert needle in str(e.value)
    assert "s3cret" not in str(e.value)
    assert "s3cret" not in str(e.value.value)


def test_an_option_given_twice_must_agree(built: list[RedisStore]) -> None:
    with pytest.raises(InvalidInputError) as e:
        RedisStore(f"{URL}?namespace=prod", namespace="staging")
    assert e.value.field == "namespace"
    assert "'staging'" in str(e.value)
    assert "'prod'" in str(e.value)
    with pytest.raises(InvalidInputError) as e:
        RedisStore(f"{URL}?retention_days=30", retention_days=40)
    assert e.value.field == "retention_days"
    same = _store(built, f"{URL}?namespace=prod", namespace="prod")
    assert same.identity == _store(built, URL, namespace="prod").identity


def test_the_url_retention_is_checked_like_the_argument() -> None:
    with pytest.raises(InvalidInputError) as e:
        RedisStore(f"{URL}?retention_days=5&request_retention_days=6")
    assert e.value.field == "request_retention_days"


@pytest.mark.parametrize("namespace", ["", 3, b"prod"])
def test_a_namespace_argument_must_be_a_non_empty_string(namespace: object) -> None:
    with pytest.raises(InvalidInputError) as e:
        RedisStore(URL, namespace=namespace)  # type: ignore[arg-type]
    assert e.value.field == "namespace"
