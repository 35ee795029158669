"""``tokenbudget truncate --help`` states the real ``--marker`` defaults (keep_both and smart put
a marker in unless ``--marker ''``), and the defaults and ``--marker ''`` do what it says."""

from __future__ import annotations

from cli_support import run

TEXT = " ".join(f"Sentence number {i} explains one more detail of the budget." for i in range(40))


def _help() -> str:
    return " ".join(run("truncate", "--help").stdout.split())


def test_help_no_longer_claims_no_marker_by_default() -> None:
    assert "(default: none)" not in _help()


def test_help_names_each_strategy_default_and_how_to_have_none() -> None:
    text = _help()
    assert "tokens truncated" in text
    assert "keep_both" in text
    assert "[…]" in text
    assert "--marker '' for none" in text


def test_keep_both_and_smart_put_a_marker_in_by_default() -> None:
    both = run("truncate", "-n", "40", "-s", "keep_both", stdin=TEXT)
    assert both.exit_code == 0, both.output
    assert "tokens truncated …]" in both.stdout
    smart = run("truncate", "-n", "40", "-s", "smart", stdin=TEXT)
    assert smart.exit_code == 0, smart.output
    assert smart.stdout.rstrip("\n").endswith("[…]")


def test_an_empty_marker_gives_none() -> None:
    for strategy in ("keep_both", "smart"):
        result = run("truncate", "-n", "40", "-s", strategy, "--marker", "", stdin=TEXT)
        assert result.exit_code == 0, result.output
        assert "…" not in result.stdout
        assert "truncated" not in result.stdout
