"""A sliding conversation window with cached counts and cache-friendly trimming.

:class:`ConversationWindow` keeps the whole transcript and exposes the window that
fits the budget: system and pinned messages, then a contiguous run of the newest
units (a tool call stays with its results; the run starts on a user turn, by the rule
:func:`~tokenbudget_core.fitting.fit_messages` follows: an agent's tool steps whose request
slid out may lead it only until a user message follows them).

Each message is counted once, when appended; the window's total is kept up to date,
and the window start only moves forward, so a turn (append, then read the window)
costs amortised O(1) counting work plus the copy of the window itself.

Provider prompt caches hit only while the prompt's prefix is unchanged. A window that
slides by a turn every turn changes its prefix every turn; with ``low_water`` set, the
window is trimmed with hysteresis instead: when it grows past the budget (the high-water
mark) it is cut back to ``low_water`` of the budget, then only grows again, so the
prefix changes rarely (:attr:`ConversationWindow.prefix_changes` counts the cuts).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Sequence
from typing import Generic, Literal, TypeAlias, TypeVar

from .conversation import RESULT_ROLES, role_of, unit_start
from .counting import TokenCounter, ToolLike, resolve_counter
from .errors import ContextOverflowError, InvalidInputError, check_flag
from .fitting import check_fits_model, count_message_at, leading_orphans
from .messages import MessageLike, check_message_list

__all__ = ["ConversationWindow", "FirstUser"]

M = TypeVar("M", bound=MessageLike)
FirstUser: TypeAlias = Literal["pin", "slide"]


class ConversationWindow(Generic[M]):
    """The newest part of a conversation that fits a token budget.

    Args:
        model: Model name or :class:`~tokenbudget_core.counting.TokenCounter`.
        max_tokens: The model's input budget, at most its context window (a larger one is
            refused: it would never trim before the model overflows); default: the window.
        reserve_output: Tokens kept free for the reply; default: the model's max output
            tokens when ``max_tokens`` is not given, else 0.
        min_messages: The newest messages never trimmed (beyond system and pinned ones).
        first_user: ``"pin"`` keeps the first user message (it often says who the user is);
            ``"slide"`` lets it go, and :attr:`first_user_dropped` records that it went.
        low_water: ``None`` slides just enough each turn; a fraction such as ``0.7`` trims
            with hysteresis down to that share of the budget (cache-friendly).
        tools: Tool definitions sent with every request (their tokens are reserved).
        messages: An initial history, appended in order (``None``: none).
        hold_overflow: ``False``: :meth:`append` refuses a message that cannot fit beside the
            system and pinned ones (the window is left as it was). ``True``: every message is
            taken into the transcript (a memory whose store already holds it, a paid reply),
            and the window is :attr:`overflowing` until later messages push it out (or for
            good, when it is pinned): :meth:`messages` raises meanwhile.

    Raises:
        InvalidInputError: A bad argument, named.
        ContextOverflowError: (from :meth:`append`, or :meth:`messages` with ``hold_overflow``)
            the budget cannot hold the system and pinned messages plus the newest
            ``min_messages``.

    Example:
        >>> window = ConversationWindow("gpt-4o", max_tokens=2_000, low_water=0.6)
        >>> window.append({"role": "system", "content": "You are a helpful assistant."})
        >>> for i in range(100):
        ...     window.append({"role": "user" if i % 2 == 0 else "assistant", "content": "hi " * 40})
        >>> window.tokens <= window.budget and window.messages()[0]["role"] == "system"
        True
    """

    def __init__(
        self,
        model: str | TokenCounter = "gpt-4o",
        *,
        max_tokens: int | None = None,
        reserve_output: int | None = None,
        min_messages: int = 1,
        first_user: FirstUser = "pin",
        low_water: float | None = None,
        tools: Sequence[ToolLike] | None = None,
        messages: Iterable[M] | None = (),
        hold_overflow: bool = False,
    ) -> None:
        self.counter = resolve_counter(model)
        self.budget = _budget(self.counter, max_tokens, reserve_output)
        """The tokens the window may use: ``max_tokens`` less ``reserve_output`` and what
        :meth:`reserve` keeps free."""
        self._full_budget = self.budget
        self.reserved = 0
        """What :meth:`reserve` keeps free of the budget (``0``: nothing)."""
        self.hold_overflow = check_flag("hold_overflow", hold_overflow)
        if isinstance(min_messages, bool) or not isinstance(min_messages, int) or min_messages < 1:
            raise InvalidInputError("min_messages", "must be an integer >= 1", value=min_messages)
        if first_user not in ("pin", "slide"):
            raise InvalidInputError("first_user", f"unknown value {first_user!r}", fix="use 'pin' or 'slide'")
        if low_water is not None and (
            isinstance(low_water, bool) or not isinstance(low_water, int | float) or not 0 < low_water <= 1
        ):
            raise InvalidInputError(
                "low_water", "must be a fraction in (0, 1] of the budget", value=low_water
            )
        self.min_messages = min_messages
        self.first_user = first_user
        self.low_water = low_water
        self._target = self._low_water_mark()
        # the request's framing as the counter counts it (an estimating counter scales it too)
        self._overhead = int(self.counter.count_messages([], tools or None))
        if messages is not None:
            check_message_list(messages)
        self._reset()
        for m in messages or ():
            self.append(m)

    def _reset(self) -> None:
        self._msgs: list[M] = []
        self._cost: list[int] = []
        self._unit: list[int] = []  # index of the first message of each message's unit
        self._must: list[int] = []  # sorted indices of system and pinned messages
        self._must_set: set[int] = set()
        self._must_tokens = 0
        self._win_tokens = 0  # non-must messages in [start, n)
        self._start = 0
        self._first_user: int | None = None
        self._last_user = -1  # the newest user message's index
        self.exact = True
        """False once any count behind the window is an estimate."""
        self.prefix_changes = 0
        """How many times the window start moved (each one invalidates a provider prompt cache)."""
        self.first_user_dropped = False
        """True once the first user message has slid out (``first_user="slide"``)."""

    # -- reading ----------------------------------------------------------------------------------

    @property
    def tokens(self) -> int:
        """Prompt tokens of the current window (framing, reply priming and tools included)."""
        return self._overhead + self._must_tokens + self._win_tokens

    @property
    def overflowing(self) -> bool:
        """True while the window is over its budget: a message :meth:`append` held
        (``hold_overflow``), or a :meth:`reserve` that left too little, not yet pushed out."""
        return self.tokens > self.budget

    def _low_water_mark(self) -> int:
        return self.budget if self.low_water is None else int(self.budget * self.low_water)

    @property
    def start(self) -> int:
        """Index in the transcript where the sliding part of the window begins."""
        return self._start

    def messages(self, within: int | None = None) -> list[M]:
        """The window: system and pinned messages before the start, then everything from it.

        ``within``: a smaller budget for this read only (the ladder's ``smaller_context`` step:
        :meth:`Ledger.context_tokens <tokenbudget_core.ledger.Ledger.context_tokens>`): the
        window's oldest turns are left out, by the rules of :meth:`append` (whole units, the
        newest ``min_messages``, system and pinned messages kept), until it fits ``within``.
        When what must be kept needs more than ``within``, the window is read whole (within
        :attr:`budget`): a smaller budget never costs the turns it cannot make room with. The
        window itself does not move, so a later read with a larger ``within`` (or none) has them
        back. Such a read counts nothing again, but it walks the turns it leaves out (O(turns
        left out), not O(1)). ``None`` or a ``within`` at or above :attr:`budget`: the window as
        it is.

        Raises:
            ContextOverflowError: The window is :attr:`overflowing` (``hold_overflow``, or a
                :meth:`reserve` that left too little): what it holds cannot be sent whole.
            InvalidInputError: ``within`` is not an integer >= 0.
        """
        if within is not None and (isinstance(within, bool) or not isinstance(within, int) or within < 0):
            raise InvalidInputError(
                "within", "must be an integer >= 0 (a token budget), or None", value=within
            )
        if self.tokens > self.budget:
            raise ContextOverflowError(limit=self.budget, required=self.tokens, fix=_WINDOW_FIX)
        start = self._start
        if within is not None and self.tokens > within:
            start = self._start_within(within)
        head = [self._msgs[i] for i in self._must[: bisect.bisect_left(self._must, start)]]
        return head + self._msgs[start:]

    async def amessages(self, within: int | None = None) -> list[M]:
        """Async twin of :meth:`messages`."""
        return self.messages(within)

    def _start_within(self, within: int) -> int:
        """Where the window would start trimmed to ``within`` tokens, or where it starts when
        :meth:`_next_turn` cannot make it fit: worked out by trimming, then put back as it was."""
        saved = (self._start, self._win_tokens, self.first_user_dropped)
        try:
            while self.tokens > within and (turn := self._next_turn()) is not None:
                self._drop_to(*turn)
            return self._start if self.tokens <= within else saved[0]
        finally:
            self._start, self._win_tokens, self.first_user_dropped = saved

    def slid_out(self, begin: int = 0) -> list[tuple[int, M, int]]:
        """``(index, message, tokens)`` of the messages from ``begin`` that have slid out of the window.

        System and pinned messages never slide out and are not listed.

        Raises:
            InvalidInputError: ``begin`` is not an integer index.
        """
        if isinstance(begin, bool) or not isinstance(begin, int):
            raise InvalidInputError("begin", "must be an integer index into the transcript", value=begin)
        return [
            (i, self._msgs[i], self._cost[i])
            for i in range(max(begin, 0), self._start)
            if i not in self._must_set
        ]

    def transcript(self) -> list[M]:
        """Every message ever appended, in order (nothing is lost by trimming)."""
        return list(self._msgs)

    def __len__(self) -> int:
        """Number of messages in the transcript."""
        return len(self._msgs)

    # -- writing ----------------------------------------------------------------------------------

    def append(self, message: M) -> None:
        """Add a message and slide the window if needed.

        A user message that follows an agent's tool steps whose request slid out ends their
        lead: they slide out too (as :func:`~tokenbudget_core.fitting.fit_messages` drops them),
        so the window starts on a user turn again.

        Raises:
            InvalidMessageError: The message is malformed (named by its index in the transcript,
                ``messages[i]``), or a tool result lacks its call.
            ContextOverflowError: The newest messages cannot fit beside the system and pinned
                ones; the window is left as it was.
        """
        i = len(self._msgs)
        role = role_of(message, i)
        cost_tc = count_message_at(self.counter, message, i)  # validates it fully
        cost = int(cost_tc)
        self._msgs.append(message)
        try:
            unit = unit_start(self._msgs, i) if role in RESULT_ROLES else i
        except Exception:
            self._msgs.pop()
            raise
        pin = role in ("system", "developer") or unit in self._must_set  # a pinned call's result
        if role == "user" and self._first_user is None:
            self._first_user = i
            pin = pin or self.first_user == "pin"
        saved = (
            self._start,
            self._win_tokens,
            self._must_tokens,
            self.prefix_changes,
            self.first_user_dropped,
            self._last_user,
        )
        if role == "user":
            self._last_user = i
        self._cost.append(cost)
        self._unit.append(unit)
        if pin:
            self._must.append(i)
            self._must_set.add(i)
            self._must_tokens += cost
        else:
            self._win_tokens += cost
        if unit < self._start and not pin:  # a result whose call already slid out: bring the unit back
            self._win_tokens += self._sliding_cost(unit, self._start)
            self._start = unit
        before = self._start
        if role == "user" and not pin:
            self._drop_orphans()
        if self.tokens > self.budget:
            self._trim(before)
        elif self._start != before:
            self.prefix_changes += 1
        if self.tokens > self.budget and not self.hold_overflow:
            need = self.tokens
            self._rollback(i, pin, saved)
            raise ContextOverflowError(limit=self.budget, required=need, fix=_WINDOW_FIX)
        self.exact = self.exact and getattr(cost_tc, "exact", True)

    async def aappend(self, message: M) -> None:
        """Async twin of :meth:`append`."""
        self.append(message)

    def extend(self, messages: Iterable[M]) -> None:
        """Append several messages in order.

        Raises:
            InvalidInputError: ``messages`` is not a list of messages (``None``, a number, a
                string, a dict), named ``messages``; else as :meth:`append` (a malformed message
                is named by its index in the transcript, which is its index in ``messages`` when
                the window was empty).
        """
        for m in check_message_list(messages):
            self.append(m)

    def pin(self, index: int) -> None:
        """Pin the transcript message at ``index`` (brought back into the window if it had slid out).

        A tool call and its results are one unit: pinning any message of a unit pins all of it,
        the assistant's call and every result, including results appended after the pin.
        Older turns are trimmed to make room when needed.

        Raises:
            InvalidInputError: ``index`` is not an index into the transcript.
            ContextOverflowError: The pinned unit does not fit beside the system and pinned
                messages and the newest ones (which are never trimmed); nothing changes.
        """
        n = len(self._msgs)
        if isinstance(index, bool) or not isinstance(index, int) or not -n <= index < n:
            raise InvalidInputError("index", f"{index!r} is not an index into the transcript", value=index)
        index %= n
        if index in self._must_set:
            return
        first = self._unit[index]
        unit = [j for j in range(first, self._unit_end(first) + 1) if j not in self._must_set]
        saved = (
            list(self._must),
            set(self._must_set),
            self._start,
            self._win_tokens,
            self._must_tokens,
            self.prefix_changes,
            self.first_user_dropped,
        )
        for j in unit:
            if j >= self._start:
                self._win_tokens -= self._cost[j]
            bisect.insort(self._must, j)
            self._must_set.add(j)
            self._must_tokens += self._cost[j]
        if self.tokens > self.budget:
            self._trim()
        if self.tokens > self.budget:
            need = self.tokens
            (
                self._must,
                self._must_set,
                self._start,
                self._win_tokens,
                self._must_tokens,
                self.prefix_changes,
                self.first_user_dropped,
            ) = saved
            raise ContextOverflowError(limit=self.budget, required=need, fix=_WINDOW_FIX)

    def reserve(self, tokens: int) -> None:
        """Keep ``tokens`` of the budget free beside the window from now on: the rest of a
        request the host sends with it (a system prompt it counts per call, a question not
        appended yet). What no longer fits slides out, as on :meth:`append`; ``reserve(0)``
        gives the room back to the turns appended next (what slid out stays out).

        Raises:
            InvalidInputError: ``tokens`` is not an integer >= 0.
            ContextOverflowError: The system, pinned and newest messages no longer fit (the
                reservation is undone; with ``hold_overflow`` it stays, and the window is
                :attr:`overflowing`).
        """
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
            raise InvalidInputError("tokens", "must be an integer >= 0", value=tokens)
        before = self.reserved
        self._set_reserved(tokens)
        if self.tokens > self.budget:
            self._trim()
        if self.tokens > self.budget and not self.hold_overflow:
            need = self.tokens
            limit = self.budget
            self._set_reserved(before)  # (what slid out stays out: it is older than what stays)
            raise ContextOverflowError(limit=limit, required=need, fix=_WINDOW_FIX)

    def _set_reserved(self, tokens: int) -> None:
        self.reserved = tokens
        self.budget = max(self._full_budget - tokens, 0)
        self._target = self._low_water_mark()

    def clear(self) -> None:
        """Forget the transcript and the window; the budget, tools and options stay."""
        self._reset()

    # -- trimming ---------------------------------------------------------------------------------

    def _unit_end(self, start: int) -> int:
        end = start
        n = len(self._msgs)
        while end + 1 < n and self._unit[end + 1] == start:
            end += 1
        return end

    def _live_after(self, start: int) -> int:
        """Non-must messages from ``start`` to the end."""
        n = len(self._msgs)
        must_after = len(self._must) - bisect.bisect_left(self._must, start)
        return n - start - must_after

    def _next_live(self, s: int) -> int:
        while s in self._must_set:
            s += 1
        return s

    def _units_from(self, s: int) -> Iterator[tuple[int, int]]:
        """``(start, end)`` of the live units from ``s`` on, oldest first, but the newest unit
        (lazily: a caller that stops early pays for what it read)."""
        n = len(self._msgs)
        s = self._next_live(s)
        while s < n:
            end = self._unit_end(s)
            if end >= n - 1:
                return
            yield s, end
            s = self._next_live(end + 1)

    def _next_turn(self) -> tuple[int, int] | None:
        """``(new_start, tokens_freed)`` for dropping the leading unit, plus the assistant units
        that would then be orphaned; ``None`` when it would cut into the newest ``min_messages``
        or the newest unit."""
        n = len(self._msgs)
        s = self._next_live(self._start)
        if s >= n:
            return None
        end = self._unit_end(s)
        # Take along the assistant turns that would start the window orphaned (but never the
        # newest), unless no user message follows to start it: an agent's tool steps after its
        # request (pinned or slid out) would all go for nothing. The rule is fit_messages'.
        if self._last_user > self._next_live(end + 1):
            for _, orphan_end in leading_orphans(self._units_from(end + 1), self._role):
                end = orphan_end
        if end >= n - 1 or self._live_after(end + 1) < self.min_messages:
            return None
        return end + 1, self._sliding_cost(s, end + 1)

    def _drop_orphans(self) -> None:
        """Rule 4 of :func:`~tokenbudget_core.fitting.fit_messages`, once a user message (the
        newest) can start the window: a window that slid during an agent's tool steps kept them
        leading it (no user message followed yet); now they slide out, all of them or (when that
        would cut into the newest ``min_messages``) none, as :meth:`_next_turn` takes them along.

        Each unit read here slides out, but the one it stops at: amortised O(1) per append (when
        ``min_messages`` holds them, they are read again at most until that many more messages
        have come)."""
        s = self._next_live(self._start)
        if s - bisect.bisect_left(self._must, s) == 0:
            return  # nothing slid out before the run: its first unit is not orphaned
        end = s - 1
        for _, orphan_end in leading_orphans(self._units_from(s), self._role):
            end = orphan_end
        if end < s or self._live_after(end + 1) < self.min_messages:
            return
        self._drop_to(end + 1, self._sliding_cost(s, end + 1))

    def _sliding_cost(self, begin: int, end: int) -> int:
        """Tokens of the messages ``begin`` to ``end`` (excluded) that slide (pinned ones stay)."""
        return sum(self._cost[j] for j in range(begin, end) if j not in self._must_set)

    def _drop_to(self, new_start: int, freed: int) -> None:
        first = self._first_user
        if first is not None and self._start <= first < new_start and first not in self._must_set:
            self.first_user_dropped = True
        self._win_tokens -= freed
        self._start = new_start

    def _trim(self, before: int | None = None) -> None:
        """Drop whole turns from the start: while over budget, then (hysteresis) while the window
        stays at or above the low-water mark. ``before``: where the start was when the caller
        began moving it (all its moves are one prefix change)."""
        if before is None:
            before = self._start
        while (turn := self._next_turn()) is not None:
            over = self.tokens > self.budget
            if not over and self.tokens - turn[1] < self._target:
                break
            self._drop_to(*turn)
        if self._start != before:
            self.prefix_changes += 1

    def _role(self, i: int) -> str:
        return role_of(self._msgs[i], i)

    def _rollback(self, i: int, pinned: bool, saved: tuple[int, int, int, int, bool, int]) -> None:
        self._msgs.pop()
        self._cost.pop()
        self._unit.pop()
        if pinned:
            self._must.pop()
            self._must_set.discard(i)
        if self._first_user == i:
            self._first_user = None
        (
            self._start,
            self._win_tokens,
            self._must_tokens,
            self.prefix_changes,
            self.first_user_dropped,
            self._last_user,
        ) = saved


def _budget(counter: TokenCounter, max_tokens: int | None, reserve_output: int | None) -> int:
    for field, value in (("max_tokens", max_tokens), ("reserve_output", reserve_output)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise InvalidInputError(field, "must be a non-negative integer", value=value)
    info = counter.model
    if max_tokens is None:
        if info.context_window is None:
            raise InvalidInputError(
                "max_tokens", f"{info.name!r} has no known context window", fix="pass max_tokens=..."
            )
        max_tokens = info.context_window
        if reserve_output is None:
            reserve_output = info.max_output_tokens or 0
    else:
        check_fits_model(counter, max_tokens)
    budget = max_tokens - (reserve_output or 0)
    if budget <= 0:
        raise InvalidInputError(
            "reserve_output",
            f"leaves no room for the prompt ({max_tokens} - {reserve_output})",
            value=reserve_output,
        )
    return budget


_WINDOW_FIX = (
    "raise max_tokens, reserve fewer output tokens or unpin messages; a window keeps messages "
    "whole, so shorten a long one (truncate_text) before appending it"
)
