"""LangChain adapters for tokenbudget: translate LangChain types, then call the core.

``ContextWindowMiddleware`` is imported on first use: it needs ``langchain`` (agents),
not only ``langchain-core``.
"""

from typing import TYPE_CHECKING, Any

from .chat_history import SummaryChatMessageHistory, TokenBudgetChatMessageHistory
from .messages import to_core_message, to_core_messages
from .trim_runnable import TrimMessagesRunnable
from .usage import cost_of_message, usage_of

if TYPE_CHECKING:
    from .context_middleware import ContextWindowMiddleware

__all__ = [
    "ContextWindowMiddleware",
    "SummaryChatMessageHistory",
    "TokenBudgetChatMessageHistory",
    "TrimMessagesRunnable",
    "cost_of_message",
    "to_core_message",
    "to_core_messages",
    "usage_of",
]


def __getattr__(name: str) -> Any:
    if name == "ContextWindowMiddleware":
        from .context_middleware import ContextWindowMiddleware

        return ContextWindowMiddleware
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
