"""RoutedLLM tells its LLMs apart by place, not by model name: a fallback that names its tier's
model (the same model on another endpoint) is called when the tier's endpoint fails."""

from __future__ import annotations

import asyncio

import pytest
from test_llamaindex_routed_llm import RateLimited, TierLLM

from llamaindex_tokenbudget import RoutedLLM


@pytest.mark.parametrize("how", ["complete", "acomplete", "stream_complete"])
def test_a_fallback_of_the_same_model_is_called_after_the_tier_fails(how: str) -> None:
    primary = TierLLM(model_name="gpt-4o-mini", fail_with=RateLimited())
    backup = TierLLM(model_name="gpt-4o-mini", answer="from the backup endpoint")
    llm = RoutedLLM(
        tiers={"small": primary, "large": TierLLM(model_name="gpt-4o")}, fallbacks={"small": [backup]}
    )
    question = "What is the capital of France?"
    if how == "complete":
        text = llm.complete(question).text
    elif how == "acomplete":
        text = asyncio.run(llm.acomplete(question)).text
    else:
        text = [r.text for r in llm.stream_complete(question)][-1]
    assert text == "from the backup endpoint"
    assert (len(primary.prompts), len(backup.prompts)) == (1, 1)


def test_two_tiers_of_one_model_are_each_called() -> None:
    quick = TierLLM(model_name="gpt-4o", answer="quick")
    careful = TierLLM(model_name="gpt-4o", answer="careful")
    llm = RoutedLLM(tiers={"small": quick, "large": careful})
    assert llm.complete("Hi", force_tier="large").text == "careful"
    assert llm.complete("Hi", force_tier="small").text == "quick"
