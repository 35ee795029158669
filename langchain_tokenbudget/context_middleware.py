"""Fit what an agent sends to its model into a token budget: :class:`ContextWindowMiddleware`.

For ``langchain.agents.create_agent``. The middleware rewrites the *model request* only
(``wrap_model_call``): ``state["messages"]`` keeps the full transcript, the model sees the
window the core chooses. With ``strategy="summarise"`` the running summary is kept in the
agent state (``tokenbudget_summary``, visible in the result, and the private
``tokenbudget_folded``, ``tokenbudget_folded_id``, ``tokenbudget_next_id`` and
``tokenbudget_anchor_id``, the ids of the last message the summary covers, of the one after it
and of the newest one, so it follows removals, survives a prune of the oldest messages and
notices a reset thread), so a checkpointer persists it per
thread like the messages.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal, Never, NotRequired, cast

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, SystemMessage
from langchain_core.runnables.config import var_child_runnable_config

from tokenbudget_core.counting import TokenCounter
from tokenbudget_core.errors import (
    InvalidInputError,
    option_names,
    refuse_positional,
    refuse_unknown,
)
from tokenbudget_core.fitting import OnOverflow, fit_smaller_or_whole
from tokenbudget_core.ledger import Ledger, check_context_options
from tokenbudget_core.messages import Message
from tokenbudget_core.routing import without_route
from tokenbudget_core.summary import SummaryBuffer

from . import _need_agents
from ._bridge import Budget, ChatSummariser, counted_tools, fit_host, host_window, sent_tools
from .budget_middleware import budget_call_active, run_payer, step_charges
from .messages import to_core_request, to_countable_message

try:
    from langchain.agents.middleware.internal_call_transformer import (
        InternalCallTransformer,
        internal_call_metadata,
    )
    from langchain.agents.middleware.types import (
        AgentMiddleware,
        AgentState,
        ExtendedModelResponse,
        ModelRequest,
        ModelResponse,
        OmitFromSchema,
    )
    from langgraph.constants import TAG_NOSTREAM
    from langgraph.types import Command
except ImportError as e:  # langchain (agents) absent or too old: named, with its pip command
    _need_agents(e)

__all__ = ["ContextWindowMiddleware", "ContextWindowState"]

SUMMARY_KEY = "tokenbudget_summary"
FOLDED_KEY = "tokenbudget_folded"
FOLDED_ID_KEY = "tokenbudget_folded_id"
NEXT_ID_KEY = "tokenbudget_next_id"
ANCHOR_ID_KEY = "tokenbudget_anchor_id"
Strategy = Literal["trim", "summarise"]
ModelResult = ModelResponse[Any] | ExtendedModelResponse[Any]
_REQUIRED: Any = object()
"""``max_tokens`` not given: named by the constructor (a bare ``TypeError`` would come before a misspelt
``max_token=`` could be named)."""


class ContextWindowState(AgentState[Any]):
    """The agent state plus where the running summary lives (``strategy="summarise"``)."""

    tokenbudget_summary: NotRequired[Annotated[str | None, OmitFromSchema(input=True, output=False)]]
    tokenbudget_folded: NotRequired[Annotated[int, OmitFromSchema(input=True, output=True)]]
    tokenbudget_folded_id: NotRequired[Annotated[str | None, OmitFromSchema(input=True, output=True)]]
    tokenbudget_next_id: NotRequired[Annotated[str | None, OmitFromSchema(input=True, output=True)]]
    tokenbudget_anchor_id: NotRequired[Annotated[str | None, OmitFromSchema(input=True, output=True)]]


class ContextWindowMiddleware(AgentMiddleware[ContextWindowState, Any]):
    """Send the model only what fits its budget; keep the whole transcript in the agent state.

    The agent's system prompt, the tool definitions (``request.tools``, and the structured-output
    schema of ``response_format=``: a ``ToolStrategy``'s tools, a ``ProviderStrategy``'s JSON
    schema) and the messages all count against ``max_tokens - reserve_output``. ``"trim"``
    keeps the newest turns that fit (the core's ``fit_messages``: system messages stay, a tool
    call stays with its results, the newest turn is always sent). ``"summarise"`` keeps recent
    turns verbatim and folds older ones into a running summary (the core's ``SummaryBuffer``),
    written by ``summariser`` (default: the agent's own model) and sent inside the system
    message. A message too long for the window (a pasted log, a long answer) raises
    ``ContextOverflowError`` only while it is the newest; once a newer one follows, it slides out
    and is folded (``"trim"`` drops it). A provider's built-in tool
    (``{"type": "web_search_preview"}``) is sent as it is and counted when the counter counts
    those (Claude's), else left out of the count.

    Summary calls are model requests of their own, sent down the same middleware chain: a
    :class:`~langchain_tokenbudget.BudgetMiddleware` after this one reserves, refuses and
    charges them like any call (as the run payer's ``summariser`` overhead, counted in the
    run's caps). A refused or failed summary leaves the messages pending: the model gets the
    sliding window and the summary is retried on a later call.

    Args:
        model: Model name or :class:`~tokenbudget_core.counting.TokenCounter` to count with.
        max_tokens: The model's input budget.
        reserve_output: Tokens kept free for the reply.
        pin_first_user: Keep the first user message (often who the user is and what they want).
        strategy: ``"trim"`` or ``"summarise"``.
        summariser: The chat model that writes the summary (``"summarise"`` only).
        summary_tokens: Cap on the summary (default: the core's, a fifth of the budget).
        low_water: ``"summarise"``: fold in batches down to this share of the budget.
        on_overflow: ``"trim"``: ``"raise"`` when the must-keep messages do not fit, or
            ``"truncate"`` the newest message.
        ledger: Act on the budget ladder's ``smaller_context`` step. Each model call
            is fitted to :meth:`Ledger.context_tokens
            <tokenbudget_core.ledger.Ledger.context_tokens>` of ``max_tokens - reserve_output``
            for the run's payer (all of it below that step, ``ladder.context_share`` of it from
            there up), so a payer running out of budget sends fewer old turns. The payer is
            read as :class:`~langchain_tokenbudget.BudgetMiddleware` reads it
            (``runtime.context``, the run's metadata, ``configurable`` and tags, else
            ``feature`` / ``user`` here; an enclosing :func:`~tokenbudget_core.attribute` block
            wins). When the system prompt, tools and messages that must be kept do not fit the
            smaller budget, the call is fitted to the whole one. ``"summarise"`` keeps the
            summary and reads the recent turns within what it leaves of the smaller budget
            (``SummaryBuffer.messages(within=)``); turns left out there are not folded into the
            summary, so a payer back below the step sends them again.
        feature: Default feature of the payer the ledger reads (with ``ledger`` only).
        user: Default user of the payer the ledger reads (with ``ledger`` only).

    Raises:
        InvalidInputError: A bad, misspelt or positional option, named (checked here, not on the
            first call): ``ledger`` that is not a :class:`~tokenbudget_core.ledger.Ledger`,
            ``feature`` / ``user`` that are not non-empty strings or given without a ledger.
        UnknownModelError: The model name is unknown.

    Example:
        >>> from langchain.agents import create_agent
        >>> from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
        >>> agent = create_agent(
        ...     GenericFakeChatModel(messages=iter(["Hi!"])),
        ...     system_prompt="Be brief.",
        ...     middleware=[ContextWindowMiddleware("gpt-4o", max_tokens=2_000, pin_first_user=True)],
        ... )
        >>> agent.invoke({"messages": [("user", "hello")]})["messages"][-1].content
        'Hi!'
    """

    state_schema = ContextWindowState

    def __init__(
        self,
        model: str | TokenCounter,
        *positional: Never,  # (refused: a type checker flags them, the constructor names them)
        max_tokens: int = _REQUIRED,
        reserve_output: int = 0,
        pin_first_user: bool = False,
        strategy: Strategy = "trim",
        summariser: BaseChatModel | None = None,
        summary_tokens: int | None = None,
        low_water: float | None = 0.7,
        on_overflow: OnOverflow = "raise",
        ledger: Ledger | None = None,
        feature: str | None = None,
        user: str | None = None,
        **unknown: Any,
    ) -> None:
        super().__init__()
        options = option_names(ContextWindowMiddleware.__init__)
        refuse_positional("ContextWindowMiddleware", positional, options[1:], after="model")
        if unknown:
            refuse_unknown("ContextWindowMiddleware", unknown, options)
        if max_tokens is _REQUIRED:
            raise InvalidInputError(
                "max_tokens", "is required", fix="pass the model's input budget: max_tokens=..."
            )
        if strategy not in ("trim", "summarise"):
            raise InvalidInputError(
                "strategy", f"unknown value {strategy!r}", fix="use 'trim' or 'summarise'"
            )
        if strategy == "trim":  # the summary settings would be silently ignored
            for name, value, unset in (
                ("summariser", summariser, None),
                ("summary_tokens", summary_tokens, None),
                ("low_water", low_water, 0.7),
            ):
                if value is not unset and value != unset:
                    raise InvalidInputError(
                        name,
                        "applies to strategy='summarise' only",
                        fix="pass strategy='summarise' or leave it out",
                    )
        if strategy == "summarise" and on_overflow != "raise":
            raise InvalidInputError(
                "on_overflow", "applies to strategy='trim' only", fix="leave on_overflow='raise'"
            )
        self.budget = Budget.make(
            model,
            max_tokens,
            reserve_output=reserve_output,
            pin_first_user=pin_first_user,
            on_overflow=on_overflow,
        )
        check_context_options(ledger, feature=feature, user=user)
        self.ledger, self.feature, self.user = ledger, feature, user
        self.strategy = strategy
        self.summariser = summariser
        if summariser is not None:
            ChatSummariser(summariser)  # fails now if it is not a chat model
        self._options: dict[str, Any] = {
            "max_tokens": max_tokens,
            "reserve_output": reserve_output,
            "summary_tokens": summary_tokens,
            "first_user": "pin" if pin_first_user else "summarise",
            "low_water": low_water,
            # The state holds every message: the buffer takes each one, even one too long for the
            # window, and refuses only while it is the newest (the model could not be sent it).
            # Once a newer one follows it slides out and is folded; refusing it in extend would
            # fail every later call of the thread, though it is old.
            "hold_overflow": True,
        }
        if strategy == "summarise":
            SummaryBuffer(lambda previous, messages: "", self.budget.counter, **self._options)  # validates
            self.transformers = (InternalCallTransformer,)  # keep summary calls out of run.messages
            # (and the "nostream" tag of _StepSummariser._internal out of stream_mode="messages")

    # -- trim ----------------------------------------------------------------------------------

    def _trimmed(self, request: ModelRequest[Any], room: int | None = None) -> ModelRequest[Any]:
        """The request fitted to the budget: within ``room`` tokens (the ledger's, below the
        budget) when what must be kept fits there, else within the whole budget."""
        budget = self.budget
        system, tools = request.system_message, sent_tools(request)

        def fit(within: int | None) -> list[Any]:
            sized = budget if within is None else budget.within(within)
            return fit_host(request.messages, sized, system=system, tools=tools)

        kept = fit_smaller_or_whole(fit, room, budget.prompt_tokens)
        return request.override(messages=kept)

    def _payer(self, request: ModelRequest[Any]) -> dict[str, str | None]:
        """The run's feature and user, as :class:`~langchain_tokenbudget.BudgetMiddleware` reads
        them, else the defaults given here."""
        payer = run_payer(request, feature=self.feature, user=self.user)
        return {"feature": payer["feature"], "user": payer["user"]}

    def _room(self, request: ModelRequest[Any]) -> int | None:
        """The prompt tokens the ledger lets the run's payer send now (``None``: no ledger)."""
        if self.ledger is None:
            return None
        budget = self.budget
        return self.ledger.context_tokens(budget.prompt_tokens, **self._payer(request))

    async def _aroom(self, request: ModelRequest[Any]) -> int | None:
        """Async twin of :meth:`_room`."""
        if self.ledger is None:
            return None
        budget = self.budget
        return await self.ledger.acontext_tokens(budget.prompt_tokens, **self._payer(request))

    # -- summarise -----------------------------------------------------------------------------

    def _buffer(self, request: ModelRequest[Any], writer: _StepSummariser) -> SummaryBuffer[Message]:
        options = {**self._options, "tools": counted_tools(self.budget.counter, sent_tools(request))}
        buffer: SummaryBuffer[Message] = SummaryBuffer(writer, self.budget.counter, **options)
        writer.max_tokens = buffer.summary_tokens
        head = 1 if request.system_message is not None else 0
        summary, folded = _saved_summary(request)
        buffer.resume(summary, folded + head)
        return buffer

    @staticmethod
    def _transcript(request: ModelRequest[Any]) -> tuple[list[AnyMessage], list[Message]]:
        system = request.system_message
        host: list[AnyMessage] = [system] if system is not None else []
        core = [to_countable_message(system, where="system_message")] if system is not None else []
        return [*host, *request.messages], [*core, *to_core_request(request.messages)]

    def _summarised(
        self,
        request: ModelRequest[Any],
        buffer: SummaryBuffer[Message],
        host: list[AnyMessage],
        core: list[Message],
        room: int | None = None,
    ) -> ModelRequest[Any]:
        window = host_window(buffer.messages(room), core, host)
        system = request.system_message
        if system is None:  # the summary stays where the core put it, as a SystemMessage
            return request.override(messages=window)
        known = {id(m) for m in host}
        summary = next((m for m in window if id(m) not in known), None)
        messages = [m for m in window if m is not system and m is not summary]
        if summary is None:
            return request.override(messages=messages)
        return request.override(system_message=_with_text(system, str(summary.text)), messages=messages)

    @staticmethod
    def _result(
        request: ModelRequest[Any], buffer: SummaryBuffer[Message], response: ModelResponse[Any]
    ) -> ModelResult:
        head = 1 if request.system_message is not None else 0
        folded = max(buffer.folded - head, 0)
        state = cast("dict[str, Any]", request.state)
        messages = request.messages
        last = messages[folded - 1].id if folded else None
        after = messages[folded].id if folded and folded < len(messages) else None
        anchor = messages[-1].id if buffer.summary is not None and messages else None
        update = {
            SUMMARY_KEY: buffer.summary,
            FOLDED_KEY: folded,
            FOLDED_ID_KEY: last,
            NEXT_ID_KEY: after,
            ANCHOR_ID_KEY: anchor,
        }
        if all(state.get(k, 0 if k == FOLDED_KEY else None) == v for k, v in update.items()):
            return response
        return ExtendedModelResponse(model_response=response, command=Command(update=update))

    # -- hooks ---------------------------------------------------------------------------------

    def wrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], ModelResponse[Any]],
    ) -> ModelResult:
        """Fit the request into the budget, then call the model.

        Raises:
            ContextOverflowError: The system prompt, tools, pinned messages and newest turn
                alone exceed the budget (an older message too long for it slides out: trimmed,
                or folded into the summary).
            InvalidMessageError: A message cannot be translated or counted.
        """
        if self.strategy == "trim":
            return handler(self._trimmed(request, self._room(request)))
        _check_no_budget_outside()
        host, core = self._transcript(request)
        with step_charges():  # the summaries' charges count in the step (outside a LangGraph task)
            writer = _StepSummariser(self.summariser or request.model, request, handler)
            buffer = self._buffer(request, writer)
            buffer.extend(core)  # one fold of what slid out: about one call per chunk_tokens
            room = self._room(request)  # (after the summaries: their charges may move the step)
            response = handler(self._summarised(request, buffer, host, core, room))
            return self._result(request, buffer, response)

    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]],
    ) -> ModelResult:
        """Async twin of :meth:`wrap_model_call` (the summariser is awaited)."""
        if self.strategy == "trim":
            return await handler(self._trimmed(request, await self._aroom(request)))
        _check_no_budget_outside()
        host, core = self._transcript(request)
        with step_charges():  # the summaries' charges count in the step (outside a LangGraph task)
            writer = _StepSummariser(self.summariser or request.model, request, handler)
            buffer = self._buffer(request, writer)
            buffer.summariser = writer.acall
            await buffer.aextend(core)
            room = await self._aroom(request)
            response = await handler(self._summarised(request, buffer, host, core, room))
            return self._result(request, buffer, response)


def _check_no_budget_outside() -> None:
    """Refuse to summarise inside a :class:`~langchain_tokenbudget.BudgetMiddleware`: the summary
    calls go down this middleware's own handler, so one listed before it would never reserve,
    refuse or charge them (paid calls missing from the ledger).

    Raises:
        InvalidInputError: A BudgetMiddleware's model call is under way outside this one.
    """
    if budget_call_active():
        raise InvalidInputError(
            "middleware",
            "ContextWindowMiddleware(strategy='summarise') runs inside a BudgetMiddleware, which"
            " would never see (reserve, refuse or charge) its summary calls",
            fix="list BudgetMiddleware after ContextWindowMiddleware in create_agent(middleware=[...])",
        )


def _saved_summary(request: ModelRequest[Any]) -> tuple[str | None, int]:
    """The state's summary and how many of ``request.messages`` it covers.

    The count is checked against the id of the last folded message: when messages were removed
    from the state since (``RemoveMessage``, a retention job), it follows that message. When that
    message itself is gone, the oldest messages were pruned (the usual retention job: the
    summary is now their only record) and the summary is kept: it covers what comes before the
    first message it did not cover, or, when that one was pruned too, none of what is left, as
    long as the newest message of the last call (the anchor) is still there. When none of them
    is (the thread was reset), the summary is dropped and rebuilt from what the state holds now,
    so no message is skipped and no old conversation leaks in.
    """
    state = cast("dict[str, Any]", request.state)
    summary, folded, last = state.get(SUMMARY_KEY), state.get(FOLDED_KEY, 0), state.get(FOLDED_ID_KEY)
    messages = request.messages
    if not folded:
        return summary, 0
    if last is None:  # saved before the id was kept: trust the count while it still fits
        return (summary, folded) if folded <= len(messages) else (None, 0)
    if folded <= len(messages) and messages[folded - 1].id == last:
        return summary, folded
    moved = next((i for i, m in enumerate(messages) if m.id == last), None)
    if moved is not None:
        return summary, moved + 1
    ids = [m.id for m in messages]
    after, anchor = state.get(NEXT_ID_KEY), state.get(ANCHOR_ID_KEY)
    if after is not None and after in ids:
        return summary, ids.index(after)
    if anchor is not None and anchor in ids:  # the folded messages and some after them were pruned
        return summary, 0
    return None, 0


class _StepSummariser(ChatSummariser):
    """Summary calls sent down the agent's own model-call chain, as requests of their own: the
    middleware inside this one (a :class:`~langchain_tokenbudget.BudgetMiddleware`, retries,
    routing) sees them like any model call, so they are reserved, refused and charged. They are
    tagged as internal calls (``internal_call_metadata()``, kept out of ``run.messages``) and
    ``"nostream"`` (kept out of ``stream``/``astream(stream_mode="messages")``), and run inside the core's
    ``overhead("summariser")``, so reports show them as overhead of the run's payer. They run
    with no route in force (:func:`~tokenbudget_core.routing.without_route`): the route of an
    outer :class:`~langchain_tokenbudget.RoutingMiddleware` is the agent's own call, so budget
    adapters charge a summary on the summariser's model and record no routing for it."""

    def __init__(self, model: BaseChatModel, request: ModelRequest[Any], handler: Callable[..., Any]) -> None:
        super().__init__(model)
        self.request, self.handler = request, handler

    def _call_request(self, previous: str | None, messages: list[Message]) -> ModelRequest[Any]:
        system, *prompt = self._prompt(previous, messages)
        return self.request.override(
            model=self.model,
            system_message=cast("SystemMessage", system),
            messages=cast("list[AnyMessage]", prompt),
            tools=[],
            tool_choice=None,
            response_format=None,
            model_settings={},
        )

    @contextmanager
    def _internal(self) -> Iterator[None]:
        config = var_child_runnable_config.get() or {}
        metadata = {
            **(config.get("metadata") or {}),
            "lc_source": "tokenbudget_summary",
            **internal_call_metadata(),
        }
        tags = [*(config.get("tags") or []), TAG_NOSTREAM]  # kept out of stream_mode="messages"
        token = var_child_runnable_config.set({**config, "metadata": metadata, "tags": tags})
        try:
            with without_route():  # an outer router's route is the agent's call, not this one
                yield
        finally:
            var_child_runnable_config.reset(token)

    def __call__(self, previous: str | None, messages: list[Message]) -> str:
        request = self._call_request(previous, messages)
        with self._internal():
            return _summary_text(self.handler(request))

    async def acall(self, previous: str | None, messages: list[Message]) -> str:
        request = self._call_request(previous, messages)
        with self._internal():
            return _summary_text(await self.handler(request))


def _summary_text(response: ModelResponse[Any]) -> str:
    """The summary a model call wrote; an error (the buffer keeps the messages pending, sends the
    sliding window and retries later) when the call was refused or wrote nothing."""
    reply = response.result[-1] if response.result else None
    if not isinstance(reply, AIMessage):
        raise ValueError("the summary call returned no reply")
    refusal = reply.response_metadata.get("tokenbudget_refusal")
    if refusal:
        raise ValueError(f"the summary call was refused: {refusal.get('budget')} budget")
    if not reply.text.strip():
        raise ValueError("the summary call returned no text")
    return str(reply.text)


def _with_text(system: SystemMessage, text: str) -> SystemMessage:
    """The system message with ``text`` appended (a text block when its content is a list of blocks)."""
    if isinstance(system.content, str):
        return system.model_copy(update={"content": f"{system.content}\n\n{text}"})
    return system.model_copy(update={"content": [*system.content, {"type": "text", "text": text}]})
