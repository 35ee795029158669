"""Image and tokenizer rules follow the model's family, whatever the name looks like.

- A fine-tuned OpenAI model's images cost what its base model's do (``ft:gpt-4o-mini...``).
- An OpenAI image rule lookup for a name of no known family gives an upper bound, not gpt-4o's.
- OpenAI models served by Azure (and OpenRouter, GitHub Copilot) count with OpenAI's tokenizer.
- The estimator prices images of non-Claude models by an upper bound (or the model's OpenAI
  rule), not by Claude's rule capped at 1,600; Claude models keep Claude's rule.
- A fallback entry remembers the model standing in for the unknown name.
"""

from __future__ import annotations

from typing import Any

import pytest

from tokenbudget_core.calibration import Calibration
from tokenbudget_core.counting import TokenCounter
from tokenbudget_core.estimating import EstimatingTokenCounter, unknown_model_counter
from tokenbudget_core.images import anthropic_image_tokens, openai_image_tokens
from tokenbudget_core.messages import ImagePart
from tokenbudget_core.registry import ModelRegistry, get_model

FT_MINI = "ft:gpt-4o-mini-2024-07-18:acme::abc123"
SIZED = ImagePart(url="https://example.com/cat.png", detail="high", width=1024, height=1024)
UNSIZED = ImagePart(url="https://example.com/cat.png", detail="high")
# gpt-4o-mini: 2833 + 5667 per 512 px tile; 1024x1024 -> 768x768 -> 4 tiles
MINI_1024 = 2833 + 4 * 5667
MINI_MAX = 2833 + 8 * 5667  # the most tiles any image can take (size unknown)


def image_message(width: int | None = 1024, height: int | None = 1024) -> list[dict[str, Any]]:
    image: dict[str, Any] = {"url": "https://example.com/cat.png", "detail": "high"}
    if width is not None:
        image.update(width=width, height=height)
    return [
        {
            "role": "user",
            "content": [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": image}],
        }
    ]


TEXT_ONLY = [{"role": "user", "content": [{"type": "text", "text": "What is this?"}]}]


# -- finding 1: fine-tunes and unknown OpenAI families ----------------------------------------


def test_fine_tuned_mini_counts_images_like_its_base_model() -> None:
    base = TokenCounter.for_model("gpt-4o-mini-2024-07-18")
    tuned = TokenCounter.for_model(FT_MINI)
    sized = tuned.count_messages(image_message())
    assert int(sized) == int(base.count_messages(image_message()))
    assert int(sized) - int(tuned.count_messages(TEXT_ONLY)) == MINI_1024
    unsized = tuned.count_messages(image_message(None))
    assert int(unsized) == int(base.count_messages(image_message(None)))
    assert int(unsized) - int(tuned.count_messages(TEXT_ONLY)) == MINI_MAX
    assert not unsized.exact


@pytest.mark.parametrize(
    ("name", "base"),
    [
        (FT_MINI, "gpt-4o-mini"),
        ("ft:gpt-4.1-mini-2025-04-14:acme:triage:xyz789", "gpt-4.1-mini"),
        ("ft:gpt-4o-2024-08-06:acme::def456", "gpt-4o"),
        ("openai/gpt-4o-mini", "gpt-4o-mini"),
    ],
)
def test_image_rule_of_a_fine_tune_or_prefixed_name_is_its_base_models(name: str, base: str) -> None:
    for part in (SIZED, UNSIZED, ImagePart(url="https://example.com/cat.png", detail="low")):
        assert openai_image_tokens(part, name) == openai_image_tokens(part, base)


KNOWN = ["gpt-4o", "gpt-4o-mini", "gpt-4.1-mini", "gpt-4.1-nano", "gpt-5", "o3", "o4-mini", "computer-use"]


@pytest.mark.parametrize("name", ["gpt-6-sol", "acme-vision-1", "gpt-5.4-mini", "ft:acme-base:org::id"])
@pytest.mark.parametrize(
    "part",
    [
        SIZED,
        UNSIZED,
        ImagePart(url="https://example.com/cat.png", detail="low"),
        ImagePart(url="https://example.com/cat.png", width=4000, height=300),
        ImagePart(url="https://example.com/cat.png", detail="low", width=2048, height=2048),
    ],
)
def test_unknown_openai_family_gets_the_most_expensive_known_rule(name: str, part: ImagePart) -> None:
    result = openai_image_tokens(part, name)
    assert not result.exact  # an upper bound, not the model's own figure
    assert result.tokens >= max(openai_image_tokens(part, known).tokens for known in KNOWN)
    assert result.tokens >= anthropic_image_tokens(part).tokens


def test_registered_openai_model_of_unknown_family_does_not_undercount_images() -> None:
    registry = ModelRegistry()
    registry.register("acme-gpt", provider="openai")  # tiktoken, o200k; image rule unknown
    counter = TokenCounter.for_model("acme-gpt", registry=registry)
    n = counter.count_messages(image_message())
    assert int(n) - int(counter.count_messages(TEXT_ONLY)) >= MINI_1024
    assert not n.exact


# -- finding 5: OpenAI models served through Azure and other hosts ---------------------------


@pytest.mark.parametrize(
    ("hosted", "model"),
    [
        ("azure/gpt-4o-mini", "gpt-4o-mini"),
        ("azure/gpt-4o", "gpt-4o"),
        ("azure/gpt-4.1-mini", "gpt-4.1-mini"),
        ("azure/o4-mini", "o4-mini"),
        ("openrouter/openai/gpt-4o", "gpt-4o"),
        ("github-copilot/gpt-4o", "gpt-4o"),
    ],
)
def test_openai_models_on_other_hosts_count_like_openai(hosted: str, model: str) -> None:
    info = get_model(hosted)
    assert (info.tokenizer, info.encoding) == ("tiktoken", get_model(model).encoding)
    assert info.provider == hosted.partition("/")[0]  # still priced as that host's model
    on_host, at_openai = TokenCounter.for_model(hosted), TokenCounter.for_model(model)
    text = "Budgets reserve on pre-call counts: 🚀 ünïcödé"
    assert int(on_host.count(text)) == int(at_openai.count(text))
    for messages in (image_message(), image_message(None), image_message(2048, 4096)):
        assert int(on_host.count_messages(messages)) == int(at_openai.count_messages(messages))


def test_azure_gpt_4o_mini_image_is_not_priced_by_claudes_rule() -> None:
    counter = TokenCounter.for_model("azure/gpt-4o-mini")
    assert int(counter.count_messages(image_message())) - int(counter.count_messages(TEXT_ONLY)) == MINI_1024


def test_open_weight_gpt_oss_on_other_hosts_stays_an_estimate() -> None:
    for name in ("azure/gpt-oss-120b", "groq/openai/gpt-oss-120b"):
        assert get_model(name).tokenizer == "estimate"


@pytest.mark.parametrize("name", ["gemini-2.5-pro", "google/gemini-2.5-pro"])
def test_a_gemini_image_is_priced_by_geminis_tiles_and_an_unknown_size_by_the_upper_bound(name: str) -> None:
    """Google: 258 tokens per 768x768 tile (Gemini 3's default high resolution: 1,120 an image).
    Before: Claude's rule, capped at 1,600 whatever the size (a 3072 px image is 16 tiles)."""
    counter = EstimatingTokenCounter(get_model(name), calibration=Calibration(prior=1.0))
    text = int(counter.count_messages(TEXT_ONLY))
    assert int(counter.count_messages(image_message())) - text == max(4 * 258, 1120)
    big = ImagePart(url="https://example.com/cat.png", width=3072, height=3072)
    framing = int(counter.count_messages([{"role": "user", "content": ""}]))
    assert int(counter.count_messages([{"role": "user", "content": [big]}])) - framing == 16 * 258
    assert int(counter.count_messages(image_message(None))) - text >= MINI_MAX
    assert int(counter.count_message(image_message()[0])) >= 1120


def test_the_estimate_for_a_model_of_no_known_family_is_the_upper_bound() -> None:
    registry = ModelRegistry()
    registry.register("acme-vision-1", provider="acme", tokenizer="estimate")
    counter = EstimatingTokenCounter(registry.get("acme-vision-1"), calibration=Calibration(prior=1.0))
    text = int(counter.count_messages(TEXT_ONLY))
    assert int(counter.count_messages(image_message())) - text >= MINI_1024
    assert int(counter.count_messages(image_message(None))) - text >= MINI_MAX
    big = ImagePart(url="https://example.com/cat.png", width=3072, height=3072)
    assert int(counter.count_messages([{"role": "user", "content": [big]}])) >= max(
        openai_image_tokens(big, known).tokens for known in KNOWN
    )


def test_unknown_model_counter_image_is_an_upper_bound() -> None:
    counter = unknown_model_counter("acme-mystery-9")
    assert int(counter.count_messages(image_message())) >= MINI_1024


def test_a_low_correction_factor_does_not_shrink_the_image_upper_bound() -> None:
    calibration = Calibration(prior=0.5, bounds=(0.5, 3.0))
    counter = EstimatingTokenCounter(get_model("gemini-2.5-pro"), calibration=calibration)
    assert int(counter.count_messages(image_message())) >= 1120


def test_usage_of_a_request_with_an_upper_bound_image_does_not_drag_the_factor_down() -> None:
    calibration = Calibration()
    counter = EstimatingTokenCounter(get_model("gemini-2.5-pro"), calibration=calibration)
    text_before = int(counter.count("The quick brown fox jumps over the lazy dog."))
    counter.observe(image_message(), actual_input_tokens=1_040)  # Gemini: 4 tiles x 258 + text
    assert calibration.state("gemini-2.5-pro").observations == 0
    assert int(counter.count("The quick brown fox jumps over the lazy dog.")) == text_before


def test_openai_rule_images_are_taken_off_reported_usage_before_learning() -> None:
    registry = ModelRegistry()
    registry.register("acme-4o", provider="openai", tokenizer="estimate", canonical="gpt-4o")
    calibration = Calibration(prior=1.0)
    counter = EstimatingTokenCounter(registry.get("acme-4o"), calibration=calibration)
    messages = image_message()
    raw = counter.raw_estimate_messages(messages)
    assert raw - counter.raw_estimate_messages(TEXT_ONLY) == 765  # gpt-4o's own rule
    text_raw = raw - 765
    counter.observe(messages, actual_input_tokens=765 + 2 * text_raw)
    assert calibration.factor("gpt-4o") == pytest.approx(2.0)


def test_claude_estimates_keep_claudes_image_rule() -> None:
    for name in ("claude-sonnet-4-5", "azure/claude-sonnet-4-5"):
        counter = EstimatingTokenCounter(get_model(name), calibration=Calibration(prior=1.0))
        added = int(counter.count_messages(image_message())) - int(counter.count_messages(TEXT_ONLY))
        assert added == anthropic_image_tokens(SIZED).tokens == 1399


# -- finding 7: a fallback entry names its stand-in --------------------------------------------


def test_fallback_entry_names_the_model_standing_in() -> None:
    info = ModelRegistry().get("acme-claude-proxy", fallback="claude-3-5-sonnet-20241022")
    assert (info.name, info.fallback_for) == ("acme-claude-proxy", "acme-claude-proxy")
    assert info.fallback_model == "claude-3-5-sonnet-20241022"
    assert ModelRegistry().get("claude-sonnet-4-5").fallback_model is None
