"""Edge cases of the LlamaIndex budget handler and cost reader, on real LlamaIndex calls.

Documents and other blocks the core cannot represent are counted by the core's estimate (never
as zero), options are checked when the handler is made, and ``cost_of_response`` validates its
argument before reading it.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, DocumentBlock, TextBlock
from llama_index.core.callbacks import CallbackManager
from test_llamaindex_budget import MAX_OUTPUT, REPORTED, ProviderLLM, totals

from llamaindex_tokenbudget import BudgetCallbackHandler
from llamaindex_tokenbudget.budget_callback import count_input
from llamaindex_tokenbudget.usage import cost_of_response
from tokenbudget_core import TokenCounter
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.counting import FILE_TOKENS, PDF_PAGE_TOKENS
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.ledger import Ledger

COUNTER = TokenCounter.for_model("gpt-4o-mini")
PDF_TWO_PAGES = (
    b"%PDF-1.4\n1 0 obj <</Type /Pages /Count 2>>\n2 0 obj <</Type /Page>>\n3 0 obj <</Type /Page>>\n"
)


def pdf_question(document: DocumentBlock) -> list[ChatMessage]:
    return [ChatMessage(role="user", blocks=[TextBlock(text="Summarise this PDF."), document])]


def test_documents_are_counted_by_the_core_estimate_never_as_zero() -> None:
    text_only = COUNTER.count_messages([{"role": "user", "content": "Summarise this PDF."}])
    two_pages = pdf_question(DocumentBlock(data=PDF_TWO_PAGES, document_mimetype="application/pdf"))
    count = count_input(COUNTER, messages=two_pages, prompt=None, kwargs={})
    assert count > text_only + 2 * PDF_PAGE_TOKENS
    assert not getattr(count, "exact", True)  # flagged as an estimate
    by_url = pdf_question(DocumentBlock(url="https://example.com/report.pdf"))
    assert count_input(COUNTER, messages=by_url, prompt=None, kwargs={}) > text_only + FILE_TOKENS
    plain = [ChatMessage(role="user", content="Summarise this PDF.")]
    assert count_input(COUNTER, messages=plain, prompt=None, kwargs={}) == text_only


def test_a_call_with_a_document_reserves_its_estimate_and_is_charged_what_was_reported(
    tmp_path: Path,
) -> None:
    ledger = Ledger(
        "memory://", policy=BudgetPolicy(user_daily_tokens=10**6), spool_path=tmp_path / "spool.jsonl"
    )
    reserved: list[int] = []

    def probe() -> None:
        ((_spent, held),) = ledger.store.totals(ledger.day(), [("U/u-1", "tokens")], 0).values()
        reserved.append(int(held))

    handler = BudgetCallbackHandler(ledger, feature="support", user="u-1")
    llm = ProviderLLM(callback_manager=CallbackManager([handler]))
    llm.probe = probe
    llm.chat(pdf_question(DocumentBlock(data=PDF_TWO_PAGES, document_mimetype="application/pdf")))
    assert llm.calls == ["chat"]
    (held,) = reserved
    assert held > 2 * PDF_PAGE_TOKENS + MAX_OUTPUT
    row = totals(ledger)["support/u-1/gpt-4o-mini"]
    assert (row["requests"], row["input_tokens"], row["estimated"]) == (1, REPORTED.input_tokens, 0)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("feature", 5),
        ("user", 5),
        ("feature", ""),
        ("model", ""),
        ("max_output_tokens", -1),
        ("max_output_tokens", True),
    ],
)
def test_options_are_checked_when_the_handler_is_made(option: str, value: Any) -> None:
    with pytest.raises(InvalidInputError) as e:
        BudgetCallbackHandler(Ledger("memory://"), **{option: value})
    assert e.value.field == option


@pytest.mark.parametrize("value", ["text", None, {"raw": {}}])
def test_cost_of_response_refuses_a_non_response_like_usage_of(value: object) -> None:
    with pytest.raises(InvalidInputError) as e:
        cost_of_response(value)  # type: ignore[arg-type]
    assert e.value.field == "response"


def test_the_same_pdf_gets_the_same_file_estimate_in_both_adapters() -> None:
    from langchain_core.messages import HumanMessage

    from langchain_tokenbudget.messages import to_core_request

    block = {
        "type": "file",
        "base64": base64.b64encode(PDF_TWO_PAGES).decode(),
        "mime_type": "application/pdf",
    }
    (stand_in,) = to_core_request([HumanMessage(content=[block])])
    assert stand_in.file_tokens == 2 * PDF_PAGE_TOKENS
    document = [ChatMessage(role="user", blocks=[DocumentBlock(data=PDF_TWO_PAGES)])]
    count = count_input(COUNTER, messages=document, prompt=None, kwargs={})
    assert 2 * PDF_PAGE_TOKENS < count < 2 * PDF_PAGE_TOKENS + 100  # the rest: the block's JSON text
