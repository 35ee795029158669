"""Cache keys leave out credentials (secret-named strings) but keep every setting whose name
merely holds a secret word: a JSON schema property called ``api_key`` or ``token``, or generation
settings such as ``eos_token_id`` / ``stop_token_ids``, still tell two requests apart."""

from __future__ import annotations

from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from pydantic import Field

from llamaindex_tokenbudget import CachedLLM
from tokenbudget_core.cache_keys import CacheScope, model_settings
from tokenbudget_core.response_cache import ExactCache

ACME = CacheScope(tenant="acme")


class JsonLLM(CustomLLM):
    """Answers a JSON object with the properties of the schema its ``response_format`` asks for."""

    temperature: float = 0.0
    additional_kwargs: dict[str, Any] = Field(default_factory=dict)
    api_key: str | None = None

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="gpt-4o-mini")

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        props = self.additional_kwargs["response_format"]["json_schema"]["schema"]["properties"]
        return CompletionResponse(text=",".join(props))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        yield self.complete(prompt)


def schema(*props: str) -> dict[str, Any]:
    body = {"type": "object", "properties": {p: {"type": "string"} for p in props}}
    return {"response_format": {"type": "json_schema", "json_schema": {"name": "Extract", "schema": body}}}


def test_json_schemas_with_secret_named_properties_get_their_own_answers() -> None:
    cache = ExactCache()
    question = [ChatMessage(role="user", content="Extract: Name=Ann, API key=sk-1, token=t-9")]
    answers = [
        CachedLLM(JsonLLM(additional_kwargs=schema(*props), api_key=key), cache, scope=ACME)
        .chat(question)
        .message.content
        for props, key in ((("name", "api_key"), "sk-1"), (("name",), "sk-1"), (("name", "token"), "sk-1"))
    ]
    assert answers == ["name,api_key", "name", "name,token"]
    # a rotated API key is no setting of the answer: the same schema is still a hit
    rotated = CachedLLM(JsonLLM(additional_kwargs=schema("name"), api_key="sk-2"), cache, scope=ACME)
    assert rotated.chat(question).additional_kwargs["cache_hit"]["kind"] == "exact"


def test_generation_settings_named_like_secrets_are_kept_and_credentials_dropped() -> None:
    settings = {
        "generate_kwargs": {"eos_token_id": 2, "stop_token_ids": [128009], "max_new_tokens": 5},
        "api_key": "sk-live-1",
        "aws_session_token": "tok-1",
        "default_headers": {"Authorization": "Bearer sk-live-1", "X-Api-Key": "k-1", "X-Trace": "on"},
        "auth": ["user", "hunter2"],
        "credentials": {"private_key": "-----BEGIN KEY-----", "type": "service_account"},
    }
    assert model_settings(settings) == {
        "generate_kwargs": {"eos_token_id": 2, "stop_token_ids": [128009], "max_new_tokens": 5},
        "default_headers": {"X-Trace": "on"},
        "credentials": {"type": "service_account"},
    }
    other = {"generate_kwargs": {"eos_token_id": 32000, "stop_token_ids": [2], "max_new_tokens": 5}}
    assert model_settings(other) != model_settings({"generate_kwargs": settings["generate_kwargs"]})


def test_a_tokenizers_special_tokens_are_settings_not_secrets() -> None:
    from tokenbudget_core.cache_keys import model_settings

    kept = model_settings({"eos_token": "</s>", "padToken": "<pad>", "api_key": "sk-1", "auth_token": "t"})
    assert kept == {"eos_token": "</s>", "padToken": "<pad>"}
