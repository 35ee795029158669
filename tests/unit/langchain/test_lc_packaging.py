"""The LangChain adapter's surface: pinned, lazy where heavy, runnable docs, no test-only deps."""

from __future__ import annotations

import doctest
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import langchain_tokenbudget

ROOT = Path(__file__).resolve().parents[3]

API = [
    "AsyncBudgetCallbackHandler",
    "BudgetCallbackHandler",
    "BudgetMiddleware",
    "ContextWindowMiddleware",
    "RouterChatModel",
    "RoutingMiddleware",
    "SummaryChatMessageHistory",
    "TokenBudgetChatMessageHistory",
    "TokenBudgetLLMCache",
    "TrimMessagesRunnable",
    "cost_of_message",
    "to_core_message",
    "to_core_messages",
    "to_core_request",
    "to_countable_message",
    "usage_of",
]


def test_all_is_pinned() -> None:
    assert langchain_tokenbudget.__all__ == API
    for name in API:
        assert getattr(langchain_tokenbudget, name).__name__ == name
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        langchain_tokenbudget.Nope  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "module",
    ["trim_runnable", "chat_history", "context_middleware", "router_chat_model", "routing_middleware"],
)
def test_docstring_examples_run(module: str) -> None:
    mod = __import__(f"langchain_tokenbudget.{module}", fromlist=["_"])
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


SCRIPT = """
import sys, warnings
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("langchain_tests", "pytest"):
            raise ImportError(f"blocked: {name}")
sys.meta_path.insert(0, Block())

import langchain_tokenbudget as lt
assert "langchain.agents" not in sys.modules, "the middleware must load lazily"
from langchain_core.messages import HumanMessage
warnings.simplefilter("error")  # after the imports: langchain_core installs its own filter on import
history = lt.TokenBudgetChatMessageHistory(model="gpt-4o", max_tokens=200)  # default store: no warning
history.add_messages([HumanMessage("hello")])
assert len(lt.TrimMessagesRunnable("gpt-4o", max_tokens=200).invoke(history.messages)) == 1
lt.ContextWindowMiddleware("gpt-4o", max_tokens=200)
assert "langchain.agents" in sys.modules

# our silenced default store did not use up the user's own one-time deprecation warning
from langchain_core._api import LangChainDeprecationWarning
from langchain_core.chat_history import InMemoryChatMessageHistory
try:
    InMemoryChatMessageHistory()
except LangChainDeprecationWarning:
    print("user warned")
"""


def test_works_without_langchain_tests_and_keeps_the_users_warning() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[0] == "user warned"


def test_langchain_tests_is_not_a_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = [*project["dependencies"], *project["optional-dependencies"]["langchain"]]
    assert not [r for r in runtime if r.startswith("langchain-tests")]
