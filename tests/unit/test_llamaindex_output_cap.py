"""The output cap ``BudgetCallbackHandler`` reserves for a LlamaIndex call.

LlamaIndex's ``LLMMetadata`` fills ``num_output=256`` (``DEFAULT_NUM_OUTPUTS``) in for an LLM that
chose none, as a user's ``CustomLLM`` usually does: that placeholder is no cap. The cap reserved
is the call's ``max_tokens``, else the LLM's own cap (a field, ``additional_kwargs``, a
``num_output`` it set, never the placeholder 256 that Ollama and others pass on), else the
handler's ``max_output_tokens``, else the policy's per-call limit, else the model's maximum
output. Real LlamaIndex calls (``CustomLLM`` / ``MockLLM``), the reservation read from the
ledger's headroom while the call runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from llama_index.core.bridge.pydantic import Field
from llama_index.core.callbacks import CallbackManager
from llama_index.core.llms import CompletionResponse, CustomLLM, LLMMetadata, MockLLM
from llama_index.core.llms.callbacks import llm_completion_callback

from llamaindex_tokenbudget import BudgetCallbackHandler
from tokenbudget_core import TokenCounter, Usage, cost_of
from tokenbudget_core.budgets import BudgetPolicy, FeatureBudget
from tokenbudget_core.errors import BudgetExceededError
from tokenbudget_core.ledger import Ledger

MODEL = "gpt-4o-mini"
PROMPT = "hello"
INPUT = int(TokenCounter.for_model(MODEL).count(PROMPT))
LIMIT = 1_000_000
BUDGET = "user_daily_tokens (all features)"


class UserLLM(CustomLLM):
    """A user-written LLM answering ``answer`` output tokens, with the usage in ``raw``."""

    answer: int = 2000
    declared: int | None = None
    """``num_output`` set in its metadata (``None``: left to LlamaIndex's default)."""
    max_tokens: int | None = None
    additional_kwargs: dict[str, Any] = Field(default_factory=dict)
    probe: Any = Field(default=None, exclude=True)
    """Called while the call's reservation is held."""

    @property
    def metadata(self) -> LLMMetadata:
        if self.declared is None:
            return LLMMetadata(model_name=MODEL)
        return LLMMetadata(model_name=MODEL, num_output=self.declared)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        if self.probe is not None:
            self.probe()
        usage = {
            "prompt_tokens": INPUT,
            "completion_tokens": self.answer,
            "total_tokens": INPUT + self.answer,
        }
        raw = {"object": "chat.completion", "model": MODEL, "choices": [], "usage": usage}
        return CompletionResponse(text="x " * self.answer, raw=raw)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
        raise NotImplementedError


def test_the_handler_cap_holds_a_dollar_limit_for_an_llm_that_sets_none() -> None:
    # One call costs $0.0012015; the limit leaves room for 1.5 calls: the second is refused.
    one_call = cost_of(Usage(input_tokens=INPUT, output_tokens=2000), MODEL)
    ledger = Ledger("memory://", policy=BudgetPolicy(user_daily_usd=Decimal("0.0018")))
    handler = BudgetCallbackHandler(ledger, user="ada", max_output_tokens=2000)
    llm = UserLLM(callback_manager=CallbackManager([handler]))
    llm.complete(PROMPT)
    with pytest.raises(BudgetExceededError):
        llm.complete(PROMPT)
    assert ledger.state(user="ada").used["user_daily_usd (all features)"] == one_call


def reserved_output(
    llm: Any,
    *,
    option: int | None = None,
    policy: BudgetPolicy | None = None,
    feature: str | None = None,
    call: Callable[[Any], Any],
) -> int:
    """The output tokens the handler reserved for ``call(llm)``, read while the call runs."""
    ledger = Ledger("memory://", policy=policy or BudgetPolicy(user_daily_tokens=LIMIT))
    handler = BudgetCallbackHandler(ledger, user="ada", feature=feature, max_output_tokens=option)
    llm.callback_manager = CallbackManager([handler])
    held: list[int] = []
    llm.probe = lambda: held.append(int(ledger.state(user="ada").headroom[BUDGET]))
    call(llm)
    [headroom] = held
    return LIMIT - headroom - INPUT


def complete(llm: Any) -> Any:
    return llm.complete(PROMPT)


MODEL_MAX = 16384  # gpt-4o-mini's maximum output


@pytest.mark.parametrize(
    ("llm", "option", "expected"),
    [
        (UserLLM(), 2000, 2000),  # LlamaIndex's placeholder 256 is no cap: the handler's option
        (UserLLM(), None, MODEL_MAX),  # nothing set anywhere: the model's maximum output
        (UserLLM(declared=512), 2000, 512),  # a num_output the LLM chose wins over the option
        (UserLLM(declared=256), 2000, 2000),  # but never LlamaIndex's placeholder 256 (Ollama passes it on)
        (UserLLM(max_tokens=700), 2000, 700),  # the LLM's own max_tokens field
        (UserLLM(additional_kwargs={"max_completion_tokens": 333}), 2000, 333),
        (UserLLM(declared=512, max_tokens=700), None, 700),  # what the LLM sends, over its metadata
    ],
)
def test_the_cap_reserved_is_the_first_that_is_set(llm: UserLLM, option: int | None, expected: int) -> None:
    assert reserved_output(llm, option=option, call=complete) == expected


def test_the_call_own_max_tokens_wins() -> None:
    llm = UserLLM(declared=512, max_tokens=700)
    assert reserved_output(llm, option=2000, call=lambda m: m.complete(PROMPT, max_tokens=90)) == 90


def test_without_an_option_the_policy_per_call_limit_is_reserved() -> None:
    docs = FeatureBudget(max_output_tokens_per_call=3000)
    policy = BudgetPolicy(user_daily_tokens=LIMIT, features={"docs": docs})
    assert reserved_output(UserLLM(), policy=policy, feature="docs", call=complete) == 3000


def test_the_async_path_reserves_the_same_cap() -> None:
    def acomplete(llm: Any) -> Any:
        return asyncio.run(llm.acomplete(PROMPT))

    assert reserved_output(UserLLM(), option=2000, call=acomplete) == 2000
    assert reserved_output(UserLLM(max_tokens=700), option=2000, call=acomplete) == 700


class ProbedMockLLM(MockLLM):
    """LlamaIndex's ``MockLLM`` (``num_output = max_tokens or -1``, as OpenAI's LLM class)."""

    probe: Any = Field(default=None, exclude=True)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=MODEL, num_output=self.max_tokens or -1)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self.probe()
        return CompletionResponse(text="text", raw=None)


@pytest.mark.parametrize(("max_tokens", "expected"), [(None, 2000), (5, 5)])
def test_an_openai_style_llm_reserves_its_max_tokens_else_the_option(
    max_tokens: int | None, expected: int
) -> None:
    assert reserved_output(ProbedMockLLM(max_tokens=max_tokens), option=2000, call=complete) == expected
