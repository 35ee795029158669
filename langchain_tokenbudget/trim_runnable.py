"""Fit chat messages into a token budget as an LCEL step: :class:`TrimMessagesRunnable`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import BaseMessage, SystemMessage
from langchain_core.runnables import Runnable, RunnableConfig

from tokenbudget_core.counting import TokenCounter
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.fitting import OnOverflow

from ._bridge import Budget, fit_host, host_messages

__all__ = ["TrimMessagesRunnable"]


class TrimMessagesRunnable(Runnable[Any, Any]):
    """Keep the part of a conversation that fits the model's budget (the core's ``fit_messages``).

    System messages stay, a tool call stays with its results, the newest turn is always
    kept, and the window never starts on an orphaned assistant reply.

    * Given messages (a list, a prompt value or a string) it returns the kept messages,
      so it sits between a prompt and a model: ``prompt | trim | model``.
    * Given a state dict with ``"messages"`` (a LangGraph ``pre_model_hook``), it returns
      ``{"llm_input_messages": kept}``: the model sees the window, the state keeps everything.

    Args:
        model: Model name or :class:`~tokenbudget_core.counting.TokenCounter` to count with.
        max_tokens: The model's input budget.
        reserve_output: Tokens kept free for the reply.
        pin_first_user: Also keep the first user message.
        tools: Tools bound to the model (``BaseTool``, functions or dicts); their definitions count.
        system_prompt: A system prompt the host adds *after* this step (``create_react_agent``'s
            ``prompt=``): it counts against the budget but is not emitted.
        on_overflow: ``"raise"`` :class:`~tokenbudget_core.errors.ContextOverflowError` when the
            must-keep messages do not fit, or ``"truncate"`` the newest message.

    Raises:
        InvalidInputError: A bad option, named (checked here, not on the first call);
            ContextOverflowError if the tools alone exceed the budget.
        UnknownModelError: The model name is unknown.

    Example:
        >>> from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
        >>> trim = TrimMessagesRunnable("gpt-4o", max_tokens=120)
        >>> history = [SystemMessage("Be brief.")] + [
        ...     HumanMessage("question " * 20) if i % 2 == 0 else AIMessage("answer " * 20)
        ...     for i in range(10)]
        >>> kept = trim.invoke(history)
        >>> kept[0] is history[0] and kept[-1] is history[-1] and len(kept) < len(history)
        True
    """

    def __init__(
        self,
        model: str | TokenCounter,
        *,
        max_tokens: int,
        reserve_output: int = 0,
        pin_first_user: bool = False,
        tools: Sequence[Any] | None = None,
        system_prompt: str | None = None,
        on_overflow: OnOverflow = "raise",
    ) -> None:
        self.budget = Budget.make(
            model,
            max_tokens,
            reserve_output=reserve_output,
            pin_first_user=pin_first_user,
            on_overflow=on_overflow,
            tools=tools,
        )
        self.tools = list(tools or [])
        if system_prompt is not None and not isinstance(system_prompt, str):
            raise InvalidInputError(
                "system_prompt", "must be a string or None", value=type(system_prompt).__name__
            )
        self.system = SystemMessage(system_prompt) if system_prompt is not None else None

    def _fit(self, value: Any) -> Any:
        if isinstance(value, Mapping) and "messages" in value:
            messages = host_messages(value["messages"], where="state['messages']")
            return {"llm_input_messages": self._fit_messages(messages)}
        return self._fit_messages(host_messages(value))

    def _fit_messages(self, messages: list[BaseMessage]) -> list[BaseMessage]:
        return fit_host(messages, self.budget, system=self.system, tools=self.tools)

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """Fit messages (or a state dict) into the budget.

        Args:
            input: Messages, a prompt value, a string, or a state dict with ``"messages"``.
            config: The run config (callbacks, tags).
            **kwargs: Ignored (the Runnable protocol passes them through).

        Returns:
            The kept messages, or ``{"llm_input_messages": kept}`` for a state dict.

        Raises:
            ContextOverflowError: The system message, pinned messages and newest turn alone
                exceed the budget (``on_overflow="raise"``).
            InvalidMessageError: The input is not a chat input, or a message cannot be counted.
        """
        return self._call_with_config(self._fit, input, config, run_type="chain")

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """Async twin of :meth:`invoke` (counting is local work: it does not block on I/O)."""

        async def fit(value: Any) -> Any:
            return self._fit(value)

        return await self._acall_with_config(fit, input, config, run_type="chain")
