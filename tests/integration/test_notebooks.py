"""Every notebook in notebooks/ runs top to bottom in a real Jupyter kernel; a failing cell fails the test.

The kernel is this interpreter (``sys.executable``, so the project's venv), through a kernelspec
of its own name written to a temporary ``$JUPYTER_PATH``: the kernels the machine has installed
are never used.
Each notebook runs offline, in its own temporary working directory, with matplotlib on Agg.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

pytestmark = pytest.mark.integration

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))
KERNEL = "tokenbudget-test-python"
CELL_TIMEOUT = 120


@pytest.fixture(scope="module")
def jupyter_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Jupyter data directory holding one kernelspec: this interpreter running ipykernel."""
    share = tmp_path_factory.mktemp("jupyter")
    spec = share / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kernel = {"argv": argv, "display_name": "tokenbudget tests", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(kernel))
    return share


@pytest.fixture
def notebook_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, jupyter_path: Path) -> Path:
    """The kernel's environment: found through $JUPYTER_PATH, no display, no API keys or store settings."""
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter_path))  # searched before the user's and system's
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")  # jupyter_core's own default soon; no warning
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "TOKENBUDGET_STORE", "TOKENBUDGET_SPOOL"):
        monkeypatch.delenv(key, raising=False)
    return tmp_path


def test_notebooks_are_found() -> None:
    assert len(NOTEBOOKS) >= 4, NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, notebook_env: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), (
        "commit notebooks without outputs"
    )
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name=KERNEL,
        resources={"metadata": {"path": str(notebook_env)}},
    )
    try:
        client.execute()
    except CellExecutionError as e:
        pytest.fail(f"{path.name}: a cell failed\n{e}", pytrace=False)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
