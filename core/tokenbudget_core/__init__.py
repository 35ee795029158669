"""tokenbudget: keep LLM applications inside their token and dollar budgets.

Count before the call (:class:`TokenCounter`), read what the call used (:class:`Usage`),
price it (:func:`cost_of`). The error tree is drawn in :mod:`tokenbudget_core.errors`.
"""

from ._version import __version__
from .allocation import Allocation, allocate_budget
from .anthropic_counting import AnthropicTokenCounter
from .calibration import Calibration
from .compression import CompressionResult, compress_prompt
from .counting import SupportsTokenCount, TokenCount, TokenCounter
from .errors import (
    ContextOverflowError,
    EncodingUnavailableError,
    InvalidInputError,
    InvalidMessageError,
    MissingDependencyError,
    TokenBudgetError,
    TokenCountError,
    UnknownModelError,
    UnpricedModelError,
)
from .estimating import EstimatingTokenCounter
from .fitting import FitResult, fit_messages
from .messages import ImagePart, Message, TextPart, ToolCall, to_message, to_messages
from .openai_counting import TiktokenCounter
from .pricing import CostBreakdown, PriceOverride, PriceTable, cost_of, load_prices, price_of, register_price
from .prompt_builder import BuiltPrompt, PromptBuilder
from .registry import ModelInfo, ModelRegistry, default_registry, get_model
from .sentences import split_sentences
from .streams import AnthropicStreamUsage, OpenAIStreamUsage
from .summary import SummaryBuffer, SummaryEvent
from .truncation import TruncationResult, atruncate_text, truncate_text, truncate_text_detailed
from .usage import Usage
from .window import ConversationWindow

__all__ = [
    "Allocation",
    "AnthropicStreamUsage",
    "AnthropicTokenCounter",
    "BuiltPrompt",
    "Calibration",
    "CompressionResult",
    "ContextOverflowError",
    "ConversationWindow",
    "CostBreakdown",
    "EncodingUnavailableError",
    "EstimatingTokenCounter",
    "FitResult",
    "ImagePart",
    "InvalidInputError",
    "InvalidMessageError",
    "Message",
    "MissingDependencyError",
    "ModelInfo",
    "ModelRegistry",
    "OpenAIStreamUsage",
    "PriceOverride",
    "PriceTable",
    "PromptBuilder",
    "SummaryBuffer",
    "SummaryEvent",
    "SupportsTokenCount",
    "TextPart",
    "TiktokenCounter",
    "TokenBudgetError",
    "TokenCount",
    "TokenCountError",
    "TokenCounter",
    "ToolCall",
    "TruncationResult",
    "UnknownModelError",
    "UnpricedModelError",
    "Usage",
    "__version__",
    "allocate_budget",
    "atruncate_text",
    "compress_prompt",
    "cost_of",
    "default_registry",
    "fit_messages",
    "get_model",
    "load_prices",
    "price_of",
    "register_price",
    "split_sentences",
    "to_message",
    "to_messages",
    "truncate_text",
    "truncate_text_detailed",
]
