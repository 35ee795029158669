"""Importing an adapter package with its framework installed but too old (it lacks a module the
adapters import) says so, with the versions needed and the upgrade command (review s22b #5): it
said the framework "is not installed", and told to install what is installed. The error is still a
:class:`MissingDependencyError` (an ``ImportError`` and a ``TokenBudgetError``); the framework
absent entirely is still "not installed". An older framework is simulated in a subprocess by a
meta-path hook that hides one of its modules."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

HIDE = """
import importlib.abc, importlib.metadata, sys
VERSIONS = {versions!r}  # what the installed packages say they are (an older install, simulated)
_version = importlib.metadata.version
importlib.metadata.version = lambda name: VERSIONS.get(name) or _version(name)
HIDDEN = {hidden!r}
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == HIDDEN or name.startswith(HIDDEN + "."):
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, Hide())
from tokenbudget_core import MissingDependencyError, TokenBudgetError
try:
    {statement}
except TokenBudgetError as e:
    assert isinstance(e, MissingDependencyError) and isinstance(e, ImportError), type(e)
    print("MISSING", getattr(e, "missing", None), "|", e)
else:
    print("IMPORTED")
"""

FRAMEWORKS = {
    "langchain_tokenbudget": ("langchain-core", "langchain", "langchain_core.outputs"),
    "llamaindex_tokenbudget": (
        "llama-index-core",
        "llamaindex",
        "llama_index.core.instrumentation.events.span",
    ),
}


OLD = {"langchain-core": "0.3.79", "langchain": "0.3.27", "llama-index-core": "0.11.23"}
"""Versions below the ranges tokenbudget needs: the hidden module is one such a version lacks."""


def _run(hidden: str, statement: str, versions: dict[str, str]) -> subprocess.CompletedProcess[str]:
    code = HIDE.format(hidden=hidden, statement=statement, versions=versions)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def _run_hiding(hidden: str, statement: str, versions: dict[str, str] = OLD) -> str:
    done = _run(hidden, statement, versions)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _required(package: str, extra: str) -> str:
    """``package``'s requirement in pyproject's ``extra``: ``"langchain-core>=1.0,<2"``."""
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text(encoding="utf-8"))
    (spec,) = [r for r in pyproject["project"]["optional-dependencies"][extra] if r.startswith(package + ">")]
    return str(spec)


@pytest.mark.parametrize("adapter", sorted(FRAMEWORKS))
def test_an_old_framework_is_named_too_old_with_the_versions_needed(adapter: str) -> None:
    package, extra, module = FRAMEWORKS[adapter]
    needed = _required(package, extra)
    out = _run_hiding(module, f"import {adapter}")
    assert out.startswith(f"MISSING {module} | {package} is installed but too old (missing {module}"), out
    assert f"needs {needed}" in out
    assert f'pip install -U "{needed}"' in out
    assert "not installed" not in out


@pytest.mark.parametrize("adapter", sorted(FRAMEWORKS))
def test_an_absent_framework_is_still_not_installed(adapter: str) -> None:
    package, extra, module = FRAMEWORKS[adapter]
    out = _run_hiding(module.split(".")[0], f"import {adapter}")
    assert out == f'MISSING None | {package} is not installed: pip install "tokenbudget-kit[{extra}]"'


def test_the_demo_command_passes_the_too_old_error_on() -> None:
    # `tokenbudget demo` imports the LangChain adapters: their error is shown, not "not installed"
    statement = (
        "from tokenbudget_core.cli import main\n"
        "    main(['demo', '--users', '1', '--turns', '1', '--no-progress', '--html', '-'])"
    )
    done = _run("langchain_core.outputs", statement, OLD)
    assert done.returncode != 0
    assert "langchain-core is installed but too old (missing langchain_core.outputs" in done.stderr, (
        done.stderr
    )
    assert "not installed" not in done.stderr


@pytest.mark.parametrize("adapter", sorted(FRAMEWORKS))
def test_the_adapters_requirement_is_pyprojects(adapter: str) -> None:
    package, extra, _ = FRAMEWORKS[adapter]
    out = _run_hiding("nothing_hidden", f"from {adapter} import REQUIREMENT; print(REQUIREMENT)")
    assert out.splitlines()[0] == _required(package, extra)


@pytest.mark.parametrize("middleware", ["BudgetMiddleware", "ContextWindowMiddleware", "RoutingMiddleware"])
def test_the_agent_middleware_names_an_old_langchain_too_old(middleware: str) -> None:
    """The middleware needs ``langchain`` (agents), imported on first use: a version without
    ``langchain.agents.middleware`` is named too old, an absent one not installed."""
    needed = _required("langchain", "langchain")
    out = _run_hiding("langchain.agents.middleware", f"from langchain_tokenbudget import {middleware}")
    assert out.startswith("MISSING langchain.agents.middleware | langchain is installed but too old"), out
    assert f'pip install -U "{needed}"' in out
    out = _run_hiding("langchain", f"from langchain_tokenbudget import {middleware}")
    assert out == 'MISSING None | langchain is not installed: pip install "tokenbudget-kit[langchain]"'


def test_the_agents_requirement_is_pyprojects() -> None:
    out = _run_hiding(
        "nothing_hidden", "from langchain_tokenbudget import AGENTS_REQUIREMENT; print(AGENTS_REQUIREMENT)"
    )
    assert out.splitlines()[0] == _required("langchain", "langchain")


def test_a_name_an_old_module_lacks_is_too_old_not_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    from tokenbudget_core.errors import MissingDependencyError

    monkeypatch.setattr(importlib.metadata, "version", lambda name: OLD[name])  # an older install

    def of(error: ImportError) -> MissingDependencyError | None:
        return MissingDependencyError.of_framework(
            error, module="langchain", package="langchain", extra="langchain", requirement="langchain>=1.0,<2"
        )

    lacks = of(
        ImportError("cannot import name 'ExtendedModelResponse'", name="langchain.agents.middleware.types")
    )
    assert lacks is not None
    assert lacks.missing == "langchain.agents.middleware.types"
    assert "too old" in str(lacks)
    top = of(ImportError("cannot import name 'X' from 'langchain'", name="langchain"))
    assert top is not None
    assert "too old" in str(top)
    assert of(ModuleNotFoundError("No module named 'yaml'", name="yaml")) is None


@pytest.mark.parametrize("adapter", sorted(FRAMEWORKS))
def test_a_newer_framework_lacking_a_module_is_named_newer(adapter: str) -> None:
    package, extra, module = FRAMEWORKS[adapter]
    needed = _required(package, extra)
    out = _run_hiding(module, f"import {adapter}", {package: "99.0.0"})
    assert (
        f"{package} is installed but newer than tokenbudget supports (missing {module}; installed: 99.0.0"
        in out
    )
    assert f'pip install -U "{needed}"' in out


@pytest.mark.parametrize("adapter", sorted(FRAMEWORKS))
def test_a_supported_version_lacking_a_module_gives_the_import_error_itself(adapter: str) -> None:
    """A version within the range that lacks a module is a broken install, not an old one: the
    import's own error is the one to see (review s23 #3)."""
    _, _, module = FRAMEWORKS[adapter]
    done = _run(module, f"import {adapter}", {})
    assert done.returncode != 0
    assert f"ModuleNotFoundError: No module named '{module}'" in done.stderr, done.stderr
    assert "too old" not in done.stderr


def test_an_import_error_naming_no_module_is_passed_on_as_it_is() -> None:
    """``raise ImportError(msg)`` below the framework (a broken binary wheel of a dependency) was
    read as the framework too old (review s23 #3)."""
    code = (
        "import importlib.abc, sys\n"
        "class Broken(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'numpy':\n"
        "            raise ImportError('Importing the numpy C-extensions failed')\n"
        "sys.meta_path.insert(0, Broken())\n"
        "import langchain_tokenbudget\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "ImportError: Importing the numpy C-extensions failed" in done.stderr, done.stderr
    assert "too old" not in done.stderr
