"""The model registry: genai-prices data, family rules, overrides, unknown models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tokenbudget_core.counting import TokenCounter
from tokenbudget_core.errors import InvalidInputError, TokenBudgetError, UnknownModelError
from tokenbudget_core.registry import ModelRegistry


def test_dated_and_provider_prefixed_names_resolve_to_canonical_models() -> None:
    reg = ModelRegistry()
    info = reg.get("gpt-4o-2024-08-06")
    assert (info.canonical, info.provider, info.encoding) == ("gpt-4o", "openai", "o200k_base")
    assert info.context_window == 128_000
    assert info.max_output_tokens == 16_384
    assert reg.get("openai/gpt-4.1").canonical == "gpt-4.1"
    claude = reg.get("claude-sonnet-4-5-20250929")
    assert (claude.canonical, claude.provider, claude.tokenizer) == (
        "claude-sonnet-4-5",
        "anthropic",
        "anthropic",
    )
    assert claude.context_window == 200_000


def test_openai_fine_tunes_count_like_their_base_and_cost_their_fine_tune_price() -> None:
    """``ft:<base>:<org>:<suffix>:<id>`` names: the base model's tokenizer and limits, priced by
    genai-prices' fine-tune entry (fine-tuned inference costs more than the base model)."""
    from tokenbudget_core import Usage, cost_of
    from tokenbudget_core.ledger import Ledger

    reg = ModelRegistry()
    million = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    for name, base in [
        ("ft:gpt-4o-mini-2024-07-18:acme::9abc", "gpt-4o-mini"),
        ("ft:gpt-4o-2024-08-06:acme:support-bot:9xyz", "gpt-4o"),
        ("openai/ft:gpt-4o-mini-2024-07-18:acme::9abc", "gpt-4o-mini"),
    ]:
        info, base_info = reg.get(name), reg.get(base)
        assert (info.provider, info.encoding, info.context_window) == (
            "openai",
            base_info.encoding,
            base_info.context_window,
        )
        assert TokenCounter.for_model(name).count("hello world").exact
        assert cost_of(million, name) > cost_of(million, base)
    ledger = Ledger("memory://")
    charge = ledger.record(
        Usage(input_tokens=1_000, output_tokens=100), model="ft:gpt-4o-mini-2024-07-18:acme::9abc"
    )
    assert charge.cost_usd == cost_of(
        Usage(input_tokens=1_000, output_tokens=100), "ft:gpt-4o-mini-2024-07-18:a::b"
    )
    with pytest.raises(UnknownModelError):
        reg.get("ft:not-a-model:acme::x")


def test_unknown_model_names_close_matches() -> None:
    with pytest.raises(UnknownModelError) as info:
        ModelRegistry().get("gpt-4oo")
    err = info.value
    assert isinstance(err, LookupError)
    assert isinstance(err, TokenBudgetError)
    assert "gpt-4o" in err.suggestions
    assert "gpt-4o" in str(err)
    assert "ModelRegistry.register" in str(err)  # (fallback= is advised by the calls taking it)


def test_explicit_fallback_is_used_and_reported() -> None:
    info = ModelRegistry().get("acme-llm-7b", fallback="gpt-4o")
    assert info.name == "acme-llm-7b"
    assert info.fallback_for == "acme-llm-7b"
    assert info.encoding == "o200k_base"
    counter = TokenCounter.for_model("acme-llm-7b", fallback="gpt-4o")
    assert counter.count("hello world") == TokenCounter.for_model("gpt-4o").count("hello world")
    with pytest.raises(UnknownModelError):
        TokenCounter.for_model("acme-llm-7b")


def test_register_in_code_overrides_and_adds() -> None:
    reg = ModelRegistry()
    reg.register("acme-7b", provider="acme", context_window=32_000, max_output_tokens=4_096)
    info = reg.get("acme-7b")
    assert (info.provider, info.tokenizer, info.context_window) == ("acme", "estimate", 32_000)
    reg.register("gpt-4o", provider="openai", context_window=64_000)
    assert reg.get("gpt-4o").context_window == 64_000
    assert "acme-7b" in reg
    assert "acme-7b" not in ModelRegistry()  # overrides belong to their registry, not the class


def test_overrides_from_toml_and_json(tmp_path: Path) -> None:
    toml = tmp_path / "models.toml"
    toml.write_text(
        '[models."house-model"]\nprovider = "openai"\ncontext_window = 50000\nencoding = "cl100k_base"\n'
    )
    reg = ModelRegistry()
    reg.load_file(toml)
    assert reg.get("house-model").encoding == "cl100k_base"
    assert TokenCounter.for_model("house-model", registry=reg).count("hi").encoding == "cl100k_base"
    js = tmp_path / "models.json"
    js.write_text(json.dumps({"models": {"j-model": {"provider": "acme", "max_output_tokens": 1000}}}))
    reg.load_file(js)
    assert reg.get("j-model").max_output_tokens == 1000


@pytest.mark.parametrize(
    ("content", "field"),
    [
        ('[models."m"]\ncontext_window = 5\n', "models['m'].provider"),
        ('[models."m"]\nprovider = "openai"\ncontext_window = -5\n', "models['m'].context_window"),
        ('[models."m"]\nprovider = "openai"\ntokenizer = "magic"\n', "models['m'].tokenizer"),
        ('[models."m"]\nprovider = "openai"\ncolour = "red"\n', "models['m'].colour"),
        ("not = [valid toml", "models_file"),
        ("[other]\nx = 1\n", "models_file"),
    ],
)
def test_bad_models_file_names_the_field(tmp_path: Path, content: str, field: str) -> None:
    path = tmp_path / "models.toml"
    path.write_text(content)
    with pytest.raises(InvalidInputError) as info:
        ModelRegistry().load_file(path)
    assert info.value.field == field


def test_bad_model_argument() -> None:
    with pytest.raises(InvalidInputError, match="model"):
        ModelRegistry().get("")
    with pytest.raises(InvalidInputError):
        ModelRegistry().get(None)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="cannot read"):
        ModelRegistry().load_file("/nonexistent/models.toml")


def test_other_providers_get_flagged_estimates() -> None:
    counter = TokenCounter.for_model("gemini-2.5-pro")
    n = counter.count_messages([{"role": "user", "content": "Hello there"}])
    assert not n.exact
    assert n.method == "estimate"
