"""Token-budgeted LlamaIndex memories: the full transcript in a chat store, the window in the prompt.

Both classes subclass LlamaIndex's ``BaseMemory`` and persist every message through a
``BaseChatStore`` (``SimpleChatStore`` by default, ``RedisChatStore``...) under
``chat_store_key``; ``get()`` returns only what the core keeps:

* :class:`TokenBudgetChatMemory`: system messages, the first user message, then the newest
  whole turns that fit (the core's ``ConversationWindow``; a tool call stays with its results);
* :class:`SummaryChatMemory`: the same plus a running summary of what slid out, written by a
  LlamaIndex ``LLM`` (the core's ``SummaryBuffer``; while the LLM fails, the plain window).

Each message is counted once, when it is put (or first loaded): the core object is built from
the store on first use, then appended to; every operation reads the store, so memories sharing
one chat-store key (workers on one Redis store) see what the others put, and a transcript
replaced there is rebuilt. Each loaded message is compared with the store's: by identity first
(an in-process store hands back the objects it was given), else by value (fresh objects from
Redis), else by JSON form (SDK objects in ``additional_kwargs`` come back as dicts: the same
message); so a new conversation that begins and ends like the deleted one is not taken for it.
On a ``SimpleChatStore`` the check is O(1): while the store's list is the one last loaded,
only the last loaded message is compared (a message swapped in the middle of that list with
``delete_message`` plus ``add_message(idx=...)``, or deleted and the last message object added
again, is not noticed: edit the transcript with ``set()``).
So do not edit a message object in place after ``put()`` (a reply filled in by a streaming
loop): it is not recounted, its new tokens would not count (and a serialising store would not
see the edit); put it finished, or ``set()`` the corrected transcript, which recounts it.
One memory's operations run one at a time, sync and async alike (sync calls from threads,
async calls on one event loop or on several, each in its thread; an async call waits without
blocking its loop), so a ``get()`` beside a ``put()`` never shows a message twice nor rebuilds,
nor drops one. A call made from inside one (a
summariser LLM whose ``chat`` / ``achat`` reads the memory, in the same thread, or task, or a
task that task starts and awaits) is let in, as sync and async alike (a sync call inside an
async operation too: a summariser whose ``achat`` calls its sync ``chat``, or runs it in a thread
with ``asyncio.to_thread``, which carries its context; a task started there and not awaited is
let in too while the operation lasts, and runs beside it). A thread started without the context
(``loop.run_in_executor``) is another caller: it waits for the operation, so an operation must not
await one that calls the memory. A re-entering call does not read the
store: it sees the window as the operation has it at that moment, made of the messages loaded
before the operation began (during a ``put()``, with the message being put already in and the
messages that slid out gone, the summary not yet updated with them; during a first load or a
rebuild, the part built so far); messages another worker added to the store meanwhile are not
in it: the next operation takes them in, in the store's order.
``to_dict()`` / ``to_json()`` hold the options and the store's serialised form; ``from_dict`` /
``from_json`` rebuild a ``SimpleChatStore`` from it, but a store with a connection
(``RedisChatStore``) or a summariser ``llm`` is passed again: ``from_dict(data,
chat_store=RedisChatStore(...), llm=...)`` (else an ``InvalidInputError`` names it).
A :class:`SummaryChatMemory`'s running summary is saved with it: in ``to_dict()``
(``summary_state``) and beside the transcript in the chat store, under the key
``f"{chat_store_key}::tokenbudget-summary"`` (one message: the summary, how many transcript
messages it covers and a digest of them and of the memory's options; written when the summary
changes, deleted by ``reset()``; ``chat_store.get_keys()`` lists it). A memory rebuilt from the
store (a restart, another worker, ``from_dict``, ``model_copy``, pickling) resumes from it, as
does ``set()`` of the loaded transcript or of it plus new messages (a chat engine's
``chat(..., chat_history=...)``): only what slides out beyond it is summarised. A transcript that
no longer begins with the messages it covers (edited or replaced by someone else), or a memory of
other options (budget, model, tools...), summarises anew what slid out of the rebuilt window: in
one summariser call per ``chunk_tokens`` (4,000 tokens) of it, not one per turn.
Hosts that send messages of their own before the memory's have their tokens reserved: a chat
engine that measures them with the memory's ``tokenizer_fn`` (LlamaIndex's ``SimpleChatEngine``
and its ``system_prompt`` or ``prefix_messages``, each message counted with its framing) passes
their count to ``get()``; other hosts (an agent's
``system_prompt``) should list them in ``prefix_messages``. An agent's in-progress tool calls
(its scratchpad) are not in
the memory until the run ends: leave room for them in ``reserve_output``.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar, Literal, Self, cast

from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.bridge.pydantic import ConfigDict, Field, SerializeAsAny
from llama_index.core.llms.llm import LLM
from llama_index.core.settings import Settings
from pydantic.json_schema import SkipJsonSchema

from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.ledger import Ledger, check_context_options
from tokenbudget_core.messages import Message, MessageLike
from tokenbudget_core.summary import SummaryBuffer
from tokenbudget_core.window import ConversationWindow

from ._bridge import Core, LLMSummariser, Transcript, async_summaries
from ._memory_base import BudgetMemory

__all__ = ["SummaryChatMemory", "TokenBudgetChatMemory"]


class _LadderMemory(BudgetMemory):
    """A memory that acts on the budget ladder's ``smaller_context`` step when given a ledger:
    ``get()`` reads the core within :meth:`Ledger.context_tokens
    <tokenbudget_core.ledger.Ledger.context_tokens>` of its budget for the payer."""

    ledger: SkipJsonSchema[Ledger | None] = Field(
        default=None,
        exclude=True,
        description="The ledger whose ladder (smaller_context) shrinks the window read for the payer; "
        "not serialised: pass it again to from_dict.",
    )
    feature: str | None = Field(default=None, description="The feature whose budget the ledger reads.")
    user: str | None = Field(default=None, description="The user whose budget the ledger reads.")

    model_config = ConfigDict(arbitrary_types_allowed=True)
    _shared_fields: ClassVar[tuple[str, ...]] = ("ledger",)

    def __init__(self, **data: Any) -> None:
        check_context_options(data.get("ledger"), feature=data.get("feature"), user=data.get("user"))
        super().__init__(**data)

    def __getstate__(self) -> dict[str, Any]:
        """Pickling (a memory without a ledger; LlamaIndex rebuilds it with the constructor).

        Raises:
            InvalidInputError: The memory has a ledger, which holds locks and a store connection:
                rebuilt without it, the memory would silently stop acting on ``smaller_context``.
        """
        if self.ledger is not None:
            raise InvalidInputError(
                "ledger",
                "cannot be pickled with the memory (it holds locks and its store's connection)",
                fix="pickle memory.to_dict() and rebuild it with from_dict(data, ledger=...)",
            )
        state: dict[str, Any] = super().__getstate__()
        return state

    def _within(self, core: Core) -> int | None:
        if self.ledger is None:
            return None
        return self.ledger.context_tokens(core.budget, feature=self.feature, user=self.user)

    async def _awithin(self, core: Core) -> int | None:
        if self.ledger is None:
            return None
        return await self.ledger.acontext_tokens(core.budget, feature=self.feature, user=self.user)


class TokenBudgetChatMemory(_LadderMemory):
    """A LlamaIndex memory whose ``get()`` is the newest part of the conversation that fits.

    The full transcript goes to ``chat_store``; the window keeps system messages, the first
    user message (``first_user="pin"``) and the newest whole turns (a tool call with all its
    results) within ``max_tokens - reserve_output``, counted with the model's own tokenizer.

    Args:
        chat_store: Where the transcript is kept (default: a new ``SimpleChatStore``).
        chat_store_key: The conversation's key in the store.
        model: Model name for counting and the default budget (e.g. ``gpt-4o``).
        max_tokens: Input budget, at most the model's context window (a larger one is refused,
            naming ``max_tokens``); default: the window.
        reserve_output: Tokens kept free for the reply (and an agent's in-progress tool calls).
        tools: Tools sent with each request (LlamaIndex tools or OpenAI-style dicts).
        prefix_messages: Messages the host sends before the memory's; counted, not returned.
        first_user: ``"pin"`` keeps the first user message; ``"slide"`` lets it go.
        low_water: ``None`` slides every turn; a fraction such as ``0.7`` trims in batches
            down to that share of the budget (a stable prefix for provider prompt caches).
        ledger: Act on the budget ladder's ``smaller_context`` step: ``get()`` / ``aget()`` read
            the window within :meth:`Ledger.context_tokens
            <tokenbudget_core.ledger.Ledger.context_tokens>` of its budget for the payer (all
            of it below that step, ``ladder.context_share`` of it from there up; an enclosing
            :func:`~tokenbudget_core.attribute` block names the payer over ``feature`` /
            ``user``), the core's rules kept (system and pinned messages, whole tool-call units)
            and what ``get()`` reserves for the input and prefix messages taken from that
            smaller budget; when what must be kept does not fit it, the whole budget. The window
            itself does not move: a payer back below the step gets it whole again. Not
            serialised: pass it again, ``from_dict(data, ledger=...)`` (pickling a memory with a
            ledger raises ``InvalidInputError``: the ledger holds locks). Without a ledger the
            budget is fixed.
        feature: The feature whose budget the ledger reads (with ``ledger`` only).
        user: The user whose budget the ledger reads (with ``ledger`` only).

    Raises:
        InvalidInputError: A bad option, named (``reserve_output``, ``low_water``...; ``ledger``
            that is not a :class:`~tokenbudget_core.ledger.Ledger`; ``feature`` / ``user`` that
            are not non-empty strings or given without a ledger).
        UnknownModelError: The model name is unknown.

    Example:
        >>> from llama_index.core.llms import ChatMessage
        >>> memory = TokenBudgetChatMemory(model="gpt-4o", max_tokens=120)
        >>> memory.put(ChatMessage(role="system", content="Be brief."))
        >>> for i in range(20):
        ...     memory.put(ChatMessage(role="user" if i % 2 == 0 else "assistant", content="word " * 20))
        >>> len(memory.get()) < len(memory.get_all()) == 21 and memory.get()[0].role == "system"
        True
    """

    first_user: Literal["pin", "slide"] = Field(
        default="pin", description="'pin' keeps the first user message; 'slide' lets it go."
    )
    low_water: float | None = Field(
        default=None, description="None slides every turn; a fraction such as 0.7 trims in batches."
    )

    @classmethod
    def class_name(cls) -> str:
        """Name used by LlamaIndex serialisation."""
        return "TokenBudgetChatMemory"

    @classmethod
    def from_defaults(
        cls, chat_history: list[ChatMessage] | None = None, llm: LLM | None = None, **kwargs: Any
    ) -> Self:
        """Like the constructor; ``llm`` (the chat model) names the model unless ``model`` is given.

        Without either, ``Settings.llm`` names it when one was set; a host that builds the memory
        itself (``SimpleChatEngine.from_defaults(llm=..., memory_cls=TokenBudgetChatMemory)``
        passes ``token_limit`` and no LLM) gets an ``InvalidInputError`` naming ``model``
        otherwise, rather than a window counted with another model's tokenizer: pass
        ``memory=TokenBudgetChatMemory(model=..., ...)`` instead (see :meth:`BudgetMemory.from_defaults`).

        Raises:
            InvalidInputError: A bad option or message, named; ``model`` as above;
                ``token_limit`` (``max_tokens``) above the model's context window.
            UnknownModelError: The model name is unknown.
        """
        if llm is not None:
            if not isinstance(llm, LLM):
                raise InvalidInputError(
                    "llm",
                    f"must be a LlamaIndex LLM, got {type(llm).__name__}",
                    fix="pass the chat engine's LLM, or model='gpt-4o' instead",
                )
            kwargs.setdefault("model", llm.metadata.model_name)
        return super().from_defaults(chat_history, **kwargs)

    def _new_core(self) -> Core:
        window: ConversationWindow[Message] = ConversationWindow(
            self._counter,
            max_tokens=self.max_tokens,
            reserve_output=self.reserve_output,
            first_user=self.first_user,
            low_water=self.low_water,
            tools=self.tools or None,
            hold_overflow=True,  # the store takes every message: a put is never refused for its size
        )
        return window

    def _pins_first_user(self) -> bool:
        return self.first_user == "pin"

    def _read(self, core: Core, within: int) -> Sequence[MessageLike]:
        return cast(ConversationWindow[Message], core).messages(within)


class SummaryChatMemory(_LadderMemory):
    """Like :class:`TokenBudgetChatMemory`, plus a running summary of what slid out.

    The summary is written by ``llm`` (``chat``; ``achat`` in the async twins) from the core's
    summary prompt, and shown as a system message after the system prompt. If the LLM fails,
    ``get()`` is the plain window and :attr:`last_error` says why; the messages are folded on
    a later turn. The transcript in the store is never touched by summarising; the summary is
    saved beside it (key ``f"{chat_store_key}::tokenbudget-summary"``) and in ``to_dict()``, so
    that a memory rebuilt over the same transcript (a restart, another worker, ``from_dict``,
    ``set()`` of the same history plus new messages) does not summarise it again.

    Given a ``ledger``, it acts on the budget ladder's ``smaller_context`` step as
    :class:`TokenBudgetChatMemory` does: the summary is kept and the recent turns are read within
    what it leaves of the smaller budget (``SummaryBuffer.messages(within=)``). Turns left out
    there are not folded into the summary (a read never calls the LLM): a payer back below the
    step gets them again.

    Args:
        llm: The LlamaIndex LLM that writes the summary.
        summary_tokens: Cap on the summary's tokens; default: a fifth of the budget.
        first_user: ``"pin"`` keeps the first user message verbatim; ``"summarise"`` folds it.
        low_water: Fold in batches down to this share of the recent-turns budget (``None``:
            every turn).
        **kwargs: ``chat_store``, ``chat_store_key``, ``model``, ``max_tokens``,
            ``reserve_output``, ``tools``, ``prefix_messages``, ``ledger``, ``feature``, ``user``
            as in :class:`TokenBudgetChatMemory`.

    Raises:
        InvalidInputError: A bad option, named (``llm``, ``summary_tokens``...).
        UnknownModelError: The model name is unknown.

    Example:
        >>> from llama_index.core.llms import ChatMessage, MockLLM
        >>> memory = SummaryChatMemory(llm=MockLLM(max_tokens=5), model="gpt-4o", max_tokens=300)
        >>> for i in range(30):
        ...     memory.put(ChatMessage(role="user" if i % 2 == 0 else "assistant", content="word " * 20))
        >>> memory.summary is not None and len(memory.get_all()) == 30
        True
    """

    _passed_fields: ClassVar[tuple[str, ...]] = ("llm",)
    llm: SerializeAsAny[LLM] = Field(description="The LlamaIndex LLM that writes the running summary.")
    summary_tokens: int | None = Field(
        default=None,
        strict=True,
        description="Cap on the summary's own tokens; default: a fifth of the budget.",
    )
    first_user: Literal["pin", "summarise"] = Field(
        default="pin", description="'pin' keeps the first user message verbatim; 'summarise' folds it."
    )
    low_water: float | None = Field(
        default=0.7, description="Fold in batches down to this share of the recent-turns budget."
    )

    @classmethod
    def class_name(cls) -> str:
        """Name used by LlamaIndex serialisation."""
        return "SummaryChatMemory"

    @classmethod
    def from_defaults(cls, chat_history: list[ChatMessage] | None = None, **kwargs: Any) -> Self:
        """Like :meth:`BudgetMemory.from_defaults`; without ``llm``, the summary is written by the
        LLM set in ``Settings`` (``Settings.llm = ...``; its lazy default is not resolved), as a
        chat engine's ``memory_cls=SummaryChatMemory`` builds the memory with no LLM.

        Raises:
            InvalidInputError: A bad option or message, named (``model`` as in
                :meth:`BudgetMemory.from_defaults`; ``llm`` when none is given and
                ``Settings.llm`` was not set).
        """
        if kwargs.get("llm") is None:
            settings_llm = getattr(Settings, "_llm", None)
            if isinstance(settings_llm, LLM):
                kwargs["llm"] = settings_llm
        return super().from_defaults(chat_history, **kwargs)

    @classmethod
    def from_dict(cls, data: dict[str, Any], **kwargs: Any) -> Self:
        """Like :meth:`BudgetMemory.from_dict`; without ``llm=``, the LLM set in ``Settings``
        (``Settings.llm = ...``) writes the summary from now on, as in :meth:`from_defaults`, so
        that LlamaIndex can restore the memory by itself (a workflow's ``Context.from_dict``
        passes no arguments).

        Raises:
            InvalidInputError: As :meth:`BudgetMemory.from_dict`; ``llm`` when it is not passed
                and ``Settings.llm`` was not set.
        """
        if kwargs.get("llm") is None and not isinstance(
            data.get("llm") if isinstance(data, dict) else None, LLM
        ):
            settings_llm = getattr(Settings, "_llm", None)
            if isinstance(settings_llm, LLM):
                kwargs["llm"] = settings_llm
        return super().from_dict(data, **kwargs)

    @property
    def summary(self) -> str | None:
        """The running summary (``None`` until something was folded)."""
        return self._buffer().summary

    @property
    def last_error(self) -> str | None:
        """The summariser's last error; ``None`` after a success."""
        return self._buffer().last_error

    def _buffer(self) -> SummaryBuffer[Message]:
        with self._state.operation() as reentered:
            return cast(SummaryBuffer[Message], (self._current() if reentered else self._loaded()).core)

    def _new_core(self) -> Core:
        summariser = LLMSummariser(self.llm)
        buffer: SummaryBuffer[Message] = SummaryBuffer(
            summariser,
            self._counter,
            max_tokens=self.max_tokens,
            reserve_output=self.reserve_output,
            summary_tokens=self.summary_tokens,
            first_user=self.first_user,
            tools=self.tools or None,
            low_water=self.low_water,
            hold_overflow=True,  # the store takes every message: a put is never refused for its size
        )
        summariser.max_tokens = buffer.summary_tokens
        return buffer

    def _make_room(self, transcript: Transcript, input: str | None, reserved: int) -> None:
        """Fold what the rest of the request pushes out of the recent turns, so that ``get()``
        never drops a turn the summary does not hold (see :meth:`BudgetMemory._make_room`)."""
        cast(SummaryBuffer[Message], transcript.core).reserve(self._beside(input, reserved))

    async def _amake_room(self, transcript: Transcript, input: str | None, reserved: int) -> None:
        with self._async_scope():
            buffer = cast(SummaryBuffer[Message], transcript.core)
            await buffer.areserve(self._beside(input, reserved))

    def _pins_first_user(self) -> bool:
        return self.first_user == "pin"

    def _read(self, core: Core, within: int) -> Sequence[MessageLike]:
        return cast(SummaryBuffer[Message], core).messages(within)

    def _async_scope(self) -> AbstractContextManager[None]:
        return async_summaries()

    # -- the running summary across rebuilds --------------------------------------------------------

    _keeps_summary: ClassVar[bool] = True

    def _core_point(self, core: Core) -> tuple[str, int] | None:
        buffer = cast(SummaryBuffer[Message], core)
        return None if buffer.summary is None else (buffer.summary, buffer.folded)

    def _resume_core(self, core: Core, point: tuple[str, int]) -> None:
        cast(SummaryBuffer[Message], core).resume(*point)

    def _replay(self, transcript: Transcript, messages: Sequence[ChatMessage]) -> None:
        """Append a whole transcript, then fold what slid out of it at once (a few calls of up to
        ``chunk_tokens`` each, not one per turn); from the resumed summary's end, if any."""
        buffer = cast(SummaryBuffer[Message], transcript.core)
        batch = _Batch(buffer)
        transcript.core = batch  # Transcript translates and tracks; the buffer gets them in one go
        try:
            for i, message in enumerate(messages):
                transcript.append(message, where=f"messages[{i}]")
        finally:
            transcript.core = buffer
        buffer.extend(batch.items)

    async def _areplay(self, transcript: Transcript, messages: Sequence[ChatMessage]) -> None:
        """Async twin of :meth:`_replay` (called inside :func:`async_summaries`)."""
        buffer = cast(SummaryBuffer[Message], transcript.core)
        batch = _Batch(buffer)
        transcript.core = batch
        try:
            for i, message in enumerate(messages):
                transcript.append(message, where=f"messages[{i}]")
        finally:
            transcript.core = buffer
        await buffer.aextend(batch.items)


class _Batch:
    """A stand-in core that collects the translated messages a :class:`Transcript` appends, for
    one ``SummaryBuffer.extend``."""

    def __init__(self, core: Core) -> None:
        self.budget = core.budget
        self.counter = core.counter
        self.items: list[Message] = []

    def append(self, message: Message) -> None:
        self.items.append(message)

    async def aappend(self, message: Message) -> None:
        self.items.append(message)

    def messages(self) -> Sequence[MessageLike]:
        return []
