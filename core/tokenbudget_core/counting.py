"""Counting tokens before a call goes out.

:meth:`TokenCounter.for_model` picks the right counter for a model:

* OpenAI models: :class:`~tokenbudget_core.openai_counting.TiktokenCounter`, exact,
  with the chat-format overhead, tool definitions, tool calls and images;
* Anthropic models: :class:`~tokenbudget_core.anthropic_counting.AnthropicTokenCounter`,
  exact through the ``messages.count_tokens`` API, an estimate flagged
  ``exact=False`` when that API cannot be reached;
* other providers: :class:`~tokenbudget_core.estimating.EstimatingTokenCounter`,
  always flagged ``exact=False``.

Every count is a :class:`TokenCount`: an ``int`` that also says how it was obtained.

Content a :class:`~tokenbudget_core.messages.Message` cannot represent (a PDF or other file,
audio, a provider's server-tool result) is counted by one rule the adapters share,
:func:`estimate_block`: the block's text in its place, its files at a documented estimate
(:data:`PDF_PAGE_TOKENS` per page, :data:`FILE_TOKENS` when the size cannot be read), the total
flagged ``exact=False`` by :func:`estimated_count`.
"""

from __future__ import annotations

import abc
import base64
import binascii
import bisect
import itertools
import json
import logging
import math
import re
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .errors import REGISTER_OR_FALLBACK, InvalidInputError, UnknownModelError
from .messages import Message, MessageLike
from .registry import ModelInfo, ModelRegistry, check_registry, default_registry

if TYPE_CHECKING:
    from .calibration import Calibration

__all__ = [
    "FILE_TOKENS",
    "PDF_PAGE_TOKENS",
    "BlockEstimate",
    "SupportsTokenCount",
    "TokenCount",
    "TokenCounter",
    "ToolLike",
    "add_file_tokens",
    "countable_tools",
    "estimate_block",
    "estimated_count",
    "is_function_tool",
    "resolve_counter",
]

logger = logging.getLogger("tokenbudget.counting")

ToolLike = Mapping[str, Any]
"""A tool definition: OpenAI's ``{"type": "function", "function": {...}}`` or Anthropic's
``{"name", "description", "input_schema"}``."""


class TokenCount(int):
    """A token count that remembers how it was obtained.

    It is an ``int`` (compare it, add it, pass it anywhere an int goes) with:

    Attributes:
        exact: ``False`` when the figure is an estimate (provider API unreachable,
            a tokenizer nobody publishes, an image whose size is unknown).
        model: The model name the count is for.
        encoding: The tiktoken encoding used, if any.
        method: ``tiktoken``, ``anthropic-api`` or ``estimate``.
    """

    exact: bool
    model: str
    encoding: str | None
    method: str

    def __new__(
        cls, value: int, *, exact: bool, model: str, method: str, encoding: str | None = None
    ) -> TokenCount:
        obj = super().__new__(cls, value)
        obj.exact = exact
        obj.model = model
        obj.encoding = encoding
        obj.method = method
        return obj

    @classmethod
    def maker(
        cls, *, model: str, method: str, encoding: str | None = None
    ) -> Callable[[int, bool], TokenCount]:
        """A constructor of counts of one counter: ``make(value, exact)`` builds the same
        :class:`TokenCount` as the class does, about three times faster (counting hot paths)."""
        attrs = {
            exact: {"exact": exact, "model": model, "encoding": encoding, "method": method}
            for exact in (True, False)
        }
        new = int.__new__

        def make(value: int, exact: bool = True) -> TokenCount:
            obj = new(cls, value)
            obj.__dict__ = attrs[exact].copy()
            return obj

        return make

    def __reduce__(self) -> tuple[Callable[..., TokenCount], tuple[int, bool, str, str, str | None]]:
        """Pickle, ``copy`` and ``deepcopy`` rebuild the count with its flags (``int``'s own
        protocol would call ``__new__`` with the value alone, which the keyword-only flags
        refuse): counts cross process pools and sit in pickled caches."""
        return (_rebuild_count, (int(self), self.exact, self.model, self.method, self.encoding))

    def __str__(self) -> str:
        return str(int(self))

    def __repr__(self) -> str:
        return f"TokenCount({int(self)}, exact={self.exact}, model={self.model!r}, method={self.method!r})"

    def as_dict(self) -> dict[str, Any]:
        """The count and how it was obtained, for JSON output."""
        return {
            "tokens": int(self),
            "exact": self.exact,
            "model": self.model,
            "encoding": self.encoding,
            "method": self.method,
        }


def _rebuild_count(value: int, exact: bool, model: str, method: str, encoding: str | None) -> TokenCount:
    """A :class:`TokenCount` from what :meth:`TokenCount.__reduce__` saved (module-level, so
    pickle can name it)."""
    return TokenCount(value, exact=exact, model=model, method=method, encoding=encoding)


@runtime_checkable
class SupportsTokenCount(Protocol):
    """The injection seam for anything that counts tokens (memory, budgets, routers)."""

    def count(self, text: str) -> int:
        """Tokens in plain text."""
        ...

    def count_messages(self, messages: Sequence[MessageLike], tools: Sequence[ToolLike] | None = None) -> int:
        """Tokens a chat request with these messages (and tools) consumes as input."""
        ...


class TokenCounter(abc.ABC):
    """Base class of the per-provider counters. Use :meth:`for_model` to get one.

    Example:
        >>> counter = TokenCounter.for_model("gpt-4o")
        >>> counter.count("Hello, world!")
        TokenCount(4, exact=True, model='gpt-4o', method='tiktoken')
        >>> int(counter.count_messages([{"role": "user", "content": "Hello"}]))
        8
    """

    counts_builtin_tools: bool = False
    """Whether the counter counts built-in (server) tool definitions, sent as the host sends them
    (Claude's: its count request carries each typed tool; the estimating counter's: it reads
    their JSON). Not tiktoken's: OpenAI publishes no count of its built-in tools
    (``web_search_preview``, ``file_search``...). See :func:`countable_tools`."""

    def __init__(self, model: ModelInfo) -> None:
        if not isinstance(model, ModelInfo):
            raise InvalidInputError(
                "model",
                f"must be a ModelInfo, got {type(model).__name__}",
                value=model,
                fix=f"TokenCounter.for_model({model!r}) picks the counter of a model name"
                if isinstance(model, str)
                else "TokenCounter.for_model('model-name'), or pass registry.get('model-name')",
            )
        self.model = model

    @classmethod
    def for_model(
        cls,
        model: str,
        *,
        fallback: str | None = None,
        registry: ModelRegistry | None = None,
        anthropic_client: Any = None,
        anthropic_async_client: Any = None,
        timeout: float = 5.0,
        calibration: Calibration | None = None,
    ) -> TokenCounter:
        """Return the counter for ``model``.

        Args:
            model: A model name (``gpt-4o``, ``claude-sonnet-4-5-20250929``, ``openai/gpt-4.1``...).
            fallback: A known model to count with, on purpose, when ``model`` is unknown.
            registry: The model registry (default: the process-wide one).
            anthropic_client: An ``anthropic.Anthropic`` client for exact Claude counts;
                by default one is made when ``ANTHROPIC_API_KEY`` is set.
            anthropic_async_client: An ``anthropic.AsyncAnthropic`` client for the async twins
                (its ``messages.count_tokens`` a coroutine function).
            timeout: Seconds to wait for a provider's counting API before estimating.
            calibration: Where estimate correction factors are learned (default: process-wide).

        Raises:
            UnknownModelError: ``model`` is unknown and no ``fallback`` was given.
            InvalidInputError: ``timeout`` is not a finite positive number, ``registry`` is not a
                ``ModelRegistry``, ``calibration`` not a ``Calibration``, ``fallback`` is
                given and is not a non-empty model name, or ``anthropic_client`` is not a sync
                Anthropic client (a key string, an async client) or ``anthropic_async_client``
                not an async one (a sync client).
        """
        check_timeout(timeout)
        if anthropic_client is not None or anthropic_async_client is not None:
            # checked whatever the model: a key string or a sync client passed as the async one
            # would otherwise make every Claude count a silent estimate
            from .anthropic_counting import check_anthropic_client

            if anthropic_client is not None:
                check_anthropic_client(anthropic_client, "anthropic_client")
            if anthropic_async_client is not None:
                check_anthropic_client(anthropic_async_client, "anthropic_async_client", async_=True)
        if calibration is not None:
            from .calibration import check_calibration

            check_calibration(calibration)
        try:
            info = check_registry(registry).get(model, fallback=fallback)
        except UnknownModelError as e:  # this call takes a fallback: say so
            raise e.with_fix(REGISTER_OR_FALLBACK) from None
        if info.tokenizer == "tiktoken":
            from .openai_counting import TiktokenCounter

            return TiktokenCounter(info)
        if info.tokenizer == "anthropic":
            from .anthropic_counting import AnthropicTokenCounter

            return AnthropicTokenCounter(
                info,
                client=anthropic_client,
                async_client=anthropic_async_client,
                timeout=timeout,
                calibration=calibration,
            )
        from .estimating import EstimatingTokenCounter

        return EstimatingTokenCounter(info, calibration=calibration)

    @property
    def name(self) -> str:
        """The model name this counter counts for."""
        return self.model.name

    @abc.abstractmethod
    def count(self, text: str) -> TokenCount:
        """Tokens in plain text (no chat framing).

        Raises:
            InvalidInputError: ``text`` is not a string.
        """

    @abc.abstractmethod
    def count_messages(
        self, messages: Sequence[MessageLike], tools: Sequence[ToolLike] | None = None
    ) -> TokenCount:
        """Input tokens of a chat request with these messages and tool definitions.

        Args:
            messages: OpenAI-style dicts or :class:`~tokenbudget_core.messages.Message` objects.
            tools: Tool definitions, OpenAI or Anthropic style.

        Raises:
            InvalidInputError: ``messages`` is not a list of messages (``None``, a string, a
                dict), named ``messages``; or ``tools`` is malformed. The Claude counter raises
                the first as :class:`~tokenbudget_core.errors.InvalidMessageError` (a subclass,
                as :func:`~tokenbudget_core.messages.to_messages` does), the others as
                ``InvalidInputError`` itself: catch ``InvalidInputError`` for every bad input.
            InvalidMessageError: A message is malformed; the error names it (``messages[3].role``).
        """

    def count_output(self, text: str) -> TokenCount:
        """Tokens of ``text`` as a reply's output (the estimate of a stream cut short): the text
        alone, with no message framing. The same as :meth:`count` unless a counter's
        :meth:`count` frames its text (Claude's counts it as a user message).

        Raises:
            InvalidInputError: ``text`` is not a string.
        """
        return self.count(text)

    @property
    def reply_priming(self) -> int:
        """Tokens a chat request costs once, on top of its messages (OpenAI: 3)."""
        return 3

    @abc.abstractmethod
    def count_message(self, message: MessageLike) -> TokenCount:
        """Tokens one message adds to a request: framing included, reply priming excluded.

        This is what memory and fitting sum per message (cached, so a growing history is
        never re-tokenised). For Claude it is the calibrated estimate (``exact=False``):
        a per-message API call would cost more than it saves.

        Raises:
            InvalidMessageError: The message is malformed.
        """

    async def acount(self, text: str) -> TokenCount:
        """Async twin of :meth:`count`."""
        return self.count(text)

    async def acount_messages(
        self, messages: Sequence[MessageLike], tools: Sequence[ToolLike] | None = None
    ) -> TokenCount:
        """Async twin of :meth:`count_messages`."""
        return self.count_messages(messages, tools)


def resolve_counter(model: str | TokenCounter) -> TokenCounter:
    """A counter from a model name, or the counter itself.

    Raises:
        InvalidInputError: ``model`` is neither.
        UnknownModelError: The model name is unknown.
    """
    if isinstance(model, TokenCounter):
        return model
    if isinstance(model, str):
        return TokenCounter.for_model(model)
    raise InvalidInputError("model", "must be a model name or a TokenCounter", value=model)


def check_timeout(timeout: object, field: str = "timeout") -> float:
    """``timeout`` as seconds: a finite number > 0 (an int or float, not a bool).

    Raises:
        InvalidInputError: Anything else (NaN, infinity, zero, negative...), named ``field``.
    """
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout < math.inf:
        raise InvalidInputError(field, "must be a finite, positive number of seconds", value=timeout)
    return timeout


def check_text(text: object, field: str = "text") -> str:
    """Validate that ``text`` is a string (shared by the counters)."""
    if not isinstance(text, str):
        raise InvalidInputError(
            field,
            f"must be a string, got {type(text).__name__}",
            value=text,
            fix="convert it with str() first",
        )
    return text


def as_counter(counter: object, *, field: str = "counter") -> Any:
    """``counter`` when it can count tokens (it has a callable ``count(text)``); a model name (a
    ``str``: ``str.count`` would count a substring) becomes that model's :class:`TokenCounter`.

    The one check of every ``counter=`` argument. Builtin sequences (``list``, ``tuple``,
    ``bytes``...) have a ``count`` method too, which would "count" 0 tokens: they are refused.

    Raises:
        InvalidInputError: ``counter`` is neither a counter nor a non-empty model name (named ``field``).
        UnknownModelError: ``counter`` names a model the registry does not know (named ``field``).
    """
    if isinstance(counter, str):
        if not counter.strip():
            raise InvalidInputError(
                field, "must be a token counter or a model name, got an empty string", value=counter,
                fix="pass TokenCounter.for_model('<model>') or the model's name",
            )  # fmt: skip
        default_registry().get(counter, field=field)  # an unknown name is named as this argument
        return TokenCounter.for_model(counter)
    if isinstance(counter, bytes | bytearray | memoryview | Sequence | Mapping) or not callable(
        getattr(counter, "count", None)
    ):
        raise InvalidInputError(
            field,
            f"must be a token counter (with count(text)) or a model name, not {type(counter).__name__}",
            value=counter,
            fix="pass TokenCounter.for_model('<model>') or the model's name",
        )
    return counter


def counted(n: object, counter: object, *, field: str = "counter") -> int:
    """A counter's answer, checked: a number of tokens (an ``int`` >= 0, not a ``bool``), never
    coerced with ``int()`` (a float, NaN, ``None`` or a negative count is the counter's bug).

    Raises:
        InvalidInputError: Anything else, named ``field``, naming the counter and the value.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise InvalidInputError(
            field, f"{type(counter).__name__}.count() returned {n!r}, not a number of tokens", value=n,
            fix="return a non-negative int from count(text) (and acount)",
        )  # fmt: skip
    return int(n)


def check_tool_list(tools: object) -> list[Any]:
    """``tools`` as a list: ``None`` is none; a string, bytes, a dict (one tool) or a non-iterable
    (a number, ``object()``) is refused. The items are left to the caller (dicts, or a
    framework's tool objects).

    Raises:
        InvalidInputError: Named ``tools``.
    """
    if tools is None:
        return []
    if isinstance(tools, str | bytes | Mapping) or not isinstance(tools, Iterable):
        raise InvalidInputError(
            "tools",
            f"must be a list of tool definitions, got {type(tools).__name__}",
            value=tools,
            fix="wrap a single tool in a list, or pass None for no tools",
        )
    return list(tools)


def check_tools(tools: object) -> list[ToolLike]:
    """Validate a tools argument: ``None`` or a list of dicts."""
    out: list[ToolLike] = []
    for i, tool in enumerate(check_tool_list(tools)):
        if not isinstance(tool, Mapping):
            raise InvalidInputError(f"tools[{i}]", "a tool definition must be a dict", value=tool)
        _check_schema(tool, f"tools[{i}]")
        out.append(tool)
    return out


def _check_schema(tool: Mapping[str, Any], where: str) -> None:
    """A tool's parameter schema (``parameters`` / ``input_schema``) and its ``properties`` are
    JSON objects when given: anything else would be counted as no parameters at all."""
    fn = tool.get("function")
    if isinstance(fn, Mapping):
        tool, where = fn, f"{where}.function"
    for key in ("parameters", "input_schema"):
        schema = tool.get(key)
        if schema is None:
            continue
        if not isinstance(schema, Mapping):
            raise InvalidInputError(
                f"{where}.{key}",
                f"must be a JSON schema object (a dict), got {type(schema).__name__}",
                value=schema,
                fix='e.g. {"type": "object", "properties": {"city": {"type": "string"}}}',
            )
        props = schema.get("properties")
        if props is not None and not isinstance(props, Mapping):
            raise InvalidInputError(
                f"{where}.{key}.properties",
                f"must map each parameter's name to its schema (a dict), got {type(props).__name__}",
                value=props,
                fix='e.g. {"city": {"type": "string"}}',
            )


# -- content blocks the core cannot represent ------------------------------------------------------

PDF_PAGE_TOKENS = 4_600
"""Estimated input tokens of one PDF page: 3,000 for its text (the top of Anthropic's published
1,500-3,000 per page) plus an image of the page at Claude's 1,600-token cap (Anthropic and OpenAI
both send a PDF as each page's text and image)."""
FILE_TOKENS = PDF_PAGE_TOKENS
"""Estimated input tokens of a file whose size cannot be read: a URL, a file id, a local path,
audio or video, a PDF whose pages cannot be counted. One PDF page's worth: never zero, but not an
upper bound either (the count is flagged, and the usage the provider reports is what is charged)."""

_PAYLOAD_KEYS = frozenset({"base64", "data", "file_data"})
_REFERENCE_KEYS = frozenset({"url", "file_id", "path"})
_MIME_KEYS = ("mime_type", "media_type", "document_mimetype", "image_mimetype", "audio_mimetype")
_FILE_KINDS = frozenset(
    {"file", "document", "audio", "video", "image", "input_file", "input_audio", "input_image"}
)
_PDF_PAGE = re.compile(rb"/Type\s*/Page(?![A-Za-z])")
_PDF_OBJSTM = re.compile(rb"/Type\s*/ObjStm(?![A-Za-z])")
_PDF_STREAM = re.compile(rb"(?<![A-Za-z])stream(?:\r\n|\n|\r)")
_PDF_INFLATE_LIMIT = 64 * 1024 * 1024
"""Bytes of object streams a PDF's page count may inflate, in all (a zip bomb stops there)."""
_PDF_MAX_STREAMS = 10_000
"""Object streams a PDF's page count may inflate."""
_PDF_DICT_WINDOW = 16_384
"""Bytes after an object stream's ``/Type /ObjStm`` where its ``stream`` keyword is looked for."""
_DATA_URL = re.compile(r"data:([^;,]*)(?:;[^,]*)?;base64,", re.ASCII)


def is_function_tool(tool: Mapping[str, Any]) -> bool:
    """An OpenAI (``function``) or Anthropic (``input_schema``) function definition, or the
    Responses API's flat one (``{"type": "function", "name": ..., "parameters": ...}``); not a
    built-in (server) tool."""
    return (
        "function" in tool
        or "input_schema" in tool
        or (tool.get("type") == "function" and isinstance(tool.get("name"), str))
    )


_UNCOUNTED_SEEN: set[tuple[str, str]] = set()
"""(model, tool type) pairs already logged as not counted (see :func:`countable_tools`)."""


def countable_tools(counter: object, model: str, tools: Iterable[object]) -> list[dict[str, Any]]:
    """The tool definitions of a call ``counter`` counts: every function tool, and the built-in
    ones too when the counter counts them (:attr:`TokenCounter.counts_builtin_tools`). A
    built-in tool it cannot count is left out (logged once per model and tool type): the
    usage the provider reports is what the call is charged. Items that are not mappings are
    skipped."""
    out: list[dict[str, Any]] = []
    builtin = getattr(counter, "counts_builtin_tools", False) is True
    for tool in tools:
        if not isinstance(tool, Mapping):
            continue
        if not builtin and not is_function_tool(tool):
            seen = (model, str(tool.get("type")))
            if seen not in _UNCOUNTED_SEEN and len(_UNCOUNTED_SEEN) < 1_000:
                _UNCOUNTED_SEEN.add(seen)
                logger.info(
                    "tokenbudget: %s's counter cannot count the built-in tool %r: its tokens are "
                    "not reserved (the usage the provider reports is charged)",
                    *seen,
                )
            continue
        out.append(dict(tool))
    return out


@dataclass(frozen=True, kw_only=True, slots=True)
class BlockEstimate:
    """How a content block the core's :class:`~tokenbudget_core.messages.Message` cannot
    represent is counted (see :func:`estimate_block`)."""

    text: str
    """Counted as text in the block's place: the block as JSON with its binary payloads left
    out, then any payload that decodes to text."""
    file_tokens: int
    """The estimate for the files it carries, added to the count."""


def estimate_block(block: object) -> BlockEstimate:
    """The rule for a content block the core cannot represent: what to count, and how much to add.

    The rule, shared by every adapter:

    * the block is counted as its JSON text, binary payloads left out (documents' titles and
      text, server-tool results, citations: everything the provider reads as text);
    * a binary payload (``bytes``, a ``data:...;base64,`` URL, or base64 under ``base64``,
      ``data`` or ``file_data``) that is a PDF counts :data:`PDF_PAGE_TOKENS` per page (pages
      read from the file), one whose mime type is ``text/*`` or that decodes to UTF-8 text is
      counted as that text, any other counts :data:`FILE_TOKENS`;
    * a file, document, audio, video or image block that carries no payload but a reference
      (``url``, ``file_id``, ``path``) counts :data:`FILE_TOKENS`.

    Args:
        block: The block as plain data (a dict, or a pydantic block's ``model_dump()``).

    Example:
        >>> pdf = {"type": "file", "base64": "JVBERi0xLjQK", "mime_type": "application/pdf"}
        >>> estimate_block(pdf).file_tokens == FILE_TOKENS  # a PDF whose pages cannot be read
        True
    """
    files: list[int] = []
    texts: list[str] = []
    scrubbed = _scrub(block, None, files, texts)
    if not files and not texts and isinstance(block, Mapping):
        kind = block.get("type") or block.get("block_type")
        if kind in _FILE_KINDS and _has_reference(block):
            files.append(FILE_TOKENS)
    text = json.dumps(scrubbed, ensure_ascii=False, default=str)
    return BlockEstimate(text="\n".join([text, *texts]), file_tokens=sum(files))


def add_file_tokens(count: int, messages: Iterable[MessageLike]) -> int:
    """``count`` of ``messages`` (what a counter read in their parts) plus the ``file_tokens`` of
    the stand-ins among them (:attr:`~tokenbudget_core.messages.Message.file_tokens`), flagged
    as an estimate; ``count`` itself when there is no stand-in.

    Counters count what a message says; this is where the files a stand-in leaves out are added,
    once, for any counter (custom ones included).

    Example:
        >>> pdf = Message(role="user", content="[a PDF]", file_tokens=3_000)
        >>> n = add_file_tokens(TokenCounter.for_model("gpt-4o").count_messages([pdf]), [pdf])
        >>> n > 3_000, n.exact
        (True, False)
    """
    files: int | None = None
    for m in messages:
        if type(m) is Message and m.file_tokens is not None:
            files = (files or 0) + m.file_tokens
    return count if files is None else estimated_count(count, files)


def estimated_count(count: int, file_tokens: int = 0) -> TokenCount:
    """``count`` (a request counted with :func:`estimate_block` texts in place) plus the blocks'
    ``file_tokens``, flagged ``exact=False`` with ``method="estimate"``."""
    model = count.model if isinstance(count, TokenCount) else ""
    encoding = count.encoding if isinstance(count, TokenCount) else None
    return TokenCount(
        int(count) + file_tokens, exact=False, model=model, method="estimate", encoding=encoding
    )


def _scrub(value: object, mime: str | None, files: list[int], texts: list[str]) -> object:
    """``value`` with its binary payloads replaced by ``""`` (their estimates go to ``files``)."""
    if isinstance(value, Mapping):
        found = next((m for k in _MIME_KEYS if isinstance(m := value.get(k), str) and m), None)
        mime = found or mime
        out: dict[str, object] = {}
        for key, item in value.items():
            payload = _payload(str(key), item, mime)
            if payload is None:
                out[str(key)] = _scrub(item, mime, files, texts)
            else:
                out[str(key)] = ""
                _estimate_payload(*payload, files, texts)
        return out
    if isinstance(value, list | tuple):
        return [_scrub(item, mime, files, texts) for item in value]
    if isinstance(value, bytes | bytearray):
        _estimate_payload(_b64_or_raw(bytes(value)), mime, files, texts)
        return ""
    if isinstance(value, str) and (m := _DATA_URL.match(value)):
        _estimate_payload(_b64(value[m.end() :]) or b"", m.group(1) or mime, files, texts)
        return ""
    return value


def _payload(key: str, value: object, mime: str | None) -> tuple[bytes, str | None] | None:
    """The decoded payload under ``key``, with its mime type; ``None`` when it is not one."""
    if isinstance(value, bytes | bytearray):
        return _b64_or_raw(bytes(value)), mime
    if not isinstance(value, str) or key not in _PAYLOAD_KEYS:
        return None
    if m := _DATA_URL.match(value):
        return _b64(value[m.end() :]) or b"", m.group(1) or mime
    if key != "base64" and mime is not None and mime.startswith("text/"):
        return None  # a text document's data is its text
    data = _b64(value)
    return None if data is None else (data, mime)


def _b64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _b64_or_raw(data: bytes) -> bytes:
    """Bytes kept base64-encoded (as LlamaIndex keeps them) decoded, else the bytes themselves."""
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return data


def _estimate_payload(data: bytes, mime: str | None, files: list[int], texts: list[str]) -> None:
    if data.startswith(b"%PDF"):
        pages = _pdf_pages(data)
        files.append(pages * PDF_PAGE_TOKENS if pages else FILE_TOKENS)
        return
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and ((mime or "").startswith("text/") or "\x00" not in text):
        texts.append(text)
    else:
        files.append(FILE_TOKENS)


def _pdf_pages(data: bytes) -> int:
    """The page objects (``/Type /Page``) of a PDF: those written plainly, plus those in its
    compressed object streams (``/Type /ObjStm``, PDF 1.5+, e.g. pdflatex's default), inflated
    with zlib up to :data:`_PDF_INFLATE_LIMIT` bytes in all and :data:`_PDF_MAX_STREAMS`
    streams. A stream that does not inflate (another filter, encrypted, damaged) is skipped;
    0 when no page is found."""
    pages = len(_PDF_PAGE.findall(data))
    budget = _PDF_INFLATE_LIMIT
    view = memoryview(data)
    ends: list[int] | None = None  # where each "endstream" starts, found once (bisected below)
    headers = itertools.chain(_PDF_OBJSTM.finditer(data), [None])
    for n, (found, following) in enumerate(itertools.pairwise(headers)):
        if n >= _PDF_MAX_STREAMS or budget <= 0 or found is None:
            break
        # the stream's dictionary: up to the next header, so no byte is searched twice
        window = min(len(data), found.end() + _PDF_DICT_WINDOW)
        window = window if following is None else min(window, following.start())
        endobj = data.find(b"endobj", found.end(), window)
        start = _PDF_STREAM.search(data, found.end(), window if endobj < 0 else endobj)
        if start is None:
            continue
        if ends is None:
            ends = [m.start() for m in re.finditer(rb"endstream", data)]
        k = bisect.bisect_left(ends, start.end())
        stop = min(ends[k] if k < len(ends) else len(data), start.end() + budget + 1_048_576)
        try:
            inflated = zlib.decompressobj().decompress(view[start.end() : stop], budget)
        except zlib.error:
            continue
        budget -= len(inflated)
        pages += len(_PDF_PAGE.findall(inflated))
    return pages


def _has_reference(value: object) -> bool:
    """A ``url``, ``file_id`` or ``path`` is set somewhere in ``value``."""
    if isinstance(value, Mapping):
        return any(
            (k in _REFERENCE_KEYS and v not in (None, "")) or _has_reference(v) for k, v in value.items()
        )
    if isinstance(value, list | tuple):
        return any(_has_reference(v) for v in value)
    return False
