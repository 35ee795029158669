"""The price and model file loaders name ``path`` when given a non-path, as ``load_policy`` does.

Review s22-docs B2: ``load_prices(None)`` (``os.environ.get("TOKENBUDGET_PRICES")`` unset) raised
``pathlib``'s bare ``TypeError``, though the docstrings promise ``InvalidInputError``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tokenbudget_core import InvalidInputError, ModelRegistry, PriceTable, load_prices

LOADERS: dict[str, Callable[[Any], object]] = {
    "load_prices": lambda path: load_prices(path, table=PriceTable()),
    "PriceTable.load_file": lambda path: PriceTable().load_file(path),
    "ModelRegistry.load_file": lambda path: ModelRegistry().load_file(path),
}


@pytest.mark.parametrize("loader", sorted(LOADERS))
@pytest.mark.parametrize("bad", [None, 0, 1.5, ["prices.toml"], b"prices.toml", "", "  "])
def test_a_non_path_is_a_named_error(loader: str, bad: Any) -> None:
    with pytest.raises(InvalidInputError) as info:
        LOADERS[loader](bad)
    assert info.value.field == "path"
    assert info.value.fix


def test_a_real_path_still_loads(tmp_path: Path) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text('[prices."acme-7b"]\ninput_mtok = "1"\noutput_mtok = "2"\n', encoding="utf-8")
    models = tmp_path / "models.toml"
    models.write_text('[models."acme-7b"]\nprovider = "acme"\ncontext_window = 32000\n', encoding="utf-8")
    assert set(PriceTable().load_file(prices)) == {"acme-7b"}
    assert set(load_prices(str(prices), table=PriceTable())) == {"acme-7b"}
    assert [info.name for info in ModelRegistry().load_file(models)] == ["acme-7b"]
