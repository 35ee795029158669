"""LlamaIndex adapters for tokenbudget: translate LlamaIndex types, then call the core."""

from .memory import SummaryChatMemory, TokenBudgetChatMemory
from .messages import to_core_message, to_core_messages
from .usage import cost_of_response, usage_of

__all__ = [
    "SummaryChatMemory",
    "TokenBudgetChatMemory",
    "cost_of_response",
    "to_core_message",
    "to_core_messages",
    "usage_of",
]
