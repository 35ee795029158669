"""tokenbudget: keep LLM applications inside their token and dollar budgets.

Count before the call (:class:`TokenCounter`), read what the call used (:class:`Usage`),
price it (:func:`cost_of`). The error tree is drawn in :mod:`tokenbudget_core.errors`.
"""

from ._version import __version__
from .alerts import Alert, Webhook
from .allocation import Allocation, allocate_budget
from .anthropic_counting import AnthropicTokenCounter
from .attribution import aattributed, attribute, attributed, current_attribution, overhead
from .budgets import BudgetPolicy, FeatureBudget, Ladder, load_policy
from .cache_keys import CacheRequest, CacheScope
from .cache_stores import CacheStore, open_cache_store
from .cached_response import CachedResponse, CacheHit
from .calibration import Calibration
from .complexity import Classification, ComplexityClassifier, HeuristicClassifier, Rule
from .compression import CompressionResult, compress_prompt
from .counting import SupportsTokenCount, TokenCount, TokenCounter
from .embeddings import Embedder, HashingEmbedder, as_embedder
from .errors import (
    BudgetExceededError,
    BudgetUnavailableError,
    CacheUnavailableError,
    ContextOverflowError,
    EncodingUnavailableError,
    InvalidInputError,
    InvalidMessageError,
    MissingDependencyError,
    StoreRefusedError,
    TokenBudgetError,
    TokenCountError,
    UnknownModelError,
    UnpricedModelError,
)
from .estimating import EstimatingTokenCounter
from .fitting import FitResult, fit_messages
from .learned_classifier import Evaluation, NearestNeighbourClassifier, evaluate
from .ledger import BudgetCheck, BudgetState, Charge, Ledger, Reservation
from .linear_classifier import LinearComplexityClassifier
from .messages import ImagePart, Message, TextPart, ToolCall, to_message, to_messages
from .openai_counting import TiktokenCounter
from .pricing import CostBreakdown, PriceOverride, PriceTable, cost_of, load_prices, price_of, register_price
from .prompt_builder import BuiltPrompt, PromptBuilder
from .prompt_cache_savings import PromptCacheReport, prompt_cache_report
from .prompt_caching import (
    PromptCacheBreakpoint,
    PromptCachePlan,
    aplan_prompt_cache,
    min_cacheable_tokens,
    plan_prompt_cache,
    with_prompt_cache_key,
)
from .registry import ModelInfo, ModelRegistry, default_registry, get_model
from .reports import Report, build_report
from .response_cache import ExactCache
from .routing import RouteDecision, TierRouter, is_retryable
from .semantic_cache import SemanticCache
from .sentences import split_sentences
from .stores import open_store
from .streams import AnthropicStreamUsage, OpenAIStreamUsage
from .summary import SummaryBuffer, SummaryEvent
from .truncation import TruncationResult, atruncate_text, truncate_text, truncate_text_detailed
from .usage import Usage
from .window import ConversationWindow

__all__ = [
    "Alert",
    "Allocation",
    "AnthropicStreamUsage",
    "AnthropicTokenCounter",
    "BudgetCheck",
    "BudgetExceededError",
    "BudgetPolicy",
    "BudgetState",
    "BudgetUnavailableError",
    "BuiltPrompt",
    "CacheHit",
    "CacheRequest",
    "CacheScope",
    "CacheStore",
    "CacheUnavailableError",
    "CachedResponse",
    "Calibration",
    "Charge",
    "Classification",
    "ComplexityClassifier",
    "CompressionResult",
    "ContextOverflowError",
    "ConversationWindow",
    "CostBreakdown",
    "Embedder",
    "EncodingUnavailableError",
    "EstimatingTokenCounter",
    "Evaluation",
    "ExactCache",
    "FeatureBudget",
    "FitResult",
    "HashingEmbedder",
    "HeuristicClassifier",
    "ImagePart",
    "InvalidInputError",
    "InvalidMessageError",
    "Ladder",
    "Ledger",
    "LinearComplexityClassifier",
    "Message",
    "MissingDependencyError",
    "ModelInfo",
    "ModelRegistry",
    "NearestNeighbourClassifier",
    "OpenAIStreamUsage",
    "PriceOverride",
    "PriceTable",
    "PromptBuilder",
    "PromptCacheBreakpoint",
    "PromptCachePlan",
    "PromptCacheReport",
    "Report",
    "Reservation",
    "RouteDecision",
    "Rule",
    "SemanticCache",
    "StoreRefusedError",
    "SummaryBuffer",
    "SummaryEvent",
    "SupportsTokenCount",
    "TextPart",
    "TierRouter",
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
    "Webhook",
    "__version__",
    "aattributed",
    "allocate_budget",
    "aplan_prompt_cache",
    "as_embedder",
    "atruncate_text",
    "attribute",
    "attributed",
    "build_report",
    "compress_prompt",
    "cost_of",
    "current_attribution",
    "default_registry",
    "evaluate",
    "fit_messages",
    "get_model",
    "is_retryable",
    "load_policy",
    "load_prices",
    "min_cacheable_tokens",
    "open_cache_store",
    "open_store",
    "overhead",
    "plan_prompt_cache",
    "price_of",
    "prompt_cache_report",
    "register_price",
    "split_sentences",
    "to_message",
    "to_messages",
    "truncate_text",
    "truncate_text_detailed",
    "with_prompt_cache_key",
]
