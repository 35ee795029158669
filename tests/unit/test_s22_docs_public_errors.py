"""The public error tree is importable from the package.

Review s22-docs D7: ``StoreRefusedError`` is drawn in the error tree (``tokenbudget_core.errors``)
but ``from tokenbudget_core import StoreRefusedError`` failed.
"""

from __future__ import annotations

import re

import tokenbudget_core
from tokenbudget_core import errors


def test_every_class_of_the_error_tree_is_exported() -> None:
    drawn = set(re.findall(r"\b([A-Z][A-Za-z]+Error)\b", errors.__doc__ or "")) & set(errors.__all__)
    assert "StoreRefusedError" in drawn
    assert len(drawn) == 13
    for name in drawn:
        assert name in tokenbudget_core.__all__, name
        assert getattr(tokenbudget_core, name) is getattr(errors, name)
    from tokenbudget_core import StoreRefusedError

    assert issubclass(StoreRefusedError, tokenbudget_core.TokenBudgetError)
