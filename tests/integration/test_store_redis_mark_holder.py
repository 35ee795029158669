"""Redis's ``mark_once_for``: a once-mark set for a holder (a spooled commit's request) answers
True to that holder again, so a spool replay killed between the mark and the commit still
counts the conversation; to anyone else it is set, as with ``mark_once``."""

from __future__ import annotations

from contextlib import closing

import pytest

from store_contract import marks_answer_their_holder
from tokenbudget_core.stores.redis import RedisStore

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("cluster", [False, True])
def test_a_mark_set_for_a_holder_answers_true_to_that_holder_only(
    cluster: bool, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("clean_redis_cluster_url" if cluster else "clean_redis_url")
    with closing(RedisStore(url)) as store:
        marks_answer_their_holder(store)
