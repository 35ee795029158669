"""The core's rule for content blocks a Message cannot represent: ``estimate_block``, ``estimated_count``."""

from __future__ import annotations

import base64

import pytest

from tokenbudget_core.counting import (
    FILE_TOKENS,
    PDF_PAGE_TOKENS,
    TokenCounter,
    estimate_block,
    estimated_count,
)

PDF_THREE_PAGES = (
    b"%PDF-1.7\n<</Type /Pages /Count 3>>\n<</Type /Page>>\n<</Type/Page >>\n<</Type /Page/Parent 1>>\n"
)
PDF_B64 = base64.b64encode(PDF_THREE_PAGES).decode()


@pytest.mark.parametrize(
    "block",
    [
        {"type": "file", "base64": PDF_B64, "mime_type": "application/pdf"},  # LangChain standard
        {
            "type": "file",
            "file": {"file_data": f"data:application/pdf;base64,{PDF_B64}", "filename": "a.pdf"},
        },
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF_B64}},
        {"block_type": "document", "data": PDF_B64.encode(), "url": None, "path": None},  # LlamaIndex dump
    ],
)
def test_a_pdf_counts_its_pages_and_its_payload_is_left_out_of_the_text(block: dict[str, object]) -> None:
    estimate = estimate_block(block)
    assert estimate.file_tokens == 3 * PDF_PAGE_TOKENS
    assert PDF_B64 not in estimate.text


@pytest.mark.parametrize(
    "block",
    [
        {"type": "file", "base64": "JVBERi0xLjQK", "mime_type": "application/pdf"},  # no readable page
        {"type": "file", "file_id": "file-abc"},
        {"type": "file", "url": "https://example.com/a.pdf", "mime_type": "application/pdf"},
        {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}},
        {"type": "input_audio", "input_audio": {"data": base64.b64encode(bytes(range(256))).decode()}},
        {"block_type": "audio", "audio": bytes(range(256)), "path": None, "url": None},
    ],
)
def test_a_file_of_unknown_size_counts_the_documented_estimate_never_zero(block: dict[str, object]) -> None:
    assert estimate_block(block).file_tokens == FILE_TOKENS > 0


def test_text_is_counted_as_text_and_adds_no_file_estimate() -> None:
    document = {
        "type": "document",
        "source": {"type": "text", "media_type": "text/plain", "data": "Hello, world"},
    }
    assert estimate_block(document).file_tokens == 0
    assert "Hello, world" in estimate_block(document).text
    csv = {
        "type": "file",
        "base64": base64.b64encode(b"city,temp\nOslo,18").decode(),
        "mime_type": "text/csv",
    }
    assert (estimate_block(csv).file_tokens, estimate_block(csv).text.endswith("city,temp\nOslo,18")) == (
        0,
        True,
    )
    result = {
        "type": "web_search_tool_result",
        "content": [{"type": "web_search_result", "url": "https://yr.no", "title": "Oslo: 18C"}],
    }
    assert estimate_block(result).file_tokens == 0  # a URL outside a file block is text
    assert "Oslo: 18C" in estimate_block(result).text


def test_estimated_count_adds_and_flags() -> None:
    counter = TokenCounter.for_model("gpt-4o")
    count = estimated_count(counter.count("Hello"), FILE_TOKENS)
    assert int(count) == int(counter.count("Hello")) + FILE_TOKENS
    assert (count.exact, count.method, count.model) == (False, "estimate", "gpt-4o")
    assert (int(estimated_count(7)), estimated_count(7).exact) == (7, False)
