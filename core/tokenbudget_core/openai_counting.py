"""Exact token counts for OpenAI models with tiktoken.

The chat format adds, per OpenAI's published counting guide: 3 tokens per message,
the encoded role, 1 more when the message has a ``name``, and 3 tokens priming the
reply (``gpt-3.5-turbo-0301``: 4 per message and -1 per name). Tool definitions
follow the guide's function-definition formula; tool calls made by the assistant
cost their name and arguments plus 3 framing tokens; images follow the tile and
patch formulas in :mod:`tokenbudget_core.images`.

Per-content counts are cached, so re-counting an unchanged history costs a
dictionary lookup per message instead of a re-tokenisation.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from .counting import TokenCount, TokenCounter, ToolLike, check_text, check_tools
from .encodings import get_encoding
from .errors import InvalidInputError
from .images import openai_image_tokens
from .messages import ImagePart, Message, MessageLike, TextPart, to_message
from .registry import ModelInfo

__all__ = ["TiktokenCounter"]

_REPLY_PRIMING = 3
_TOOL_CALL_FRAMING = 3


class _BoundedCache(dict[Any, Any]):
    """A dict that forgets its oldest tenth when full; a hit costs one plain dict lookup.

    Full means ``maxsize`` entries, or ``max_chars`` characters of string keys (so many
    large distinct texts cannot pin gigabytes of memory).
    """

    def __init__(self, maxsize: int, max_chars: int = 32_000_000) -> None:
        super().__init__()
        self.maxsize = maxsize
        self.max_chars = max_chars
        self._chars = 0
        self._lock = threading.Lock()

    def put(self, key: Any, value: Any) -> None:
        size = len(key) if type(key) is str else 0
        if size > self.max_chars // 8:
            return  # a huge text: not worth keeping
        if len(self) >= self.maxsize or self._chars + size > self.max_chars:
            with self._lock:
                for old in list(self)[: max(1, len(self) // 10)]:
                    self.pop(old, None)
                    self._chars -= len(old) if type(old) is str else 0
        self[key] = value
        self._chars += size


class TiktokenCounter(TokenCounter):
    """Exact counts for OpenAI models. Get one with ``TokenCounter.for_model("gpt-4o")``.

    Args:
        model: The registry entry of an OpenAI model (``tokenizer == "tiktoken"``).
        cache_size: How many distinct messages and texts to remember counts for.

    Raises:
        EncodingUnavailableError: The model's BPE file cannot be loaded (see :mod:`.encodings`).
    """

    def __init__(self, model: ModelInfo, *, cache_size: int = 65_536) -> None:
        super().__init__(model)
        if model.encoding is None:
            raise InvalidInputError("model.encoding", f"{model.name!r} has no tiktoken encoding")
        self._enc = get_encoding(model.encoding)
        self._make_count = TokenCount.maker(model=model.name, method="tiktoken", encoding=self._enc.name)
        self._encode = self._enc.encode_ordinary
        legacy = model.name.endswith("gpt-3.5-turbo-0301") or model.canonical == "gpt-3.5-0301"
        self._per_message = 4 if legacy else 3
        self._per_name = -1 if legacy else 1
        # The tool-definition formula's constants: o200k models differ from cl100k ones.
        self._func_init = 7 if model.encoding.startswith("o200k") else 10
        self._texts = _BoundedCache(cache_size)
        self._messages = _BoundedCache(cache_size)
        self._role_tokens = _role_tokens(model.encoding)
        # Framing of a plain message per role (tool messages need a call id: never fast-pathed).
        self._fast_roles: dict[object, int] = {
            r: self._per_message + n for r, n in self._role_tokens.items() if r != "tool"
        }

    @property
    def encoding_name(self) -> str:
        """The tiktoken encoding this counter uses."""
        return self._enc.name

    def _result(self, n: int, exact: bool = True) -> TokenCount:
        return self._make_count(n, exact)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (special-token strings are encoded as plain text)."""
        return list(self._encode(check_text(text)))

    def decode(self, tokens: Sequence[int]) -> str:
        """Text of token ids."""
        return self._enc.decode(list(tokens))

    def count(self, text: str) -> TokenCount:
        """Tokens in ``text``; special-token strings such as ``<|endoftext|>`` count as plain text."""
        if type(text) is not str:
            check_text(text)
        n = self._texts.get(text)
        if n is None:
            n = len(self._encode(text))
            self._texts.put(text, n)
        return self._result(n)

    def count_messages(
        self, messages: Sequence[MessageLike], tools: Sequence[ToolLike] | None = None
    ) -> TokenCount:
        """Input tokens of a chat request (messages, reply priming and tool definitions)."""
        if type(messages) is not list and (
            isinstance(messages, str | bytes | Mapping) or not isinstance(messages, Sequence)
        ):
            raise InvalidInputError(
                "messages", f"expected a list of messages, got {type(messages).__name__}", value=messages
            )
        total = _REPLY_PRIMING
        exact = True
        texts, encode, per_name = self._texts, self._encode, self._per_name
        get_text, fast_roles = texts.get, self._fast_roles
        for i, m in enumerate(messages):
            # Fast path: a plain-text dict of role and content (and maybe name), no tool fields.
            if type(m) is dict:
                size = len(m)
                try:
                    framing = fast_roles[m["role"]]
                    content = m["content"]
                except (KeyError, TypeError):
                    size = 0  # not a plain message: the full conversion below names the problem
                if (size == 2 or (size == 3 and "name" in m)) and type(content) is str:
                    n = get_text(content)
                    if n is None:
                        n = len(encode(content))
                        texts.put(content, n)
                    total += framing + n
                    if size == 3:
                        name = m["name"]
                        if type(name) is not str:
                            to_message(m, where=f"messages[{i}]")  # raises, naming the field
                        total += self._text_tokens(name) + per_name
                    continue
            msg = m if type(m) is Message else to_message(m, where=f"messages[{i}]")
            hit = self._messages.get(msg)
            if hit is None:
                hit = self._message_tokens(msg)
                self._messages.put(msg, hit)
            total += hit[0]
            exact = exact and hit[1]
        if tools:
            total += self._tools_tokens(check_tools(tools))
        elif tools is not None:
            check_tools(tools)
        return self._result(total, exact)

    def count_message(self, message: MessageLike) -> TokenCount:
        """Tokens one message adds to a request (framing included, reply priming excluded)."""
        n = self.count_messages([message])
        return self._result(int(n) - _REPLY_PRIMING, n.exact)

    @property
    def reply_priming(self) -> int:
        """Tokens every request costs once on top of its messages (the reply priming)."""
        return _REPLY_PRIMING

    def _text_tokens(self, text: str) -> int:
        n = self._texts.get(text)
        if n is None:
            n = len(self._encode(text))
            self._texts.put(text, n)
        return int(n)

    def _message_tokens(self, m: Message) -> tuple[int, bool]:
        enc = self._encode
        n = self._per_message + self._role_tokens[m.role]
        exact = True
        if isinstance(m.content, str):
            n += self._text_tokens(m.content)
        else:
            for part in m.content:
                if isinstance(part, TextPart):
                    n += len(enc(part.text))
                elif isinstance(part, ImagePart):
                    img = openai_image_tokens(part, self.model.canonical)
                    n += img.tokens
                    exact = exact and img.exact
        if m.name is not None:
            n += len(enc(m.name)) + self._per_name
        for call in m.tool_calls:
            n += _TOOL_CALL_FRAMING + len(enc(call.name)) + len(enc(call.arguments))
        return n, exact

    def _tools_tokens(self, tools: list[ToolLike]) -> int:
        """OpenAI's published formula for function definitions."""
        enc = self._encode
        total = 0
        for i, tool in enumerate(tools):
            fn = _function_of(tool, i)
            total += self._func_init
            desc = str(fn.get("description") or "").removesuffix(".")
            total += len(enc(f"{fn['name']}:{desc}"))
            params = fn.get("parameters") or fn.get("input_schema") or {}
            props = params.get("properties") if isinstance(params, Mapping) else None
            if isinstance(props, Mapping) and props:
                total += 3  # properties header
                for key, spec in props.items():
                    total += 3
                    spec = spec if isinstance(spec, Mapping) else {}
                    enum = spec.get("enum")
                    if isinstance(enum, list):
                        total -= 3
                        for item in enum:
                            total += 3 + len(enc(str(item)))
                    p_type = spec.get("type", "object")
                    p_desc = str(spec.get("description") or "").removesuffix(".")
                    extra = {k: v for k, v in spec.items() if k not in ("type", "description", "enum")}
                    line = f"{key}:{p_type}:{p_desc}"
                    if extra:  # nested schemas: count their JSON so they are not free
                        line += json.dumps(extra, separators=(",", ":"), sort_keys=True)
                    total += len(enc(line))
        return total + 12


_ROLES = ("system", "developer", "user", "assistant", "tool", "function")


@functools.cache
def _role_tokens(encoding: str) -> dict[str, int]:
    enc = get_encoding(encoding)
    return {r: len(enc.encode_ordinary(r)) for r in _ROLES}


def _function_of(tool: ToolLike, i: int) -> Mapping[str, Any]:
    fn = tool.get("function") if tool.get("type") == "function" else tool
    if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
        raise InvalidInputError(
            f"tools[{i}]",
            "a tool needs a name",
            value=tool,
            fix='use {"type": "function", "function": {"name": ..., "parameters": {...}}}',
        )
    return fn
