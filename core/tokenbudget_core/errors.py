"""The one error tree of tokenbudget.

Every error the package raises on purpose derives from :class:`TokenBudgetError`,
and each specific error also inherits the builtin a plain ``except`` clause would
expect, so existing handlers keep working::

    TokenBudgetError (Exception)
    ├── InvalidInputError (ValueError)          bad argument; names the field and the fix
    │   └── InvalidMessageError                 a chat message that cannot be counted
    │   └── ContextOverflowError                what must be kept does not fit the budget
    ├── UnknownModelError (LookupError)         model not in the registry; lists close matches
    ├── UnpricedModelError (LookupError)        model has no known price (never reported as $0)
    ├── EncodingUnavailableError (RuntimeError) no BPE file for a tiktoken encoding
    ├── TokenCountError (RuntimeError)          a provider's token-counting call failed
    ├── BudgetExceededError (RuntimeError)      a call would go over a budget; refused before it goes out
    ├── BudgetUnavailableError (ConnectionError) the ledger's store cannot be reached (fail closed)
    ├── StoreRefusedError (RuntimeError)        the ledger's store is up but refuses it (credentials, ACL)
    ├── CacheUnavailableError (ConnectionError) a response cache's store cannot be reached (a miss)
    └── MissingDependencyError (ImportError)    an optional extra is not installed, or too old

Messages give the value, the limit and the next step.
"""

from __future__ import annotations

import difflib
import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

__all__ = [
    "BudgetExceededError",
    "BudgetUnavailableError",
    "CacheUnavailableError",
    "ContextOverflowError",
    "EncodingUnavailableError",
    "InvalidInputError",
    "InvalidMessageError",
    "MissingDependencyError",
    "StoreRefusedError",
    "TokenBudgetError",
    "TokenCountError",
    "UnknownModelError",
    "UnpricedModelError",
    "check_flag",
    "environment_value",
    "option_names",
    "own_copy",
    "refuse_positional",
    "refuse_unknown",
]


class TokenBudgetError(Exception):
    """Root of every error tokenbudget raises on purpose."""


class InvalidInputError(TokenBudgetError, ValueError):
    """An argument is missing, of the wrong type or out of range.

    Attributes:
        field: Dotted path of the offending field, e.g. ``messages[2].role``.
        value: The offending value (``None`` when it was missing).
    """

    def __init__(self, field: str, problem: str, *, value: object = None, fix: str | None = None) -> None:
        self.field = field
        self.value = value
        self.problem = problem
        self.fix = fix
        message = f"{field}: {problem}"
        if fix:
            message += f"; {fix}"
        super().__init__(message)


class InvalidMessageError(InvalidInputError):
    """A chat message is malformed (missing role, unknown part type, non-string content...)."""


class ContextOverflowError(InvalidInputError):
    """The messages that must be kept (system, pinned, the newest turn) exceed the budget.

    Attributes:
        limit: Tokens available for the prompt.
        required: Tokens the messages that must be kept need.
    """

    def __init__(
        self,
        *,
        limit: int,
        required: int,
        what: str = "system, pinned and newest messages",
        fix: str = "raise the budget, reserve fewer output tokens, unpin messages, "
        "or pass on_overflow='truncate' to shorten the newest message",
    ) -> None:
        self.limit = limit
        self.required = required
        super().__init__(
            "max_tokens",
            f"the {what} need {required} tokens but only {limit} are available",
            value=limit,
            fix=fix,
        )


REGISTER_MODEL = "register it with ModelRegistry.register(...) or a models file (TOKENBUDGET_MODELS)"
"""How to make a model known: the fix of every :class:`UnknownModelError`, with what the call
that raised it takes besides (``fallback=``, ``unknown_model=``)."""
REGISTER_OR_FALLBACK = (
    f"{REGISTER_MODEL}, or pass fallback='<known model>' to use another model's tokenizer and "
    "limits on purpose"
)
"""The fix for calls that take ``fallback=`` (``TokenCounter.for_model``, ``get_model``)."""


class UnknownModelError(TokenBudgetError, LookupError):
    """The model is not in the registry and no fallback was given.

    Attributes:
        model: The model name that was asked for.
        suggestions: Known model names that look closest to it.
        field: The argument that named it (``model``, or e.g. ``premium_model``).
        fix: What the caller can do, for the call that raised it (the options that call takes).
    """

    def __init__(
        self, model: str, suggestions: Sequence[str] = (), *, field: str = "model", fix: str | None = None
    ) -> None:
        self.model = model
        self.suggestions = tuple(suggestions)
        self.field = field
        self.fix = fix if fix is not None else REGISTER_MODEL
        hint = f" Did you mean {', '.join(repr(s) for s in self.suggestions)}?" if self.suggestions else ""
        named = "" if field == "model" else f"{field}: "  # the argument, when it is not plain model
        super().__init__(f"{named}Unknown model {model!r}.{hint} {self.fix[:1].upper()}{self.fix[1:]}.")

    def with_fix(self, fix: str) -> UnknownModelError:
        """The same error with the fix of the call that raised it (e.g. an option it takes)."""
        return UnknownModelError(self.model, self.suggestions, field=self.field, fix=fix)

    def __str__(self) -> str:
        # LookupError (via KeyError-like repr) would quote the message; keep it plain.
        return str(self.args[0])


class UnpricedModelError(TokenBudgetError, LookupError):
    """No price is known for the model, so its cost cannot be computed.

    An unknown price is never reported as $0: callers either catch this error or
    use :func:`tokenbudget_core.price_of`, whose result carries ``total=None``.

    Attributes:
        model: The model name that was asked for.
    """

    def __init__(self, model: str) -> None:
        self.model = model
        super().__init__(
            f"No price is known for model {model!r}. Add one with "
            f"register_price({model!r}, PriceOverride(input_mtok=..., output_mtok=...)), "
            f"or update genai-prices."
        )

    def __str__(self) -> str:
        return str(self.args[0])


class EncodingUnavailableError(TokenBudgetError, RuntimeError):
    """The BPE file of a tiktoken encoding could neither be downloaded nor found locally.

    Attributes:
        encoding: The encoding name, e.g. ``o200k_base``.
    """

    def __init__(self, encoding: str, detail: str) -> None:
        self.encoding = encoding
        super().__init__(f"Cannot load tiktoken encoding {encoding!r}: {detail}")


class TokenCountError(TokenBudgetError, RuntimeError):
    """A provider's token-counting endpoint failed and no estimate was allowed.

    Attributes:
        model: The model whose tokens were being counted.
    """

    def __init__(self, model: str, detail: str) -> None:
        self.model = model
        super().__init__(f"Counting tokens for {model!r} failed: {detail}")


class BudgetExceededError(TokenBudgetError, RuntimeError):
    """A call would take a budget past its limit; it was refused before it went out.

    Attributes:
        budget: Which budget, e.g. ``user_daily_usd`` or ``feature_daily_usd``.
        scope: Whose budget: ``feature=support user=u-42``.
        limit: The limit (tokens, or USD as ``Decimal`` for money budgets).
        used: What was spent and reserved before this call.
        requested: What this call needed.
        step: The degradation step reached (``cache_only``, ``soft_refusal`` or ``hard_refusal``).
        fix: What to do about it (also the message's last sentence): a per-call limit wants a
            smaller call, a run cap a new run, a daily budget a higher limit or the next day.
    """

    def __init__(
        self,
        *,
        budget: str,
        scope: str,
        limit: object,
        used: object,
        requested: object,
        step: str = "hard_refusal",
    ) -> None:
        self.budget, self.scope, self.limit, self.used, self.requested, self.step = (
            budget,
            scope,
            limit,
            used,
            requested,
            step,
        )
        soft = {
            "soft_refusal": " (it fits, but would take the budget past the ladder's soft-refusal share)",
            "cache_only": " (it fits, but would take the budget past the ladder's cache-only share: "
            "only cached answers are served from there)",
        }.get(step, "")
        self.fix = _EXCEEDED_FIXES.get(
            budget, "Raise the limit in the budget policy, or wait for the next day."
        )
        super().__init__(
            f"{budget} for {scope}: {used} used of {limit}, this call needs {requested}{soft}; "
            f"the call was not sent. {self.fix}"
        )


# What to do about a limit a day's wait does not change: per call, and per run.
_EXCEEDED_FIXES = {
    "max_input_tokens_per_call": "Send fewer input tokens (trim the context or the history), or raise "
    "max_input_tokens_per_call in the budget policy.",
    "max_output_tokens_per_call": "Ask for fewer output tokens (max_output_tokens, per choice), or raise "
    "max_output_tokens_per_call in the budget policy.",
    "max_run_tokens": "This run has used up its cap: start a new run, or raise max_run_tokens (RunBudget, "
    "BudgetMiddleware).",
    "max_run_usd": "This run has used up its cap: start a new run, or raise max_run_usd (RunBudget, "
    "BudgetMiddleware).",
}


class BudgetUnavailableError(TokenBudgetError, ConnectionError):
    """The ledger's store cannot be reached and the policy fails closed.

    Attributes:
        store: The store URL.
        detail: What went wrong reaching it.
        sent: ``False`` when the operation was certainly not sent (a later part of a batch);
            ``None`` when it may have run with its answer lost.
    """

    sent: bool | None = None

    def __init__(
        self,
        store: str,
        detail: str,
        *,
        consequence: str = "the call was not sent. Check the store, or choose on_unavailable='open' "
        "to spool usage locally and replay it later.",
    ) -> None:
        self.store, self.detail = store, detail
        super().__init__(f"budget store {store} is unreachable ({detail}); {consequence}")


class StoreRefusedError(TokenBudgetError, RuntimeError):
    """The ledger's store is up but refuses its operations for a reason that does not pass by
    itself: credentials it does not take, an ACL that forbids the ledger's commands, data of
    another application under the ledger's keys.

    Not an outage: never let through by ``on_unavailable`` (a fail-open ledger with a wrong
    password would otherwise enforce no budget, silently), so a reserve raises it. A commit or
    record the store refuses is spooled instead, with an ERROR logged: the call went out, and its
    usage is kept and replayed once the store takes it (fix the credentials; a line the store
    still refuses then is quarantined with the spool's unreadable lines, and logged).

    Attributes:
        retry_later: The refusal is the store's configuration (credentials), not the data: a
            replay that meets it keeps the spooled lines for a later replay instead of
            quarantining them.
    """

    retry_later: bool = False


class CacheUnavailableError(TokenBudgetError, ConnectionError):
    """A response cache's store cannot be reached or read.

    Lookups and stores treat it as a miss (logged); invalidation raises it, so a failed
    invalidation is never mistaken for a done one.

    Attributes:
        store: The store URL (password redacted).
    """

    def __init__(self, store: str, detail: str) -> None:
        self.store = store
        super().__init__(f"cache store {store} is unavailable ({detail}); check the store and retry.")


class MissingDependencyError(TokenBudgetError, ImportError):
    """An optional dependency is not installed, or is installed but too old: it lacks a module
    tokenbudget imports (``missing``).

    Attributes:
        extra: The ``tokenbudget-kit`` extra that installs it.
        missing: The module the installed package lacks (``None``: the package is not installed).
        requirement: The versions tokenbudget needs (``"langchain-core>=1.0,<2"``), when known.
    """

    def __init__(
        self,
        package: str,
        extra: str,
        *,
        missing: str | None = None,
        requirement: str | None = None,
        installed: str | None = None,
        newer: bool = False,
    ) -> None:
        """``package`` (its pip name) for the ``extra``; ``missing``: the module an installed
        ``package`` (version ``installed``, when known) lacks, upgraded to ``requirement``
        (``newer``: the installed version is above ``requirement``, not below it)."""
        self.extra = extra
        self.missing = missing
        self.requirement = requirement
        if missing is None:
            super().__init__(f'{package} is not installed: pip install "tokenbudget-kit[{extra}]"')
            return
        needed = requirement or package
        version = f"; installed: {installed}" if installed else ""
        age, verb = ("newer than tokenbudget supports", "install") if newer else ("too old", "upgrade")
        super().__init__(
            f"{package} is installed but {age} (missing {missing}{version}; tokenbudget needs "
            f'{needed}): {verb} it: pip install -U "{needed}"'
        )

    @classmethod
    def of_framework(
        cls, error: ImportError, *, module: str, package: str, extra: str, requirement: str
    ) -> MissingDependencyError | None:
        """The error of an adapter package whose import of its framework failed with ``error``.

        Args:
            error: What the import raised: a module not found, or a name its module lacks
                (``cannot import name``: an installed version too old to have it).
            module: The framework package's module (``"langchain_core"``, ``"llama_index.core"``).
            package: Its pip name (``"langchain-core"``).
            extra: The ``tokenbudget-kit`` extra that installs it.
            requirement: The versions the adapters need (``"langchain-core>=1.0,<2"``).

        Returns:
            Not installed (``module``, or a package above it, is missing), or installed but too
            old (a module below it is missing, as an older version lacks one; or newer than
            ``requirement``, when the installed version is above it); ``None`` when the error is
            not about the framework's version: a module that is not the framework's, an error
            naming no module, or an installed version within ``requirement`` (``error`` is then
            the one to raise).
        """
        name = error.name
        if name is None:  # ``raise ImportError(msg)`` somewhere below (a broken binary): as it is
            return None
        absent = isinstance(error, ModuleNotFoundError)
        if absent and (name == module or module.startswith(name + ".")):
            return cls(package, extra, requirement=requirement)
        if not (name.startswith(module + ".") or (not absent and name == module)):
            return None
        from importlib import metadata  # the package imported: only a module below it is missing

        try:
            installed: str | None = metadata.version(package)
        except metadata.PackageNotFoundError:  # importable, yet not installed: a copy on the path
            installed = None
        placed = _placed(installed, requirement)
        if placed == "within":  # the version is one tokenbudget supports: something else is wrong
            return None
        return cls(
            package,
            extra,
            missing=name,
            requirement=requirement,
            installed=installed,
            newer=placed == "above",
        )


def _placed(installed: str | None, requirement: str) -> str | None:
    """Where ``installed`` lies against ``requirement``'s range: ``"below"``, ``"within"`` or
    ``"above"`` (``None``: unknown, without the version or the ``packaging`` package)."""
    if installed is None:
        return None
    try:
        from packaging.requirements import InvalidRequirement, Requirement
        from packaging.version import InvalidVersion, Version
    except ImportError:
        return None
    try:
        spec, version = Requirement(requirement).specifier, Version(installed)
    except (InvalidRequirement, InvalidVersion):
        return None
    if spec.contains(version, prereleases=True):
        return "within"
    lower = [Version(s.version) for s in spec if s.operator in (">=", ">", "==", "~=")]
    return "below" if any(version < v for v in lower) else "above"


def environment_value(name: str, *, fix: str) -> str | None:
    """The environment variable ``name``, or ``None`` when it is unset.

    Only an unset variable means "not given": one set to an empty or blank string is refused (a
    deployment that meant to name something, ``NAME=$OTHER`` with that one unset), not read as
    unset, which would quietly fall back to a default the deployment did not mean.

    Raises:
        InvalidInputError: The variable is set but empty or blank (the field is ``$NAME``;
            ``fix`` says what to do instead).
    """
    value = os.environ.get(name)
    if value is not None and not value.strip():
        raise InvalidInputError(
            f"${name}",
            "is set but empty" if not value else "is set but blank (only whitespace)",
            value=value,
            fix=fix,
        )
    return value


def check_flag(field: str, value: object) -> bool:
    """``value`` when it is a real ``bool``: a flag given ``"no"``, ``[1]`` or ``0`` would be
    read by its truthiness (``"no"`` as True), so anything else is refused.

    Raises:
        InvalidInputError: ``value`` is not ``True`` or ``False``, named ``field``.
    """
    if not isinstance(value, bool):
        raise InvalidInputError(field, "must be True or False", value=value)
    return value


def option_names(init: Callable[..., None]) -> list[str]:
    """The options a constructor takes by name: what :func:`refuse_unknown` compares a keyword
    it does not take with (read from its signature, so the list cannot drift)."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [n for n, p in inspect.signature(init).parameters.items() if p.kind in kinds and n != "self"]


def refuse_unknown(
    owner: str, given: Mapping[str, object], known: Sequence[str], *, kind: str = "option"
) -> None:
    """Refuse the first of ``given`` (keyword arguments) that ``owner`` does not take: a typo
    (``usr="ada"``, ``dayly_usd=``) named, with the closest ``known`` one, never ignored.

    Raises:
        InvalidInputError: The first unknown name, with the known ones in its fix.
    """
    for name, value in given.items():
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=1)
            raise InvalidInputError(
                name,
                f"is not {'an' if owner[:1].lower() in 'aeiou' else 'a'} {owner} {kind}",
                value=value,
                fix=(f"did you mean {close[0]!r}? " if close else "") + f"{kind}s: {', '.join(known)}",
            )


def refuse_positional(owner: str, given: Sequence[object], options: Sequence[str], *, after: str) -> None:
    """Refuse options passed by position (``BudgetCallbackHandler(ledger, "gpt-4o")``) to a
    constructor that takes only its first argument (``after``: "ledger", "model", "tiers") so:
    named by the option each would be in the signature's order (``options``: those after the
    first argument), with the keyword to use, never a bare ``TypeError``.

    Raises:
        InvalidInputError: The first positional option, the keywords to use in its fix.
    """
    if not given:
        return
    meant = list(options[: len(given)]) or ["..."]
    keywords = ", ".join(f"{name}=..." for name in meant)
    raise InvalidInputError(
        meant[0] if options else "options",
        f"given by position ({len(given)} after the {after}): {owner} takes its options by keyword",
        value=given[0],
        fix=f"pass {keywords} by keyword: {owner}({after}, {meant[0]}=...); options: {', '.join(options)}",
    )


E = TypeVar("E", bound=BaseException)


def own_copy(error: E) -> E:
    """A copy of ``error`` for one more of the operations it failed, its cause the original: each
    caller raises an exception of its own, with a traceback of its own frames only (one object
    raised by several calls or threads would gather all their frames, and be mutated by all at
    once). ``KeyboardInterrupt`` and the like are passed on as they are."""
    if not isinstance(error, Exception):
        return error
    copied = type(error).__new__(type(error))
    copied.__dict__.update(error.__dict__)
    copied.args = error.args
    copied.__cause__ = error
    return copied


def fresh_refusal(error: BaseException) -> Callable[[], BaseException]:
    """How to raise ``error`` again for other calls it stops (later prompts of a refused batch,
    a cache-only lookup): a fresh error each time, so ``error``, whose traceback holds the
    frames of the call it stopped, is not kept."""
    if isinstance(error, BudgetExceededError):
        figures = {k: getattr(error, k) for k in ("budget", "scope", "limit", "used", "requested", "step")}
        return lambda: BudgetExceededError(**figures)
    text = f"not sent: another prompt of the same call failed ({type(error).__name__}: {error})"
    return lambda: TokenBudgetError(text)
