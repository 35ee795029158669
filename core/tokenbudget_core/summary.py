"""A conversation memory that summarises what slides out: :class:`SummaryBuffer`.

Recent turns stay verbatim in a :class:`~tokenbudget_core.window.ConversationWindow`
sized to leave room for one running summary. Whatever slides out of the window is
folded into that summary by a *summariser* (sync or async callable; the adapters pass
a LangChain chat model or a LlamaIndex LLM through :func:`summary_prompt`). The
summary's own tokens are capped (re-summarised, then cut at a sentence boundary).

If the summariser fails, the buffer degrades to the plain sliding window, reports it
(:attr:`SummaryBuffer.last_error`, :attr:`SummaryBuffer.events`) and retries the
pending messages on a later turn; the full transcript is never lost. The rounds of a fold
that succeeded before the failing one are kept (they were paid for), so a chunk the
summariser keeps refusing is retried alone, never with the chunks before it.

An :class:`~tokenbudget_core.errors.InvalidInputError` from the summariser is a programming
error (a misconfigured summariser, an async one called from a running event loop), not a
failure to degrade from: :meth:`SummaryBuffer.append`, :meth:`~SummaryBuffer.aappend`,
:meth:`~SummaryBuffer.extend` and :meth:`~SummaryBuffer.aextend` all raise it, after keeping
the rounds finished before it. So does a fold that is cancelled (a timeout around
:meth:`~SummaryBuffer.aappend`) or interrupted: the finished rounds are kept, the
cancellation goes on, and the next call summarises only what is still pending.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeAlias, TypeVar

from .attribution import overhead
from .conversation import RESULT_ROLES
from .counting import TokenCounter, ToolLike, resolve_counter
from .errors import InvalidInputError
from .messages import Message, MessageLike, check_message_list, to_message
from .window import ConversationWindow, _budget

__all__ = ["SummaryBuffer", "SummaryEvent", "Summariser", "summary_prompt"]

M = TypeVar("M", bound=MessageLike)
Summariser: TypeAlias = Callable[[str | None, list[Message]], "str | Awaitable[str]"]
"""``summariser(previous_summary, messages_to_fold) -> new summary`` (may be async)."""

SUMMARY_HEADER = "Summary of the earlier conversation:\n"


@dataclass(frozen=True, kw_only=True, slots=True)
class SummaryEvent:
    """Something the buffer did that a caller may want to log or show."""

    kind: Literal["summarised", "failed", "capped"]
    """``summarised`` (messages folded), ``failed`` (summariser error: sliding window used),
    ``capped`` (the summary exceeded its cap and was shortened)."""
    messages: int
    """How many transcript messages the event concerns."""
    detail: str = ""
    """The error, or a short description."""


def summary_prompt(
    previous: str | None, messages: Sequence[Message], *, max_tokens: int
) -> list[dict[str, str]]:
    """The chat prompt that asks a model to fold ``messages`` into ``previous``.

    Adapters send it to the host model, so every integration summarises the same way. The
    messages are written in order, one line each: a message's tool calls right after its text
    (``assistant called weather({"city": "Paris"})``), and a tool result labelled with the call it
    answers (``tool result of weather({"city": "Paris"}): 22C sunny``), so the summariser reads
    what was asked, what the tool said and what the answer made of it, in that order.
    """
    lines = _prompt_lines(messages)
    instructions = (
        "You maintain the running summary of a conversation between a user and an assistant. "
        "Fold the new messages into the summary. Keep names, facts about the user, decisions, open "
        f"questions and numbers; drop pleasantries. Answer with the summary only, under {max_tokens} tokens."
    )
    body = f"Current summary:\n{previous or '(none yet)'}\n\nNew messages:\n" + "\n".join(lines)
    return [{"role": "system", "content": instructions}, {"role": "user", "content": body}]


def _prompt_lines(messages: Sequence[Message]) -> list[str]:
    """The lines of :func:`summary_prompt`'s messages, in order (see there)."""
    calls: dict[str, str] = {}  # call id -> "name(arguments)", for the results that answer it
    legacy: str | None = None  # the last legacy function_call (no id): its results follow it
    lines: list[str] = []
    for m in messages:
        if m.role in RESULT_ROLES:
            if m.text:
                call = calls.get(m.tool_call_id or "") if m.role == "tool" else legacy
                call = call or m.name  # its call folded in an earlier summary: the name if any
                lines.append(f"{m.role} result of {call}: {m.text}" if call else f"{m.role} result: {m.text}")
            continue
        if m.text:
            lines.append(f"{m.role}: {m.text}")
        for c in m.tool_calls:
            described = f"{c.name}({c.arguments})"
            if c.id:
                calls[c.id] = described
            else:
                legacy = described
            lines.append(f"{m.role} called {described}")
    return lines


def _default_summary_message(text: str) -> Any:
    return {"role": "system", "content": SUMMARY_HEADER + text}


class SummaryBuffer(Generic[M]):
    """Recent turns verbatim plus one running summary of everything older.

    Args:
        summariser: ``(previous_summary, messages) -> str``, sync or async.
        model: Model name or :class:`~tokenbudget_core.counting.TokenCounter`.
        max_tokens: Input budget (default: the model's context window).
        reserve_output: Tokens kept free for the reply.
        summary_tokens: Cap on the summary's own tokens (default: a fifth of the budget).
        first_user: ``"pin"`` keeps the first user message verbatim; ``"summarise"`` lets
            it be folded into the summary like any other.
        max_rounds: Summariser calls allowed per turn (chunks, then shortening).
        chunk_tokens: Most tokens of messages sent to the summariser in one call (a tool call
            and its results are never split between calls: a larger one is sent alone).
        summary_message: Builds the message that carries the summary (default: a system dict).
        tools: Tool definitions sent with every request.
        low_water: Fold in batches: when the recent turns outgrow their budget, cut them back
            to this share of it (one summariser call per batch, and a stable prompt prefix
            between batches). ``None`` folds every turn.
        hold_overflow: As :class:`~tokenbudget_core.window.ConversationWindow`'s: every message
            is taken (``append`` never refuses one for its size); :meth:`messages` raises
            ``ContextOverflowError`` while the newest cannot fit, and the message is folded once
            later ones push it out.

    Raises:
        InvalidInputError: A bad option, named (e.g. a ``summariser`` or ``summary_message``
            that is not callable).

    Example:
        >>> buffer = SummaryBuffer(lambda prev, msgs: f"{len(msgs)} more messages", max_tokens=400)
        >>> for i in range(40):
        ...     buffer.append({"role": "user" if i % 2 == 0 else "assistant", "content": "word " * 30})
        >>> buffer.summary is not None and buffer.tokens <= buffer.budget
        True
    """

    def __init__(
        self,
        summariser: Summariser,
        model: str | TokenCounter = "gpt-4o",
        *,
        max_tokens: int | None = None,
        reserve_output: int | None = None,
        summary_tokens: int | None = None,
        first_user: Literal["pin", "summarise"] = "pin",
        max_rounds: int = 4,
        chunk_tokens: int = 4_000,
        summary_message: Callable[[str], M] | None = None,
        tools: Sequence[ToolLike] | None = None,
        low_water: float | None = 0.7,
        hold_overflow: bool = False,
    ) -> None:
        if not callable(summariser):
            raise InvalidInputError("summariser", "must be a callable (previous, messages) -> str")
        if first_user not in ("pin", "summarise"):
            raise InvalidInputError(
                "first_user", f"unknown value {first_user!r}", fix="use 'pin' or 'summarise'"
            )
        for field, value in (("max_rounds", max_rounds), ("chunk_tokens", chunk_tokens)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(field, "must be a positive integer", value=value)
        self.summariser = summariser
        self.counter = resolve_counter(model)
        self.budget = _budget(self.counter, max_tokens, reserve_output)
        cap = self.budget // 5 if summary_tokens is None else summary_tokens
        if isinstance(cap, bool) or not isinstance(cap, int) or not 0 < cap < self.budget:
            raise InvalidInputError("summary_tokens", f"must be between 1 and {self.budget - 1}", value=cap)
        self.summary_tokens = cap
        self.max_rounds = max_rounds
        self.chunk_tokens = chunk_tokens
        if summary_message is not None and (
            not callable(summary_message) or inspect.iscoroutinefunction(summary_message)
        ):
            raise InvalidInputError(
                "summary_message",
                "must be a (not async) callable (summary text) -> message, or None",
                value=summary_message,
                fix="e.g. summary_message=lambda s: {'role': 'system', 'content': s}, or leave it out",
            )
        self._make_summary = summary_message or _default_summary_message
        framing = int(self.counter.count_message(self._make_summary("")))
        self._window: ConversationWindow[M] = ConversationWindow(
            self.counter,
            max_tokens=self.budget - cap - framing,
            reserve_output=0,
            first_user="pin" if first_user == "pin" else "slide",
            tools=tools,
            low_water=low_water,
            hold_overflow=hold_overflow,
        )
        self.summary: str | None = None
        """The running summary (``None`` until something was folded)."""
        self._folded = 0  # transcript index up to which messages are in the summary
        self.events: list[SummaryEvent] = []
        """What happened, oldest first (summaries, failures, caps)."""
        self.last_error: str | None = None
        """The summariser's last error, ``None`` after a success."""

    # -- reading ----------------------------------------------------------------------------------

    @property
    def degraded(self) -> bool:
        """True while messages that slid out are not yet in the summary (after a failure)."""
        return self._pending_end() > self._folded

    @property
    def tokens(self) -> int:
        """Prompt tokens of :meth:`messages`."""
        extra = int(self.counter.count_message(self._make_summary(self.summary))) if self.summary else 0
        return self._window.tokens + extra

    def messages(self, within: int | None = None) -> list[M]:
        """System messages, the summary, pinned messages, then the recent turns.

        ``within``: a smaller budget for this read only (the ladder's ``smaller_context`` step:
        :meth:`Ledger.context_tokens <tokenbudget_core.ledger.Ledger.context_tokens>`). The
        summary is kept and the recent turns are read within what it leaves
        (:meth:`ConversationWindow.messages <tokenbudget_core.window.ConversationWindow.messages>`:
        the oldest turns left out, whole units, system, pinned and newest messages kept, the
        whole window when those need more). Turns left out are not folded into the summary (a
        read never calls the summariser): a later read with a larger ``within`` (or none) has
        them back. ``None`` or a ``within`` at or above :attr:`budget`: the buffer as it is.

        Raises:
            ContextOverflowError: The newest messages cannot fit (``hold_overflow``).
            InvalidInputError: ``within`` is not an integer >= 0.
        """
        if within is not None and (isinstance(within, bool) or not isinstance(within, int) or within < 0):
            raise InvalidInputError(
                "within", "must be an integer >= 0 (a token budget), or None", value=within
            )
        if within is not None and within < self.budget:
            summary = int(self.counter.count_message(self._make_summary(self.summary))) if self.summary else 0
            window = self._window.messages(max(within - summary, 0))
        else:
            window = self._window.messages()
        if self.summary is None:
            return window
        lead = 0
        while lead < len(window) and to_message(window[lead]).role in ("system", "developer"):
            lead += 1
        return [*window[:lead], self._make_summary(self.summary), *window[lead:]]

    def transcript(self) -> list[M]:
        """Every message ever appended."""
        return self._window.transcript()

    @property
    def folded(self) -> int:
        """Transcript index up to which messages are in :attr:`summary` (save it with the summary)."""
        return self._folded

    def resume(self, summary: str | None, folded: int) -> None:
        """Continue from a saved :attr:`summary` and :attr:`folded`, on an empty buffer.

        Re-append the same transcript afterwards: the window is rebuilt the same way, and
        only messages from ``folded`` on are sent to the summariser.

        Raises:
            InvalidInputError: The buffer is not empty, or a bad argument.
        """
        if len(self._window):
            raise InvalidInputError("resume", "only an empty buffer can resume", fix="make a new buffer")
        if summary is not None and not isinstance(summary, str):
            raise InvalidInputError("summary", "must be a string or None", value=summary)
        if isinstance(folded, bool) or not isinstance(folded, int) or folded < 0:
            raise InvalidInputError("folded", "must be an integer >= 0", value=folded)
        self.summary, self._folded = summary, folded

    # -- writing ----------------------------------------------------------------------------------

    def append(self, message: M) -> None:
        """Add a message; fold what slid out into the summary (a sync summariser, or no running loop).

        Raises:
            InvalidMessageError: The message is malformed.
            ContextOverflowError: The newest message cannot fit beside system and pinned messages.
            InvalidInputError: The summariser raised it (a programming error, surfaced rather
                than degraded from; the rounds finished before it are kept), or it is async
                and an event loop is running.
        """
        self._window.append(message)
        if self._pending_end() > self._folded:
            self._fold_sync()

    async def aappend(self, message: M) -> None:
        """Async twin of :meth:`append` (awaits an async summariser; raises the same errors)."""
        self._window.append(message)
        if self._pending_end() > self._folded:
            await self._fold_async()

    def extend(self, messages: Iterable[M]) -> None:
        """Append several messages, then fold what slid out once (fewer, fuller summariser calls:
        about one per ``chunk_tokens`` of what slid out). Raises as :meth:`append` does; a message
        refused part-way leaves the ones before it taken in and what they pushed out folded, as
        appending them one by one would.

        Raises:
            InvalidInputError: ``messages`` is not a list of messages (``None``, a number, a
                string, a dict), named ``messages``, before any is taken; else as :meth:`append`.
        """
        check_message_list(messages)
        try:
            for m in messages:
                self._window.append(m)
        except Exception:
            self._fold_all_sync()
            raise
        self._fold_all_sync()

    async def aextend(self, messages: Iterable[M]) -> None:
        """Async twin of :meth:`extend`."""
        check_message_list(messages)
        try:
            for m in messages:
                self._window.append(m)
        except Exception:
            await self._fold_all_async()
            raise
        await self._fold_all_async()

    def reserve(self, tokens: int) -> None:
        """Keep ``tokens`` of the budget free from now on for the rest of a request the host
        sends with :meth:`messages` (a system prompt it counts per call, a question not appended
        yet), and fold what that pushes out of the recent turns: what the request leaves no room
        for is in the summary, never in neither. ``reserve(0)`` gives the room back to the turns
        appended next.

        Raises:
            InvalidInputError: ``tokens`` is not an integer >= 0, or the summariser raised it.
            ContextOverflowError: The system, pinned and newest messages no longer fit beside
                ``tokens`` (the reservation is undone, unless ``hold_overflow``).
        """
        self._window.reserve(tokens)
        self._fold_all_sync()

    async def areserve(self, tokens: int) -> None:
        """Async twin of :meth:`reserve` (awaits an async summariser)."""
        self._window.reserve(tokens)
        await self._fold_all_async()

    @property
    def reserved(self) -> int:
        """What :meth:`reserve` keeps free (``0``: nothing)."""
        return self._window.reserved

    def _fold_all_sync(self) -> None:
        while self.degraded:
            before = self._folded
            if not self._fold_sync() or self._folded == before:  # failed: retried on a later turn
                break

    async def _fold_all_async(self) -> None:
        while self.degraded:
            before = self._folded
            if not await self._fold_async() or self._folded == before:
                break

    # -- folding ----------------------------------------------------------------------------------

    def _pending_end(self) -> int:
        return self._window.start

    def _chunks(self) -> list[list[tuple[int, Message]]]:
        """Messages to fold, as chunks of at most ``chunk_tokens``; each with its transcript index.

        A chunk closes only between units (:mod:`~tokenbudget_core.conversation`: a tool call and
        its results are one unit), so the summariser never reads a call without its results or
        a result without its call; a unit larger than ``chunk_tokens`` is a chunk of its own."""
        chunks: list[list[tuple[int, Message]]] = [[]]
        size = 0
        unit: list[tuple[int, Message]] = []
        unit_cost = 0

        def place() -> None:
            nonlocal size
            if chunks[-1] and size + unit_cost > self.chunk_tokens:
                chunks.append([])
                size = 0
            chunks[-1].extend(unit)
            size += unit_cost

        for i, message, cost in self._window.slid_out(self._folded):
            core = to_message(message)
            if unit and core.role not in RESULT_ROLES:  # a result belongs to the unit before it
                place()
                unit, unit_cost = [], 0
            unit.append((i, core))
            unit_cost += cost
        if unit:
            place()
        return [c for c in chunks if c]

    def _fold_sync(self) -> bool:
        """Fold what slid out (up to ``max_rounds`` calls); ``False`` if the summariser failed
        (the rounds it finished before are kept)."""
        summary, rounds, last = self.summary, 0, self._folded - 1
        try:
            for chunk in self._chunks()[: self.max_rounds]:
                summary = self._call_sync(summary, [m for _, m in chunk])
                last = chunk[-1][0]
                rounds += 1
            if rounds and self._too_long(summary) and rounds < self.max_rounds:
                summary = self._call_sync(None, [Message(role="user", content=summary or "")])
        except BaseException as e:
            if not self._stopped(e, summary, rounds, last):
                raise
            return False
        self._settle(summary, rounds, last)
        return True

    async def _fold_async(self) -> bool:
        """Async twin of :meth:`_fold_sync`."""
        summary, rounds, last = self.summary, 0, self._folded - 1
        try:
            for chunk in self._chunks()[: self.max_rounds]:
                summary = await self._call_async(summary, [m for _, m in chunk])
                last = chunk[-1][0]
                rounds += 1
            if rounds and self._too_long(summary) and rounds < self.max_rounds:
                summary = await self._call_async(None, [Message(role="user", content=summary or "")])
        except BaseException as e:
            if not self._stopped(e, summary, rounds, last):
                raise
            return False
        self._settle(summary, rounds, last)
        return True

    def _call_sync(self, previous: str | None, msgs: list[Message]) -> str:
        with overhead("summariser"):  # charged to the outer payer, reported as tokenbudget's overhead
            result = self.summariser(previous, msgs)
            if not inspect.isawaitable(result):
                return _checked(result)
            return self._run_async(result)

    @staticmethod
    def _run_async(result: Awaitable[str]) -> str:
        """An async summariser's result from the sync path: run it, unless a loop is running."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return _checked(asyncio.run(_await(result)))
        close = getattr(result, "close", None)
        if close is not None:
            close()  # never awaited: close it so it does not warn
        raise InvalidInputError(
            "summariser", "is async and an event loop is running", fix="use aappend() instead of append()"
        )

    async def _call_async(self, previous: str | None, msgs: list[Message]) -> str:
        with overhead("summariser"):
            result = self.summariser(previous, msgs)
            return _checked(await result if inspect.isawaitable(result) else result)

    def _too_long(self, summary: str | None) -> bool:
        return summary is not None and int(self.counter.count(summary)) > self.summary_tokens

    def _stopped(self, error: BaseException, summary: str | None, rounds: int, last: int) -> bool:
        """A fold that raised ``error``: the rounds finished before it were paid for, so they
        are kept (the next call does not pay for them again). True: a summariser failure, which
        degrades to the sliding window; False: re-raise it (``InvalidInputError``, a programming
        error; a cancellation, a timeout around the call, or an interrupt)."""
        self._settle(summary, rounds, last)
        if isinstance(error, InvalidInputError) or not isinstance(error, Exception):
            return False
        self._failed(error)
        return True

    def _settle(self, summary: str | None, rounds: int, last: int) -> None:
        if rounds == 0 or summary is None:
            return
        folded = len(self._window.slid_out(self._folded)) - len(self._window.slid_out(last + 1))
        self._folded = last + 1
        if self._too_long(summary):
            from .truncation import truncate_text

            summary = truncate_text(summary, self.summary_tokens, "smart", counter=self.counter)
            self.events.append(SummaryEvent(kind="capped", messages=folded, detail="summary cut to its cap"))
        self.summary = summary
        self.last_error = None
        self.events.append(SummaryEvent(kind="summarised", messages=folded))

    def _failed(self, e: Exception) -> None:
        self.last_error = f"{type(e).__name__}: {e}"
        pending = self._pending_end() - self._folded
        self.events.append(SummaryEvent(kind="failed", messages=pending, detail=self.last_error))


def _checked(result: object) -> str:
    if not isinstance(result, str):
        raise TypeError(f"the summariser returned {type(result).__name__}, not a str")
    if not result.strip():
        raise ValueError("the summariser returned an empty summary")
    return result


async def _await(result: Awaitable[str]) -> str:
    return await result
