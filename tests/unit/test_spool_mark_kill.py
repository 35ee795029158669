"""A spool replay killed (SIGKILL: the OOM killer, a deploy) between setting a line's
conversation once-mark and committing the line: the next replay finds the mark set *for that
request* and still counts the conversation once (it used to count it as 0, for good)."""

from __future__ import annotations

import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from store_contract import marks_answer_their_holder
from tokenbudget_core.spool import Spool
from tokenbudget_core.stores.base import Check, CommitRequest, mark_once_for
from tokenbudget_core.stores.memory import MemoryStore
from tokenbudget_core.stores.sqlite import SQLiteStore

DAY = "2026-11-23"
MARK = ("conv/2026-11-23/chat/conv-1", 3 * 86_400)

_DIES_IN_COMMIT = """
import os, signal, sys
from tokenbudget_core.spool import Spool
from tokenbudget_core.stores.sqlite import SQLiteStore

class DiesInCommit(SQLiteStore):
    def commit(self, req):  # the process dies right after the mark, before the commit
        os.kill(os.getpid(), signal.SIGKILL)

Spool(sys.argv[1]).replay(DiesInCommit(sys.argv[2]))
"""


def _req(rid: str) -> CommitRequest:
    return CommitRequest(
        day=DAY,
        request_id=rid,
        charges=[Check(scope="g", metric="nanos", amount=100)],
        rollup_key="chat//gpt-4o",
        rollup={"requests": 1, "cost_nanos": 100},
        now_ms=0,
    )


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_a_replay_killed_between_the_mark_and_the_commit_still_counts_the_conversation(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    spool = Spool(tmp_path / "spool.jsonl")
    spool.append(_req("r1"), mark=MARK)
    killed = subprocess.run([sys.executable, "-c", _DIES_IN_COMMIT, str(spool.path), url], check=False)
    assert killed.returncode < 0  # killed by the signal, mid-replay

    with closing(SQLiteStore(url)) as store:
        assert not store.mark_once(*MARK)  # the killed replay did set the mark
        assert spool.replay(store) == 1
        (row,) = store.rollup([DAY])
        assert row.values["requests"] == 1
        assert row.values["conversations"] == 1
        assert len(spool) == 0


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_mark_set_for_a_holder_answers_true_to_that_holder_only(kind: str, tmp_path: Path) -> None:
    store = MemoryStore() if kind == "memory" else SQLiteStore(f"sqlite:///{tmp_path / 'l.db'}")
    with closing(store):
        marks_answer_their_holder(store)
        assert mark_once_for(store, "gone", 0, "r1")  # expired at once: anyone sets it again
        assert mark_once_for(store, "gone", 60, "r2")
