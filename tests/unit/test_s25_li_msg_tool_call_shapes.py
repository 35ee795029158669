"""Tool calls in the shapes the LlamaIndex LLM integrations write them (not only OpenAI's) are read
as tool calls: counted with their arguments, and paired with the results FunctionAgent stores."""

from __future__ import annotations

import json
from typing import Any

import pytest
from anthropic.types import ToolUseBlock
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ChatMessage, ChatResponse, LLMMetadata, MessageRole
from llama_index.core.llms.callbacks import llm_chat_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection
from llama_index.core.tools import FunctionTool
from pydantic import BaseModel

from llamaindex_tokenbudget import TokenBudgetChatMemory, to_core_message, to_core_messages
from tokenbudget_core import TokenCounter
from tokenbudget_core.errors import InvalidMessageError
from tokenbudget_core.messages import ToolCall

COUNTER = TokenCounter.for_model("gpt-4o")
ARGS = {"query": "quarterly revenue of several companies " * 20}
USER = ChatMessage(role="user", content="search please")


def openai_call(call_id: str = "call_1") -> ChatMessage:
    calls = [
        {"id": call_id, "type": "function", "function": {"name": "search", "arguments": json.dumps(ARGS)}}
    ]
    return ChatMessage(role="assistant", content="", additional_kwargs={"tool_calls": calls})


def anthropic_call() -> ChatMessage:
    """As llama-index-llms-anthropic's chat() builds it: ToolUseBlock dumps in additional_kwargs."""
    block = ToolUseBlock(id="toolu_01", input=ARGS, name="search", type="tool_use")
    return ChatMessage(
        role=MessageRole.ASSISTANT, content="", additional_kwargs={"tool_calls": [block.model_dump()]}
    )


class FunctionCall(BaseModel):
    """google.genai.types.FunctionCall's fields, as llama-index-llms-google-genai appends it."""

    id: str | None = None
    name: str | None = None
    args: dict[str, Any] | None = None


class OllamaFunction(BaseModel):
    name: str
    arguments: dict[str, Any]


class OllamaToolCall(BaseModel):
    """ollama-python's Message.ToolCall: a function, no id."""

    function: OllamaFunction


def result(call_id: str) -> ChatMessage:
    return ChatMessage(role="tool", content="ok", additional_kwargs={"tool_call_id": call_id})


def test_an_anthropic_tool_use_dump_is_a_tool_call_with_its_id_and_json_input() -> None:
    [call] = to_core_message(anthropic_call()).tool_calls
    assert call == ToolCall(id="toolu_01", name="search", arguments=json.dumps(ARGS))


def test_an_anthropic_shaped_history_counts_like_the_same_openai_history() -> None:
    anthropic = [USER, anthropic_call(), result("toolu_01")]
    openai = [USER, openai_call("toolu_01"), result("toolu_01")]
    assert COUNTER.count_messages(to_core_messages(anthropic)) == COUNTER.count_messages(
        to_core_messages(openai)
    )
    assert COUNTER.count_messages(to_core_messages(anthropic)) > 100  # the arguments are counted


def test_a_streamed_anthropic_input_still_text_is_kept_as_written() -> None:
    call = {"id": "toolu_02", "input": '{"query": "rev', "name": "search", "type": "tool_use"}
    message = ChatMessage(role="assistant", content="", additional_kwargs={"tool_calls": [call]})
    [core] = to_core_message(message).tool_calls
    assert core == ToolCall(id="toolu_02", name="search", arguments='{"query": "rev')


def test_bedrock_converse_tool_use_is_a_tool_call_with_its_tool_use_id() -> None:
    call = {"toolUseId": "tooluse_abc", "name": "search", "input": ARGS}
    message = ChatMessage(role="assistant", content="", additional_kwargs={"tool_calls": [call]})
    assert to_core_message(message).tool_calls == (
        ToolCall(id="tooluse_abc", name="search", arguments=json.dumps(ARGS)),
    )


@pytest.mark.parametrize(
    "call",
    [
        FunctionCall(id=None, name="search", args=ARGS),
        FunctionCall(id="fc-1", name="search", args=ARGS),
        {"name": "search", "args": ARGS, "thought_signature": None},
    ],
    ids=["FunctionCall", "FunctionCall-with-id", "dict"],
)
def test_a_google_genai_function_call_is_a_tool_call_answered_by_its_name(call: Any) -> None:
    message = ChatMessage(role="assistant", content="", additional_kwargs={"tool_calls": [call]})
    # llama-index-llms-google-genai's get_tool_calls_from_response makes the name the tool id
    assert to_core_message(message).tool_calls == (
        ToolCall(id="search", name="search", arguments=json.dumps(ARGS)),
    )
    memory = TokenBudgetChatMemory(model="gpt-4o", max_tokens=4000)
    memory.put_messages([USER, message, result("search")])
    assert [m.role.value for m in memory.get()] == ["user", "assistant", "tool"]


@pytest.mark.parametrize(
    "call",
    [
        {"function": {"name": "search", "arguments": ARGS}},
        OllamaToolCall(function=OllamaFunction(name="search", arguments=ARGS)),
    ],
    ids=["dict", "object"],
)
def test_an_ollama_call_without_id_pairs_with_the_result_named_after_its_function(call: Any) -> None:
    message = ChatMessage(role="assistant", content="", additional_kwargs={"tool_calls": [call]})
    [core] = to_core_message(message).tool_calls
    assert core.arguments == json.dumps(ARGS)  # JSON as Ollama is sent it, not a Python repr
    memory = TokenBudgetChatMemory(model="gpt-4o", max_tokens=4000)
    memory.put(USER)
    memory.put(message)
    memory.put(result("search"))  # FunctionAgent's result: tool_call_id = the function's name
    assert [m.role.value for m in memory.get()] == ["user", "assistant", "tool"]


@pytest.mark.parametrize("call", [openai_call("call_1"), anthropic_call()], ids=["openai", "anthropic"])
def test_a_call_with_an_id_is_still_answered_by_that_id_only(call: ChatMessage) -> None:
    memory = TokenBudgetChatMemory(model="gpt-4o", max_tokens=4000)
    memory.put(USER)
    memory.put(call)
    with pytest.raises(InvalidMessageError, match="tool result without its call"):
        memory.put(result("search"))  # the function's name is not this call's id


class AnthropicShapedLLM(FunctionCallingLLM):
    """A function-calling LLM answering as llama-index-llms-anthropic does: one tool_use, then text."""

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="claude-sonnet-4-5", is_chat_model=True, is_function_calling_model=True)

    def _prepare_chat_with_tools(
        self, tools: Any, user_msg: Any = None, chat_history: Any = None, **kwargs: Any
    ) -> dict[str, Any]:
        messages = list(chat_history or [])
        if user_msg is not None:
            messages.append(user_msg if isinstance(user_msg, ChatMessage) else ChatMessage(content=user_msg))
        return {"messages": messages, "tools": tools}

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        # as llama-index-llms-anthropic reads them back
        return [
            ToolSelection(tool_id=t["id"], tool_name=t["name"], tool_kwargs=t["input"])
            for t in response.message.additional_kwargs.get("tool_calls", [])
        ]

    @llm_chat_callback()
    def chat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        if any(m.role == MessageRole.TOOL for m in messages):
            message = ChatMessage(
                role="assistant", content="It is sunny.", additional_kwargs={"tool_calls": []}
            )
        else:
            block = ToolUseBlock(id="toolu_01", input={"city": "Paris"}, name="get_weather", type="tool_use")
            message = ChatMessage(
                role="assistant", content="", additional_kwargs={"tool_calls": [block.model_dump()]}
            )
        usage = {"input_tokens": 50, "output_tokens": 10}
        return ChatResponse(message=message, raw={"type": "message", "usage": usage})

    @llm_chat_callback()
    async def achat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        return self.chat(messages, **kwargs)

    def stream_chat(self, messages: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def astream_chat(self, messages: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
        raise NotImplementedError

    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
        raise NotImplementedError


def get_weather(city: str) -> str:
    """The weather of a city."""
    return f"sunny in {city}, 21C"


# FunctionAgent's constructor runs inspect.getmembers() over a pydantic model: pydantic's own
# deprecation warnings, attributed to the inspect module, are ignored there and nowhere else.
@pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20:inspect")
@pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince211:inspect")
async def test_a_function_agent_on_claude_uses_a_tool_with_our_memory() -> None:
    tool = FunctionTool.from_defaults(get_weather)
    agent = FunctionAgent(tools=[tool], llm=AnthropicShapedLLM(), streaming=False)
    memory = TokenBudgetChatMemory(model="gpt-4o", max_tokens=4000)
    answer = await agent.run("weather in Paris?", memory=memory)
    assert str(answer) == "It is sunny."
    transcript = memory.get_all()
    assert [m.role.value for m in transcript] == ["user", "assistant", "tool", "assistant"]
    assert transcript[2].additional_kwargs["tool_call_id"] == "toolu_01"
    [call] = to_core_message(transcript[1]).tool_calls
    assert (call.id, call.name, json.loads(call.arguments)) == ("toolu_01", "get_weather", {"city": "Paris"})
