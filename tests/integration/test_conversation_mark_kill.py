"""A process killed (SIGKILL: the OOM killer, a deploy) while committing the first call of a
conversation: the conversation is counted by its next call, in another process. It used to be
counted as 0 for the day: the once-mark was set in a step of its own before the commit, so the
killed process left the mark set and nothing counted, and every later call found the mark."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import build_report
from tokenbudget_core.usage import Usage

_DIES_IN_COMMIT = """
import os, signal, sys
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.stores import open_store
from tokenbudget_core.usage import Usage

store = open_store(sys.argv[1])
store_class = type(store)

class DiesInCommit(store_class):
    def commit(self, req):  # the process dies as its commit is sent, before the store has it
        os.kill(os.getpid(), signal.SIGKILL)

store.__class__ = DiesInCommit
ledger = Ledger(store, alerts=[])
held = ledger.reserve(
    model="gpt-4o-mini", input_tokens=10, max_output_tokens=10, feature="chat", conversation="c-1"
)
ledger.commit(held, Usage(input_tokens=10, output_tokens=5))
print("not killed")
"""


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    url: str = request.getfixturevalue("clean_redis_url")
    return url


def test_a_conversation_whose_first_commit_was_killed_is_counted_by_its_next_call(store_url: str) -> None:
    child = subprocess.run(
        [sys.executable, "-c", _DIES_IN_COMMIT, store_url], capture_output=True, text=True, timeout=60
    )
    assert child.returncode == -9, child.stderr  # killed inside commit()
    ledger = Ledger(store_url, alerts=[])
    ledger.record(
        Usage(input_tokens=10, output_tokens=5), model="gpt-4o-mini", feature="chat", conversation="c-1"
    )
    ledger.record(  # the same conversation again: counted once
        Usage(input_tokens=10, output_tokens=5), model="gpt-4o-mini", feature="chat", conversation="c-1"
    )
    totals = build_report(ledger, day=ledger.day()).totals
    assert (totals.requests, totals.conversations) == (2, 1)
    ledger.close()
