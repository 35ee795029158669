"""The model registry: context window, output limit, tokenizer and provider per model.

Facts come from three layers, first match wins:

1. user overrides, registered in code or loaded from a TOML/JSON file
   (``TOKENBUDGET_MODELS`` names one for the default registry);
2. genai-prices' model data (canonical id, provider, context window), completed by
   built-in family rules for what it lacks (tiktoken encoding, max output tokens);
3. the built-in family rules alone, for model families genai-prices does not list.

An OpenAI fine-tune (``ft:gpt-4o-mini-2024-07-18:org::id``) takes its base model's facts and
genai-prices' fine-tune price.

An unknown model raises :class:`~tokenbudget_core.errors.UnknownModelError` naming
close matches, unless the caller passes an explicit ``fallback`` model.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import threading
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, TypeAlias

from .errors import REGISTER_OR_FALLBACK, InvalidInputError, UnknownModelError, environment_value

__all__ = ["ModelInfo", "ModelRegistry", "Tokenizer", "default_registry", "get_model"]

Tokenizer: TypeAlias = Literal["tiktoken", "anthropic", "estimate"]
_TOKENIZERS = ("tiktoken", "anthropic", "estimate")


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelInfo:
    """What tokenbudget knows about one model."""

    name: str
    """The name the caller used, e.g. ``gpt-4o-2024-08-06``."""
    canonical: str
    """The registry's id for the model, e.g. ``gpt-4o``; prices are looked up by it."""
    provider: str
    """Provider id as genai-prices spells it (``openai``, ``anthropic``, ``google``...)."""
    tokenizer: Tokenizer
    """How tokens are counted: tiktoken (exact), Anthropic's API (exact), or an estimate."""
    encoding: str | None = None
    """The tiktoken encoding (for ``tiktoken`` models, and the base of estimates)."""
    context_window: int | None = None
    """Maximum input tokens, or ``None`` when unknown."""
    max_output_tokens: int | None = None
    """Maximum output tokens per call, or ``None`` when unknown."""
    fallback_for: str | None = None
    """Set when this entry stands in for an unknown model the caller named."""
    fallback_model: str | None = None
    """With ``fallback_for``: the name of the model standing in (the ``fallback`` argument), the
    model a provider's counting API is asked about."""


@dataclass(frozen=True, slots=True)
class _Family:
    pattern: re.Pattern[str]
    provider: str
    tokenizer: Tokenizer
    encoding: str | None
    max_output: int | None
    context: int | None


def _f(
    pattern: str, provider: str, tokenizer: Tokenizer, encoding: str | None, out: int | None, ctx: int | None
) -> _Family:
    return _Family(re.compile(pattern), provider, tokenizer, encoding, out, ctx)


# Facts genai-prices does not carry (tokenizer, output limit), by model family; first match wins.
# Context windows here are used only where genai-prices has none.
_FAMILIES: tuple[_Family, ...] = (
    # gpt-oss (vLLM, Ollama, LM Studio...): o200k_harmony's tokens; its requests are counted in the
    # harmony format and flagged exact=False (openai_counting), as servers' templates vary it.
    _f(r"^gpt-oss-", "openai", "tiktoken", "o200k_harmony", 131_072, 131_072),
    _f(r"^gpt-5", "openai", "tiktoken", "o200k_base", 128_000, 400_000),
    _f(r"^gpt-6", "openai", "tiktoken", "o200k_base", 128_000, 1_050_000),
    _f(r"^gpt-4\.1", "openai", "tiktoken", "o200k_base", 32_768, 1_047_576),
    _f(r"^gpt-4\.5", "openai", "tiktoken", "o200k_base", 16_384, 128_000),
    _f(r"^(chatgpt-)?gpt-4o|^chatgpt-4o", "openai", "tiktoken", "o200k_base", 16_384, 128_000),
    _f(r"^o1-mini", "openai", "tiktoken", "o200k_base", 65_536, 128_000),
    _f(r"^o1-preview", "openai", "tiktoken", "o200k_base", 32_768, 128_000),
    _f(r"^o[1-9]", "openai", "tiktoken", "o200k_base", 100_000, 200_000),
    _f(r"^codex-mini", "openai", "tiktoken", "o200k_base", 100_000, 200_000),
    _f(r"^gpt-4-32k", "openai", "tiktoken", "cl100k_base", 32_768, 32_768),
    _f(r"^gpt-4-(turbo|\d{4}-preview|vision)", "openai", "tiktoken", "cl100k_base", 4_096, 128_000),
    _f(r"^gpt-4(-\d{4})?$", "openai", "tiktoken", "cl100k_base", 8_192, 8_192),
    _f(r"^gpt-3\.5-turbo", "openai", "tiktoken", "cl100k_base", 4_096, 16_385),
    _f(r"^gpt-3\.5-0301", "openai", "tiktoken", "cl100k_base", 4_096, 4_096),
    _f(r"^text-embedding-", "openai", "tiktoken", "cl100k_base", 0, 8_191),
    _f(r"^claude-(opus-4-[01]|opus-4$|opus-4-0)", "anthropic", "anthropic", "cl100k_base", 32_000, 200_000),
    _f(r"^claude-3-opus", "anthropic", "anthropic", "cl100k_base", 4_096, 200_000),
    _f(r"^claude-3-5-haiku|^claude-3-5-sonnet", "anthropic", "anthropic", "cl100k_base", 8_192, 200_000),
    _f(r"^claude-3-haiku|^claude-3-sonnet", "anthropic", "anthropic", "cl100k_base", 4_096, 200_000),
    _f(r"^claude-opus-4-[5-9]|^claude-opus-[5-9]", "anthropic", "anthropic", "cl100k_base", 64_000, 200_000),
    _f(r"^claude-", "anthropic", "anthropic", "cl100k_base", 64_000, 200_000),
    # Gemini 2.5 text models (pro, flash, flash-lite, their previews; not the TTS, image or live
    # ones): 1,048,576 input and 65,536 output tokens per Google's model pages; counted by the
    # offline estimate, as every Gemini model here.
    _f(
        r"^gemini-2\.5-(pro|flash|flash-lite)(-preview(-\d\d-\d\d(-\d{4})?)?|-exp-\d\d-\d\d)?$",
        "google",
        "estimate",
        "cl100k_base",
        65_536,
        1_048_576,
    ),
)

# Models genai-prices does not list but callers use; looked up by exact name.
_BUILTIN: dict[str, tuple[str, Tokenizer, str | None, int | None, int | None]] = {
    "text-embedding-3-small": ("openai", "tiktoken", "cl100k_base", 0, 8_191),
    "text-embedding-3-large": ("openai", "tiktoken", "cl100k_base", 0, 8_191),
    "text-embedding-ada-002": ("openai", "tiktoken", "cl100k_base", 0, 8_191),
}


# Providers that serve OpenAI's own models under OpenAI's ids (``azure/gpt-4o-mini``,
# ``openrouter/openai/gpt-4o``): the same model, so the same tokenizer, framing and image rules.
# Not for gpt-oss: open weights that hosts serve through chat templates of their own.
_OPENAI_HOSTS = frozenset({"azure", "openrouter", "github-copilot"})


def _family(canonical: str) -> _Family | None:
    for fam in _FAMILIES:
        if fam.pattern.search(canonical):
            return fam
    return None


def _family_of(name: str) -> _Family | None:
    """The family of a model id as a provider lists it: an ``openai/`` vendor prefix
    (OpenRouter's ``openai/gpt-4o``) is ignored."""
    lowered = name.lower()
    return _family(lowered.removeprefix("openai/")) if lowered.startswith("openai/") else _family(lowered)


def family_provider(name: str) -> str | None:
    """The provider whose model family ``name`` belongs to by the built-in family rules
    (``"openai"``, ``"anthropic"``), whoever serves it, or ``None`` when no rule matches.
    A ``provider/`` prefix is ignored and a fine-tune (``ft:<base>:...``) is its base model."""
    if not isinstance(name, str):
        return None
    fam = _family(base_model_name(name))
    return fam.provider if fam is not None else None


def base_model_name(name: str) -> str:
    """The model a name runs, as model families know it: lower case, no ``provider/`` prefix, and
    a fine-tune (``ft:<base>:<org>:<suffix>:<id>``) its base model."""
    bare = name.strip().lower().rpartition("/")[2]
    return _fine_tuned_base(bare) if bare.startswith("ft:") else bare


def config_file_path(path: object, kind: str) -> Path:
    """``path`` (a ``str`` or ``os.PathLike``) of a TOML or JSON ``kind`` file (``"models"``,
    ``"prices"``) as a :class:`~pathlib.Path`.

    Raises:
        InvalidInputError: ``path`` is not a path (``None``, a number, bytes, empty: named ``path``).
    """
    raw = os.fspath(path) if isinstance(path, str | os.PathLike) else None
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidInputError(
            "path",
            f"must be the path of a TOML or JSON {kind} file, got {path!r}",
            value=path,
            fix=f"pass a path, e.g. '{kind}.toml' (an unset environment variable reads as None or '')",
        )
    return Path(raw)


class ModelRegistry:
    """Looks models up by name; holds user overrides.

    Example:
        >>> registry = ModelRegistry()
        >>> registry.get("gpt-4o-2024-08-06").encoding
        'o200k_base'
        >>> info = registry.register(
        ...     "acme-7b", provider="acme", context_window=32_000, max_output_tokens=4_096
        ... )
        >>> registry.get("acme-7b").context_window == info.context_window == 32_000
        True
    """

    def __init__(self, overrides: Mapping[str, ModelInfo] | None = None) -> None:
        """Make a registry.

        Args:
            overrides: Models by name, each a :class:`ModelInfo` (as :meth:`register` makes).

        Raises:
            InvalidInputError: ``overrides`` is not a mapping of non-empty names to ``ModelInfo``.
        """
        self._lock = threading.Lock()
        self._overrides: dict[str, ModelInfo] = _checked_overrides(overrides)
        self._resolved: dict[str, ModelInfo] = {}
        self.version = 0
        """Bumped by every change to the overrides (caches of what names resolve to compare it)."""

    # -- user overrides -------------------------------------------------------------------------

    def register(
        self,
        name: str,
        *,
        provider: str,
        tokenizer: Tokenizer | None = None,
        encoding: str | None = None,
        context_window: int | None = None,
        max_output_tokens: int | None = None,
        canonical: str | None = None,
    ) -> ModelInfo:
        """Add a model, or override what the registry knows about one.

        Args:
            name: The model name callers will use.
            provider: Provider id (``openai``, ``anthropic``, or your own).
            tokenizer: ``tiktoken``, ``anthropic`` or ``estimate``; defaults to ``tiktoken``
                for OpenAI, ``anthropic`` for Anthropic and ``estimate`` otherwise.
            encoding: tiktoken encoding; defaults to ``o200k_base`` for OpenAI, else ``cl100k_base``.
            context_window: Maximum input tokens.
            max_output_tokens: Maximum output tokens per call.
            canonical: The id under which prices are looked up (default: ``name``).

        Raises:
            InvalidInputError: A field has the wrong type or an impossible value.
        """
        info = _make_info(
            name,
            {
                "provider": provider,
                "tokenizer": tokenizer,
                "encoding": encoding,
                "context_window": context_window,
                "max_output_tokens": max_output_tokens,
                "canonical": canonical,
            },
            where=f"models[{name!r}]",
        )
        with self._lock:
            self._overrides[name] = info
            self._resolved.clear()
            self.version += 1
        return info

    def load_file(self, path: str | os.PathLike[str]) -> list[ModelInfo]:
        """Load overrides from a TOML or JSON file.

        The file holds a ``models`` table keyed by model name, e.g. in TOML::

            [models."acme-7b"]
            provider = "acme"
            context_window = 32000
            max_output_tokens = 4096

        Raises:
            InvalidInputError: ``path`` is not a path (``None``, empty: named ``path``), or the
                file is missing, unparsable, or an entry is malformed.
        """
        p = config_file_path(path, "models")
        try:
            raw_text = p.read_bytes()
        except OSError as e:
            raise InvalidInputError(
                "models_file", f"cannot read {str(p)!r}: {e.strerror}", value=str(p)
            ) from e
        try:
            data: Any = json.loads(raw_text) if p.suffix == ".json" else tomllib.loads(raw_text.decode())
        except (ValueError, UnicodeDecodeError) as e:
            raise InvalidInputError(
                "models_file", f"{str(p)!r} is not valid {'JSON' if p.suffix == '.json' else 'TOML'}: {e}"
            ) from e
        models = data.get("models") if isinstance(data, dict) else None
        if not isinstance(models, dict):
            raise InvalidInputError(
                "models_file", f"{str(p)!r} has no 'models' table", fix='add [models."<name>"] entries'
            )
        infos = []
        for name, entry in models.items():
            if not isinstance(entry, dict):
                raise InvalidInputError(f"models[{name!r}]", "must be a table of fields", value=entry)
            infos.append(_make_info(name, entry, where=f"models[{name!r}]"))
        with self._lock:
            for info in infos:
                self._overrides[info.name] = info
            self._resolved.clear()
            self.version += 1
        return infos

    # -- lookup ---------------------------------------------------------------------------------

    def get(self, name: str, *, fallback: str | None = None, field: str = "model") -> ModelInfo:
        """Return what is known about ``name``.

        ``provider/model`` names (``openai/gpt-4o``) are accepted.

        Args:
            name: A model name, dated snapshot names included.
            fallback: A known model whose tokenizer and limits to use, on purpose, when
                ``name`` is unknown. The result then has ``fallback_for=name``. Checked to be a
                model name whenever it is given, used or not.
            field: The argument ``name`` came from, named by the errors (``premium_model``...).

        Raises:
            InvalidInputError: ``name`` (named ``field``) or ``fallback`` is not a non-empty string.
            UnknownModelError: ``name`` is unknown and no fallback was given (or the
                fallback is unknown too); its ``field`` says which.
        """
        if not isinstance(name, str) or not name.strip():
            raise InvalidInputError(field, "must be a non-empty model name", value=name)
        if fallback is not None and (not isinstance(fallback, str) or not fallback.strip()):
            raise InvalidInputError(
                "fallback", "must be a non-empty model name (or None)", value=fallback,
                fix="name a known model, e.g. fallback='gpt-4o'",
            )  # fmt: skip
        cached = self._resolved.get(name)
        if cached is not None:
            return cached
        info = self._lookup(name.strip())
        if info is None:
            if fallback is None:
                raise UnknownModelError(name, self.suggest(name), field=field)
            base = self.get(fallback, field="fallback")
            return replace(base, name=name, fallback_for=name, fallback_model=base.name)
        with self._lock:
            self._resolved[name] = info
        return info

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(name.strip()) and self._lookup(name.strip()) is not None

    def known_models(self) -> list[str]:
        """All model ids the registry can resolve by exact name (overrides, genai-prices, built-ins)."""
        names = set(self._overrides) | set(_BUILTIN)
        names.update(_genai_model_ids())
        # (genai-prices also lists models the registry cannot resolve: no tokenizer or window known)
        return sorted(n for n in names if self._lookup(n) is not None)

    def suggest(self, name: str, n: int = 3) -> list[str]:
        """Known model names closest to ``name`` that resolve (for error messages).

        Raises:
            InvalidInputError: ``name`` is not a string, or ``n`` not an int >= 1.
        """
        if not isinstance(name, str):
            raise InvalidInputError("name", f"must be a model name, got {type(name).__name__}", value=name)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InvalidInputError("n", "must be an int >= 1 (how many names to suggest)", value=n)
        close = difflib.get_close_matches(name.lower(), self.known_models(), n=n * 3, cutoff=0.6)
        return [c for c in close if c != name and self._lookup(c) is not None][:n]

    def _fine_tune(self, name: str, bare: str) -> ModelInfo | None:
        """An OpenAI fine-tune (``ft:gpt-4o-mini-2024-07-18:acme::abc``): its base model's
        tokenizer and limits, priced by genai-prices' fine-tune entry for that base (fine-tuned
        inference costs more than the base model). ``None`` when either is unknown."""
        base = self._lookup(_fine_tuned_base(bare)) if _fine_tuned_base(bare) else None
        if base is None or base.provider != "openai" or _genai_lookup(bare, "openai") is None:
            return None
        return replace(base, name=name, canonical=bare)

    def _lookup(self, name: str) -> ModelInfo | None:
        override = self._overrides.get(name)
        if override is not None:
            return override
        provider_id: str | None = None
        bare = name
        if "/" in name:
            provider_id, _, bare = name.partition("/")
            override = self._overrides.get(bare)
            if override is not None:
                return replace(override, name=name)
        if bare in _BUILTIN:
            prov, tok, enc, out, ctx = _BUILTIN[bare]
            return ModelInfo(
                name=name,
                canonical=bare,
                provider=prov,
                tokenizer=tok,
                encoding=enc,
                context_window=ctx,
                max_output_tokens=out,
            )
        if bare.startswith("ft:") and provider_id in (None, "openai"):
            return self._fine_tune(name, bare)
        found = _genai_lookup(bare, provider_id)
        if found is not None:
            prov, canonical, ctx = found
            fam = _family_of(canonical) or _family_of(bare)
            if fam is not None and (
                fam.provider == prov
                or (fam.provider == "openai" and prov in _OPENAI_HOSTS and fam.encoding != "o200k_harmony")
            ):
                return ModelInfo(
                    name=name,
                    canonical=canonical,
                    provider=prov,
                    tokenizer=fam.tokenizer,
                    encoding=fam.encoding,
                    context_window=ctx or fam.context,
                    max_output_tokens=_at_most(fam.max_output, ctx or fam.context),
                )
            return ModelInfo(
                name=name,
                canonical=canonical,
                provider=prov,
                tokenizer="estimate",
                encoding="cl100k_base",
                context_window=ctx,
                max_output_tokens=None,
            )
        return None


def _at_most(output: int | None, window: int | None) -> int | None:
    """A family's output limit, never above the model's own window (a family's smaller member)."""
    return output if output is None or not window else min(output, window)


def _fine_tuned_base(name: str) -> str:
    """The base model of an OpenAI fine-tune name (``ft:<base>:<org>:<suffix>:<id>``)."""
    return name.split(":")[1]


def _make_info(name: str, entry: Mapping[str, Any], *, where: str) -> ModelInfo:
    if not isinstance(name, str) or not name.strip():
        raise InvalidInputError("name", "must be a non-empty model name", value=name)
    known = {"provider", "tokenizer", "encoding", "context_window", "max_output_tokens", "canonical"}
    extra = set(entry) - known
    if extra:
        raise InvalidInputError(
            f"{where}.{sorted(extra)[0]}", "is not a model field", fix=f"known fields: {sorted(known)}"
        )
    provider = entry.get("provider")
    if not isinstance(provider, str) or not provider:
        raise InvalidInputError(f"{where}.provider", "is required (e.g. 'openai')", value=provider)
    tokenizer: Any = entry.get("tokenizer")
    if tokenizer is None:  # (only None is unset: a falsy 0 or "" is a wrong value, refused below)
        defaults = {"openai": "tiktoken", "anthropic": "anthropic"}
        tokenizer = defaults.get(provider, "estimate")
    if tokenizer not in _TOKENIZERS:
        raise InvalidInputError(
            f"{where}.tokenizer",
            f"unknown tokenizer {tokenizer!r}",
            value=tokenizer,
            fix=f"use one of {list(_TOKENIZERS)}",
        )
    encoding = entry.get("encoding")
    if encoding is None:
        encoding = "o200k_base" if provider == "openai" else "cl100k_base"
    if not isinstance(encoding, str) or not encoding.strip():
        raise InvalidInputError(f"{where}.encoding", "must be a tiktoken encoding name", value=encoding)
    limits: dict[str, int | None] = {}
    for key in ("context_window", "max_output_tokens"):
        value = entry.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise InvalidInputError(f"{where}.{key}", "must be a non-negative integer", value=value)
        limits[key] = value
    canonical = entry.get("canonical")
    if canonical is None:
        canonical = name
    if not isinstance(canonical, str) or not canonical.strip():
        raise InvalidInputError(f"{where}.canonical", "must be a non-empty string", value=canonical)
    return ModelInfo(
        name=name,
        canonical=canonical,
        provider=provider,
        tokenizer=tokenizer,
        encoding=encoding,
        context_window=limits["context_window"],
        max_output_tokens=limits["max_output_tokens"],
    )


def _checked_overrides(overrides: object) -> dict[str, ModelInfo]:
    """``ModelRegistry(overrides=...)`` as a dict, checked: names to :class:`ModelInfo`."""
    if overrides is None:
        return {}
    if not isinstance(overrides, Mapping):
        raise InvalidInputError(
            "overrides", f"must be a mapping of model names to ModelInfo, got {type(overrides).__name__}",
            value=overrides, fix="pass {'<name>': ModelInfo(...)}, or use ModelRegistry().register(...)",
        )  # fmt: skip
    out: dict[str, ModelInfo] = {}
    for name, info in overrides.items():
        if not isinstance(name, str) or not name.strip():
            raise InvalidInputError("overrides", "keys must be non-empty model names", value=name)
        if not isinstance(info, ModelInfo):
            raise InvalidInputError(
                f"overrides[{name!r}]", f"must be a ModelInfo, got {type(info).__name__}", value=info,
                fix="build it with ModelRegistry().register(...) or ModelInfo(...)",
            )  # fmt: skip
        out[name] = info
    return out


def check_registry(registry: object, field: str = "registry", *, fallback: str = "") -> ModelRegistry:
    """``registry`` itself when it is a :class:`ModelRegistry`, :func:`default_registry` for ``None``.

    Args:
        field: The argument it came from.
        fallback: What ``None`` stands for, added to the fix (e.g. "the ledger's").

    Raises:
        InvalidInputError: Anything else, named ``field``.
    """
    if registry is None:
        return default_registry()
    if not isinstance(registry, ModelRegistry):
        leave_out = f", or leave it out ({fallback})" if fallback else ", or None for the default"
        raise InvalidInputError(
            field, f"must be a ModelRegistry (or None), got {type(registry).__name__}", value=registry,
            fix=f"pass a ModelRegistry{leave_out}",
        )  # fmt: skip
    return registry


def _genai_lookup(name: str, provider_id: str | None) -> tuple[str, str, int | None] | None:
    from genai_prices import data_snapshot

    snapshot = data_snapshot.get_snapshot()
    try:
        provider, model = snapshot.find_provider_model(name, None, provider_id, None)
    except LookupError:
        # genai-prices guesses the provider from the name; for ids it cannot place
        # (e.g. "gemma-3"), try the provider that lists exactly this id.
        owner = _id_owner().get(name) if provider_id is None else None
        if owner is None:
            return None
        try:
            provider, model = snapshot.find_provider_model(name, None, owner, None)
        except LookupError:
            return None
    return provider.id, model.id, model.context_window


_owners: dict[str, str] = {}


def _id_owner() -> dict[str, str]:
    """Model id -> the first provider listing it (genai-prices order)."""
    with _ids_lock:
        if not _owners:
            from genai_prices import data_snapshot

            for p in data_snapshot.get_snapshot().providers:
                for m in p.models:
                    _owners.setdefault(m.id, p.id)
        return _owners


_ids_lock = threading.Lock()
_ids: list[str] = []


def _genai_model_ids() -> Iterable[str]:
    with _ids_lock:
        if not _ids:
            from genai_prices import data_snapshot

            _ids.extend(m.id for p in data_snapshot.get_snapshot().providers for m in p.models)
        return list(_ids)


_default: ModelRegistry | None = None
_default_lock = threading.Lock()


def default_registry() -> ModelRegistry:
    """The process-wide registry; loads ``$TOKENBUDGET_MODELS`` on first use if set."""
    global _default
    found = _default
    if found is not None:  # made already: no lock to take on every call
        return found
    with _default_lock:
        if _default is None:
            registry = ModelRegistry()
            path = environment_value(
                "TOKENBUDGET_MODELS",
                fix="unset it for the default models, else name a TOML or JSON models file",
            )
            if path is not None:
                registry.load_file(path)
            _default = registry
        return _default


def get_model(name: str, *, fallback: str | None = None) -> ModelInfo:
    """Shortcut for ``default_registry().get(name, fallback=fallback)``.

    Raises:
        InvalidInputError: ``name`` (named ``model``) or ``fallback`` is not a non-empty string.
        UnknownModelError: As for :meth:`ModelRegistry.get`.
    """
    try:
        return default_registry().get(name, fallback=fallback)
    except UnknownModelError as e:  # this call takes a fallback: say so
        raise e.with_fix(REGISTER_OR_FALLBACK) from None
