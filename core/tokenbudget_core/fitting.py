"""Fit a conversation into a token budget: :func:`fit_messages`.

Rules, in order of precedence:

1. system (and developer) messages are kept, verbatim; so are pinned messages (pinning any
   message of a tool call's unit pins the whole unit: the call and all its results);
2. the newest unit is kept (or, with ``keep="oldest"``, the oldest), unless it is pinned;
3. then whole units, newest first, while they fit: a tool call is never separated
   from its results, and the window is contiguous;
4. the window never starts on an assistant message whose user turn was dropped, when a kept
   user message can start it (an agent's tool steps after its request are kept all the same,
   until a user message follows them). :class:`~tokenbudget_core.window.ConversationWindow`
   applies the same rule (:func:`leading_orphans`).

When rules 1-2 alone exceed the budget, :class:`~tokenbudget_core.errors.ContextOverflowError`
says by how much, unless ``on_overflow="truncate"`` shortens the newest message (with
``keep="oldest"``, the oldest, keeping its beginning). A cut that would leave no visible text
of a message without images (nothing, or only blanks) is an overflow too: the question would
vanish, and Anthropic refuses an empty turn. When the
system and pinned messages alone exceed it, the error says so, whatever ``on_overflow``.

An error about a malformed message names it by its index, ``messages[i]``.

Cost: messages are counted from the newest back only until the budget is full, with
the counter's per-content cache, so a fit costs in proportion to the window, not the
history. Only a cheap role scan touches every message (to find system messages).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any, Generic, Literal, TypeAlias, TypeVar

from .conversation import MessageView, role_of
from .counting import TokenCounter, ToolLike, add_file_tokens, resolve_counter
from .errors import ContextOverflowError, InvalidInputError, InvalidMessageError, check_flag
from .messages import Message, MessageLike, Part, TextPart, to_message

__all__ = ["FitResult", "Keep", "OnOverflow", "fit_messages", "fit_smaller_or_whole"]

M = TypeVar("M", bound=MessageLike)
R = TypeVar("R")
Keep: TypeAlias = Literal["newest", "oldest"]
OnOverflow: TypeAlias = Literal["raise", "truncate"]


class FitResult(list[M], Generic[M]):
    """The kept messages (the caller's own objects, in order), plus what happened.

    It is a ``list``: use it wherever the messages go.

    Attributes:
        kept: Indices of the kept messages in the input.
        dropped: Indices of the dropped messages.
        tokens: Prompt tokens of the kept messages (framing, reply priming and tools included).
        budget: Tokens that were available for the prompt (``max_tokens - reserve_output``).
        exact: False when the counts behind ``tokens`` are estimates (e.g. Claude offline).
        truncated: Index of the message shortened to fit, if any.
    """

    kept: tuple[int, ...]
    dropped: tuple[int, ...]
    tokens: int
    budget: int
    exact: bool
    truncated: int | None

    def __init__(
        self,
        items: Iterable[M],
        *,
        kept: tuple[int, ...],
        dropped: tuple[int, ...],
        tokens: int,
        budget: int,
        exact: bool,
        truncated: int | None = None,
    ) -> None:
        super().__init__(items)
        self.kept, self.dropped, self.tokens, self.budget = kept, dropped, tokens, budget
        self.exact, self.truncated = exact, truncated


def _check_int(field: str, value: object, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInputError(field, f"must be an integer >= {minimum}", value=value)
    return value


def check_fits_model(counter: TokenCounter, max_tokens: int, field: str = "max_tokens") -> None:
    """Refuse an input budget above the context window of the model ``counter`` counts for.

    Such a budget never trims where the model needs it: the prompt overflows the model at the
    first long conversation, instead of failing where it was configured (a limit that is
    another model's, or a typo). A model with no known window is not checked.

    Raises:
        InvalidInputError: Named ``field``.
    """
    window = counter.model.context_window
    if window is not None and max_tokens > window:
        raise InvalidInputError(
            field,
            f"{max_tokens} exceeds {counter.model.name}'s context window ({window}): a budget that "
            "large never trims before the model overflows (the limit is another model's, or a typo)",
            value=max_tokens,
            fix=f"pass {field}<={window}, or count with the model the budget serves",
        )


def count_message_at(counter: TokenCounter, message: MessageLike, i: int) -> int:
    """``counter.count_message(message)`` plus the files of a stand-in (``add_file_tokens``), with
    an error about a malformed message naming it ``messages[i]``.

    A counter counts one message as a one-message list, so its error names ``messages[0]``
    whatever the message's place in the caller's list; the index is known only here.

    Raises:
        InvalidMessageError: The message is malformed (named ``messages[i]...``).
    """
    try:
        return add_file_tokens(counter.count_message(message), (message,))
    except InvalidMessageError as e:
        first = "messages[0]"
        if (
            i == 0
            or not e.field.startswith(first)
            or e.field[len(first) : len(first) + 1] not in ("", ".", "[")
        ):
            raise
        field = f"messages[{i}]{e.field[len(first) :]}"
        raise InvalidMessageError(field, e.problem, value=e.value, fix=e.fix) from e


def has_visible_text(text: str) -> bool:
    """Whether ``text`` shows anything: a character that is neither whitespace nor an invisible
    control or format character (a zero-width space, a joiner)."""
    return any(not c.isspace() and unicodedata.category(c) not in ("Cc", "Cf") for c in text)


def leading_orphans(
    units: Iterable[tuple[int, int]], role: Callable[[int], str]
) -> Iterator[tuple[int, int]]:
    """Rule 4 (see the module doc), shared by :func:`fit_messages` and
    :class:`~tokenbudget_core.window.ConversationWindow`: the units that may not lead the window.

    ``units`` are ``(start, end)`` of the run's units that may go, oldest first: the run must
    follow a dropped message, and hold a user message to start on, and the caller leaves out
    its newest unit (never dropped). The units yielded are the leading ones that start on an
    assistant's message (a reply or a tool call whose user turn is gone); iteration stops at the
    first that does not, so the cost is in proportion to what is dropped.
    """
    for start, end in units:
        if role(start) not in _ORPHAN_ROLES:
            return
        yield start, end


_ORPHAN_ROLES = frozenset({"assistant", "tool"})


def fit_messages(
    messages: Sequence[M],
    max_tokens: int,
    model: str | TokenCounter = "gpt-4o",
    *,
    reserve_output: int = 0,
    keep: Keep = "newest",
    pinned: Iterable[int] | None = (),
    pin_first_user: bool = False,
    tools: Sequence[ToolLike] | None = None,
    on_overflow: OnOverflow = "raise",
) -> FitResult[M]:
    """Keep as much of a conversation as fits in ``max_tokens``.

    Args:
        messages: OpenAI-style dicts or core ``Message`` objects; returned objects are the same.
        max_tokens: The model's input budget, at most its context window (a larger one is
            refused, see :func:`check_fits_model`).
        model: Model name or a :class:`~tokenbudget_core.counting.TokenCounter`.
        reserve_output: Tokens kept free for the reply.
        keep: ``"newest"`` (a chat) or ``"oldest"`` (keep the beginning).
        pinned: Indices of messages that must be kept (``None``: none). Pinning any message of
            a tool call's unit (the assistant's call or one of its results) keeps the whole unit.
        pin_first_user: Also pin the first user message (often who the user is).
        tools: Tool definitions sent with the request (their tokens count against the budget).
        on_overflow: ``"raise"`` :class:`ContextOverflowError`, or ``"truncate"`` the newest
            message's text so that it fits, keeping its end (with ``keep="oldest"``: the oldest
            message's, keeping its beginning). A cut must keep some visible text of a message
            without images, else it is an overflow as with ``"raise"``.

    Returns:
        A :class:`FitResult` (a list of the kept messages).

    Raises:
        ContextOverflowError: System, pinned and newest messages alone exceed the budget (with
            ``on_overflow="truncate"``: even with the newest message's text cut to a visible
            remainder).
        InvalidInputError: A bad argument (named); InvalidMessageError for a malformed message
            (named ``messages[i]...``) or a tool result without its call.

    Example:
        >>> history = [{"role": "system", "content": "Be brief."}] + [
        ...     {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " * 20}
        ...     for i in range(50)]
        >>> window = fit_messages(history, 500, "gpt-4o")
        >>> window.tokens <= 500 and window[0]["role"] == "system" and window[-1] is history[-1]
        True
    """
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
        raise InvalidInputError("messages", "must be a list of messages", value=messages)
    _check_int("max_tokens", max_tokens, minimum=1)
    _check_int("reserve_output", reserve_output)
    if reserve_output >= max_tokens:
        raise InvalidInputError(
            "reserve_output",
            f"leaves no room for the prompt ({max_tokens} - {reserve_output})",
            value=reserve_output,
            fix="reserve fewer output tokens than max_tokens",
        )
    if keep not in ("newest", "oldest"):
        raise InvalidInputError("keep", f"unknown value {keep!r}", value=keep, fix="use 'newest' or 'oldest'")
    if on_overflow not in ("raise", "truncate"):
        raise InvalidInputError(
            "on_overflow", f"unknown value {on_overflow!r}", fix="use 'raise' or 'truncate'"
        )
    counter = resolve_counter(model)
    check_fits_model(counter, max_tokens)
    n = len(messages)
    if pinned is None:
        pinned = ()
    if isinstance(pinned, str | bytes | Mapping) or not isinstance(pinned, Iterable):
        raise InvalidInputError(
            "pinned",
            f"must be a list of message indices, got {type(pinned).__name__}",
            value=pinned,
            fix="pass e.g. pinned=[0, 3], or leave it out for none",
        )
    view = MessageView(messages)
    must = _system_indices(messages)
    for p in pinned:
        if isinstance(p, bool) or not isinstance(p, int) or not -n <= p < n:
            raise InvalidInputError("pinned", f"{p!r} is not an index into messages", value=p)
        must.update(_unit_of(view, p % n, n))
    if check_flag("pin_first_user", pin_first_user):
        first_user = next((i for i in range(n) if view.role(i) == "user"), None)
        if first_user is not None:
            must.add(first_user)
    budget = max_tokens - reserve_output
    # the request's framing as the counter counts it (an estimating counter scales it too)
    overhead = int(counter.count_messages([], tools or None))
    costs: dict[int, int] = {}
    exact = True

    def cost(i: int) -> int:
        nonlocal exact
        c = costs.get(i)
        if c is None:
            tc = count_message_at(counter, messages[i], i)
            exact = exact and getattr(tc, "exact", True)
            c = costs[i] = int(tc)
        return c

    used = overhead + sum(cost(i) for i in must)
    if used > budget:
        raise ContextOverflowError(
            limit=budget,
            required=used,
            what="system and pinned messages (with the request's framing and tools)",
            fix="raise the budget, reserve fewer output tokens, unpin messages or shorten the system "
            "message: nothing is left for the newest message",
        )
    taken: list[tuple[int, int]] = []  # (start, end) of taken units
    truncated: int | None = None
    out: list[Any] = list(messages)
    if n and not all(i in must for i in range(n)):
        units = _units_newest_first(view, must, n) if keep == "newest" else _units_oldest_first(view, must, n)
        # the unit that must be kept: the newest (or oldest) one, unless that message is pinned
        anchor = n - 1 if keep == "newest" else next(i for i in range(n) if not view.is_system(i))
        for index, (start, end) in enumerate(units):
            unit_cost = sum(cost(i) for i in range(start, end + 1) if i not in must)
            if used + unit_cost <= budget:
                taken.append((start, end))
                used += unit_cost
                continue
            if index == 0 and anchor in (start, end):
                last = to_message(messages[end])
                cuttable = start == end and last.file_tokens is None and bool(last.text)
                if on_overflow == "raise":
                    raise ContextOverflowError(limit=budget, required=used + unit_cost)
                if not cuttable:
                    raise ContextOverflowError(
                        limit=budget,
                        required=used + unit_cost,
                        fix="raise the budget, reserve fewer output tokens or unpin messages: the newest "
                        "message cannot be shortened (a tool call with its results, a file, no text)",
                    )
                floor = _framing(last, counter)
                if used + floor > budget:
                    raise ContextOverflowError(
                        limit=budget,
                        required=used + floor,
                        what="system and pinned messages plus the newest message with its text cut to "
                        "nothing (its framing and images)",
                        fix="raise the budget, reserve fewer output tokens or unpin messages",
                    )
                out[end], costs[end] = _truncate_to_fit(
                    messages[end],
                    budget - used,
                    floor,
                    counter,
                    "keep_end" if keep == "newest" else "keep_start",
                    budget=budget,
                    required=used + unit_cost,
                )
                truncated = end
                taken.append((start, end))
                used += costs[end]
                continue
            break
        if keep == "newest":
            used -= _drop_orphan_assistants(view, must, taken, cost)
    if used > budget:
        raise ContextOverflowError(limit=budget, required=used)
    kept_set = set(must)
    for start, end in taken:
        kept_set.update(range(start, end + 1))
    kept = tuple(sorted(kept_set))
    dropped = tuple(i for i in range(n) if i not in kept_set)
    return FitResult(
        (out[i] for i in kept),
        kept=kept,
        dropped=dropped,
        tokens=used,
        budget=budget,
        exact=exact,
        truncated=truncated,
    )


def _system_indices(messages: Sequence[MessageLike]) -> set[int]:
    """Indices of system/developer messages: the one pass over the whole history, kept cheap."""
    found = set()
    for i, m in enumerate(messages):
        role = m.get("role") if type(m) is dict else role_of(m, i)
        if role in ("system", "developer"):
            found.add(i)
    return found


def _unit_of(view: MessageView, i: int, n: int) -> range:
    """Indices of the unit holding message ``i``: a tool call with all its results, else ``i`` alone.

    Raises:
        InvalidMessageError: A tool result has no matching call before it.
    """
    start = view.unit_start(i)
    end = start
    while end + 1 < n and view.is_result(end + 1) and view.unit_start(end + 1) == start:
        end += 1  # unit_start validates that the result belongs to this call
    return range(start, end + 1)


def _units_newest_first(view: MessageView, must: set[int], n: int) -> Iterable[tuple[int, int]]:
    """Units not kept anyway, newest first (a pinned unit is wholly in ``must``)."""
    end = n - 1
    while end >= 0:
        if end in must:
            end -= 1
            continue
        start = view.unit_start(end)
        yield start, end
        end = start - 1


def _units_oldest_first(view: MessageView, must: set[int], n: int) -> Iterable[tuple[int, int]]:
    start = 0
    while start < n:
        if start in must:
            start += 1
            continue
        end = start
        while end + 1 < n and view.is_result(end + 1) and view.unit_start(end + 1) == start:
            end += 1  # unit_start validates that the result belongs to this call
        yield start, end
        start = end + 1


def _drop_orphan_assistants(
    view: MessageView, must: set[int], taken: list[tuple[int, int]], cost: Any
) -> int:
    """Drop leading assistant units whose user turn was cut off (:func:`leading_orphans`); return
    the tokens freed.

    Nothing is dropped when no kept unit starts on a user message: dropping could never reach
    one, and an agent's tool steps after its request (pinned or cut off) would all go for
    nothing. Nor when nothing before the run was dropped: its first unit is not orphaned."""
    if not taken or not any(view.role(start) == "user" for start, _ in taken):
        return 0
    if all(i in must for i in range(taken[-1][0])):  # (units were taken newest first)
        return 0
    freed = 0
    for start, end in leading_orphans(reversed(taken[1:]), view.role):  # never the newest unit
        freed += sum(cost(i) for i in range(start, end + 1) if i not in must)
        taken.pop()
    return freed


def _images(core: Message) -> tuple[Part, ...]:
    if isinstance(core.content, str):
        return ()
    return tuple(p for p in core.content if not isinstance(p, TextPart))


def _framing(core: Message, counter: TokenCounter) -> int:
    """Tokens of the message with its text cut to nothing (role, name, images)."""
    return int(counter.count_message(replace(core, content=_images(core) or "")))


def _truncate_to_fit(
    message: M,
    room: int,
    framing: int,
    counter: TokenCounter,
    strategy: str = "keep_end",
    *,
    budget: int,
    required: int,
) -> tuple[M, int]:
    """The message with its text cut to fit ``room``, and its tokens: keeping its end (the newest
    message: the question is usually last), or with ``strategy="keep_start"`` its beginning (the
    oldest).

    A message of content parts keeps its images; its text parts become one text part, first.
    ``framing`` is what it costs with no text (at most ``room``).

    Raises:
        ContextOverflowError: No cut fits; or the cut that fits leaves a message without images
            no visible text (a turn with nothing to say is no fit, and Anthropic refuses it):
            then named as the overflow without truncation is, ``budget`` and ``required``.
    """
    from .truncation import truncate_text

    core = to_message(message)
    images = _images(core)
    limit = room - framing
    for _ in range(4):  # re-tokenising a cut can shift a boundary by a token or two
        if limit < 0:
            break
        text = truncate_text(core.text, limit, strategy, counter=counter)  # type: ignore[arg-type]
        if isinstance(message, Message):
            new: Any = replace(message, content=(TextPart(text=text), *images) if images else text)
        else:
            new = dict(message)
            kept = [p for p in message["content"] if _is_image(p)] if images else []
            new["content"] = [{"type": "text", "text": text}, *kept] if kept else text
        c = int(counter.count_message(new))
        if c <= room:
            if not images and not has_visible_text(text):
                # (a shorter cut keeps less of the same end: no other try would show more)
                which = "newest" if strategy == "keep_end" else "oldest"
                raise ContextOverflowError(
                    limit=budget,
                    required=required,
                    fix=f"raise the budget, reserve fewer output tokens or unpin messages: cut to fit, "
                    f"the {which} message would keep none of its text (only blanks, or nothing)",
                )
            return new, c
        limit -= c - room
    raise ContextOverflowError(
        limit=room,
        required=int(counter.count_message(message)),
        what="newest message" if strategy == "keep_end" else "oldest message",
    )


def _is_image(part: object) -> bool:
    """A dict message's content part that is not text (kept whole when its text is cut)."""
    return not isinstance(part, str) and not (isinstance(part, Mapping) and part.get("type") == "text")


def fit_smaller_or_whole(fit: Callable[[int | None], R], room: int | None, whole: int) -> R:
    """``fit(room)``: a fit within the smaller budget ``room`` (the ladder's ``smaller_context``:
    :meth:`Ledger.context_tokens <tokenbudget_core.ledger.Ledger.context_tokens>`) when it is
    below ``whole`` and what must be kept fits it; else ``fit(None)``, the fit within the whole
    budget. A smaller context never shortens a message nor fails a request that fits the whole
    budget: ``fit`` raises :class:`ContextOverflowError` (without cutting) when ``room`` cannot
    hold what must be kept.

    Raises:
        ContextOverflowError: From ``fit(None)``: the whole budget cannot hold it either.
    """
    if room is not None and room < whole:
        try:
            return fit(room)
        except ContextOverflowError:
            pass  # what must be kept needs more than the smaller budget: as without the ledger
    return fit(None)
