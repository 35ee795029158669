"""The part of a long, growing transcript that :func:`~tokenbudget_core.fitting.fit_messages`
can keep, found in work bounded by the budget rather than by the transcript's length.

A chat history that fits its whole transcript on every read does work that grows with the
conversation (counting is cached, but every message is still visited). :class:`TranscriptFit`
is told each message once, as it is added (its count is taken then), and keeps what the rule
needs across reads: the system messages and the first user message. :meth:`TranscriptFit.
candidates` then names the messages a fit can keep: those, plus the newest whole units (a tool
call with its results) until, *after the newest unit*, more tokens than the budget have been
passed. ``fit_messages`` over the candidates keeps exactly what it keeps over the whole
transcript: it walks the units newest first and stops at the first that does not fit, which
happens inside the candidates (the newest unit is left out of the sum, so a newest message
truncated to fit cannot let older ones in beyond them).

Example:
    >>> from tokenbudget_core.counting import TokenCounter
    >>> from tokenbudget_core.fitting import fit_messages
    >>> transcript = TranscriptFit(TokenCounter.for_model("gpt-4o"))
    >>> history = [{"role": "system", "content": "Be brief."}] + [
    ...     {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " * 20}
    ...     for i in range(400)]
    >>> for message in history:
    ...     transcript.append(message)
    >>> picked = transcript.candidates(500)
    >>> len(picked) < 20
    True
    >>> fitted = fit_messages([history[i] for i in picked], 500, "gpt-4o")
    >>> [picked[i] for i in fitted.kept] == list(fit_messages(history, 500, "gpt-4o").kept)
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, TypeVar

from .conversation import role_of, unit_start
from .counting import TokenCounter
from .errors import InvalidInputError
from .fitting import count_message_at
from .messages import MessageLike

__all__ = ["TranscriptFit"]

M = TypeVar("M", bound=MessageLike)


class TranscriptFit(Generic[M]):
    """A transcript told one message at a time; :meth:`candidates` bounds what a fit reads.

    Args:
        counter: Counts each message once, as :func:`~tokenbudget_core.fitting.fit_messages`
            does with the same counter (files of a stand-in message included).
    """

    def __init__(self, counter: TokenCounter) -> None:
        if not isinstance(counter, TokenCounter):
            raise InvalidInputError(
                "counter", f"must be a TokenCounter, got {type(counter).__name__}", value=counter
            )
        self.counter = counter
        self.reset()

    def reset(self) -> None:
        """Forget every message (the transcript was cleared or replaced)."""
        self._messages: list[M] = []
        self._costs: list[int] = []
        self._system: list[int] = []
        self._first_user: int | None = None

    def __len__(self) -> int:
        """Number of messages told."""
        return len(self._messages)

    @property
    def messages(self) -> Sequence[M]:
        """The messages told, in order (the list itself: do not change it)."""
        return self._messages

    def append(self, message: M) -> None:
        """Tell the next message of the transcript; it is counted now, once.

        Raises:
            InvalidMessageError: The message is malformed, named by its index in the transcript
                (``messages[i]``); nothing is told.
        """
        i = len(self._messages)
        role = role_of(message, i)
        cost = int(count_message_at(self.counter, message, i))
        self._messages.append(message)
        self._costs.append(cost)
        if role in ("system", "developer"):
            self._system.append(i)
        elif role == "user" and self._first_user is None:
            self._first_user = i

    def candidates(self, budget: int, *, pin_first_user: bool = False) -> list[int]:
        """Indices, in order, of the messages a fit within ``budget`` tokens can keep: the system
        messages, the first user message when pinned, and the newest whole units until more than
        ``budget`` tokens have been passed after the newest unit (every message when the
        transcript is shorter than that).

        Raises:
            InvalidMessageError: A tool result has no matching call before it.
        """
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
            raise InvalidInputError("budget", "must be an integer >= 0", value=budget)
        must = set(self._system)
        if pin_first_user and self._first_user is not None:
            must.add(self._first_user)
        n = len(self._messages)
        costs = self._costs
        passed = 0
        newest = True
        start = n
        end = n - 1
        while end >= 0:
            if end in must:
                end -= 1
                continue
            start = unit_start(self._messages, end)
            if not newest:
                passed += sum(costs[i] for i in range(start, end + 1) if i not in must)
                if passed > budget:
                    break
            newest = False
            end = start - 1
        return [i for i in sorted(must) if i < start] + list(range(start, n))
