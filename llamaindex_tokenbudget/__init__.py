"""LlamaIndex adapters for tokenbudget: translate LlamaIndex types, then call the core."""

REQUIREMENT = "llama-index-core>=0.12,<0.15"
"""The llama-index-core versions the adapters need (the ``llamaindex`` extra's; named when an
older one lacks a module they import)."""

try:  # the adapters need their host framework: a missing extra is named, with its pip command
    from .budget_callback import BudgetCallbackHandler
    from .cached_llm import CachedLLM
    from .cost_event_handler import CostEventHandler
    from .memory import SummaryChatMemory, TokenBudgetChatMemory
    from .messages import to_core_message, to_core_messages, to_core_request, to_countable_message
    from .routed_llm import RoutedLLM
    from .usage import cost_of_response, usage_of
except ModuleNotFoundError as e:
    from tokenbudget_core.errors import MissingDependencyError

    missing = MissingDependencyError.of_framework(
        e, module="llama_index.core", package="llama-index-core", extra="llamaindex", requirement=REQUIREMENT
    )
    if missing is None:
        raise
    raise missing from e

__all__ = [
    "BudgetCallbackHandler",
    "CachedLLM",
    "CostEventHandler",
    "RoutedLLM",
    "SummaryChatMemory",
    "TokenBudgetChatMemory",
    "cost_of_response",
    "to_core_message",
    "to_core_messages",
    "to_core_request",
    "to_countable_message",
    "usage_of",
]
