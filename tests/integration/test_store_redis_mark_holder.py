"""Redis's ``mark_once_for``: a once-mark set for a holder (a spooled commit's request) answers
True to that holder again, so a spool replay killed between the mark and the commit still
counts the conversation; to anyone else it is set, as with ``mark_once``."""

from __future__ import annotations

from contextlib import closing

import pytest

from tokenbudget_core.stores.base import mark_once_for
from tokenbudget_core.stores.redis import RedisStore

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("cluster", [False, True])
def test_a_mark_set_for_a_holder_answers_true_to_that_holder_only(
    cluster: bool, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("clean_redis_cluster_url" if cluster else "clean_redis_url")
    with closing(RedisStore(url)) as store:
        assert mark_once_for(store, "m", 60, "2026-11-23/r1")
        assert mark_once_for(store, "m", 60, "2026-11-23/r1")  # the same request again
        assert not mark_once_for(store, "m", 60, "2026-11-23/r2")
        assert not store.mark_once("m", 60)
        assert store.mark_once("plain", 60)
        assert not mark_once_for(store, "plain", 60, "2026-11-23/r1")  # set without a holder
