"""LangChain's standard unit suite for chat models, run on RouterChatModel over fake tool-calling tiers."""

from __future__ import annotations

from typing import Any

from langchain_tests.unit_tests import ChatModelUnitTests
from router_fakes import TierModel

from langchain_tokenbudget import RouterChatModel


class TestRouterChatModelStandard(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[RouterChatModel]:
        return RouterChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {
            "tiers": {
                "small": TierModel(model_name="gpt-4o-mini"),
                "large": TierModel(model_name="gpt-4o"),
            }
        }

    @property
    def standard_chat_model_params(self) -> dict[str, Any]:
        # The suite's standard parameters are those of a provider client. The router keeps the
        # sampling ones (temperature, max_tokens, stop: sent to the tier model) but has no client:
        # credentials, timeouts and retries belong to each tier's own model, and the router
        # rejects them by name (extra="forbid") rather than accept and silently ignore them.
        params = dict(super().standard_chat_model_params)
        for client_only in ("api_key", "timeout", "max_retries"):
            params.pop(client_only)
        return params
