"""Claims of one run made by several budget handlers outside LangChain's start dispatch (a host
that calls the handlers itself) are that run's: a later handler's claim does not withdraw an
earlier handler's, so the run's lookup is still scoped by its payer."""

from __future__ import annotations

import uuid

from langchain_core.messages import HumanMessage

from langchain_tokenbudget import TokenBudgetLLMCache
from langchain_tokenbudget.llm_cache import claim_run
from tokenbudget_core.attribution import Attribution
from tokenbudget_core.response_cache import ExactCache


def test_two_handlers_claims_of_one_run_made_outside_a_dispatch_both_stay_open() -> None:
    TokenBudgetLLMCache(ExactCache())  # claims are made once a cache exists
    run = uuid.uuid4()
    first = claim_run(Attribution(feature="chat", user="u-1"), [HumanMessage("hi")], run=run)
    second = claim_run(Attribution(feature="chat", user="u-1"), [HumanMessage("hi")], run=run)
    assert first is not None
    assert second is not None
    assert first.open
    assert second.open
    other = claim_run(Attribution(feature="chat", user="u-2"), [HumanMessage("hi")], run=uuid.uuid4())
    assert other is not None
    assert other.open
    assert not first.open  # another call started: an earlier call's claims, untaken, close
    assert not second.open
