"""``TranscriptFit.candidates``: ``fit_messages`` over the candidates keeps exactly what it keeps
over the whole transcript (a differential check over random conversations: system messages at
the start and in the middle, tool calls with their results, pinned first user messages, tools,
tiny and large budgets, ``on_overflow`` raise and truncate), while the candidates stay within
the budget's reach however long the transcript grows."""

from __future__ import annotations

import random
from typing import Any

import pytest

from tokenbudget_core.counting import TokenCounter
from tokenbudget_core.errors import ContextOverflowError, InvalidInputError
from tokenbudget_core.fitting import fit_messages
from tokenbudget_core.messages import Message, to_message
from tokenbudget_core.transcript_fit import TranscriptFit

COUNTER = TokenCounter.for_model("gpt-4o")
TOOLS = [{"type": "function", "function": {"name": "f", "description": "look it up", "parameters": {}}}]


def conversation(rng: random.Random, turns: int) -> list[Message]:
    out: list[Message] = []
    if rng.random() < 0.6:
        out.append(to_message({"role": "system", "content": "Be brief. " * rng.randint(1, 5)}))
    for i in range(turns):
        r = rng.random()
        if r < 0.12:
            calls = [
                {"id": f"c{i}-{k}", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                for k in range(rng.randint(1, 2))
            ]
            out.append(to_message({"role": "assistant", "content": "", "tool_calls": calls}))
            out += [
                to_message(
                    {"role": "tool", "tool_call_id": c["id"], "content": "result " * rng.randint(1, 40)}
                )
                for c in calls
            ]
        elif r < 0.17:
            out.append(to_message({"role": "system", "content": "note " * rng.randint(1, 8)}))
        else:
            role = "user" if rng.random() < 0.55 else "assistant"
            out.append(to_message({"role": role, "content": "word " * rng.randint(0, 90)}))
    return out


def outcome(messages: list[Message], **options: Any) -> tuple[str, Any]:
    try:
        fitted = fit_messages(messages, model=COUNTER, **options)
    except ContextOverflowError as e:
        return ("overflow", e.required)
    return ("kept", (fitted.kept, [m.text for m in fitted], fitted.tokens, fitted.truncated))


@pytest.mark.parametrize("seed", range(12))
def test_a_fit_over_the_candidates_is_the_fit_over_the_whole_transcript(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(25):
        messages = conversation(rng, rng.randint(0, 60))
        transcript: TranscriptFit[Message] = TranscriptFit(COUNTER)
        for m in messages:
            transcript.append(m)
        max_tokens = rng.choice([40, 90, 200, 500, 2_000])
        reserve = rng.choice([0, 0, 10])
        options = {
            "max_tokens": max_tokens,
            "reserve_output": reserve,
            "pin_first_user": rng.random() < 0.5,
            "tools": TOOLS if rng.random() < 0.3 else None,
            "on_overflow": rng.choice(["raise", "truncate"]),
        }
        picked = transcript.candidates(max_tokens - reserve, pin_first_user=options["pin_first_user"])
        assert picked == sorted(set(picked))
        whole = outcome(messages, **options)
        part = outcome([messages[i] for i in picked], **options)
        if whole[0] == "kept" and part[0] == "kept":
            kept, texts, tokens, truncated = part[1]
            part = (
                "kept",
                (
                    tuple(picked[i] for i in kept),
                    texts,
                    tokens,
                    None if truncated is None else picked[truncated],
                ),
            )
        assert part == whole


def test_the_candidates_stay_near_the_budget_however_long_the_transcript() -> None:
    transcript: TranscriptFit[dict[str, str]] = TranscriptFit(COUNTER)
    transcript.append({"role": "system", "content": "Be brief."})
    for i in range(5_000):
        transcript.append({"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " * 20})
    picked = transcript.candidates(500, pin_first_user=True)
    assert picked[:2] == [0, 1]  # the system message and the pinned first user message
    assert len(picked) < 20


def test_bad_input() -> None:
    with pytest.raises(InvalidInputError, match="counter"):
        TranscriptFit("gpt-4o")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="budget"):
        TranscriptFit(COUNTER).candidates(-1)
