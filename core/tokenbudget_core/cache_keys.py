"""What a response cache keys on: the canonical request and the scope it is cached in.

A cached answer may only be served to a request that would have produced it: the same model,
messages, tools and every parameter that changes the output (:class:`CacheRequest`), in the
same scope (:class:`CacheScope`: namespace, tenant and, as configured, user and feature).

:meth:`CacheScope.key` is an injective encoding: every id is percent-encoded (only
``[A-Za-z0-9._-]`` stay as they are) and ``None`` is ``~`` (which an id never encodes to), so
ids with ``:``, ``*``, ``{``, ``}``, ``|``, spaces, newlines or non-ASCII text can never forge
another scope's key, a Redis hash tag or a glob pattern.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Literal, TypeAlias
from urllib.parse import quote, unquote

from .attribution import current_attribution
from .errors import InvalidInputError
from .messages import Message, TextPart, to_messages, to_openai_dict

__all__ = [
    "PROVIDER_DEFAULT_TEMPERATURE",
    "SCOPE_FIELDS",
    "CacheRequest",
    "CacheScope",
    "ScopeField",
    "canonical_json",
    "check_scope_fields",
    "integration_provider",
    "model_settings",
    "plain_json",
    "resolve_scope",
    "with_default_temperature",
]

ScopeField: TypeAlias = Literal["tenant", "user", "feature"]
SCOPE_FIELDS: tuple[ScopeField, ...] = ("tenant", "user", "feature")
"""The optional parts of a scope; the namespace and the tenant are always part of it."""
_NONE = "~"
_SCHEMA = 1
"""Version of the canonical request encoding (part of every digest)."""


def _enc(value: str | None) -> str:
    if value is None:
        return _NONE
    return quote(value, safe="", errors="surrogatepass").replace("~", "%7E")


def _dec(value: str) -> str | None:
    return None if value == _NONE else unquote(value, errors="surrogatepass")


def _check_id(name: str, value: object, *, optional: bool = True) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not value:
        raise InvalidInputError(
            f"scope.{name}",
            f"must be a non-empty string{' or None' if optional else ''}",
            value=value,
            fix="pass the id as a string",
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class CacheScope:
    """Who may share a cached answer: namespace, tenant and, as configured, user and feature.

    ``tenant=None`` is a scope of its own (it never matches any tenant's entries).

    Args:
        namespace: Separates caches that share a store (non-empty).
        tenant: The tenant (customer, organisation); always part of a cache key.
        user: The end user.
        feature: The product feature.

    Raises:
        InvalidInputError: An id is empty or not a string.

    Example:
        >>> CacheScope(tenant="acme:eu", user="u 1").key()
        'default:acme%3Aeu:u%201:~'
    """

    namespace: str = "default"
    """Separates caches that share a store."""
    tenant: str | None = None
    """The tenant; ``None`` is its own scope."""
    user: str | None = None
    """The end user (part of the key when the cache's ``scope_fields`` include ``user``)."""
    feature: str | None = None
    """The product feature (part of the key when ``scope_fields`` include ``feature``)."""

    def __post_init__(self) -> None:
        _check_id("namespace", self.namespace, optional=False)
        for name in SCOPE_FIELDS:
            _check_id(name, getattr(self, name))

    def key(self) -> str:
        """The injective encoding ``namespace:tenant:user:feature`` (each part percent-encoded)."""
        return ":".join(_enc(v) for v in (self.namespace, self.tenant, self.user, self.feature))

    @classmethod
    def from_key(cls, key: str) -> CacheScope:
        """Decode :meth:`key` (the inverse).

        Raises:
            InvalidInputError: ``key`` is not a scope key.
        """
        parts = key.split(":") if isinstance(key, str) else []
        if len(parts) != 4 or parts[0] == _NONE:
            raise InvalidInputError("key", "is not a CacheScope key", value=key)
        ns, tenant, user, feature = (_dec(p) for p in parts)
        assert ns is not None
        return cls(namespace=ns, tenant=tenant, user=user, feature=feature)

    def restricted(self, fields: Iterable[ScopeField]) -> CacheScope:
        """This scope keeping only ``fields`` (the namespace and tenant are always kept)."""
        keep = set(fields) | {"tenant"}
        return replace(
            self,
            user=self.user if "user" in keep else None,
            feature=self.feature if "feature" in keep else None,
        )

    def covers(self, other: CacheScope) -> bool:
        """True when ``other`` agrees with every field this scope sets (for invalidation).

        The namespace always has to agree; a ``None`` tenant, user or feature here matches any.
        """
        return self.namespace == other.namespace and all(
            getattr(self, f) is None or getattr(self, f) == getattr(other, f) for f in SCOPE_FIELDS
        )


def check_scope_fields(fields: object) -> tuple[ScopeField, ...]:
    """Validate a cache's ``scope_fields`` (they must include ``tenant``).

    Raises:
        InvalidInputError: Not a sequence of ``tenant``/``user``/``feature``, or without ``tenant``.
    """
    if isinstance(fields, str) or not isinstance(fields, Sequence):
        raise InvalidInputError("scope_fields", "must be a tuple of field names", value=fields)
    for f in fields:
        if f not in SCOPE_FIELDS:
            raise InvalidInputError(
                "scope_fields", f"unknown scope field {f!r}", value=f, fix=f"use {', '.join(SCOPE_FIELDS)}"
            )
    if "tenant" not in fields:
        raise InvalidInputError(
            "scope_fields",
            "must include 'tenant': no cache may serve one tenant's answer to another",
            value=tuple(fields),
        )
    return tuple(f for f in SCOPE_FIELDS if f in fields)


def resolve_scope(scope: CacheScope | None, fields: Iterable[ScopeField]) -> CacheScope:
    """The scope a request is cached in: ``scope`` (or one from the current attribution), restricted.

    With ``scope=None`` the tenant, feature and user come from the current
    :func:`~tokenbudget_core.attribution.attribute` block (default namespace).

    Raises:
        InvalidInputError: ``scope`` is not a :class:`CacheScope`.
    """
    if scope is None:
        ctx = current_attribution()
        scope = CacheScope(tenant=ctx.tenant, user=ctx.user, feature=ctx.feature)
    elif not isinstance(scope, CacheScope):
        raise InvalidInputError(
            "scope", f"must be a CacheScope, got {type(scope).__name__}", value=scope, fix="CacheScope(...)"
        )
    return scope.restricted(fields)


MAX_JSON_DEPTH = 100
"""The deepest nesting of lists and dicts a cache key takes (tool schemas and parameters are
far shallower; a deeper value is refused by name, never a ``RecursionError``)."""


def plain_json(value: Any, where: str, _depth: int = 0) -> Any:
    """A plain-JSON copy of ``value`` (dict keys as strings); raises naming ``where`` otherwise.

    Raises:
        InvalidInputError: ``value`` holds something that is not plain JSON, or is nested more
            than :data:`MAX_JSON_DEPTH` levels deep; named ``where`` (and the path inside it).
    """
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInputError(where, "must be a finite number", value=value)
        return int(value) if value.is_integer() else value
    if isinstance(value, Mapping | list | tuple) and _depth >= MAX_JSON_DEPTH:
        raise too_deep(where)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidInputError(f"{where}", f"keys must be strings, got {type(k).__name__}", value=k)
            out[k] = plain_json(v, f"{where}.{k}", _depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [plain_json(v, f"{where}[{i}]", _depth + 1) for i, v in enumerate(value)]
    raise InvalidInputError(
        where,
        f"a {type(value).__name__} cannot be part of a cache key (plain JSON values only)",
        value=value,
        fix="convert it to a JSON value (str, number, bool, None, list, dict) first",
    )


def too_deep(where: str) -> InvalidInputError:
    """The error of a JSON-like value nested past :data:`MAX_JSON_DEPTH` levels (or too deep for
    Python's recursion limit), named ``where``."""
    return InvalidInputError(
        where,
        f"is nested too deeply (more than {MAX_JSON_DEPTH} levels of lists and dicts)",
        fix="flatten it: no real tool schema, parameter or message nests this deep",
    )


_SECRET_WORDS = frozenset(
    {"key", "apikey", "secret", "password", "passwd", "token", "credential", "credentials", "auth",
     "authorization", "cookie"}
)  # fmt: skip
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_WORD_SPLIT = re.compile(r"[^a-z0-9]+")


_TOKENIZER_TOKENS = frozenset({"eos", "bos", "pad", "unk", "sep", "cls", "mask", "stop", "end", "start"})
"""Words naming a tokenizer's special token (``eos_token``, ``pad_token``): settings, not secrets."""


def _secret_name(name: str) -> bool:
    words = _WORD_SPLIT.split(_CAMEL.sub(r"\1_\2", name).lower())
    found = _SECRET_WORDS.intersection(words)
    if found == {"token"} and not _TOKENIZER_TOKENS.isdisjoint(words):
        return False  # eos_token="</s>" changes the answer: it stays in the key
    return bool(found)


def _credential(value: Any) -> bool:
    """What a secret-named entry holds when it is a credential: a string (a key, a token, a
    header's value), a non-empty list of strings, or ``None`` (none set)."""
    if value is None or isinstance(value, str):
        return True
    return isinstance(value, list | tuple) and bool(value) and all(isinstance(v, str) for v in value)


def model_settings(settings: Mapping[str, Any], where: str = "settings") -> dict[str, Any]:
    """A host model's settings as part of a cache key: every setting, secrets left out.

    Two model objects answer differently when any of their settings differ (a JSON response
    format, a reasoning effort, a prompt template), so a cache keys them all, as LangChain's
    ``llm_string`` does. What is no setting of the answer and must never be written into a key
    is left out, at any depth: credentials, i.e. entries whose name holds a secret word
    (``api_key``, ``apiKey``, ``*_secret``, ``password``, ``*_token``, ``credentials``,
    ``Authorization``, ``cookie``...) and whose value is a string, a list of strings or ``None``
    (an unset credential: a key set or not keeps the same cache). Under such a name a number, a
    dict or another list is a setting and kept (a dict still scrubbed inside): ``eos_token_id``,
    ``stop_token_ids``, a JSON schema's ``properties`` named ``api_key`` or ``token``.
    ``max_tokens`` is a setting (``tokens`` is no secret word).

    Args:
        settings: The model's serialised configuration (plain JSON values).
        where: The field named in errors.

    Raises:
        InvalidInputError: ``settings`` is not a dict, or a value is not plain JSON.

    Example:
        >>> model_settings({"model": "gpt-4o", "api_key": "sk-1", "headers": {"X-Api-Key": "k"},
        ...                 "max_tokens": 9, "eos_token_id": 2})
        {'model': 'gpt-4o', 'headers': {}, 'max_tokens': 9, 'eos_token_id': 2}
    """
    if not isinstance(settings, Mapping):
        raise InvalidInputError(where, "must be a dict of settings", value=type(settings).__name__)

    def scrub(value: Any, depth: int = 0) -> Any:
        if isinstance(value, Mapping | list | tuple) and depth >= MAX_JSON_DEPTH:
            raise too_deep(where)
        if isinstance(value, Mapping):
            return {
                k: scrub(v, depth + 1)
                for k, v in value.items()
                if not (isinstance(k, str) and _secret_name(k) and _credential(v))
            }
        if isinstance(value, list | tuple):
            return [scrub(v, depth + 1) for v in value]
        return value

    scrubbed: dict[str, Any] = plain_json(scrub(settings), where)
    return scrubbed


PROVIDER_DEFAULT_TEMPERATURE: Mapping[str, float] = MappingProxyType(
    {"openai": 1.0, "anthropic": 1.0, "google": 1.0, "mistral": 0.7, "groq": 1.0, "deepseek": 1.0,
     "xai": 1.0, "cohere": 0.3, "ollama": 0.8}
)  # fmt: skip
"""The temperature each provider's API answers at when a request sets none. Every one of them
samples by default: a request to them without a temperature is a sampled request."""


_INTEGRATION_PROVIDERS: Mapping[str, str] = MappingProxyType({
    # LangChain: serialisation namespaces (ChatOpenAI: ["langchain", "chat_models", "openai"]) and
    # _types; LlamaIndex: integration packages (llama_index.llms.<name>)
    **dict.fromkeys(("openai", "azure_openai", "openai-chat", "azure-openai-chat"), "openai"),
    **dict.fromkeys(("anthropic", "anthropic-chat"), "anthropic"),
    **dict.fromkeys(("google_genai", "chat-google-generative-ai", "vertexai", "google_vertexai", "gemini",
                     "vertex"), "google"),
    **dict.fromkeys(("mistralai", "mistralai-chat"), "mistral"),
    **dict.fromkeys(("groq", "groq-chat"), "groq"),
    **dict.fromkeys(("deepseek", "deepseek-chat"), "deepseek"),
    **dict.fromkeys(("xai", "xai-chat"), "xai"),
    **dict.fromkeys(("cohere", "cohere-chat"), "cohere"),
    **dict.fromkeys(("ollama", "chat-ollama", "ollama-llm"), "ollama"),
})  # fmt: skip


def integration_provider(names: Iterable[object]) -> str | None:
    """The provider (a key of :data:`PROVIDER_DEFAULT_TEMPERATURE`) whose API a LangChain or
    LlamaIndex integration calls, from the names that identify the integration: the first one
    known wins; ``None`` when none is (a local or fake model, an OpenAI-compatible server).

    The names are LangChain's serialisation namespace (``["langchain", "chat_models", "openai"]``)
    or ``_type`` (``"anthropic-chat"``), or a LlamaIndex integration's package (``"openai"`` for
    ``llama_index.llms.openai``; ``"openai_like"`` is no provider). Anything but a string is
    skipped.

    Raises:
        InvalidInputError: ``names`` is a single string (or not a collection of names).

    Example:
        >>> integration_provider(["langchain", "chat_models", "openai"]), integration_provider(["gemini"])
        ('openai', 'google')
    """
    if isinstance(names, str | bytes) or not isinstance(names, Iterable):
        raise InvalidInputError("names", "must be a list of names", value=names, fix="pass [name]")
    known = (n for n in names if isinstance(n, str) and n in _INTEGRATION_PROVIDERS)
    return next((_INTEGRATION_PROVIDERS[n] for n in known), None)


def with_default_temperature(params: Mapping[str, Any], provider: str | None) -> dict[str, Any]:
    """``params`` with an unset ``temperature`` taken as ``provider``'s default.

    A request that sets no temperature is answered at the provider's default, and every provider
    in :data:`PROVIDER_DEFAULT_TEMPERATURE` samples by default (1.0 for OpenAI and Anthropic), so
    :meth:`CacheRequest.sampled` must see that default to tell. For another or an unknown provider
    (``None``: a local or fake model) ``params`` are returned unchanged: pass the temperature the
    call really uses.

    Raises:
        InvalidInputError: ``params`` is not a dict.

    Example:
        >>> with_default_temperature({"top_p": 1}, "openai"), with_default_temperature({}, None)
        ({'top_p': 1, 'temperature': 1.0}, {})
    """
    if not isinstance(params, Mapping):
        raise InvalidInputError("params", "must be a dict of parameters", value=params)
    out = dict(params)
    default = PROVIDER_DEFAULT_TEMPERATURE.get(provider) if isinstance(provider, str) else None
    if out.get("temperature") is None and default is not None:
        out["temperature"] = default
    return out


def _rebuild(
    model: str, messages: tuple[Message, ...], tools: tuple[Mapping[str, Any], ...], params: dict[str, Any],
    opaque: bool,
) -> CacheRequest:  # fmt: skip
    return CacheRequest(model=model, messages=messages, tools=tools, params=params, opaque=opaque)


def canonical_json(value: Any) -> str:
    """Sorted-key, compact JSON: the same value always gives the same text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _sha(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, kw_only=True, slots=True)
class CacheRequest:
    """The canonical request: everything that decides the answer.

    Messages are converted and validated (OpenAI-style dicts are accepted); parameters whose
    value is ``None`` are left out (the provider default applies either way), and ``1.0`` and
    ``1`` are the same value.

    Args:
        model: The model name.
        messages: Core messages or OpenAI-style dicts (non-empty).
        tools: Tool definitions as JSON dicts, in the order they are sent.
        params: Every parameter that changes the output (``temperature``, ``max_tokens``, ``stop``,
            ``response_format``, ``tool_choice``, ``seed``, ``top_p``...), JSON values only.
        opaque: The messages stand for content the host could not translate (a file or PDF
            block, say, serialized into the prompt): a semantic cache serves such a request only
            an answer to the identical request, never a near match (two contracts with the same
            boilerplate are not the same question).

    Raises:
        InvalidInputError: An empty model, no messages, a malformed message, or a tool or
            parameter that is not plain JSON; the error names the field.

    Example:
        >>> a = CacheRequest(model="gpt-4o", messages=[{"role": "user", "content": "Hi"}],
        ...                  params={"temperature": 0, "seed": None})
        >>> a.digest() == CacheRequest.from_text(model="gpt-4o", prompt="Hi",
        ...                                      params={"temperature": 0.0}).digest()
        True
    """

    model: str
    """The model name."""
    messages: tuple[Message, ...]
    """The conversation, as core messages."""
    tools: tuple[Mapping[str, Any], ...] = ()
    """Tool definitions (JSON dicts)."""
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    """Every parameter that changes the output (read-only)."""
    opaque: bool = False
    """The messages stand for content the host could not translate: matched only exactly."""
    _digest: str = field(default="", init=False, repr=False, compare=False)
    _memo: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise InvalidInputError("model", "must be a non-empty model name", value=self.model)
        messages = tuple(to_messages(self.messages))
        if not messages:
            raise InvalidInputError("messages", "must not be empty", fix="pass at least one message")
        if isinstance(self.tools, str | Mapping) or not isinstance(self.tools, Iterable):
            raise InvalidInputError("tools", "must be a list of tool dicts", value=self.tools)
        tools = tuple(self.tools)
        for i, tool in enumerate(tools):
            if not isinstance(tool, Mapping):
                raise InvalidInputError(f"tools[{i}]", "must be a dict (a JSON tool definition)", value=tool)
        if not isinstance(self.params, Mapping):
            raise InvalidInputError("params", "must be a dict of parameters", value=self.params)
        if not isinstance(self.opaque, bool):
            raise InvalidInputError("opaque", "must be True or False", value=self.opaque)
        params = {k: v for k, v in self.params.items() if v is not None}
        canonical = {
            "v": _SCHEMA,
            "model": self.model.strip(),
            "messages": [to_openai_dict(m) for m in messages],
            "tools": plain_json(tools, "tools"),
            "params": plain_json(params, "params"),
        }
        object.__setattr__(self, "messages", messages)
        object.__setattr__(self, "tools", tools)
        object.__setattr__(self, "params", MappingProxyType(params))
        object.__setattr__(self, "_digest", _sha(canonical))

    def __hash__(self) -> int:
        return hash((self._digest, self.opaque))

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle and deep-copy by the constructor's arguments (``params`` is a read-only view)."""
        return (_rebuild, (self.model, self.messages, self.tools, dict(self.params), self.opaque))

    @classmethod
    def from_text(
        cls, *, model: str, prompt: str, params: Mapping[str, Any] | None = None, opaque: bool = False
    ) -> CacheRequest:
        """A request of one user message (for hosts that hand over a prompt string).

        ``opaque=True``: the prompt serializes content the host could not translate (see the
        class's ``opaque``).

        Raises:
            InvalidInputError: ``prompt`` is not a string, or as for the constructor.
        """
        if not isinstance(prompt, str):
            raise InvalidInputError("prompt", "must be a string", value=type(prompt).__name__)
        messages = (Message(role="user", content=prompt),)
        return cls(model=model, messages=messages, params=params or {}, opaque=opaque)

    def digest(self) -> str:
        """SHA-256 (hex) of the canonical JSON of model, messages, tools and parameters."""
        return self._digest

    @property
    def system_hash(self) -> str:
        """SHA-256 of the system and developer messages, in order (the same for none at all)."""
        return self._memoised("system", self._system_hash)

    def _system_hash(self) -> str:
        return _sha([to_openai_dict(m) for m in self.messages if m.role in ("system", "developer")])

    def _memoised(self, name: str, compute: Callable[[], str]) -> str:
        value = self._memo.get(name)
        if value is None:
            value = self._memo[name] = compute()
        return value

    @property
    def tools_hash(self) -> str:
        """SHA-256 of the tool definitions, in order."""
        return self._memoised("tools", lambda: _sha(plain_json(self.tools, "tools")))

    @property
    def params_hash(self) -> str:
        """SHA-256 of the parameters."""
        return self._memoised("params", lambda: _sha(plain_json(dict(self.params), "params")))

    @property
    def last_user_text(self) -> str:
        """The text of the last user message (``""`` when there is none)."""
        for m in reversed(self.messages):
            if m.role == "user":
                return m.text
        return ""

    @property
    def last_user_name(self) -> str | None:
        """The ``name`` of the last user message (who asks, in a multi-party chat), if any."""
        for m in reversed(self.messages):
            if m.role == "user":
                return m.name
        return None

    @property
    def media_hash(self) -> str:
        """SHA-256 of the last user message's parts that are not text (its images), in order;
        ``""`` when it has none. A text embedding does not see them, so a semantic cache keeps
        them out of the match: only requests with the same images are compared."""
        return self._memoised("media", self._media_hash)

    def _media_hash(self) -> str:
        for m in reversed(self.messages):
            if m.role == "user":
                if isinstance(m.content, str):
                    return ""
                media = [p for p in m.content if not isinstance(p, TextPart)]
                return _sha(to_openai_dict(Message(role="user", content=tuple(media)))) if media else ""
        return ""

    @property
    def history_hash(self) -> str:
        """SHA-256 of the messages before the last user turn, system messages left out."""
        return self._memoised("history", self._history_hash)

    def _history_hash(self) -> str:
        last = max((i for i, m in enumerate(self.messages) if m.role == "user"), default=len(self.messages))
        before = [
            to_openai_dict(m)
            for i, m in enumerate(self.messages)
            if i != last and m.role not in ("system", "developer")
        ]
        return _sha(before)

    @property
    def turn_hash(self) -> str:
        """SHA-256 of the messages after the last user turn (the current turn's tool calls and
        tool results, in order; the hash of nothing when there are none). The answer depends on
        them even where the earlier conversation is ignored."""
        return self._memoised("turn", self._turn_hash)

    def _turn_hash(self) -> str:
        last = max((i for i, m in enumerate(self.messages) if m.role == "user"), default=-1)
        return _sha(
            [to_openai_dict(m) for m in self.messages[last + 1 :] if m.role not in ("system", "developer")]
        )

    def sampled(self) -> bool:
        """True when ``temperature`` > 0 or ``top_p`` < 1 was passed (answers vary between calls).

        A request that passes neither counts as not sampled: pass the temperature the call
        really uses (providers default to 1.0; :func:`with_default_temperature` fills in a known
        provider's default) for the cache to tell.
        """
        t, p = self.params.get("temperature"), self.params.get("top_p")
        return (isinstance(t, int | float) and t > 0) or (isinstance(p, int | float) and p < 1)
