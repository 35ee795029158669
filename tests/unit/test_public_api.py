"""The public API is small, sorted and pinned; the core never imports a host framework."""

from __future__ import annotations

import subprocess
import sys

import langchain_tokenbudget
import llamaindex_tokenbudget
import tokenbudget_core

CORE_API = [
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


def test_core_all_is_pinned_sorted_and_importable() -> None:
    assert tokenbudget_core.__all__ == CORE_API
    assert sorted(CORE_API) == CORE_API
    for name in CORE_API:
        assert hasattr(tokenbudget_core, name), name


def test_adapter_all_is_sorted_and_importable() -> None:
    for module in (langchain_tokenbudget, llamaindex_tokenbudget):
        assert sorted(module.__all__) == module.__all__
        assert all(not n.startswith("_") for n in module.__all__)
        for name in module.__all__:
            assert hasattr(module, name)


def test_every_error_derives_from_the_root_and_a_builtin() -> None:
    errors = [getattr(tokenbudget_core, n) for n in CORE_API if n.endswith("Error")]
    for err in errors:
        assert issubclass(err, tokenbudget_core.TokenBudgetError)
        if err is not tokenbudget_core.TokenBudgetError:
            builtin_bases = [b for b in err.__mro__[1:] if b.__module__ == "builtins" and b is not Exception]
            assert builtin_bases, f"{err.__name__} should also inherit a specific builtin"


BLOCKER = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("langchain_core", "langchain", "llama_index"):
            raise ImportError(f"blocked: {name}")
        return None
sys.meta_path.insert(0, Block())
import tokenbudget_core
from tokenbudget_core import TokenCounter, Usage, cost_of
import tokenbudget_core.cli, tokenbudget_core.explain
n = TokenCounter.for_model("gpt-4o").count("hello")
print(int(n), cost_of(Usage(input_tokens=1000, output_tokens=10), "gpt-4o") > 0)
assert not any(m.split(".")[0] in ("langchain_core", "langchain", "llama_index") for m in sys.modules)
"""


def test_core_works_with_host_frameworks_blocked() -> None:
    out = subprocess.run([sys.executable, "-c", BLOCKER], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "True"]
