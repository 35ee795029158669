"""Token-budgeted chat histories for existing ``RunnableWithMessageHistory`` apps.

Both classes wrap a backing history that keeps the full transcript (any
``BaseChatMessageHistory``: in memory, Redis, SQL...) and read back only what fits:

* :class:`TokenBudgetChatMessageHistory`: the newest turns that fit (the core's ``fit_messages``);
* :class:`SummaryChatMessageHistory`: recent turns plus a running summary of older ones (the
  core's ``SummaryBuffer``, with a LangChain chat model as summariser).

LangChain 1.x deprecates ``BaseChatMessageHistory`` and ``RunnableWithMessageHistory`` in favour
of agent state (see :class:`~langchain_tokenbudget.ContextWindowMiddleware`); these classes
keep older apps within budget meanwhile and never emit the host's deprecation warning
themselves (subclassing does not warn; the default in-memory store is made with it silenced).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from langchain_core._api import suppress_langchain_deprecation_warning
from langchain_core.chat_history import BaseChatMessageHistory, InMemoryChatMessageHistory
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from tokenbudget_core.attribution import charged_ids
from tokenbudget_core.counting import TokenCounter
from tokenbudget_core.errors import InvalidInputError, InvalidMessageError
from tokenbudget_core.fitting import OnOverflow, fit_smaller_or_whole
from tokenbudget_core.ledger import Ledger, check_context_options
from tokenbudget_core.messages import Message
from tokenbudget_core.operation_lock import OperationLock
from tokenbudget_core.summary import SummaryBuffer, SummaryEvent
from tokenbudget_core.transcript_fit import TranscriptFit

from ._bridge import Budget, ChatSummariser, core_tools, fit_host, host_window
from .messages import check_messages, same_message, to_countable_message

__all__ = ["SummaryChatMessageHistory", "TokenBudgetChatMessageHistory"]


def _backing(history: BaseChatMessageHistory | None) -> BaseChatMessageHistory:
    if history is None:
        with suppress_langchain_deprecation_warning():  # our default store, not the user's choice
            return InMemoryChatMessageHistory()
    if not isinstance(history, BaseChatMessageHistory):
        raise InvalidInputError(
            "history",
            f"must be a LangChain chat message history, got {type(history).__name__}",
            value=history,
        )
    return history


class _CheckedHistory(BaseChatMessageHistory):
    """``add_user_message`` / ``add_ai_message`` refusing what is not a message's content by name
    (LangChain's own raise pydantic's ``ValidationError`` from inside the message)."""

    def add_user_message(self, message: HumanMessage | str | list[str | dict[str, Any]]) -> None:
        """Add a user message (a :class:`HumanMessage`, or its content: a string or content blocks).

        Raises:
            InvalidMessageError: ``message`` is neither.
        """
        self.add_message(_message(HumanMessage, message))

    def add_ai_message(self, message: AIMessage | str | list[str | dict[str, Any]]) -> None:
        """Add an AI message (an :class:`AIMessage`, or its content: a string or content blocks).

        Raises:
            InvalidMessageError: ``message`` is neither.
        """
        self.add_message(_message(AIMessage, message))


def _message(cls: type[HumanMessage] | type[AIMessage], message: object) -> BaseMessage:
    if isinstance(message, cls):
        return message
    if isinstance(message, str | list):
        return cls(content=message)
    raise InvalidMessageError(
        "message",
        f"must be a {cls.__name__} or its content (a string or a list of content blocks),"
        f" got {type(message).__name__}",
    )


class _LedgerRoom:
    """The tokens the ledger lets a history's window keep for the payer (the ladder's
    ``smaller_context`` step), asked when the history changed or for another payer: reads of
    an unchanged history for one payer give one window, as ``RunnableWithMessageHistory``
    relies on (it reads ``messages`` again after the run and tells the new messages from the
    old by its length, so a step moved by the run's own charge must not move the window)."""

    def __init__(self, ledger: Ledger | None, feature: str | None, user: str | None) -> None:
        check_context_options(ledger, feature=feature, user=user)
        self.ledger, self.feature, self.user = ledger, feature, user
        self.last: tuple[tuple[str | None, str | None], int | None] | None = None
        """``(payer, room)``: the ledger's room for that payer at the last read that asked it."""

    def _known(self, unchanged: Callable[[], bool]) -> tuple[bool, int | None]:
        last = self.last
        if self.ledger is None:
            return True, None
        if last is not None and last[0] == charged_ids(self.feature, self.user) and unchanged():
            return True, last[1]
        return False, None

    def tokens(self, budget: int, *, unchanged: Callable[[], bool]) -> int | None:
        """The room within ``budget`` (``None``: no ledger, the whole budget); ``unchanged``
        tells whether the history is as the last read left it.

        Raises:
            BudgetUnavailableError: The ledger's store is down and the ledger fails closed.
        """
        known, room = self._known(unchanged)
        if not known:
            assert self.ledger is not None
            room = self.ledger.context_tokens(budget, feature=self.feature, user=self.user)
            self.last = (charged_ids(self.feature, self.user), room)
        return room

    async def atokens(self, budget: int, *, unchanged: Callable[[], bool]) -> int | None:
        """Async twin of :meth:`tokens`."""
        known, room = self._known(unchanged)
        if not known:
            assert self.ledger is not None
            room = await self.ledger.acontext_tokens(budget, feature=self.feature, user=self.user)
            self.last = (charged_ids(self.feature, self.user), room)
        return room


class TokenBudgetChatMessageHistory(_CheckedHistory):
    """A chat history whose ``messages`` are the newest turns that fit the budget.

    Writes go to the backing history unchanged, so it keeps the full transcript; reads
    return the window the core's ``fit_messages`` keeps (system messages, whole tool-call
    units, the newest turn). ``RunnableWithMessageHistory`` reads the window and adds the
    new input after it: leave room for that input in ``max_tokens`` (or put a
    :class:`~langchain_tokenbudget.TrimMessagesRunnable` before the model for a hard cap).

    Each message of the backing history is converted and counted once, when first read; a
    read fits only the messages the window can reach
    (:class:`~tokenbudget_core.transcript_fit.TranscriptFit`), so its cost stays nearly flat as
    the conversation grows (a pass checking the messages seen are still there, in place). A
    backing history changed under it (a message removed, replaced or moved, or the history
    cleared and refilled by another worker) is read again in full; a message object edited in
    place is not re-read: replace it instead. Its operations run one at a time across threads
    and tasks.

    Args:
        history: The backing history (default: a new in-memory one).
        model: Model name or :class:`~tokenbudget_core.counting.TokenCounter` to count with.
        max_tokens: The budget for the history window (at most the model's context window).
        reserve_output: Tokens kept free for the reply.
        pin_first_user: Also keep the first user message.
        tools: Tools bound to the model; their definitions count.
        on_overflow: ``"raise"`` or ``"truncate"`` the newest message when it alone does not fit.
        ledger: Act on the budget ladder's ``smaller_context`` step: each read fits the window
            to :meth:`Ledger.context_tokens <tokenbudget_core.ledger.Ledger.context_tokens>` of
            ``max_tokens - reserve_output`` for the payer (all of it below that step,
            ``ladder.context_share`` of it from there up; an enclosing
            :func:`~tokenbudget_core.attribute` block names the payer over ``feature`` / ``user``),
            so a payer running out of budget sends fewer old turns. The ledger decides; when the
            messages that must be kept do not fit that smaller budget, the read is the window of
            the whole one. Without a ledger the budget is fixed.
        feature: The feature whose budget the ledger reads (with ``ledger`` only).
        user: The user whose budget the ledger reads (with ``ledger`` only).

    Raises:
        InvalidInputError: A bad option, named (``ledger`` that is not a
            :class:`~tokenbudget_core.ledger.Ledger`; ``feature`` / ``user`` that are not
            non-empty strings, or given without a ledger).
        UnknownModelError: The model name is unknown.

    Example:
        >>> from langchain_core.messages import AIMessage, HumanMessage
        >>> history = TokenBudgetChatMessageHistory(model="gpt-4o", max_tokens=60)
        >>> history.add_messages([HumanMessage("hello " * 30), AIMessage("hi " * 30), HumanMessage("ok?")])
        >>> [m.content for m in history.messages], len(history.transcript)
        (['ok?'], 3)
    """

    def __init__(
        self,
        history: BaseChatMessageHistory | None = None,
        *,
        model: str | TokenCounter,
        max_tokens: int,
        reserve_output: int = 0,
        pin_first_user: bool = False,
        tools: Sequence[Any] | None = None,
        on_overflow: OnOverflow = "raise",
        ledger: Ledger | None = None,
        feature: str | None = None,
        user: str | None = None,
    ) -> None:
        super().__init__()
        self._room = _LedgerRoom(ledger, feature, user)
        self.ledger, self.feature, self.user = ledger, feature, user
        self.budget = Budget.make(
            model,
            max_tokens,
            reserve_output=reserve_output,
            pin_first_user=pin_first_user,
            on_overflow=on_overflow,
            tools=tools,
        )
        self.tools = list(tools or [])
        self.history = _backing(history)
        self._guard = OperationLock()
        self._transcript: TranscriptFit[Message] = TranscriptFit(self.budget.counter)
        self._host: list[BaseMessage] = []

    def _unchanged(self, stored: Sequence[BaseMessage]) -> bool:
        """Whether ``stored`` is what the last read took in, no message added or replaced."""
        return len(stored) == len(self._host) and _in_step(stored, self._host)

    def _window(self, stored: Sequence[BaseMessage], room: int | None = None) -> list[BaseMessage]:
        """Take in what the backing history gained since the last read, then fit what the
        window can reach: within ``room`` tokens (the ledger's, below the budget) when the
        messages that must be kept fit there, else within the budget."""
        if not _in_step(stored, self._host):
            self._transcript.reset()
            self._host = []
        for k in range(len(self._host), len(stored)):
            message = stored[k]
            self._transcript.append(to_countable_message(message, where=f"messages[{k}]"))
            self._host.append(message)
        budget = self.budget
        return fit_smaller_or_whole(
            lambda within: self._fit(stored, budget if within is None else budget.within(within)),
            room,
            budget.prompt_tokens,
        )

    def _fit(self, stored: Sequence[BaseMessage], budget: Budget) -> list[BaseMessage]:
        picked = self._transcript.candidates(budget.prompt_tokens, pin_first_user=budget.pin_first_user)
        core = self._transcript.messages
        return fit_host(  # the backing history's objects as it hands them back now
            [stored[i] for i in picked], budget, tools=self.tools, converted=[core[i] for i in picked]
        )

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """The window that fits the budget (the backing history read each time; with a
        ``ledger``, the budget it allows the payer when the history last changed: reads of an
        unchanged history for the same payer give the same window, as ``RunnableWithMessageHistory``
        relies on, which reads it again after the run to tell the new messages from the old by
        its length; another payer's read asks the ledger again).

        Raises:
            ContextOverflowError: The system messages and newest turn alone exceed the budget.
            BudgetUnavailableError: The ledger's store is down and the ledger fails closed.
        """
        with self._guard.operation():
            stored = self.history.messages
            room = self._room.tokens(self.budget.prompt_tokens, unchanged=lambda: self._unchanged(stored))
            return self._window(stored, room)

    async def aget_messages(self) -> list[BaseMessage]:
        """Async twin of :attr:`messages`."""
        async with self._guard.aoperation():
            stored = await self.history.aget_messages()
            room = await self._room.atokens(
                self.budget.prompt_tokens, unchanged=lambda: self._unchanged(stored)
            )
            return self._window(stored, room)

    @property
    def transcript(self) -> list[BaseMessage]:
        """Every message in the backing history."""
        return list(self.history.messages)

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append to the backing history."""
        self.history.add_messages(check_messages(messages))

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Async twin of :meth:`add_messages`."""
        await self.history.aadd_messages(check_messages(messages))

    def clear(self) -> None:
        """Clear the backing history (the ledger is asked again at the next read)."""
        with self._guard.operation():
            self.history.clear()
            self._room.last = None

    async def aclear(self) -> None:
        """Async twin of :meth:`clear`."""
        async with self._guard.aoperation():
            await self.history.aclear()
            self._room.last = None


def _in_step(stored: Sequence[BaseMessage], seen: list[BaseMessage]) -> bool:
    """Whether ``stored`` (the backing history now) is ``seen`` (what was read before), maybe
    with messages added after it: not shorter, and every message seen still there, in place (a
    message removed, replaced or moved in the middle, or a backing history cleared and refilled
    by another worker, is not). The very objects are checked first, a pass at C speed (an
    in-memory history hands back the messages it keeps); a history that hands back copies is
    compared on every field the conversion reads (:func:`~.messages.same_message`)."""
    n = len(seen)
    if len(stored) < n:
        return False
    return all(map(operator.is_, stored, seen)) or all(map(same_message, stored, seen))


class SummaryChatMessageHistory(_CheckedHistory):
    """A chat history whose ``messages`` are the recent turns plus a summary of older ones.

    The core's ``SummaryBuffer`` decides what stays verbatim and what is folded; the
    ``summariser`` chat model writes the summary from the core's ``summary_prompt``. The
    summary comes back as a ``SystemMessage`` after the leading system messages. The
    backing history keeps the full transcript; the summary lives in this object (a new
    object rebuilds it from the transcript on first read, about one summariser call per
    4,000 tokens of what slid out). If the summariser fails, the window degrades to plain
    trimming and retries later (see :attr:`events`); an ``InvalidInputError`` it raises (a
    misconfiguration) is raised instead. A message too long for the window (a pasted log, a
    long reply) is kept: reading raises ``ContextOverflowError`` only while it is the newest,
    and once a newer message follows it slides out and is folded. One object may
    serve one session from several threads, tasks or event loops: its operations run one at a
    time (:mod:`tokenbudget_core.operation_lock`); a summariser that reads this history while
    it summarises sees the window as it stands.

    Given a ``ledger``, it acts on the budget ladder's ``smaller_context`` step as
    :class:`TokenBudgetChatMessageHistory` does: for a payer past the step the summary is kept
    and the recent turns are read within what it leaves of ``context_share`` of the budget
    (``SummaryBuffer.messages(within=)``). Turns left out there are not folded into the summary
    (a read never calls the summariser): a payer back below the step gets them again.

    Args:
        history: The backing history (default: a new in-memory one).
        summariser: The chat model that writes the summary.
        model: Model name or :class:`~tokenbudget_core.counting.TokenCounter` to count with.
        max_tokens: The budget for the history window, summary included.
        reserve_output: Tokens kept free for the reply.
        summary_tokens: Cap on the summary (default: the core's, a fifth of the budget).
        pin_first_user: Keep the first user message verbatim instead of folding it.
        low_water: Fold in batches down to this share of the budget (``None``: every turn).
        tools: Tools bound to the model; their definitions count.
        ledger: Act on the budget ladder's ``smaller_context`` step (see above): the ledger is
            asked when the history changes, after ``clear()``, or for another payer, as
            :class:`TokenBudgetChatMessageHistory` asks it.
        feature: The feature whose budget the ledger reads (with ``ledger`` only).
        user: The user whose budget the ledger reads (with ``ledger`` only).

    Raises:
        InvalidInputError: A bad option, named.
        UnknownModelError: The model name is unknown.

    Example:
        >>> from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
        >>> from langchain_core.messages import AIMessage, HumanMessage
        >>> writer = GenericFakeChatModel(messages=iter(["The user likes tea."] * 10))
        >>> history = SummaryChatMessageHistory(summariser=writer, model="gpt-4o", max_tokens=300)
        >>> history.add_messages([HumanMessage("tea " * 40), AIMessage("noted " * 40)] * 3)
        >>> history.summary, history.messages[0].content.endswith("The user likes tea.")
        ('The user likes tea.', True)
    """

    def __init__(
        self,
        history: BaseChatMessageHistory | None = None,
        *,
        summariser: BaseChatModel,
        model: str | TokenCounter,
        max_tokens: int,
        reserve_output: int = 0,
        summary_tokens: int | None = None,
        pin_first_user: bool = True,
        low_water: float | None = 0.7,
        tools: Sequence[Any] | None = None,
        ledger: Ledger | None = None,
        feature: str | None = None,
        user: str | None = None,
    ) -> None:
        super().__init__()
        self._room = _LedgerRoom(ledger, feature, user)
        self.ledger, self.feature, self.user = ledger, feature, user
        self._summariser = ChatSummariser(
            summariser, config={"metadata": {"lc_source": "tokenbudget_summary"}}
        )
        budget = Budget.make(
            model, max_tokens, reserve_output=reserve_output, pin_first_user=pin_first_user, tools=tools
        )
        self._options: dict[str, Any] = {
            "max_tokens": max_tokens,
            "reserve_output": reserve_output,
            "summary_tokens": summary_tokens,
            "first_user": "pin" if pin_first_user else "summarise",
            "low_water": low_water,
            "tools": core_tools(tools),
            # The backing history already holds every message: the buffer takes each one, even
            # one too long for the window, and refuses only to read while it is the newest. A
            # newer turn pushes it out and it is folded; refusing it instead would re-feed it on
            # every later read and fail them all, the session stuck for good.
            "hold_overflow": True,
        }
        self._counter = budget.counter
        self.history = _backing(history)
        self._guard = OperationLock()
        self._reset()

    def _reset(self) -> None:
        self._buffer: SummaryBuffer[Message] = SummaryBuffer(self._summariser, self._counter, **self._options)
        self._summariser.max_tokens = self._buffer.summary_tokens
        self._host: list[BaseMessage] = []
        self._core: list[Message] = []
        self._index: dict[int, int] = {}  # id(self._core[i]) -> i, for host_window
        self._changed = True  # since the last read (the ledger's room is asked again)

    def _pending(self, stored: Sequence[BaseMessage]) -> list[tuple[BaseMessage, Message]]:
        """Messages in the backing history the buffer has not seen (all of them if the history
        was changed under it: shorter, or another first or last-seen message, as when a shared
        backing history is cleared and refilled by another worker)."""
        if not _in_step(stored, self._host):
            self._reset()
        start = len(self._host)
        return [
            (m, to_countable_message(m, where=f"messages[{start + k}]")) for k, m in enumerate(stored[start:])
        ]

    def _seen(self, host: BaseMessage, core: Message) -> None:
        self._index[id(core)] = len(self._core)
        self._host.append(host)
        self._core.append(core)

    def _feed(self, pending: list[tuple[BaseMessage, Message]]) -> Iterator[Message]:
        """The core messages of ``pending``, each marked seen once the buffer took it (a message
        the buffer refuses, a malformed one, is not, and is read again next time; one too long
        for the window is taken, as ``hold_overflow`` does)."""
        for host, core in pending:
            yield core
            self._seen(host, core)

    def _sync(self) -> bool:
        """Take in what the backing history gained; whether it changed since the last read."""
        # One extend, not an append per message: what slid out is folded once, in chunks of
        # ``chunk_tokens`` (a rebuilt object pays a few calls, not one per old turn).
        before = self._buffer
        pending = self._pending(self.history.messages)  # first: it may reset (a new buffer)
        self._buffer.summariser = self._summariser
        self._buffer.extend(self._feed(pending))
        return bool(pending) or self._buffer is not before

    async def _async_sync(self) -> bool:
        before = self._buffer
        pending = self._pending(await self.history.aget_messages())
        self._buffer.summariser = self._summariser.acall
        await self._buffer.aextend(self._feed(pending))
        return bool(pending) or self._buffer is not before

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """System messages, the summary, pinned messages, then the recent turns.

        Raises:
            ContextOverflowError: The newest message cannot fit beside the system (and pinned)
                messages. Only while it is the newest: the next message added pushes it out of
                the window and it is folded into the summary.
        """
        with self._guard.operation() as reentered:
            changed = self._read_changes(not reentered and self._sync())
            room = self._room.tokens(self._buffer.budget, unchanged=lambda: not changed)
            return host_window(self._buffer.messages(room), self._core, self._host, index=self._index)

    async def aget_messages(self) -> list[BaseMessage]:
        """Async twin of :attr:`messages` (awaits the summariser)."""
        async with self._guard.aoperation() as reentered:
            changed = self._read_changes(not reentered and await self._async_sync())
            room = await self._room.atokens(self._buffer.budget, unchanged=lambda: not changed)
            return host_window(self._buffer.messages(room), self._core, self._host, index=self._index)

    def _read_changes(self, synced: bool) -> bool:
        """Whether the history changed since the last read (a read's own sync took in new
        messages, or ``add_messages`` did, or it was rebuilt); the next read starts afresh."""
        changed, self._changed = synced or self._changed, False
        return changed

    @property
    def summary(self) -> str | None:
        """The running summary (``None`` until something was folded)."""
        return self._buffer.summary

    @property
    def events(self) -> list[SummaryEvent]:
        """What the buffer did (summarised, failed, capped), oldest first."""
        return list(self._buffer.events)

    @property
    def transcript(self) -> list[BaseMessage]:
        """Every message in the backing history."""
        return list(self.history.messages)

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append to the backing history, then fold what slid out (calls the summariser)."""
        checked = check_messages(messages)
        with self._guard.operation() as reentered:
            self.history.add_messages(checked)
            self._changed = True
            if not reentered:
                self._sync()

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Async twin of :meth:`add_messages`."""
        checked = check_messages(messages)
        async with self._guard.aoperation() as reentered:
            await self.history.aadd_messages(checked)
            self._changed = True
            if not reentered:
                await self._async_sync()

    def clear(self) -> None:
        """Clear the backing history and the summary (the ledger is asked again at the next read)."""
        with self._guard.operation():
            self.history.clear()
            self._reset()
            self._room.last = None

    async def aclear(self) -> None:
        """Async twin of :meth:`clear`."""
        async with self._guard.aoperation():
            await self.history.aclear()
            self._reset()
            self._room.last = None
