"""Importing an adapter package without its framework names the extra to install.

Review s22-docs D6: the README promises "a missing extra is an ``ImportError`` naming it", but
``import langchain_tokenbudget`` without langchain-core (and ``import llamaindex_tokenbudget``
without llama-index-core) gave a bare ``No module named 'langchain_core'``. The install without
the extra is simulated in a subprocess by a meta-path hook that hides the framework.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

HIDE = """
import importlib.abc, sys
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {hidden!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, Hide())
for name in list(sys.modules):
    if name.split(".")[0] in {hidden!r}:
        del sys.modules[name]
from tokenbudget_core import MissingDependencyError
try:
    import {package}
except MissingDependencyError as e:
    assert isinstance(e, ImportError)
    print("MISSING", e.extra, e)
else:
    print("IMPORTED")
"""


def _import_hiding(package: str, hidden: list[str]) -> str:
    code = HIDE.format(package=package, hidden=hidden)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize(
    ("package", "hidden", "extra"),
    [
        ("langchain_tokenbudget", ["langchain_core", "langchain", "langgraph"], "langchain"),
        ("llamaindex_tokenbudget", ["llama_index"], "llamaindex"),
    ],
)
def test_a_missing_framework_names_its_extra(package: str, hidden: list[str], extra: str) -> None:
    out = _import_hiding(package, hidden)
    assert out.startswith(f"MISSING {extra} "), out
    assert f'pip install "tokenbudget-kit[{extra}]"' in out


def test_langchain_core_alone_still_imports_the_langchain_adapters() -> None:
    # langchain (agents) is needed only by the lazily imported middlewares
    assert _import_hiding("langchain_tokenbudget", ["langchain"]) == "IMPORTED"
