"""LangChain adapters for tokenbudget: translate LangChain types, then call the core.

``ContextWindowMiddleware``, ``BudgetMiddleware`` and ``RoutingMiddleware`` are imported on first
use: they need ``langchain`` (agents), not only ``langchain-core``.
"""

from typing import TYPE_CHECKING, Any, NoReturn

REQUIREMENT = "langchain-core>=1.0,<2"
"""The langchain-core versions the adapters need (the ``langchain`` extra's; named when an older
one lacks a module they import)."""

AGENTS_REQUIREMENT = "langchain>=1.0,<2"
"""The langchain versions the agent middleware needs (the ``langchain`` extra's)."""


def _need_agents(error: ImportError) -> NoReturn:
    """Raise the error of a middleware module whose import of ``langchain`` (agents) failed:
    not installed, or installed but too old (:meth:`MissingDependencyError.of_framework`)."""
    from tokenbudget_core.errors import MissingDependencyError

    missing = MissingDependencyError.of_framework(
        error, module="langchain", package="langchain", extra="langchain", requirement=AGENTS_REQUIREMENT
    )
    if missing is None:
        raise error
    raise missing from error


try:  # the adapters need their host framework: a missing extra is named, with its pip command
    from .budget_callback import AsyncBudgetCallbackHandler, BudgetCallbackHandler
    from .chat_history import SummaryChatMessageHistory, TokenBudgetChatMessageHistory
    from .llm_cache import TokenBudgetLLMCache
    from .messages import to_core_message, to_core_messages, to_core_request, to_countable_message
    from .router_chat_model import RouterChatModel
    from .trim_runnable import TrimMessagesRunnable
    from .usage import cost_of_message, usage_of
except ImportError as e:
    from tokenbudget_core.errors import MissingDependencyError

    missing = MissingDependencyError.of_framework(
        e, module="langchain_core", package="langchain-core", extra="langchain", requirement=REQUIREMENT
    )
    if missing is None:
        raise
    raise missing from e

if TYPE_CHECKING:
    from .budget_middleware import BudgetMiddleware
    from .context_middleware import ContextWindowMiddleware
    from .routing_middleware import RoutingMiddleware

__all__ = [
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


def __getattr__(name: str) -> Any:
    if name == "ContextWindowMiddleware":
        from .context_middleware import ContextWindowMiddleware

        return ContextWindowMiddleware
    if name == "BudgetMiddleware":
        from .budget_middleware import BudgetMiddleware

        return BudgetMiddleware
    if name == "RoutingMiddleware":
        from .routing_middleware import RoutingMiddleware

        return RoutingMiddleware
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
