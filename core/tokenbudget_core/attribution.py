"""Who pays for a call: feature, user and conversation, set once for everything inside.

``with attribute(feature="support", user="u-42"):`` charges every call made inside the
block (through contextvars, so it follows threads started with ``contextvars.copy_context``
and asyncio tasks) to that feature and user. An outer attribution wins over inner ones, so
the calls tokenbudget itself makes (summariser, router classifier, embeddings) are charged
to the caller's feature and user; inside :func:`overhead` they are also reported as overhead.

A generator that yields inside a block runs each step in its reader's context, and servers read
a stream's steps in fresh copies of the request's context (Starlette's ``StreamingResponse``,
``asyncio.wait_for`` per chunk): the block is in force for the first step only. Wrap the stream
instead, ``attributed(stream, feature=..., user=...)`` (``aattributed`` for an async one), which
puts the attribution in force around every step.
"""

from __future__ import annotations

import contextvars
import dataclasses
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TypeVar

from .errors import InvalidInputError

__all__ = [
    "Attribution",
    "aattributed",
    "attribute",
    "attributed",
    "charged_ids",
    "current_attribution",
    "in_force",
    "outer_first",
    "overhead",
]

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True, slots=True)
class Attribution:
    """The payer of the calls in the current context.

    Its ids are checked when it is built, as :func:`attribute` checks them, so one put in force
    (:func:`in_force`) holds only ids the ledger takes on every call (reserve and commit alike).

    Raises:
        InvalidInputError: An id is not a non-empty string, or holds characters UTF-8 cannot
            encode (lone surrogates), named.
    """

    tenant: str | None = None
    """The customer organisation (caches never share entries across tenants)."""
    feature: str | None = None
    """The product feature (``support-chat``, ``summaries``...)."""
    user: str | None = None
    """The end user."""
    conversation: str | None = None
    """The conversation or thread, for cost per conversation."""
    overhead: str | None = None
    """Set inside :func:`overhead`: what the package was doing (``summariser``...)."""

    def __post_init__(self) -> None:
        t, f, u, c, o = self.tenant, self.feature, self.user, self.conversation, self.overhead
        if (
            (t is None or (type(t) is str and t != "" and t.isascii()))
            and (f is None or (type(f) is str and f != "" and f.isascii()))
            and (u is None or (type(u) is str and u != "" and u.isascii()))
            and (c is None or (type(c) is str and c != "" and c.isascii()))
            and (o is None or (type(o) is str and o != "" and o.isascii()))
        ):
            return  # plain ASCII ids (or none): valid, without a call per field
        for field, value in (
            ("tenant", t),
            ("feature", f),
            ("user", u),
            ("conversation", c),
            ("overhead", o),
        ):
            _check(field, value)


_EMPTY = Attribution()
_current: contextvars.ContextVar[Attribution | None] = contextvars.ContextVar(
    "tokenbudget_attribution", default=None
)


def current_attribution() -> Attribution:
    """The attribution in force here (empty when none was set)."""
    return _current.get() or _EMPTY


def charged_ids(feature: str | None = None, user: str | None = None) -> tuple[str | None, str | None]:
    """``(feature, user)`` a call naming ``feature`` and ``user`` is charged to here: the ids of the
    :func:`attribute` block in force win, the call's fill what the block leaves unset."""
    ctx = current_attribution()
    return ctx.feature or feature, ctx.user or user


def charged_attribution(
    *,
    tenant: str | None = None,
    feature: str | None = None,
    user: str | None = None,
    conversation: str | None = None,
) -> Attribution:
    """The attribution a call naming these ids is charged (and its cache lookup scoped) under:
    the :func:`attribute` block in force, its ids winning, the call's filling what it leaves
    unset (:func:`charged_ids`, for every id).

    Raises:
        InvalidInputError: An id :class:`Attribution` refuses, named.
    """
    ctx = current_attribution()
    return dataclasses.replace(
        ctx,
        tenant=ctx.tenant or tenant,
        feature=ctx.feature or feature,
        user=ctx.user or user,
        conversation=ctx.conversation or conversation,
    )


def _restore(token: contextvars.Token[Attribution | None], own: Attribution | None) -> None:
    """End a block that put ``own`` in force: the attribution before it back in force. A
    generator that yielded inside the block may be left in another context than the one it
    entered in (each step of a stream read in a fresh copy of the request's context): there the
    token cannot be reset (never a bare ``ValueError``); the attribution the block replaced is
    set back only where the block's own is still in force (a copy of the block's context), and a
    context where another payer is in force (a reader's own block) is left as it is."""
    try:
        _current.reset(token)
    except ValueError:  # created in a different Context
        if _current.get() is own:
            previous = token.old_value
            _current.set(None if previous is contextvars.Token.MISSING else previous)


def _check(field: str, value: object) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise InvalidInputError(field, "must be a non-empty string", value=value)
    if isinstance(value, str) and not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError as e:
            raise InvalidInputError(
                field,
                "holds characters UTF-8 cannot encode (lone surrogates)",
                value=value,
                fix="decode the id's bytes strictly (or with errors='replace') first",
            ) from e


@contextmanager
def attribute(
    *,
    feature: str | None = None,
    user: str | None = None,
    conversation: str | None = None,
    tenant: str | None = None,
) -> Iterator[Attribution]:
    """Charge the calls inside the block to ``feature`` and ``user`` (outer values win).

    ``tenant`` names the customer organisation: response caches scope their entries by it. The
    ledger does not: budgets and reports are per feature and user id, so ids must be unique
    across tenants (prefix them with the tenant, ``"acme/u-1"``, when they are not).

    Raises:
        InvalidInputError: An id is empty or not a string.

    Example:
        >>> with attribute(feature="support", user="u-42"):
        ...     with attribute(feature="other"):
        ...         current_attribution().feature
        'support'
    """
    for field, value in (
        ("feature", feature),
        ("user", user),
        ("conversation", conversation),
        ("tenant", tenant),
    ):
        _check(field, value)
    outer = current_attribution()
    f, u, c, t = outer_first(
        (outer.feature, outer.user, outer.conversation, outer.tenant), (feature, user, conversation, tenant)
    )
    merged = replace(outer, feature=f, user=u, conversation=c, tenant=t)
    token = _current.set(merged)
    try:
        yield merged
    finally:
        _restore(token, merged)


def attributed(
    stream: Iterable[T],
    *,
    feature: str | None = None,
    user: str | None = None,
    conversation: str | None = None,
    tenant: str | None = None,
) -> Iterator[T]:
    """``stream``'s items, each step of it run inside ``attribute(...)`` with these ids: the
    calls a streamed answer makes between chunks (an agent's next step, a tool's model call) are
    charged to them whatever context each chunk is read in (a server reads a stream's chunks in
    fresh copies of the request's context, where a block opened around ``yield`` has ended).

    Raises:
        InvalidInputError: An id is empty or not a string, or ``stream`` is not iterable.

    Example:
        >>> def answer():
        ...     yield current_attribution().user
        ...     yield current_attribution().user
        >>> list(attributed(answer(), feature="support", user="u-42"))
        ['u-42', 'u-42']
    """
    ids = _ids(feature, user, conversation, tenant)
    if not isinstance(stream, Iterable):
        raise InvalidInputError(
            "stream", "must be iterable", value=type(stream).__name__, fix="pass a generator or an iterator"
        )
    return _attributed(iter(stream), ids)


def _attributed(it: Iterator[T], ids: dict[str, str | None]) -> Iterator[T]:
    try:
        while True:
            with attribute(**ids):  # around the step only: no block is left open across a yield
                try:
                    item = next(it)
                except StopIteration:
                    return
            yield item
    finally:  # closed early (a client gone): the stream's own cleanup runs, attributed too
        close = getattr(it, "close", None)
        if close is not None:
            with attribute(**ids):
                close()


def aattributed(
    stream: AsyncIterable[T],
    *,
    feature: str | None = None,
    user: str | None = None,
    conversation: str | None = None,
    tenant: str | None = None,
) -> AsyncIterator[T]:
    """Async twin of :func:`attributed`: each ``__anext__`` of ``stream`` run inside
    ``attribute(...)`` with these ids.

    Raises:
        InvalidInputError: An id is empty or not a string, or ``stream`` is not an async iterable.
    """
    ids = _ids(feature, user, conversation, tenant)
    if not isinstance(stream, AsyncIterable):
        raise InvalidInputError(
            "stream",
            "must be an async iterable",
            value=type(stream).__name__,
            fix="pass an async generator, or use attributed() for a plain one",
        )
    return _aattributed(aiter(stream), ids)


async def _aattributed(it: AsyncIterator[T], ids: dict[str, str | None]) -> AsyncIterator[T]:
    try:
        while True:
            with attribute(**ids):
                try:
                    item = await anext(it)
                except StopAsyncIteration:
                    return
            yield item
    finally:
        aclose = getattr(it, "aclose", None)
        if aclose is not None:
            with attribute(**ids):
                await aclose()


def _ids(
    feature: str | None, user: str | None, conversation: str | None, tenant: str | None
) -> dict[str, str | None]:
    ids = {"feature": feature, "user": user, "conversation": conversation, "tenant": tenant}
    for field, value in ids.items():
        _check(field, value)
    return ids


def outer_first(*levels: tuple[str | None, ...]) -> tuple[str | None, ...]:
    """The attribution rule for nested levels (ids per field, outermost level first): each field
    takes the first id set, so the outer payer is charged for everything inside it. Adapters use
    it for their frameworks' nested runs (a chain's run metadata over a model's own).

    Raises:
        InvalidInputError: A level is not a tuple of ids, or the levels do not all have the same
            number of ids.

    Example:
        >>> outer_first(("support", None), ("other", "u-42"))
        ('support', 'u-42')
    """
    for i, level in enumerate(levels):
        if not isinstance(level, (tuple, list)):
            raise InvalidInputError(
                f"levels[{i}]",
                "must be a tuple of ids (one per field, None where unset)",
                value=level,
                fix="pass each level as a tuple, e.g. outer_first(('support', None), ('other', 'u-42'))",
            )
    try:
        return tuple(next((v for v in values if v is not None), None) for values in zip(*levels, strict=True))
    except ValueError as e:  # zip(strict=True): a level longer or shorter than the others
        raise InvalidInputError(
            "levels",
            "must all have the same number of ids (one per field)",
            value=levels,
            fix="pass every level's ids for the same fields, in the same order (None where unset)",
        ) from e


@contextmanager
def in_force(attribution: Attribution) -> Iterator[Attribution]:
    """Put ``attribution`` in force as it is, not merged with the one in force: for an adapter
    that resolved the payer of a host run itself (by :func:`outer_first`, the run's outer payer
    over blocks opened inside it), so that the core's calls inside charge that payer.

    Raises:
        InvalidInputError: ``attribution`` is not an :class:`Attribution` (one with a bad id
            cannot be built: :class:`Attribution` checks its ids as :func:`attribute` does).
    """
    if not isinstance(attribution, Attribution):
        raise InvalidInputError("attribution", "must be an Attribution", value=type(attribution).__name__)
    token = _current.set(attribution)
    try:
        yield attribution
    finally:
        _restore(token, attribution)


@contextmanager
def overhead(kind: str) -> Iterator[Attribution]:
    """Mark the calls inside as tokenbudget's own overhead (still charged to the outer payer).

    Raises:
        InvalidInputError: ``kind`` is not a non-empty string (``None`` included: it would mark nothing).
    """
    if not isinstance(kind, str) or not kind:
        raise InvalidInputError(
            "kind", "must be a non-empty string", value=kind, fix="name the overhead, e.g. 'summary'"
        )
    _check("kind", kind)
    outer = current_attribution()
    marked = replace(outer, overhead=outer.overhead or kind)
    token = _current.set(marked)
    try:
        yield marked
    finally:
        _restore(token, marked)
