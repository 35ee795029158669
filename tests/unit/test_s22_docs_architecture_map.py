"""docs/architecture.md's module map names every module, and the private names it cites exist.

Review s22-docs D1: the "Hot paths" paragraph named ``RedisStore._heads_of``, removed by a
refactor. D2: ``_frozen.py``, ``_version.py``, ``stores/redis_scripts.py`` and
``langchain_tokenbudget/_bridge.py`` were in no table and not in the diagram.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
ADAPTERS = ("langchain_tokenbudget", "llamaindex_tokenbudget")


def _tracked_modules() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "core/tokenbudget_core/*.py", *(f"{a}/*.py" for a in ADAPTERS)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [p for p in out if not p.endswith("__init__.py")]


def _diagram_boxes() -> dict[str, set[str]]:
    """The files each adapter's box of the diagram lists (its first code block)."""
    diagram = DOC.split("```", 2)[1]
    boxes: dict[str, set[str]] = {a: set() for a in ADAPTERS}
    for line in diagram.splitlines():
        cells = line.split("│")
        if len(cells) >= 5:
            boxes[ADAPTERS[0]].update(re.findall(r"\w+\.py", cells[1]))
            boxes[ADAPTERS[1]].update(re.findall(r"\w+\.py", cells[3]))
    return boxes


def test_every_module_is_in_the_map() -> None:
    boxes = _diagram_boxes()
    missing = []
    for path in _tracked_modules():
        package, _, rest = path.removeprefix("core/").partition("/")
        if package in boxes and (path in DOC or rest in boxes[package]):
            continue
        folder = rest.rpartition("/")[0]
        if package == "tokenbudget_core" and (f"`{rest}`" in DOC or rest in DOC or f"`{folder}/`" in DOC):
            continue
        missing.append(path)
    assert missing == []


def test_the_private_names_it_cites_exist() -> None:
    cited = set(re.findall(r"`([A-Z]\w+)\.(_\w+)`", DOC))
    assert cited  # the hot-path paragraph cites some
    sources = "\n".join(
        (ROOT / p).read_text(encoding="utf-8") for p in _tracked_modules() if p.endswith(".py")
    )
    for owner, name in sorted(cited):
        assert f"class {owner}" in sources, owner
        assert re.search(rf"def {name}\b|self\.{name}\b", sources), f"{owner}.{name}"
