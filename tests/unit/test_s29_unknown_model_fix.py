"""An unknown or unpriced model's error names what the call that raised it takes: ``fallback=``
only where it exists (it was advised for Ledger.commit / record, cost_of and the CLI, where
following it was a TypeError or impossible), ``unknown_model='unpriced'`` where that exists, and
the environment's files in the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli_support import assert_one_line_error, isolate, run
from tokenbudget_core import TokenCounter, UnknownModelError, Usage, cost_of
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.registry import get_model

USAGE = Usage(input_tokens=10, output_tokens=2)


def test_commit_and_record_name_unknown_model_unpriced_not_fallback() -> None:
    ledger = Ledger("memory://")
    reservation = ledger.reserve(model="gpt-4o", input_tokens=10, max_output_tokens=10)
    for call in (
        lambda: ledger.commit(reservation, USAGE, model="gpt-4o-2099-12-31"),
        lambda: ledger.record(USAGE, model="gpt-4o-2099-12-31"),
    ):
        with pytest.raises(UnknownModelError) as info:
            call()
        assert "unknown_model='unpriced'" in str(info.value)
        assert "fallback=" not in str(info.value)
        assert info.value.fix.startswith("pass unknown_model='unpriced'")
    # and the advice works: the call is recorded, unpriced
    charge = ledger.record(USAGE, model="gpt-4o-2099-12-31", unknown_model="unpriced")
    assert charge.cost_usd is None or charge.cost_usd == 0


def test_calls_without_a_fallback_option_do_not_advise_one() -> None:
    with pytest.raises(UnknownModelError) as info:
        cost_of(USAGE, "my-fine-tune")
    assert "fallback=" not in str(info.value)
    assert "ModelRegistry.register" in str(info.value)


def test_calls_that_take_a_fallback_still_advise_it() -> None:
    for call in (lambda: TokenCounter.for_model("my-fine-tune"), lambda: get_model("my-fine-tune")):
        with pytest.raises(UnknownModelError, match="fallback='<known model>'"):
            call()
    assert TokenCounter.for_model("my-fine-tune", fallback="gpt-4o").count("hi") > 0


def test_the_cli_names_the_environments_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate(monkeypatch, tmp_path)
    models = tmp_path / "models.toml"  # a model the registry knows, with no price anywhere
    models.write_text(
        '[models."acme-7b"]\nprovider = "acme"\ncontext_window = 32000\nmax_output_tokens = 4096\n'
    )
    monkeypatch.setenv("TOKENBUDGET_MODELS", str(models))
    result = run("cost", "-m", "my-fine-tune", "--input", "1", "--output", "1")
    assert_one_line_error(result, 1, "Unknown model 'my-fine-tune'", "$TOKENBUDGET_MODELS")
    assert "fallback=" not in result.stderr
    result = run("cost", "-m", "acme-7b", "--input", "1", "--output", "1")
    assert_one_line_error(result, 3, "No price is known for model 'acme-7b'", "$TOKENBUDGET_PRICES")
    assert "register_price" not in result.stderr
