"""LlamaIndex ``RoutedLLM`` routes each tier with the output its LLM asks for itself (its
``max_tokens``, as LlamaIndex's OpenAI and Anthropic integrations send it): a prompt that fits
gpt-4o-mini's 128,000-token window with the router's default 1,024 output tokens but not with
the 8,000 that tier's LLM is set to goes to the tier whose window holds it."""

from __future__ import annotations

from llama_index.core.llms import MockLLM

from llamaindex_tokenbudget import RoutedLLM

PROMPT = "What is the main topic of this text? " + "word " * 125_000  # ~125,017 gpt-4o-mini tokens
MODELS = {"small": "gpt-4o-mini", "large": "gpt-4.1"}


def tier_of(small_cap: int | None, large_cap: int | None, **kwargs: object) -> str:
    routed = RoutedLLM(
        tiers={"small": MockLLM(max_tokens=small_cap), "large": MockLLM(max_tokens=large_cap)}, models=MODELS
    )
    response = routed.complete(PROMPT, **kwargs)
    return str(response.additional_kwargs["tokenbudget_route"]["tier"])


def test_a_tier_llms_own_max_tokens_is_what_its_window_is_checked_with() -> None:
    assert tier_of(8_000, None) == "large"
    assert tier_of(None, None) == "small"  # the router's default 1,024: it fits


def test_a_larger_tiers_own_cap_does_not_move_a_prompt_the_smaller_tier_holds() -> None:
    assert tier_of(None, 30_000) == "small"


def test_the_calls_own_cap_comes_first() -> None:
    assert tier_of(8_000, None, max_tokens=500) == "small"
