"""tokenbudget: keep LLM applications inside their token and dollar budgets.

Count before the call (:class:`TokenCounter`), read what the call used (:class:`Usage`),
price it (:func:`cost_of`). The error tree is drawn in :mod:`tokenbudget_core.errors`.
"""

from ._version import __version__
from .anthropic_counting import AnthropicTokenCounter
from .calibration import Calibration
from .counting import SupportsTokenCount, TokenCount, TokenCounter
from .errors import (
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
from .messages import ImagePart, Message, TextPart, ToolCall, to_message, to_messages
from .openai_counting import TiktokenCounter
from .pricing import CostBreakdown, PriceOverride, PriceTable, cost_of, load_prices, price_of, register_price
from .registry import ModelInfo, ModelRegistry, default_registry, get_model
from .streams import AnthropicStreamUsage, OpenAIStreamUsage
from .usage import Usage

__all__ = [
    "AnthropicStreamUsage",
    "AnthropicTokenCounter",
    "Calibration",
    "CostBreakdown",
    "EncodingUnavailableError",
    "EstimatingTokenCounter",
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
    "SupportsTokenCount",
    "TextPart",
    "TiktokenCounter",
    "TokenBudgetError",
    "TokenCount",
    "TokenCountError",
    "TokenCounter",
    "ToolCall",
    "UnknownModelError",
    "UnpricedModelError",
    "Usage",
    "__version__",
    "cost_of",
    "default_registry",
    "get_model",
    "load_prices",
    "price_of",
    "register_price",
    "to_message",
    "to_messages",
]
