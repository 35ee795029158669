"""A generic metadata key holding something that is not an id (``user`` as a profile dict, as
other libraries put there) is passed over when another key names the payer (``user_id``); alone,
or under tokenbudget's own key, it still stops the call. Real LangChain runs, a real ledger."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from langchain_tokenbudget import BudgetCallbackHandler
from langchain_tokenbudget.budget_callback import payer_from
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import build_report

REPLY = AIMessage("ok", usage_metadata={"input_tokens": 10, "output_tokens": 2, "total_tokens": 12})
PROFILE = {"name": "Alice", "plan": "pro"}


def _run(metadata: dict[str, Any]) -> tuple[Ledger, GenericFakeChatModel]:
    ledger = Ledger("memory://")
    model = GenericFakeChatModel(messages=iter([REPLY]))
    model.invoke(
        "hi", config={"callbacks": [BudgetCallbackHandler(ledger, model="gpt-4o")], "metadata": metadata}
    )
    return ledger, model


def test_a_profile_under_user_is_passed_over_for_user_id() -> None:
    ledger, _ = _run({"user": PROFILE, "user_id": "u-1", "feature": "chat"})
    users = {r.key: r.requests for r in build_report(ledger, by=("user",)).breakdown("user").rows}
    assert users == {"u-1": 1}


def test_a_profile_alone_stops_the_call() -> None:
    with pytest.raises(InvalidInputError) as e:
        _run({"user": PROFILE})
    assert e.value.field == "metadata.user"


def test_tokenbudgets_own_key_is_never_passed_over() -> None:
    with pytest.raises(InvalidInputError) as e:
        _run({"tokenbudget_user": 1.5, "user_id": "u-1"})
    assert e.value.field == "metadata.tokenbudget_user"


def test_payer_from_follows_the_same_rule() -> None:
    assert payer_from({"user": PROFILE, "user_id": "u-1"})["user"] == "u-1"
    with pytest.raises(InvalidInputError):
        payer_from({"user": PROFILE})
