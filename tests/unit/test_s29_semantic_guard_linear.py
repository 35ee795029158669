"""The semantic guard stays linear on long prompts, and a reversed trip to LA is a miss.

Today's guard changes brought two quadratic paths: the code detector's regex on a long run of
letters or digits (a DNA sequence, a hex dump: 40k characters took 12 s per store), and the word
alignment of two long prompts differing in one place (32k words: 6 s per compare). The slow cases
run in a subprocess under a generous hang guard (minutes on the quadratic code, well under a
second now): a hang detector, not a timing assertion.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tokenbudget_core.semantic_guard import compare, guard_features

HANG_GUARD_SECONDS = 25  # the quadratic code takes 35 s to minutes on these; now a few seconds


def _run(body: str) -> dict[str, object]:
    script = "import json\nfrom tokenbudget_core.semantic_guard import compare, guard_features\n"
    script += textwrap.dedent(body)
    try:
        out = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=HANG_GUARD_SECONDS,
            check=True,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the guard ran over {HANG_GUARD_SECONDS} s: quadratic on this input")
    return dict(json.loads(out.stdout))


def test_a_long_run_of_letters_or_digits_is_read_in_linear_time() -> None:
    got = _run(
        """
        import random
        rng = random.Random(7)
        dna = "".join(rng.choice("ACGT") for _ in range(100_000))
        hexdump = "".join(rng.choice("0123456789abcdef") for _ in range(100_000))
        brackets = "[" * 100_000 + " a: b"
        for text in (dna, hexdump, brackets):
            guard_features("Find the motifs in " + text)
        print(json.dumps({"code": guard_features("x = f(y[1:2])").code != ""}))
        """
    )
    assert got == {"code": True}  # (and code is still told apart)


def test_two_long_prompts_differing_in_one_word_compare_in_linear_time() -> None:
    got = _run(
        """
        words = [f"w{i % 997}" for i in range(80_000)]
        a = " ".join(words)
        b = " ".join(words[:40_000] + ["premium"] + words[40_001:])
        c = " ".join(words[:40_000] + ["basic"] + words[40_001:])
        print(json.dumps({"same": compare(guard_features(a), guard_features(a)),
                          "swapped": compare(guard_features(b), guard_features(c))}))
        """
    )
    assert got["same"] is None
    assert got["swapped"] is not None  # a content word swapped in the middle is still caught


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("cheapest flight from NYC to LA", "cheapest flight from LA to NYC"),
        ("drive from SF to LA", "drive from LA to SF"),
        ("convert from the old format to the new format", "convert from the new format to the old format"),
    ],
)
def test_a_reversed_trip_is_a_miss_whatever_the_places_are_spelled_like(a: str, b: str) -> None:
    assert compare(guard_features(a), guard_features(b)) == "word roles differ"
    assert compare(guard_features(a), guard_features(a.replace("cheapest", "the cheapest"))) is None
