"""In a Jupyter kernel the CLI's tables go to stdout (what ``CliRunner`` captures, as notebook 03
prints it), not to the notebook's display, where ``result.output`` would hold none of them.

Runs one cell in a real kernel (this interpreter running ipykernel, through a kernelspec in a
temporary ``$JUPYTER_PATH``, as tests/integration/test_notebooks.py does)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

KERNEL = "tokenbudget-s30-cli"

CELL = """
from click.testing import CliRunner
from tokenbudget_core.cli import cli

args = ["cost", "-m", "gpt-4o", "--input", "1200", "--output", "300", "--cache-read", "1000"]
result = CliRunner().invoke(cli, args)
assert result.exit_code == 0, result.output
print("CAPTURED", repr(result.output))
"""


def test_tables_are_in_result_output_inside_a_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"})
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "TOKENBUDGET_STORE", "TOKENBUDGET_PRICES"):
        monkeypatch.delenv(key, raising=False)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(CELL)])
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name=KERNEL, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    outputs = nb.cells[0].outputs
    assert [o.output_type for o in outputs] == ["stream"], outputs  # no display_data: no table drawn aside
    captured = outputs[0].text
    assert "CAPTURED" in captured
    for needle in ("input (uncached)", "cache read", "output", "total", "$0.004750"):
        assert needle in captured, captured
