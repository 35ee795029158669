"""docs/design/routing-api.md calls its signatures binding: the defaults it gives are the code's.

Review s22-docs D4: it gave ``HeuristicClassifier(..., base=0.35, ...)``; the code's default is 0.3.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from tokenbudget_core.complexity import HeuristicClassifier

DOC = Path(__file__).resolve().parents[2] / "docs" / "design" / "routing-api.md"


def test_the_heuristic_classifier_defaults_in_the_design_doc_are_the_codes() -> None:
    text = DOC.read_text(encoding="utf-8")
    [given] = re.findall(r"HeuristicClassifier\(\.\.\., (base=[^)]*)\)", text)
    defaults = dict(re.findall(r"(\w+)=([0-9.]+)", given))
    assert set(defaults) == {"base", "length_weight"}
    params = inspect.signature(HeuristicClassifier.__init__).parameters
    for name, value in defaults.items():
        assert params[name].default == float(value), name
