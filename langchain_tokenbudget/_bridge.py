"""Shared plumbing of the LangChain adapters: host types in, a core call, host types out.

Nothing here decides what to keep or how to count: :func:`fit_host` asks the core's
``fit_messages`` and returns the host messages at ``FitResult.kept``;
:func:`host_window` maps a core window (``SummaryBuffer.messages()``) back to host
messages; :class:`ChatSummariser` serves the core's summariser seam with a LangChain
chat model through the core's ``summary_prompt``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, SystemMessage, convert_to_messages
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import RunnableConfig
from langchain_core.utils.function_calling import convert_to_openai_tool

from tokenbudget_core.counting import (
    SupportsTokenCount,
    TokenCounter,
    check_tool_list,
    countable_tools,
    is_function_tool,
    resolve_counter,
)
from tokenbudget_core.errors import InvalidInputError, InvalidMessageError
from tokenbudget_core.fitting import OnOverflow, fit_messages
from tokenbudget_core.messages import Message, MessageLike, to_message
from tokenbudget_core.summary import summary_prompt

from .messages import to_core_request, to_countable_message

__all__ = [
    "Budget",
    "ChatSummariser",
    "core_tools",
    "counted_tools",
    "fit_host",
    "host_messages",
    "host_window",
    "provider_format_tools",
    "response_format_tools",
    "sent_tools",
]

H = TypeVar("H", bound=BaseMessage)


@dataclass(frozen=True, kw_only=True, slots=True)
class Budget:
    """The fitting options of an adapter, checked by the core when the adapter is made."""

    counter: TokenCounter
    """Counts for the model the messages are sent to."""
    max_tokens: int
    """The model's input budget."""
    reserve_output: int = 0
    """Tokens kept free for the reply."""
    pin_first_user: bool = False
    """Keep the first user message."""
    on_overflow: OnOverflow = "raise"
    """``"raise"`` or ``"truncate"`` the newest message when the must-keep messages do not fit."""

    @property
    def prompt_tokens(self) -> int:
        """The tokens the prompt may use: ``max_tokens - reserve_output``."""
        return self.max_tokens - self.reserve_output

    def within(self, room: int) -> Budget:
        """This budget with ``room`` tokens for the prompt (``max_tokens - reserve_output``: the
        ledger's smaller_context budget), where the messages that must be kept raise rather than
        being cut (the caller then fits to the whole budget: a smaller context never shortens a
        message nor fails a call that fits the whole one)."""
        return dataclasses.replace(self, max_tokens=room + self.reserve_output, on_overflow="raise")

    @classmethod
    def make(
        cls,
        model: str | TokenCounter,
        max_tokens: int,
        *,
        reserve_output: int = 0,
        pin_first_user: bool = False,
        on_overflow: OnOverflow = "raise",
        tools: Sequence[Any] | None = None,
    ) -> Budget:
        """Resolve the counter and let the core validate every option now, not on the first call.

        Raises:
            InvalidInputError: A bad option (named); ContextOverflowError when the tools alone
                do not fit.
            UnknownModelError: The model name is unknown.
        """
        counter = resolve_counter(model)
        fit_messages(
            [],
            max_tokens,
            counter,
            reserve_output=reserve_output,
            on_overflow=on_overflow,
            tools=counted_tools(counter, tools),
        )
        if not isinstance(pin_first_user, bool):
            raise InvalidInputError("pin_first_user", "must be True or False", value=pin_first_user)
        return cls(
            counter=counter,
            max_tokens=max_tokens,
            reserve_output=reserve_output,
            pin_first_user=pin_first_user,
            on_overflow=on_overflow,
        )


def core_tools(tools: Sequence[Any] | None) -> list[dict[str, Any]] | None:
    """LangChain tools (``BaseTool``, functions, schemas, dicts) as OpenAI tool definitions.

    Raises:
        InvalidInputError: A tool cannot be read.
    """
    if not tools:
        return None
    out: list[dict[str, Any]] = []
    for i, tool in enumerate(tools):
        try:
            out.append(convert_to_openai_tool(tool))
        except (ValueError, TypeError, NotImplementedError) as e:
            raise InvalidInputError(
                f"tools[{i}]", f"cannot read this tool definition: {e}", value=tool
            ) from e
    return out


def is_builtin_tool(tool: object) -> bool:
    """A provider's built-in (server) tool given as a dict (``{"type": "web_search_preview"}``,
    Anthropic's ``{"type": "web_search_20250305", "name": "web_search"}``): typed, not a function
    definition. Sent by the host as it is, never read as a function."""
    return (
        isinstance(tool, Mapping)
        and isinstance(tool.get("type"), str)
        and tool.get("type") != "function"
        and not is_function_tool(tool)
    )


def counted_tools(
    counter: TokenCounter | SupportsTokenCount, tools: Sequence[Any] | None, *, model: str | None = None
) -> list[dict[str, Any]] | None:
    """The tool definitions ``counter`` counts, as ``BudgetMiddleware`` splits them: every function
    tool (:func:`core_tools`), and a built-in (server) tool as the host sends it when the counter
    counts those (Claude's, the estimating counter's; not tiktoken's: OpenAI publishes no count of
    its built-in tools, left out, logged once). A built-in tool is never refused nor read as a
    function. ``model`` names the counter's model in that log line.

    Raises:
        InvalidInputError: ``tools`` is not a list (``1.5``, ``object()``, a string, a dict), or
            a function tool cannot be read.
    """
    tools = check_tool_list(tools)
    if not tools:
        return None
    builtin = [t for t in tools if is_builtin_tool(t)]
    functions = [t for t in tools if not is_builtin_tool(t)]
    name = model or str(getattr(counter, "name", None) or type(counter).__name__)
    return [*(core_tools(functions) or ()), *countable_tools(counter, name, builtin)] or None


def sent_tools(request: Any) -> list[Any]:
    """The tool definitions a ``create_agent`` model call sends: ``request.tools`` and the
    structured-output schema of ``request.response_format`` (:func:`response_format_tools`),
    which is not in ``request.tools``."""
    return [*request.tools, *response_format_tools(request)]


def response_format_tools(request: Any) -> list[dict[str, Any]]:
    """The structured-output schema a ``create_agent`` model call sends beside ``request.tools``
    (``request.response_format``), as function tool definitions to count with them: the agent
    resolves it as it does (a raw schema is an ``AutoStrategy``: a ``ProviderStrategy`` when the
    model supports provider structured output, else a ``ToolStrategy``). A ``ToolStrategy``'s
    schemas are bound as tools (the ``StructuredTool`` the agent makes of each); a
    ``ProviderStrategy``'s schema goes as the request's ``response_format`` (JSON schema), counted
    as a tool of the same name, description and schema (its definition's size; providers publish
    no count of a response format). Empty when there is no structured output, or when langchain's
    agents are not installed.
    """
    response_format = getattr(request, "response_format", None)
    if response_format is None:
        return []
    try:
        from langchain.agents.structured_output import (
            AutoStrategy,
            OutputToolBinding,
            ProviderStrategy,
            ToolStrategy,
        )
    except ImportError:  # no langchain agents: no structured output strategy either
        return []
    if not isinstance(response_format, AutoStrategy | ToolStrategy | ProviderStrategy):
        response_format = AutoStrategy(schema=response_format)  # as the agent reads a raw schema
    if isinstance(response_format, AutoStrategy):
        provider = _supports_provider_strategy(
            getattr(request, "model", None), getattr(request, "tools", None)
        )
        strategy: Any = (ProviderStrategy if provider else ToolStrategy)(schema=response_format.schema)
    else:
        strategy = response_format
    if isinstance(strategy, ToolStrategy):
        specs = list(strategy.schema_specs)
        return [convert_to_openai_tool(OutputToolBinding.from_schema_spec(spec).tool) for spec in specs]
    spec = strategy.schema_spec
    return [_schema_tool(spec.name, spec.description, spec.json_schema)]


def _schema_tool(name: object, description: object, schema: object) -> dict[str, Any]:
    """A structured-output JSON schema as the function tool it is counted as (its definition's
    size: providers publish no count of a response format), one convention for the agent's
    ``ProviderStrategy`` and a chat model's own ``response_format``."""
    function = {
        "name": name if isinstance(name, str) else "",
        "description": description if isinstance(description, str) else "",
        "parameters": schema,
    }
    return {"type": "function", "function": function}


def provider_format_tools(response_format: object) -> list[dict[str, Any]]:
    """The structured-output schema a chat model call sends as its ``response_format`` parameter
    (``ChatOpenAI.with_structured_output``'s default ``json_schema`` method binds it so; the
    callback sees it in ``invocation_params``), as the function tool it is counted as, by the
    convention :func:`response_format_tools` counts a ``ProviderStrategy``'s by: its name,
    description and JSON schema. Read in the shapes LangChain's OpenAI-compatible models bind:
    ``{"type": "json_schema", "json_schema": {"name", "description", "schema"}}``, the inner
    ``{"name", "schema"}``, or a schema class (a pydantic model, a ``TypedDict``) the model
    converts as it sends it. Empty when the format carries no schema (``{"type": "json_object"}``,
    ``"text"``, ``None``).

    Raises:
        InvalidInputError: ``response_format`` is a class that cannot be read as a schema (field
            ``response_format``).
    """
    if isinstance(response_format, Mapping):
        inner = response_format.get("json_schema")
        spec = inner if isinstance(inner, Mapping) else response_format
        schema = spec.get("schema")
        if not isinstance(schema, Mapping):  # json_object, text: no schema goes with it
            return []
        return [_schema_tool(spec.get("name"), spec.get("description"), dict(schema))]
    if isinstance(response_format, type):
        try:
            return [convert_to_openai_tool(response_format)]
        except (ValueError, TypeError, NotImplementedError) as e:
            raise InvalidInputError(
                "response_format",
                f"cannot read this structured-output schema: {e}",
                value=response_format,
                fix="pass a pydantic model, a TypedDict or a JSON schema dict",
            ) from e
    return []


def _supports_provider_strategy(model: object, tools: object) -> bool:
    """Whether the agent sends a raw schema as the model's response format (langchain's own test,
    ``langchain.agents.factory._supports_provider_strategy``); when it cannot be asked, a tool
    (``ToolStrategy``, the agent's fallback)."""
    try:
        from langchain.agents.factory import _supports_provider_strategy as supports

        return bool(supports(model, tools=tools))  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001 - a private helper moved or failed: count the schema as a tool
        return False


def host_messages(value: object, *, where: str = "input") -> list[BaseMessage]:
    """LangChain's accepted chat inputs (messages, tuples, dicts, a prompt value, a string) as messages.

    Raises:
        InvalidMessageError: ``value`` is not a chat input.
    """
    if isinstance(value, PromptValue):
        return value.to_messages()
    if isinstance(value, str):
        return convert_to_messages([value])
    if isinstance(value, Mapping) or not isinstance(value, Sequence):
        raise InvalidMessageError(
            where,
            f"expected a list of messages, a prompt value or a string, got {type(value).__name__}",
            fix="pass a list of messages (or a state dict with 'messages' to the runnable)",
        )
    try:
        return convert_to_messages(value)
    except (ValueError, TypeError, NotImplementedError) as e:
        raise InvalidMessageError(where, f"cannot read these messages: {e}") from e


def fit_host(
    messages: Sequence[H],
    budget: Budget,
    *,
    system: SystemMessage | None = None,
    tools: Sequence[Any] | None = None,
    converted: Sequence[Message] | None = None,
) -> list[H]:
    """The host messages the core keeps; ``system`` (sent separately by the host) counts but is not returned.
    ``converted``: the messages' translations already made (``to_countable_message``), if any.

    Raises:
        ContextOverflowError: The must-keep messages do not fit (``on_overflow="raise"``).
        InvalidMessageError: A message cannot be translated or counted.
    """
    head = [to_countable_message(system, where="system_message")] if system is not None else []
    body = to_core_request(messages) if converted is None else converted
    core = [*head, *body]  # a PDF block is estimated, never truncated
    fit = fit_messages(
        core,
        budget.max_tokens,
        budget.counter,
        reserve_output=budget.reserve_output,
        pin_first_user=budget.pin_first_user,
        tools=counted_tools(budget.counter, tools),
        on_overflow=budget.on_overflow,
    )
    out: list[H] = []
    for position, i in enumerate(fit.kept):
        if i < len(head):
            continue
        message = messages[i - len(head)]
        if i == fit.truncated:  # the core shortened it: carry its text back into the host message
            message = message.model_copy(update={"content": _cut(message.content, fit[position].text)})
        out.append(message)
    return out


def _cut(content: str | list[Any], text: str) -> str | list[Any]:
    """The host content with its text replaced by the core's cut ``text`` (one text block, first;
    the other blocks, images, kept as they were)."""
    if isinstance(content, str):
        return text
    kept = [
        b for b in content if not isinstance(b, str) and not (isinstance(b, dict) and b.get("type") == "text")
    ]
    return [{"type": "text", "text": text}, *kept] if kept else text


def host_window(
    window: Sequence[MessageLike],
    core: Sequence[Message],
    host: Sequence[H],
    *,
    index: Mapping[int, int] | None = None,
) -> list[H | SystemMessage]:
    """Map a core window back to host messages; a message the core made (the summary) becomes a SystemMessage.

    ``core[i]`` must be the translation of ``host[i]`` (the window holds those very objects).
    ``index``: ``id(core[i]) -> i`` kept up to date by the caller (else built here, a pass over
    every message).
    """
    if index is None:
        index = {id(m): i for i, m in enumerate(core)}
    out: list[H | SystemMessage] = []
    for m in window:
        i = index.get(id(m))
        out.append(host[i] if i is not None else SystemMessage(to_message(m).text))
    return out


class ChatSummariser:
    """The core summariser seam served by a chat model: ``summary_prompt`` in, the reply's text out.

    Args:
        model: The chat model that writes the summary.
        config: Run config for the summary calls (tags, metadata).
    """

    def __init__(self, model: BaseChatModel, *, config: RunnableConfig | None = None) -> None:
        if not isinstance(model, BaseChatModel):
            raise InvalidInputError(
                "summariser", f"must be a LangChain chat model, got {type(model).__name__}", value=model
            )
        self.model = model
        self.config = config
        self.max_tokens = 200
        """The summary's token cap, told to the model (set to the buffer's ``summary_tokens``)."""

    def _prompt(self, previous: str | None, messages: list[Message]) -> list[BaseMessage]:
        return convert_to_messages(summary_prompt(previous, messages, max_tokens=self.max_tokens))

    def __call__(self, previous: str | None, messages: list[Message]) -> str:
        """Summarise synchronously."""
        return str(self.model.invoke(self._prompt(previous, messages), config=self.config).text)

    async def acall(self, previous: str | None, messages: list[Message]) -> str:
        """Summarise asynchronously."""
        reply = await self.model.ainvoke(self._prompt(previous, messages), config=self.config)
        return str(reply.text)
