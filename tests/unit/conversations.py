"""Hypothesis strategies for random conversations with tool calls (shared by memory tests)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

words = st.lists(
    st.sampled_from(
        ["alpha", "beta", "gamma", "delta", "budget", "token", "user", "cache", "ü", "東京", "42", "?"]
    ),
    max_size=40,
)
text = words.map(" ".join)


@st.composite
def conversations(draw: st.DrawFn, *, max_turns: int = 30) -> list[dict[str, Any]]:
    """A valid chat: optional system prompt, user/assistant turns, parallel tool calls with results."""
    msgs: list[dict[str, Any]] = []
    if draw(st.booleans()):
        msgs.append({"role": "system", "content": draw(text)})
    call_id = 0
    for _ in range(draw(st.integers(1, max_turns))):
        msgs.append({"role": "user", "content": draw(text)})
        kind = draw(st.sampled_from(["reply", "tools", "none"]))
        if kind == "reply":
            msgs.append({"role": "assistant", "content": draw(text)})
        elif kind == "tools":
            n = draw(st.integers(1, 3))
            ids = [f"call_{call_id + k}" for k in range(n)]
            call_id += n
            msgs.append(
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {
                            "id": i,
                            "type": "function",
                            "function": {"name": "lookup", "arguments": json.dumps({"q": i})},
                        }
                        for i in ids
                    ],
                }
            )
            msgs.extend({"role": "tool", "tool_call_id": i, "content": draw(text)} for i in ids)
            msgs.append({"role": "assistant", "content": draw(text)})
    return msgs


def assert_tool_pairs_intact(window: list[dict[str, Any]]) -> None:
    """Every tool result in ``window`` follows its assistant call, with all sibling results."""
    for k, m in enumerate(window):
        if m["role"] != "tool":
            continue
        j = k
        while window[j]["role"] == "tool":
            j -= 1
            assert j >= 0, "tool result at the start of the window"
        call = window[j]
        assert call["role"] == "assistant"
        ids = {c["id"] for c in call.get("tool_calls", [])}
        assert m["tool_call_id"] in ids
    for k, m in enumerate(window):
        if m["role"] == "assistant" and m.get("tool_calls"):
            following = []
            j = k + 1
            while j < len(window) and window[j]["role"] == "tool":
                following.append(window[j]["tool_call_id"])
                j += 1
            # results of a call are all present or the call is the newest message (pending)
            assert following == [c["id"] for c in m["tool_calls"]] or j == len(window)
