"""A policy swap never tears the ladder: a reserve reads the ladder's steps and its refusal rule
as one value, so while ``ledger.policy`` flips between a ladder without and with a soft refusal,
every reservation is answered as one of the two policies would (granted at ``smaller_context`` or
soft-refused), never granted and held at ``soft_refusal``."""

from __future__ import annotations

import collections
import threading

import pytest

from tokenbudget_core.budgets import BudgetPolicy, Ladder
from tokenbudget_core.errors import BudgetExceededError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.stores.memory import MemoryStore

pytestmark = pytest.mark.usefixtures("isolated")


class _GeneralStore(MemoryStore):
    """The memory store seen as any store: no lane."""


@pytest.mark.usefixtures("fast_switching")
@pytest.mark.parametrize("store", [MemoryStore, _GeneralStore])
def test_a_policy_swap_never_grants_a_reservation_at_soft_refusal(store: type[MemoryStore]) -> None:
    without = BudgetPolicy(user_daily_tokens=1_000, ladder=Ladder(cache_only=None, soft_refusal=None))
    with_soft = BudgetPolicy(user_daily_tokens=1_000, ladder=Ladder(cache_only=None, soft_refusal=0.97))
    ledger = Ledger(store(), policy=without)
    ledger.reserve(model="gpt-4o", input_tokens=970, max_output_tokens=0, user="u")  # 97% held
    done = threading.Event()

    def swapper() -> None:
        i = 0
        while not done.is_set():
            ledger.policy = (without, with_soft)[i % 2]
            i += 1

    answers: collections.Counter[str] = collections.Counter()

    def worker() -> None:
        for _ in range(5_000):
            try:
                r = ledger.reserve(model="gpt-4o", input_tokens=1, max_output_tokens=0, user="u")
            except BudgetExceededError as e:
                answers[f"refused:{e.step}"] += 1
            else:
                answers[r.step] += 1
                ledger.release(r)

    swapping = threading.Thread(target=swapper)
    swapping.start()
    workers = [threading.Thread(target=worker) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    done.set()
    swapping.join()
    assert set(answers) <= {"smaller_context", "refused:soft_refusal"}, answers
    assert ledger.state(user="u").used == {"user_daily_tokens (all features)": 970}
