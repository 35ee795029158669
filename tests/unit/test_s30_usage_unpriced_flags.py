"""README ("Not priced (yet), so the usage read from such a reply is flagged `estimated`"): audio
tokens and OpenAI's priority / flex tiers are charged at text and standard rates, so the usage
is flagged ``estimated`` whichever way it is read: LangChain's ``usage_metadata`` (what every
LangChain budget adapter reads) and Gemini's per-modality details, as the raw OpenAI reply is."""

from __future__ import annotations

from typing import Any

import pytest

from tokenbudget_core import Usage
from tokenbudget_core.usage_sources import usage_from_llamaindex, usage_from_openai_chat

PLAIN: dict[str, Any] = {"input_tokens": 1000, "output_tokens": 500, "total_tokens": 1500}


@pytest.mark.parametrize(
    "details",
    [
        {"input_token_details": {"audio": 800}},
        {"output_token_details": {"audio": 400}},
        {"input_token_details": {"priority": 1000, "priority_cache_read": 200}},
        {"output_token_details": {"flex_reasoning": 100}},
        {"input_token_details": {"flex": 1000}},
    ],
)
def test_langchain_audio_and_priced_tiers_are_flagged(details: dict[str, Any]) -> None:
    assert Usage.from_langchain({**PLAIN, **details}).estimated


@pytest.mark.parametrize(
    "details",
    [
        {"input_token_details": {"audio": 0, "cache_read": 200}},
        {"input_token_details": {"priority": 0}},
        {"output_token_details": {"reasoning": 100}},
    ],
)
def test_langchain_text_usage_stays_exact(details: dict[str, Any]) -> None:
    assert not Usage.from_langchain({**PLAIN, **details}).estimated


def test_the_same_audio_reply_reads_alike_raw_and_through_langchain() -> None:
    raw = {
        "object": "chat.completion",
        "model": "gpt-audio",
        "usage": {
            "prompt_tokens": 1000,
            "completion_tokens": 500,
            "total_tokens": 1500,
            "prompt_tokens_details": {"audio_tokens": 800},
            "completion_tokens_details": {"audio_tokens": 400},
        },
    }
    lc = {**PLAIN, "input_token_details": {"audio": 800}, "output_token_details": {"audio": 400}}
    assert usage_from_openai_chat(raw).estimated == Usage.from_langchain(lc).estimated is True


@pytest.mark.parametrize("camel", [False, True])
def test_gemini_audio_modality_is_flagged(camel: bool) -> None:
    details = [{"modality": "AUDIO", "token_count": 900}, {"modality": "TEXT", "token_count": 100}]
    meta: dict[str, Any] = {"prompt_token_count": 1000, "candidates_token_count": 100}
    if camel:
        meta = {"promptTokenCount": 1000, "candidatesTokenCount": 100}
        details = [{"modality": d["modality"], "tokenCount": d["token_count"]} for d in details]
    meta["promptTokensDetails" if camel else "prompt_tokens_details"] = details
    usage = usage_from_llamaindex({"usageMetadata" if camel else "usage_metadata": meta})
    assert usage.input_tokens == 1000
    assert usage.estimated


def test_gemini_text_and_image_usage_stays_exact() -> None:
    meta = {
        "prompt_token_count": 1300,
        "candidates_token_count": 100,
        "prompt_tokens_details": [
            {"modality": "TEXT", "token_count": 1000},
            {"modality": "IMAGE", "token_count": 300},
        ],
    }
    assert not usage_from_llamaindex({"usage_metadata": meta}).estimated
