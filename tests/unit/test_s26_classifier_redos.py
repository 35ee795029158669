"""The heuristic rules run in time linear in the prompt (no catastrophic backtracking).

Each slow case runs in a subprocess under a generous hang guard: on the quadratic patterns these
inputs take minutes, with the linear ones well under a second. The guard is a hang detector, not
a timing assertion. Every case also checks the classification, so the rewritten patterns still
fire exactly as the old ones did.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import textwrap

import pytest

from tokenbudget_core.complexity import DEFAULT_RULES
from tokenbudget_core.linear_classifier import _LIST_ITEM

HANG_GUARD_SECONDS = 45

_PRELUDE = """\
import json, random
from tokenbudget_core import HeuristicClassifier
from tokenbudget_core.complexity import DEFAULT_RULES

def only(name):
    return HeuristicClassifier(rules=[r for r in DEFAULT_RULES if r.name == name])

def report(verdict):
    print(json.dumps({"tier": verdict.tier, "rules": list(verdict.rules)}))
"""


def _run(body: str) -> dict[str, object]:
    """Run ``body`` (after the prelude) in a fresh interpreter; fail, not hang, if it stalls."""
    script = _PRELUDE + textwrap.dedent(body)
    try:
        done = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=HANG_GUARD_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"classification did not finish within {HANG_GUARD_SECONDS}s (catastrophic backtracking)")
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_default_classifier_on_json_number_array_finishes_with_same_tier() -> None:
    # The reviewer's case, larger: numbers as JSON.stringify writes them (one run of digits,
    # commas and dots), then a real quantity later on.
    result = _run(
        """
        random.seed(1)
        nums = json.dumps([round(random.random() * 1000, 2) for _ in range(12000)], separators=(",", ":"))
        prompt = "Here are yesterday's response times: " + nums + "\\nThat is 12000 requests. Which are slow?"
        report(HeuristicClassifier().classify(prompt))
        """
    )
    assert result == {"tier": "large", "rules": ["quantified"]}


def test_long_form_rule_on_comma_separated_integers_finishes() -> None:
    result = _run(
        """
        prompt = "IDs: " + "1," * 40000 + " please write a 2,000-word summary"
        report(only("long_form").classify(prompt))
        """
    )
    assert result == {"tier": "large", "rules": ["long_form"]}


def test_code_rule_on_a_line_of_many_selects_finishes() -> None:
    result = _run(
        """
        prompt = "select " * 30000 + "\\nSELECT id FROM users"
        report(only("code").classify(prompt))
        """
    )
    assert result == {"tier": "large", "rules": ["code"]}


def test_multi_part_rule_after_many_blank_lines_finishes() -> None:
    result = _run(
        """
        prompt = "\\n" * 60000 + "Todo\\n- parse the logs\\n- group by endpoint\\n- chart p99\\n"
        report(only("multi_part").classify(prompt))
        """
    )
    assert result == {"tier": "large", "rules": ["multi_part"]}


def test_linear_classifier_list_items_after_many_blank_lines_finishes() -> None:
    result = _run(
        """
        from tokenbudget_core.linear_classifier import _LIST_ITEM
        text = "\\n" * 60000 + "Todo\\n- parse the logs\\n  2) group\\n\\n* chart\\n"
        print(json.dumps({"items": len(_LIST_ITEM.findall(text))}))
        """
    )
    assert result == {"items": 3}


def test_linear_classifier_on_json_number_array_finishes() -> None:
    result = _run(
        """
        from tokenbudget_core.linear_classifier import LinearComplexityClassifier
        examples = [("What is X?", "small"), ("Design a distributed system and analyze it", "large")] * 3
        lin = LinearComplexityClassifier.fit(examples, tiers=["small", "large"])
        random.seed(1)
        nums = json.dumps([round(random.random() * 1000, 2) for _ in range(6000)], separators=(",", ":"))
        report(lin.classify("Stats: " + nums))
        """
    )
    assert result["tier"] == "large"


# The patterns as they were before they were made linear: on short texts the new ones must fire
# on exactly the same texts (and the list-item pattern find as many items).
_OLD_PATTERNS = {
    "quantified": r"\d(?:[\d,.]*)\s?(?:%|k\b|ms\b|mb\b|gb\b|x\b|million|billion|writes|requests|users"
    r"|customers|engineers|teams|servers|services|endpoints|skus|tests|buildings|clinics)",
    "long_form": r"\b(\d[\d,]*[- ](?:words?|pages?)|chapter|essay|proposal|guide|postmortem|plan)\b",
    "code": r"```|\bdef \w+\(|\bclass \w+|\bSELECT\b.+\bFROM\b|=>|\bfunc \w+\(",
    "multi_part": r"(?m)(?:^\s*(?:\d+[.)]|[-*•])\s+\S.*\n){3,}",
}
_OLD_LIST_ITEM = re.compile(r"(?m)^\s*(?:\d+[.)]|[-*•])\s+\S")


def _texts(count: int) -> list[str]:
    rng = random.Random(26)
    space = ["", " ", "  ", "\t", "\n", "\n\n", " \n", "\r", "\u00a0", "\x0c"]
    marker = ["1.", "2)", "10.", "-", "*", "•", "1", "a.", "--", "1.2.", ""]
    content = [
        "x",
        "item",
        "",
        " ",
        "select a from b",
        "3 users",
        "1,000 words",
        "1,2,3",
        ".5k",
        "a1,2 pages",
        "1. y",
    ]
    bits = [
        "1",
        "12",
        ",",
        ".",
        ",,",
        "a",
        " ",
        "-",
        "words",
        "pages",
        "ms",
        "k",
        "x",
        "%",
        "users",
        "SELECT",
    ]
    bits += ["from", "\n", "_", "é", "\u0663", "def f(", "plan", "=>", "1. ", "- "]
    out = []
    for i in range(count):
        if i % 2:
            lines = (
                rng.choice(space)
                + rng.choice(marker)
                + rng.choice(space)
                + rng.choice(content)
                + rng.choice(["\n", "\n", "", "\n\n", " \n"])
                for _ in range(rng.randint(0, 7))
            )
            out.append("".join(lines))
        else:
            out.append("".join(rng.choice(bits) for _ in range(rng.randint(0, 14))))
    return out


def test_linear_patterns_match_the_same_texts_as_before() -> None:
    rules = {r.name: re.compile(r.pattern, re.IGNORECASE) for r in DEFAULT_RULES}
    old = {name: re.compile(p, re.IGNORECASE) for name, p in _OLD_PATTERNS.items()}
    fired = dict.fromkeys(old, 0)
    for text in _texts(20000):
        for name, rx in old.items():
            was = bool(rx.search(text))
            assert bool(rules[name].search(text)) == was, (name, text)
            fired[name] += was
        assert len(_LIST_ITEM.findall(text)) == len(_OLD_LIST_ITEM.findall(text)), text
    assert all(n > 500 for n in fired.values()), fired
