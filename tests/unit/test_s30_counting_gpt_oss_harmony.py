"""gpt-oss requests are counted in the harmony format its servers render, flagged as estimates.

``gpt-oss-120b`` / ``gpt-oss-20b`` (what vLLM, Ollama and LM Studio users pass) were counted
``exact=True`` with the Chat Completions framing (3 per message, 3 priming), but every server renders
OpenAI's harmony format: a fixed system header, system text wrapped as a developer ``# Instructions``
message, a channel on each assistant turn, calls and results addressed to ``functions.<name>``, tools
as a TypeScript namespace. That under-counted about 60 tokens a request. Each case below renders the
prompt as the harmony guide writes it and counts it with ``o200k_harmony``: the counter's figure is
never below it, stays close, and is flagged ``exact=False`` (a server's template may vary it).
"""

from __future__ import annotations

from typing import Any

import pytest

from tokenbudget_core.counting import TokenCounter
from tokenbudget_core.encodings import get_encoding

SYSTEM = (
    "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
    "Knowledge cutoff: 2024-06\nCurrent date: 2026-11-25\n\nReasoning: medium\n\n"
    "# Valid channels: analysis, commentary, final. Channel must be included for every message.{tools}<|end|>"
)
TOOLS_LINE = "\nCalls to these tools must go to the commentary channel: 'functions'."
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Gets the current weather in the provided location.",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                "format": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location"],
        },
    },
}
WEATHER_TS = (
    "<|start|>developer<|message|># Tools\n\n## functions\n\nnamespace functions {\n\n"
    "// Gets the current weather in the provided location.\ntype get_current_weather = (_: {\n"
    '// The city and state, e.g. San Francisco, CA\nlocation: string,\nformat?: "celsius" | "fahrenheit",\n'
    "}) => any;\n\n} // namespace functions<|end|>"
)
CALL = {
    "id": "c1",
    "type": "function",
    "function": {"name": "get_current_weather", "arguments": '{"location":"San Francisco"}'},
}
RESULT = '{"sunny": true, "temperature": 20}'

# (messages, tools, the harmony prompt as the guide renders it, how far above it the count may be)
CASES: list[tuple[list[dict[str, Any]], list[dict[str, Any]] | None, str, int]] = [
    ([], None, SYSTEM.format(tools="") + "<|start|>assistant", 0),
    (
        [{"role": "system", "content": "You are a terse assistant."}, {"role": "user", "content": "Hello"}],
        None,
        SYSTEM.format(tools="")
        + "<|start|>developer<|message|># Instructions\n\nYou are a terse assistant.\n\n<|end|>"
        + "<|start|>user<|message|>Hello<|end|><|start|>assistant",
        2,
    ),
    (
        [
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi there, how can I help?"},
            {"role": "user", "content": "Weather?"},
        ],
        None,
        SYSTEM.format(tools="")
        + "<|start|>user<|message|>Hello<|end|>"
        + "<|start|>assistant<|channel|>final<|message|>Hi there, how can I help?<|end|>"
        + "<|start|>user<|message|>Weather?<|end|><|start|>assistant",
        2,
    ),
    (
        [
            {"role": "user", "content": "Weather in SF?"},
            {"role": "assistant", "content": None, "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "c1", "content": RESULT},
        ],
        [WEATHER],
        SYSTEM.format(tools=TOOLS_LINE)
        + WEATHER_TS
        + "<|start|>user<|message|>Weather in SF?<|end|>"
        + "<|start|>assistant<|channel|>commentary to=functions.get_current_weather <|constrain|>json"
        + '<|message|>{"location":"San Francisco"}<|call|>'
        + "<|start|>functions.get_current_weather to=assistant<|channel|>commentary"
        + f"<|message|>{RESULT}<|end|>"
        + "<|start|>assistant",
        30,
    ),
]


@pytest.mark.parametrize("model", ["gpt-oss-120b", "gpt-oss-20b"])
@pytest.mark.parametrize(
    ("messages", "tools", "rendered", "slack"), CASES, ids=["empty", "system", "history", "tools"]
)
def test_a_request_counts_at_least_the_harmony_prompt_and_is_flagged(
    model: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, rendered: str, slack: int
) -> None:
    actual = len(get_encoding("o200k_harmony").encode(rendered, allowed_special="all"))
    n = TokenCounter.for_model(model).count_messages(messages, tools)
    assert actual <= int(n) <= actual + slack
    assert not n.exact
    assert n.encoding == "o200k_harmony"


def test_the_fixed_header_is_the_framing_and_plain_text_stays_exact() -> None:
    counter = TokenCounter.for_model("gpt-oss-120b")
    header = len(get_encoding("o200k_harmony").encode(SYSTEM.format(tools=""), allowed_special="all"))
    assert counter.reply_priming == header + 2  # and "<|start|>assistant"
    assert int(counter.count_messages([])) == counter.reply_priming
    one = counter.count_message({"role": "user", "content": "Hello"})
    assert int(one) == 5
    assert not one.exact
    text = counter.count("Hello there")
    assert text.exact
    assert int(text) == 2


def test_openai_models_keep_the_chat_completions_framing() -> None:
    counter = TokenCounter.for_model("gpt-4o")
    n = counter.count_messages([{"role": "user", "content": "Hello"}])
    assert (int(n), n.exact, counter.reply_priming) == (8, True, 3)
