"""README says which commands take ``--json``, and the CLI agrees.

Review s22-docs D3: the README said "Every command takes ``--json``", but ``tokenbudget serve
--json`` is a usage error.
"""

from __future__ import annotations

import re
from pathlib import Path

import click

from tokenbudget_core.cli import cli as main

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def test_the_commands_the_readme_says_take_json_are_those_that_do() -> None:
    assert isinstance(main, click.Group)
    takes = {
        name
        for name, command in main.commands.items()
        if any("--json" in getattr(p, "opts", ()) for p in command.params)
    }
    sentence = re.search(r"Every command but `serve` takes `--json` \(([^)]*)\)", README)
    assert sentence is not None, "the README's --json sentence"
    listed = set(re.findall(r"`([a-z]+)`", sentence.group(1)))
    assert listed == takes
    assert set(main.commands) - takes == {"serve"}
