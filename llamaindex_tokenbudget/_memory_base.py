"""The plumbing both LlamaIndex memories share: a chat store, a core object, translation.

:class:`BudgetMemory` keeps the full transcript in a LlamaIndex ``BaseChatStore`` and a core
``ConversationWindow`` or ``SummaryBuffer`` (chosen by the subclass) built from it on first
use, then kept in step with it (what another memory added is appended, counted once; a
transcript replaced there is rebuilt); it translates messages both ways and holds no budget
rules of its own. One memory's operations run one at a time (a lock for the sync methods, one
per event loop for the async ones), so a get() beside a put() never sees a message twice nor
rebuilds; a sync call is not serialised with an async call of the same memory in flight. Both
locks are re-entrant: the thread (the task, and the tasks it starts meanwhile) holding one is
let in again, so a summariser whose call reads the memory (a hook logging the window) does not
wait for itself. A call let in so uses the transcript as it stands (:meth:`BudgetMemory._current`)
and does not read the store: catching up there, in the middle of an operation (a put whose
message is not written yet), would take in another worker's messages out of the store's order.
A core with a running summary (``SummaryChatMemory``) has it saved beside the transcript in the
store and in ``to_dict()``; a rebuild resumes from it (``SummaryBuffer.resume``) when the
transcript still begins with the messages it covers (see the section "a saved running summary").
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    nullcontext,
)
from types import FrameType
from typing import Any, ClassVar, Self, TypeAlias, cast

from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.bridge.pydantic import (
    ConfigDict,
    Field,
    PrivateAttr,
    SerializeAsAny,
    ValidationError,
    field_serializer,
    field_validator,
)
from llama_index.core.memory.types import DEFAULT_CHAT_STORE_KEY, BaseMemory
from llama_index.core.settings import Settings
from llama_index.core.storage.chat_store import BaseChatStore, SimpleChatStore
from llama_index.core.storage.chat_store.loading import RECOGNIZED_CHAT_STORES, load_chat_store
from llama_index.core.tools import BaseTool

from tokenbudget_core.counting import TokenCounter, resolve_counter
from tokenbudget_core.errors import ContextOverflowError, InvalidInputError
from tokenbudget_core.fitting import fit_messages, fit_smaller_or_whole
from tokenbudget_core.messages import Message, MessageLike, to_message
from tokenbudget_core.operation_lock import OperationLock
from tokenbudget_core.registry import default_registry

from ._bridge import Core, Transcript, host_error
from .messages import check_messages, to_countable_message

__all__ = ["BudgetMemory"]


class BudgetMemory(BaseMemory):
    """The chat-store and translation plumbing shared by both memories (no rules of its own)."""

    model_config = ConfigDict(extra="forbid")

    chat_store: SerializeAsAny[BaseChatStore] = Field(
        default_factory=SimpleChatStore,
        description="Where the full transcript is kept (SimpleChatStore, RedisChatStore...).",
    )
    chat_store_key: str = Field(
        default=DEFAULT_CHAT_STORE_KEY, description="Key of this conversation in the chat store."
    )
    model: str = Field(
        default="gpt-4o", description="Model whose tokenizer and limits define the budget (registry name)."
    )
    # strict: True or "100" is refused (named), as the core refuses it, rather than coerced to 1 or 100
    max_tokens: int | None = Field(
        default=None, strict=True, description="Input budget; default: the model's window."
    )
    reserve_output: int | None = Field(
        default=None,
        strict=True,
        description="Tokens kept free for the reply (and an agent's scratchpad); default: the model's "
        "max output when max_tokens is not given, else 0.",
    )
    tools: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Tools sent with each request (LlamaIndex tools or OpenAI-style dicts); they count.",
    )
    prefix_messages: list[ChatMessage] = Field(
        default_factory=list,
        description="Messages the host sends before the memory's (a chat engine's prefix_messages, an "
        "agent's system_prompt): their tokens are reserved; get() does not return them.",
    )

    _passed_fields: ClassVar[tuple[str, ...]] = ()
    """Fields that ``from_dict`` does not rebuild from their serialised form (an LLM)."""
    _shared_fields: ClassVar[tuple[str, ...]] = ()
    """Fields a deep :meth:`model_copy` shares rather than copies (a ledger: one set of budgets)."""
    _counter: TokenCounter = PrivateAttr()
    # What the memory loaded from the store, and its locks (one plain object: a pydantic private
    # attribute costs microseconds per read, which would be most of an operation).
    _state: _Loaded = PrivateAttr(default_factory=lambda: _Loaded(False))

    def __init__(self, **data: Any) -> None:
        if data.get("class_name") == self.class_name():  # model_dump()'s (to_dict()'s) own entry
            del data["class_name"]
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise host_error(e) from e
        self._counter = resolve_counter(self.model)
        self._state = _Loaded(_keeps_its_lists(self.chat_store))
        self._new_core()  # the core validates the budget options, naming the field
        self._prefix()

    def __setattr__(self, name: str, value: Any) -> None:
        if name in type(self).model_fields:  # the core was built from the options: a change would be ignored
            raise InvalidInputError(
                name,
                "cannot be changed on an existing memory",
                value=value,
                fix="make a new memory on the same chat_store and chat_store_key (it rebuilds itself)",
            )
        super().__setattr__(name, value)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A new memory with this one's options, ``update`` applied, built as the constructor
        builds one (options checked, counted anew): on the same chat store and key unless
        ``update`` names others, or, with ``deep``, on a copy of the store. (A plain copy would
        share this memory's loaded window, built for its own options.)

        Raises:
            InvalidInputError: ``update`` names an option with a bad value (as the constructor).
        """
        data = {name: getattr(self, name) for name in type(self).model_fields}
        data.update(update or {})
        if not deep:
            return type(self)(**data)
        shared = {id(data[name]): data[name] for name in self._shared_fields if data.get(name) is not None}
        return type(self)(**copy.deepcopy(data, shared))

    def __copy__(self) -> Self:
        return self.model_copy()

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Self:
        return self.model_copy(deep=True)

    @field_validator("tools", mode="before")
    @classmethod
    def _tool_definitions(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            # skip_length_check: a description over OpenAI's 1,024 characters is a valid LlamaIndex
            # tool that agents send (other providers take it): counted as sent, never refused here
            # (as RoutedLLM counts it)
            return [
                t.metadata.to_openai_tool(skip_length_check=True) if isinstance(t, BaseTool) else t
                for t in value
            ]
        return value

    @field_validator("chat_store", mode="before")
    @classmethod
    def _store_from_its_form(cls, value: Any) -> Any:
        """A chat store in its serialised form (``model_dump()``'s) is rebuilt as ``from_dict``
        rebuilds it (a ``SimpleChatStore``), else named (pydantic would try to build the
        abstract ``BaseChatStore``: a bare ``TypeError``)."""
        return _rebuilt_store(value, cls.__name__) if isinstance(value, Mapping) else value

    @classmethod
    def model_validate(cls, obj: Any, **options: Any) -> Self:
        """A memory from its ``model_dump()`` (or ``to_dict()``), as :meth:`from_dict` builds it;
        a memory of this class is returned as it is.

        Raises:
            InvalidInputError: ``obj`` is neither; else as :meth:`from_dict`.
        """
        if isinstance(obj, cls):
            return obj
        if isinstance(obj, Mapping):
            return cls.from_dict(dict(obj))
        raise InvalidInputError(
            "obj",
            f"must be a dict, as model_dump() returns, got {type(obj).__name__}",
            fix=f"{cls.__name__}.from_dict(memory.to_dict(), chat_store=...)",
        )

    @classmethod
    def model_validate_json(cls, json_data: str | bytes | bytearray, **options: Any) -> Self:
        """A memory from its ``model_dump_json()`` (or ``to_json()``), as :meth:`from_dict`.

        Raises:
            InvalidInputError: ``json_data`` is not the JSON of a dict; else as :meth:`from_dict`.
        """
        try:
            data = json.loads(json_data)
        except (TypeError, ValueError) as e:
            raise InvalidInputError(
                "json_data", f"is not JSON: {e}", fix="pass model_dump_json()'s output"
            ) from None
        return cls.model_validate(data)

    @field_serializer("chat_store")
    def _serialize_chat_store(self, chat_store: BaseChatStore) -> dict[str, Any]:
        try:
            data: dict[str, Any] = chat_store.model_dump()
        except ValueError:  # a SimpleChatStore's own serialiser fails in some LlamaIndex releases
            if not isinstance(chat_store, SimpleChatStore):
                raise
            data = {
                "store": {
                    key: [m.model_dump(mode="json") for m in messages]
                    for key, messages in chat_store.store.items()
                }
            }
        data["class_name"] = chat_store.class_name()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], **kwargs: Any) -> Self:
        """A memory from what :meth:`to_dict` returned (``model_dump()`` too); ``kwargs`` are
        fields given anew, in place of those in ``data``.

        A ``SimpleChatStore`` is rebuilt from its serialised form (it holds the messages). A
        store of another kind (``RedisChatStore``...) keeps its connection outside it (its dump
        holds a default URL, not the one it uses), so is not rebuilt: pass it,
        ``from_dict(data, chat_store=RedisChatStore(...))``; so is an ``llm`` (a
        ``SummaryChatMemory``'s summariser): ``llm=...``.

        Raises:
            InvalidInputError: ``data`` is not a dict; ``chat_store`` (or ``llm``) is in its
                serialised form and cannot be rebuilt from it (the fix names the argument to
                pass); a field has a bad value, as the constructor names it.
        """
        if not isinstance(data, Mapping):
            raise InvalidInputError(
                "data",
                f"must be a dict, as to_dict() returns, got {type(data).__name__}",
                fix=f"{cls.__name__}.from_dict(memory.to_dict(), chat_store=...)",
            )
        fields = {**data, **kwargs}
        fields.pop("class_name", None)
        saved = fields.pop(_STATE_FIELD, None)
        seed = None
        if saved is not None:
            seed = _Mark.parse(saved)
            if seed is None:
                raise InvalidInputError(
                    _STATE_FIELD,
                    "is not the running summary to_dict() wrote",
                    fix=f"pass to_dict()'s output unchanged, or drop {_STATE_FIELD!r} (the summary is "
                    "then written again)",
                )
        store = fields.get("chat_store")
        if isinstance(store, Mapping):
            fields["chat_store"] = _rebuilt_store(store, cls.__name__)
        for name in cls._passed_fields:
            if isinstance(fields.get(name), Mapping):
                raise InvalidInputError(
                    name,
                    "is in its serialised form, from which it is not rebuilt (its client and "
                    "credentials are not in it)",
                    fix=f"pass it: {cls.__name__}.from_dict(data, {name}=OpenAI(...)) (from_json alike)",
                )
        memory = cls(**fields)
        if seed is not None and memory._keeps_summary:
            memory._state.seed = seed
        return memory

    def to_dict(self, **kwargs: Any) -> dict[str, Any]:
        """The options and the store's serialised form (see :meth:`from_dict`); for a memory with
        a running summary, also that summary as ``summary_state`` (the summary, how many
        transcript messages it covers, a digest of the transcript then): ``from_dict`` resumes
        from it when the store's transcript still begins with those messages, instead of
        summarising it again."""
        data: dict[str, Any] = super().to_dict(**kwargs)
        if self._keeps_summary:
            with self._state.operation():
                mark = self._current_mark() or self._state.seed
            if mark is not None:
                data[_STATE_FIELD] = mark.as_dict()
        return data

    @classmethod
    def from_json(cls, data_str: str, **kwargs: Any) -> Self:
        """A memory from what :meth:`to_json` returned, as :meth:`from_dict` (``kwargs`` too).

        Raises:
            InvalidInputError: ``data_str`` is not the JSON of an object; as :meth:`from_dict`.
        """
        if not isinstance(data_str, str | bytes):
            raise InvalidInputError(
                "data_str", f"must be the JSON text to_json() returns, got {type(data_str).__name__}"
            )
        try:
            data = json.loads(data_str)
        except ValueError as e:
            raise InvalidInputError(
                "data_str", f"is not JSON: {e}", fix="pass what to_json() returned"
            ) from e
        if not isinstance(data, dict):
            raise InvalidInputError("data_str", f"must be the JSON of an object, got a {type(data).__name__}")
        return cls.from_dict(data, **kwargs)

    @classmethod
    def from_defaults(cls, chat_history: list[ChatMessage] | None = None, **kwargs: Any) -> Self:
        """A memory from keyword options, seeded with ``chat_history`` (written to the store).

        ``token_limit`` (the name LlamaIndex chat engines pass) is read as ``max_tokens``.
        Without ``model`` (nor, for :class:`TokenBudgetChatMemory`, an ``llm`` naming it), the
        model of ``Settings.llm`` is used when one was set (``Settings.llm = ...``; its lazy
        default is not resolved) and the registry knows it; else, when a host builds the memory
        (``memory_cls=`` of a chat engine, which passes ``token_limit`` and no LLM), an
        ``InvalidInputError`` names ``model``: counting with another model's tokenizer would let
        the window overflow the engine's LLM. Called without ``token_limit``, the constructor's
        default model applies. A ``max_tokens`` (``token_limit``) above the model's context
        window is refused, naming the option given.

        Raises:
            InvalidInputError: A bad option or message, named; ``model`` when a host
                (``token_limit=``) names no model and ``Settings.llm`` names none the registry
                knows; ``token_limit`` / ``max_tokens`` above the model's context window.
        """
        limit_field = "max_tokens"
        if "token_limit" in kwargs:
            limit = kwargs.pop("token_limit")
            if "max_tokens" not in kwargs:
                kwargs["max_tokens"], limit_field = limit, "token_limit"
        if "model" not in kwargs:
            settings_model = _settings_model()
            if settings_model is not None and settings_model in default_registry():
                kwargs["model"] = settings_model
            elif limit_field == "token_limit":
                named = (
                    "nor does Settings.llm"
                    if settings_model is None
                    else f"and Settings.llm's model {settings_model!r} is unknown to the registry"
                )
                raise InvalidInputError(
                    "model",
                    f"not given: the host that builds this memory (a chat engine's memory_cls=) passes "
                    f"token_limit but not its LLM, {named}; counting with a default model would let "
                    "the window overflow the engine's LLM",
                    fix=f"pass memory={cls.__name__}(model=..., ...) instead of memory_cls=, or set "
                    "Settings.llm",
                )
        try:
            memory = cls(**kwargs)
        except InvalidInputError as e:
            if e.field != "max_tokens" or limit_field == "max_tokens":
                raise
            raise InvalidInputError(  # named as the host passed it
                limit_field, e.problem, value=e.value, fix=(e.fix or "").replace("max_tokens", limit_field)
            ) from e
        if chat_history:
            memory.set(chat_history)
        return memory

    # -- hooks ----------------------------------------------------------------------------------

    @abstractmethod
    def _new_core(self) -> Core:
        """An empty core object configured from the fields."""

    @abstractmethod
    def _pins_first_user(self) -> bool:
        """Whether the first user message is pinned."""

    def _async_scope(self) -> AbstractContextManager[None]:
        return nullcontext()

    def _make_room(self, transcript: Transcript, input: str | None, reserved: int) -> None:
        """Before ``get()`` fits the request: make room in the core for what the host sends beside
        the memory's messages (``prefix_messages``, ``input``, ``initial_token_count``). A plain
        window needs none (``get()`` leaves out its oldest turns, which the store keeps); a
        summary memory folds them (:meth:`SummaryChatMemory._make_room`)."""

    async def _amake_room(self, transcript: Transcript, input: str | None, reserved: int) -> None:
        """Async twin of :meth:`_make_room`."""

    def _within(self, core: Core) -> int | None:
        """The smaller budget ``get()`` reads the window within now (the ladder's
        ``smaller_context`` step, asked of a ledger), ``None``: the core's own."""
        return None

    async def _awithin(self, core: Core) -> int | None:
        """Async twin of :meth:`_within`."""
        return None

    def _read(self, core: Core, within: int) -> Sequence[MessageLike]:
        """The core's window read within ``within`` tokens (a core that reads at one budget only:
        its window; :meth:`_within` then returns ``None``)."""
        return core.messages()

    def _beside(self, input: str | None, reserved: int) -> int:
        """The tokens the host sends beside the memory's messages: ``prefix_messages``, ``input``
        (one not put already, :func:`_unsent`) and ``initial_token_count``."""
        tokens = reserved + self._listed_tokens()
        if input:
            tokens += int(self._counter.count_message(to_message({"role": "user", "content": input})))
        return tokens

    # -- reading --------------------------------------------------------------------------------

    def get(self, input: str | None = None, **kwargs: Any) -> list[ChatMessage]:
        """The messages to send: what the core keeps of the transcript.

        Args:
            input: Text the host will send with these messages; its tokens are reserved.
            **kwargs: ``initial_token_count`` (passed by chat engines) is reserved too.

        Raises:
            ContextOverflowError: System, pinned and newest messages alone exceed the budget,
                also when ``initial_token_count`` leaves nothing of it.
            InvalidInputError: ``input`` is not a string, or ``initial_token_count`` not a
                non-negative integer.
        """
        reserved = _request_tokens(input, kwargs)
        with self._state.operation() as reentered:
            if reentered:  # (a summariser reading the memory it folds: the window as it stands)
                transcript = self._current()
                within = self._within(transcript.core)
                return self._window(transcript, _unsent(transcript.host, input), reserved, within)
            transcript = self._loaded()
            input = _unsent(transcript.host, input)
            self._make_room(transcript, input, reserved)
            return self._window(transcript, input, reserved, self._within(transcript.core))

    async def aget(self, input: str | None = None, **kwargs: Any) -> list[ChatMessage]:
        """Async twin of :meth:`get`."""
        reserved = _request_tokens(input, kwargs)
        async with self._state.alock() as reentered:
            if reentered:
                transcript = self._current()
                within = await self._awithin(transcript.core)
                return self._window(transcript, _unsent(transcript.host, input), reserved, within)
            transcript = await self._aloaded()
            input = _unsent(transcript.host, input)
            await self._amake_room(transcript, input, reserved)
            return self._window(transcript, input, reserved, await self._awithin(transcript.core))

    def get_all(self) -> list[ChatMessage]:
        """The full transcript, from the chat store."""
        return self.chat_store.get_messages(self.chat_store_key)

    async def aget_all(self) -> list[ChatMessage]:
        """Async twin of :meth:`get_all`."""
        return await self.chat_store.aget_messages(self.chat_store_key)

    # -- writing --------------------------------------------------------------------------------

    def put(self, message: ChatMessage) -> None:
        """Append a message to the window (counted once) and to the chat store.

        A message too big to fit beside the system and pinned ones is still put (the chat store
        holds the whole transcript, a paid reply included): ``get()`` raises
        ``ContextOverflowError`` until later messages push it out of the window.

        Raises:
            InvalidMessageError: The message cannot be translated, or a tool result lacks its call.
        """
        with self._state.operation() as reentered:
            transcript = self._current() if reentered else self._loaded()
            state = self._state
            seen = state.seen
            try:
                transcript.append(message)
                # seen before the store has it, never after: a load meanwhile must not add it again
                seen.append(message)
                self.chat_store.add_message(self.chat_store_key, message)
            except BaseException:  # a cancelled call too: reload from the store on next use
                state.transcript = None  # the store is the source of truth: reload it on next use
                raise
            if not reentered:
                self._remember()

    async def aput(self, message: ChatMessage) -> None:
        """Async twin of :meth:`put`."""
        async with self._state.alock() as reentered:
            transcript = self._current() if reentered else await self._aloaded()
            state = self._state
            seen = state.seen
            try:
                with self._async_scope():
                    await transcript.aappend(message)
                seen.append(message)  # (as in put: before the store's write is awaited)
                await self.chat_store.async_add_message(self.chat_store_key, message)
            except BaseException:  # a cancelled call too: reload from the store on next use
                state.transcript = None
                raise
            if not reentered:
                await self._aremember()

    def put_messages(self, messages: list[ChatMessage]) -> None:
        """Append messages one by one, as :meth:`put`, as one operation: another writer's
        messages (two agent runs finishing on one memory) never land between them, which would
        split a tool call from its result.

        Raises:
            InvalidInputError: ``messages`` is not a list.
            InvalidMessageError: A message is invalid (those before it were put).
        """
        checked = check_messages(messages)
        with self._state.operation() as reentered:
            if not reentered:
                self._loaded()  # in step with the store once; each put then re-enters
            for message in checked:
                self.put(message)
            if not reentered:
                self._remember()

    async def aput_messages(self, messages: list[ChatMessage]) -> None:
        """Async twin of :meth:`put_messages`."""
        checked = check_messages(messages)
        async with self._state.alock() as reentered:
            if not reentered:
                await self._aloaded()
            for message in checked:
                await self.aput(message)
            if not reentered:
                await self._aremember()

    def set(self, messages: list[ChatMessage]) -> None:
        """Replace the transcript; nothing is written when a message is invalid.

        Every message is counted anew. A running summary (:class:`SummaryChatMemory`) is kept
        when ``messages`` begins with the loaded transcript (the same list, or it plus new
        messages: a chat engine's ``chat(..., chat_history=...)``), or with the transcript a
        saved summary covers: only what slides out beyond it is summarised.

        Raises:
            InvalidMessageError: A message is invalid (``messages[i]...``).
        """
        with self._state.operation() as reentered:
            checked = check_messages(messages)
            point = None if reentered else self._kept_point(checked)
            if point is None and self._keeps_summary and not reentered:
                point = self._saved_point(checked, self._stored_mark())
            transcript = self._build(checked, point)
            self.chat_store.set_messages(self.chat_store_key, list(messages))
            self._adopt(transcript, messages)
            if not reentered:
                self._remember()

    async def aset(self, messages: list[ChatMessage]) -> None:
        """Async twin of :meth:`set`."""
        async with self._state.alock() as reentered:
            checked = check_messages(messages)
            point = None if reentered else self._kept_point(checked)
            if point is None and self._keeps_summary and not reentered:
                point = self._saved_point(checked, await self._astored_mark())
            transcript = await self._abuild(checked, point)
            await self.chat_store.aset_messages(self.chat_store_key, list(messages))
            self._adopt(transcript, messages)
            if not reentered:
                await self._aremember()

    def reset(self) -> None:
        """Delete the transcript (and a saved summary) from the store and empty the window."""
        with self._state.operation():
            self.chat_store.delete_messages(self.chat_store_key)
            if self._keeps_summary:
                self.chat_store.delete_messages(self._mark_key)
            self._adopt(Transcript(self._new_core()), [])
            self._state.mark = self._state.seed = None

    async def areset(self) -> None:
        """Async twin of :meth:`reset`."""
        async with self._state.alock():
            await self.chat_store.adelete_messages(self.chat_store_key)
            if self._keeps_summary:
                await self.chat_store.adelete_messages(self._mark_key)
            self._adopt(Transcript(self._new_core()), [])
            self._state.mark = self._state.seed = None

    # -- plumbing -------------------------------------------------------------------------------

    def _current(self) -> Transcript:
        """The transcript as it stands, for a call re-entering an operation in flight (a
        summariser's call reading the memory): the loaded one, else the one being built from
        the store (a rebuild in progress), else an empty one. The store is not read: messages
        another worker added since are taken in by the next operation, in the store's order (the
        operation in flight may not have written its own message yet)."""
        state = self._state
        if state.transcript is not None:
            return state.transcript
        if state.partial is not None:
            return state.partial
        return Transcript(self._new_core())

    def _loaded(self) -> Transcript:
        """The transcript, in step with the chat store (which another memory may write to: two
        workers on one Redis store). Messages added there since are appended, each counted once;
        a transcript replaced there (reset, set, a deleted message) is rebuilt. Called holding
        the state's ``lock``."""
        state = self._state
        stored = self.chat_store.get_messages(self.chat_store_key)
        transcript = state.transcript
        if transcript is None or not state.in_step(stored):
            state.transcript = None
            point = self._saved_point(stored, self._stored_mark()) if self._keeps_summary else None
            transcript = self._build(stored, point)
            self._adopt(transcript, stored, from_store=True)
            self._remember()
            return transcript
        seen = state.seen
        try:
            for i in range(len(seen), len(stored)):
                transcript.append(stored[i], where=f"messages[{i}]")
                seen.append(stored[i])
        except BaseException:  # a cancelled call too: reload from the store on next use
            state.transcript = None
            raise
        self._remember()
        return transcript

    async def _aloaded(self) -> Transcript:
        """Async twin of :meth:`_loaded` (called holding the state's ``alock()``)."""
        state = self._state
        stored = await self.chat_store.aget_messages(self.chat_store_key)
        transcript = state.transcript
        if transcript is None or not state.in_step(stored):
            state.transcript = None
            point = None
            if self._keeps_summary:
                point = self._saved_point(stored, await self._astored_mark())
            transcript = await self._abuild(stored, point)
            self._adopt(transcript, stored, from_store=True)
            await self._aremember()
            return transcript
        seen = state.seen
        try:
            with self._async_scope():
                for i in range(len(seen), len(stored)):
                    await transcript.aappend(stored[i], where=f"messages[{i}]")
                    seen.append(stored[i])
        except BaseException:  # a cancelled call too: reload from the store on next use
            state.transcript = None
            raise
        await self._aremember()
        return transcript

    def _adopt(
        self, transcript: Transcript, messages: Sequence[ChatMessage], *, from_store: bool = False
    ) -> None:
        """Make ``transcript``, built from ``messages`` (as the store holds them), the loaded one;
        ``from_store``: ``messages`` is what the store handed back (maybe the list it keeps)."""
        state = self._state
        state.transcript = transcript
        state.seen = list(messages)
        state.digest = None
        kept = from_store and state.lists_kept
        state.stored = messages if kept and isinstance(messages, list) else None

    def _build(self, messages: Sequence[ChatMessage], point: _Point | None = None) -> Transcript:
        """A transcript of ``messages``, each counted; the core first resumed from ``point`` (a
        summary of their beginning, checked by the caller)."""
        transcript = Transcript(self._new_core())
        if point is not None:
            self._resume_core(transcript.core, point)
        state = self._state
        before, state.partial = state.partial, transcript  # (what a re-entering call sees)
        try:
            self._replay(transcript, check_messages(messages))
        finally:
            state.partial = before
        return transcript

    async def _abuild(self, messages: Sequence[ChatMessage], point: _Point | None = None) -> Transcript:
        transcript = Transcript(self._new_core())
        if point is not None:
            self._resume_core(transcript.core, point)
        state = self._state
        before, state.partial = state.partial, transcript
        try:
            with self._async_scope():
                await self._areplay(transcript, check_messages(messages))
        finally:
            state.partial = before
        return transcript

    def _replay(self, transcript: Transcript, messages: Sequence[ChatMessage]) -> None:
        """Append ``messages`` (a whole transcript) to a new ``transcript``."""
        for i, message in enumerate(messages):
            transcript.append(message, where=f"messages[{i}]")

    async def _areplay(self, transcript: Transcript, messages: Sequence[ChatMessage]) -> None:
        """Async twin of :meth:`_replay`."""
        for i, message in enumerate(messages):
            await transcript.aappend(message, where=f"messages[{i}]")

    # -- a saved running summary (SummaryChatMemory) ----------------------------------------------
    # What a core summarised (its summary and the transcript index it covers, a ``_Point``) is
    # saved beside the transcript in the chat store (one message under ``_mark_key``) whenever it
    # changes, with the number of transcript messages then loaded and a digest of them: a memory
    # rebuilt from the store (a restart, another worker, from_dict, a model_copy) resumes from it
    # when the transcript still begins with those messages, instead of summarising it all again.

    _keeps_summary: ClassVar[bool] = False
    """Whether the core has a running summary to save and resume (hooks below)."""

    def _core_point(self, core: Core) -> _Point | None:
        """What ``core`` summarised so far, ``None`` if nothing."""
        return None

    def _resume_core(self, core: Core, point: _Point) -> None:
        """Make an empty ``core`` continue from ``point``."""

    @property
    def _mark_key(self) -> str:
        return f"{self.chat_store_key}{_MARK_SUFFIX}"

    def _stored_mark(self) -> _Mark | None:
        try:
            saved = self.chat_store.get_messages(self._mark_key)
        except Exception:  # noqa: BLE001 - a saved summary is a cache: without it, summarise again
            return None
        return _Mark.parse(saved[-1].content) if saved else None

    async def _astored_mark(self) -> _Mark | None:
        try:
            saved = await self.chat_store.aget_messages(self._mark_key)
        except Exception:  # noqa: BLE001 - (as _stored_mark)
            return None
        return _Mark.parse(saved[-1].content) if saved else None

    def _kept_point(self, messages: Sequence[ChatMessage]) -> _Point | None:
        """The loaded core's summary, when ``messages`` begin with the loaded transcript."""
        state = self._state
        if not self._keeps_summary or state.transcript is None:
            return None
        point = self._core_point(state.transcript.core)
        return point if point is not None and _extends(messages, state.seen) else None

    def _saved_point(self, messages: Sequence[ChatMessage], stored: _Mark | None) -> _Point | None:
        """The saved summary (in the store, else from ``from_dict``) that ``messages`` begin with;
        the store's is what it holds now (no need to write it again)."""
        state = self._state
        state.mark = (stored.summary, stored.folded) if stored is not None else None
        for mark in (stored, state.seed):
            if mark is not None and mark.covers(messages, self._config()):
                return mark.summary, mark.folded
        return None

    def _current_mark(self) -> _Mark | None:
        """The loaded core's summary as a mark over the loaded transcript (``None``: nothing
        summarised, or a message the digest cannot take)."""
        state = self._state
        if state.transcript is None:
            return None
        point = self._core_point(state.transcript.core)
        if point is None:
            return None
        if state.digest is None:
            state.digest = _Digest()
        covered = len(state.seen)
        digest = state.digest.of(state.seen, covered)
        return None if digest is None else _Mark(point[0], point[1], covered, digest, self._config())

    def _config(self) -> str:
        """A digest of the options that shape the window and the summary (a saved summary is
        resumed only by a memory with the same)."""
        state = self._state
        if state.config is None:
            shaping = {
                name: getattr(self, name)
                for name in type(self).model_fields
                if name not in ("chat_store", "chat_store_key", "prefix_messages", *self._passed_fields)
            }
            text = json.dumps(shaping, sort_keys=True, default=repr)
            state.config = hashlib.sha256(text.encode()).hexdigest()
        return state.config

    def _changed_mark(self) -> tuple[_Point | None, _Mark | None] | None:
        """What to write (the point and its mark; a ``None`` mark: delete), or ``None``: unchanged."""
        state = self._state
        if not self._keeps_summary or state.transcript is None:
            return None
        point = self._core_point(state.transcript.core)
        if point == state.mark:
            return None
        return point, (None if point is None else self._current_mark())

    def _remember(self) -> None:
        """Save the core's summary beside the transcript if it changed (after an operation)."""
        change = self._changed_mark()
        if change is None:
            return
        point, mark = change
        try:
            if mark is not None:
                self.chat_store.set_messages(self._mark_key, [mark.message()])
            elif point is None:
                self.chat_store.delete_messages(self._mark_key)
        except Exception:  # noqa: BLE001 - a cache: a failed write costs a summary on a rebuild only
            return
        self._state.mark = point

    async def _aremember(self) -> None:
        """Async twin of :meth:`_remember`."""
        change = self._changed_mark()
        if change is None:
            return
        point, mark = change
        try:
            if mark is not None:
                await self.chat_store.aset_messages(self._mark_key, [mark.message()])
            elif point is None:
                await self.chat_store.adelete_messages(self._mark_key)
        except Exception:  # noqa: BLE001 - (as _remember)
            return
        self._state.mark = point

    @property
    def tokenizer_fn(self) -> Callable[[str], Sequence[int]]:
        """How LlamaIndex chat engines measure what they send before the memory's messages:
        ``len(memory.tokenizer_fn(text))`` of their prefix messages' text (a ``system_prompt``),
        passed to :meth:`get` as ``initial_token_count`` and reserved there. The engine passes
        its prefix messages' text joined by spaces: when the caller is an engine whose
        ``_prefix_messages`` join to that text (``SimpleChatEngine``'s), those messages are
        counted, each with its framing (and its non-text blocks), as they are sent; else the text
        is counted as one system message, its framing included. What the memory's
        ``prefix_messages`` reserve already is taken off (the same prompt listed there is
        reserved once, not twice; a different one, the larger of the two)."""
        return self._prefix_tokens

    def _prefix_tokens(self, text: str) -> Sequence[int]:
        if not isinstance(text, str):
            return range(0)
        sent = _engine_prefix(text, sys._getframe(1))
        if sent is not None:  # the engine's messages themselves: each one's framing reserved
            engine = sum(
                int(
                    self._counter.count_message(to_countable_message(m, where=f"engine prefix_messages[{i}]"))
                )
                for i, m in enumerate(sent)
            )
        elif not text.strip():
            return range(0)
        else:
            message = to_message({"role": "system", "content": text}, where="prefix text")
            engine = int(self._counter.count_message(message))
        return range(max(engine - self._listed_tokens(), 0))  # what prefix_messages do not reserve already

    def _listed_tokens(self) -> int:
        """The tokens of ``prefix_messages``."""
        return sum(int(self._counter.count_message(m)) for m in self._prefix()) if self.prefix_messages else 0

    def _prefix(self) -> list[Message]:
        return [
            to_countable_message(m, where=f"prefix_messages[{i}]") for i, m in enumerate(self.prefix_messages)
        ]

    def _window(
        self, transcript: Transcript, input: str | None, reserved: int, within: int | None = None
    ) -> list[ChatMessage]:
        """The memory's part of the request, fitted within ``within`` tokens (the ledger's smaller
        budget) when what must be kept fits there beside what ``get()`` reserves, else within the
        core's budget (a smaller context never fails a ``get()`` that fits the whole one)."""
        return fit_smaller_or_whole(
            lambda room: self._fitted(transcript, input, reserved, room), within, transcript.core.budget
        )

    def _fitted(
        self, transcript: Transcript, input: str | None, reserved: int, within: int | None
    ) -> list[ChatMessage]:
        core = transcript.core
        window = core.messages() if within is None else self._read(core, within)
        if not (self.prefix_messages or input or reserved):
            return [transcript.to_host(m) for m in window]
        # The request as the host will send it, fitted by the core; then the memory's part of it.
        budget = core.budget if within is None else within
        if reserved >= budget:  # nothing left: the same error as when a little is left, naming the count
            raise ContextOverflowError(
                limit=budget,
                required=reserved + int(self._counter.count_messages([], self.tools or None)),
                what="tokens already in the request (initial_token_count) plus the request's framing",
                fix="raise max_tokens, or send fewer tokens beside the memory's messages (a shorter "
                "prompt or context)",
            )
        prefix = self._prefix()
        extra = [to_message({"role": "user", "content": input}, where="input")] if input else []
        request = [*prefix, *window, *extra]
        end = len(prefix) + len(window)
        fitted = fit_messages(
            request,
            budget,
            self._counter,
            reserve_output=reserved,
            pinned=[*range(len(prefix)), *range(end, len(request))],
            pin_first_user=self._pins_first_user(),
            tools=self.tools or None,
        )
        return [transcript.to_host(request[i]) for i in fitted.kept if len(prefix) <= i < end]


_ENGINE_FRAMES = 3
"""How many frames up from ``tokenizer_fn``'s caller the engine measuring its prefix is looked for
(``SimpleChatEngine`` calls it from its own ``chat`` / ``achat``... body: the first)."""


def _engine_prefix(text: str, frame: FrameType | None) -> list[ChatMessage] | None:
    """The prefix messages of the chat engine measuring ``text`` with a memory's ``tokenizer_fn``
    from ``frame`` (or a few frames up): its ``_prefix_messages``, when the text is what it
    measures, their contents joined by spaces (``SimpleChatEngine``'s ``" ".join(...)``). The
    joined text loses the message boundaries, so one framing would be reserved for several
    messages: the messages themselves are counted instead. ``None`` when no such engine is
    found (another host, another text): the text is counted as one message."""
    try:
        for _ in range(_ENGINE_FRAMES):
            if frame is None:
                return None
            owner = frame.f_locals.get("self")
            listed = getattr(owner, "_prefix_messages", None) if owner is not None else None
            if (
                isinstance(listed, list)
                and listed
                and all(isinstance(m, ChatMessage) for m in listed)
                and " ".join((m.content or "") for m in listed) == text
            ):
                return list(listed)
            frame = frame.f_back
        return None
    finally:
        del frame  # (no frame kept: it would keep the engine's locals alive)


class _Loaded:
    """A memory's loaded transcript, what it is compared with, and the memory's locks."""

    __slots__ = (
        "config",
        "digest",
        "guard",
        "lists_kept",
        "mark",
        "partial",
        "seed",
        "seen",
        "stored",
        "transcript",
    )

    def __init__(self, lists_kept: bool) -> None:
        self.transcript: Transcript | None = None
        self.partial: Transcript | None = None
        """The transcript being built (from the store, or by ``set``), while it is."""
        # The loaded transcript's messages as the store last gave them back (or as put, until it
        # does): what each operation compares the store with. Apart from ``transcript.host``
        # (the host's own objects, which get() returns) because a store may give a message back
        # in another form (SDK objects in additional_kwargs as dicts after a JSON round trip).
        # A message put is in ``seen`` before the store's write, so that a load meanwhile (on
        # another worker's memory; this one's are locked out) does not add it a second time.
        self.seen: list[ChatMessage] = []
        # ``lists_kept``: the store hands back the list it keeps (SimpleChatStore); ``stored``:
        # that list at the last load.
        self.lists_kept = lists_kept
        self.stored: list[ChatMessage] | None = None
        # One operation at a time, sync or async, whatever the thread or event loop, held from
        # the store's read to its write (see tokenbudget_core.operation_lock).
        self.guard = OperationLock()
        # A running summary saved beside the transcript: what the store is known to hold
        # (``mark``), the one from_dict passed (``seed``), the digest of ``seen`` as far as taken.
        self.mark: _Point | None = None
        self.seed: _Mark | None = None
        self.digest: _Digest | None = None
        self.config: str | None = None

    def operation(self) -> AbstractContextManager[bool]:
        """The memory's lock for one sync operation; entering it tells whether the call re-enters
        an operation in flight (``True``: it uses the transcript as it stands)."""
        return self.guard.operation()

    def alock(self) -> AbstractAsyncContextManager[bool]:
        """The memory's lock for one async operation on the running event loop; entering it
        tells whether the call re-enters an operation in flight."""
        return self.guard.aoperation()

    def in_step(self, stored: list[ChatMessage]) -> bool:
        """Whether the store's transcript is the loaded one, maybe with messages added after it."""
        seen = self.seen
        n = len(seen)
        if self.lists_kept and stored is self.stored:
            # The very list the store keeps, as at the last load. SimpleChatStore only appends to
            # it, inserts or pops at an index (which moves the last loaded message, unless one
            # of each) or drops it (reset, set: a new list): O(1), whatever the length.
            return len(stored) >= n and (n == 0 or stored[n - 1] is seen[n - 1])
        if not _extends(stored, seen):
            return False
        self.stored = stored if self.lists_kept else None
        return True


def _rebuilt_store(dumped: Mapping[str, Any], memory: str) -> BaseChatStore:
    """The chat store ``dumped`` (its serialised form, with its ``class_name``) describes, when it
    is one LlamaIndex rebuilds from that form (a ``SimpleChatStore``: its messages are in it).

    Raises:
        InvalidInputError: Any other store (its connection is not in its form), named with the fix.
    """
    name = dumped.get("class_name")
    fix = f"pass the store: {memory}.from_dict(data, chat_store=RedisChatStore(...)) (from_json alike)"
    if name not in RECOGNIZED_CHAT_STORES:
        raise InvalidInputError(
            "chat_store",
            f"a {name if isinstance(name, str) else 'chat store'} is not rebuilt from its serialised "
            "form: its connection is not in it (a RedisChatStore's holds a default URL, not its own)",
            fix=fix,
        )
    try:
        return load_chat_store(dict(dumped))
    except (TypeError, ValueError) as e:  # (pydantic's ValidationError is a ValueError)
        raise InvalidInputError(
            "chat_store", f"cannot be rebuilt from its serialised form: {e}", fix=fix
        ) from e


def _settings_model() -> str | None:
    """The model name of the LLM set in LlamaIndex's ``Settings``, if one was set: its private
    ``_llm`` is read, since ``Settings.llm`` would resolve (import, and ask for a key of) OpenAI."""
    llm = getattr(Settings, "_llm", None)
    if llm is None:
        return None
    try:
        name = llm.metadata.model_name
    except Exception:  # noqa: BLE001 - an LLM whose metadata fails names no model
        return None
    return name if isinstance(name, str) and name.strip() else None


def _keeps_its_lists(store: BaseChatStore) -> bool:
    """Whether ``store`` hands back the list it keeps and changes it only as SimpleChatStore does
    (append, insert or pop at an index, replace or drop the whole list)."""
    kind = type(store)
    return isinstance(store, SimpleChatStore) and all(
        getattr(kind, name) is getattr(SimpleChatStore, name)
        for name in (
            "get_messages",
            "set_messages",
            "add_message",
            "delete_messages",
            "delete_message",
            "delete_last_message",
            "aget_messages",
            "aset_messages",
            "async_add_message",
            "adelete_messages",
            "adelete_message",
            "adelete_last_message",
        )
    )


def _extends(stored: Sequence[ChatMessage], seen: list[ChatMessage]) -> bool:
    """Whether the store's transcript is the loaded one, maybe with messages added after it.

    Every loaded position is compared: a transcript replaced by another worker (reset, then new
    messages) may well begin and end with the same messages (a system prompt, a short "Done.")
    and must not pass for the old one. (On a store that hands back the list it keeps, this runs
    only when that list is not the one last compared: see ``_Loaded.in_step``.) A message
    is compared by identity first (an in-process store hands back the objects it was given: an
    object edited in place after put is taken as unchanged, its tokens as first counted), else
    by the fields' values (fresh objects from Redis; cheaper than the store's read and parse of
    them, though it grows with the transcript as that read does), else by the JSON form the
    store keeps: a message put here with SDK objects in ``additional_kwargs`` comes back as
    dicts, and is the same message. Such a message is replaced in ``seen`` by the store's copy,
    so that it is dumped once, not on every call.
    """
    n = len(seen)
    if len(stored) < n:
        return False
    for i in range(n):
        got, had = stored[i], seen[i]
        if got is had or got.__dict__ == had.__dict__:  # the fields (cheaper than pydantic's ==)
            continue
        if not _same_json(got, had):
            return False
        seen[i] = got
    return True


def _same_json(a: ChatMessage, b: ChatMessage) -> bool:
    """Whether two messages have the same JSON form (what a store that serialises keeps)."""
    try:
        return bool(a.model_dump(mode="json") == b.model_dump(mode="json"))
    except (TypeError, ValueError):  # (pydantic's serialisation errors are ValueErrors)
        return False  # a message that cannot be serialised is not known to be the same


def _unsent(host: Sequence[ChatMessage], input: str | None) -> str | None:
    """``input``, or ``None`` when it is the newest user message, already put, followed only by
    the run's tool steps (assistant messages carrying calls, their results) if anything.

    LlamaIndex's agents put the user's message, then after each round of tool results pass its
    text to ``aget(input=...)`` again; they send the memory's messages and never the input
    beside them, so reserving it would count it twice (a run whose message is over half the
    budget failing after its first tool call). Chat engines pass ``input`` before they put it,
    and send it: reserved, unless the newest user message is the same text with no plain
    reply after it.
    """
    if not input:
        return input
    for message in reversed(host):
        if message.role == MessageRole.USER:
            return None if message.content == input else input
        if message.role != MessageRole.TOOL and not (
            message.role == MessageRole.ASSISTANT and to_countable_message(message).tool_calls
        ):
            return input
    return input


def _request_tokens(input: object, kwargs: dict[str, Any]) -> int:
    """The tokens a ``get`` reserves beside the window (``initial_token_count``), checked with ``input``.

    Raises:
        InvalidInputError: ``input`` is not a string (or ``None``), or ``initial_token_count`` is
            not a non-negative integer.
    """
    if input is not None and not isinstance(input, str):
        raise InvalidInputError("input", "must be a string (or None)", value=input)
    count = kwargs.get("initial_token_count")
    if count is None:
        return 0
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise InvalidInputError(
            "initial_token_count",
            "must be a non-negative integer (tokens already in the request)",
            value=count,
        )
    return count


_Point: TypeAlias = tuple[str, int]
"""A running summary and the transcript index up to which it covers the messages."""
_MARK_SUFFIX = "::tokenbudget-summary"
_STATE_FIELD = "summary_state"


class _Digest:
    """A SHA-256 digest of the JSON form of a transcript's first messages, extended as it grows."""

    __slots__ = ("count", "failed", "hash")

    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.count = 0
        self.failed = False

    def of(self, messages: Sequence[ChatMessage], n: int) -> str | None:
        """The digest of ``messages[:n]`` (``n`` at least the count already taken), ``None`` if a
        message has no JSON form."""
        if self.failed or n < self.count:
            return None
        try:
            for i in range(self.count, n):
                self.hash.update(_json_line(messages[i]))
        except (TypeError, ValueError):  # (pydantic's serialisation errors are ValueErrors)
            self.failed = True
            return None
        self.count = n
        return self.hash.hexdigest()


def _json_line(message: ChatMessage) -> bytes:
    text = json.dumps(message.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return text.encode() + b"\n"


class _Mark:
    """A saved running summary: its text, the transcript index it covers up to (``folded``), and
    the transcript it was made over (its first ``covered`` messages, by digest)."""

    __slots__ = ("config", "covered", "digest", "folded", "summary")

    def __init__(self, summary: str, folded: int, covered: int, digest: str, config: str) -> None:
        self.summary, self.folded, self.covered, self.digest = summary, folded, covered, digest
        self.config = config

    def covers(self, messages: Sequence[ChatMessage], config: str) -> bool:
        """Whether ``messages`` begin with the transcript this summary was made over, by a memory
        of the same options (``config``: another budget slides, and caps the summary, otherwise)."""
        if self.config != config or len(messages) < self.covered:
            return False
        return _Digest().of(messages, self.covered) == self.digest

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": 1,
            "summary": self.summary,
            "folded": self.folded,
            "covered": self.covered,
            "digest": self.digest,
            "config": self.config,
        }

    def message(self) -> ChatMessage:
        """The message that holds it in the chat store."""
        return ChatMessage(role="system", content=json.dumps(self.as_dict()))

    @classmethod
    def parse(cls, data: object) -> _Mark | None:
        """A mark from :meth:`as_dict`'s form (or its JSON text); ``None`` if it is not one."""
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except ValueError:
                return None
        if not isinstance(data, Mapping) or data.get("version") != 1:
            return None
        summary, folded, covered, digest, config = (
            data.get(k) for k in ("summary", "folded", "covered", "digest", "config")
        )
        if not isinstance(summary, str) or not summary or not isinstance(digest, str):
            return None
        if not isinstance(config, str):
            return None
        if not (_count(folded) and _count(covered)) or folded > covered:  # type: ignore[operator]
            return None
        return cls(summary, cast(int, folded), cast(int, covered), digest, config)


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
