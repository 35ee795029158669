"""Exact token counts for OpenAI models with tiktoken.

The chat format adds, per OpenAI's published counting guide: 3 tokens per message,
the encoded role, 1 more when the message has a ``name``, and 3 tokens priming the
reply (``gpt-3.5-turbo-0301``: 4 per message and -1 per name). Tool definitions
follow the guide's function-definition formula; tool calls made by the assistant
cost their name and arguments plus 3 framing tokens; images follow the tile and
patch formulas in :mod:`tokenbudget_core.images`.

Per-content counts are cached, so re-counting an unchanged history costs a
dictionary lookup per message instead of a re-tokenisation.

tiktoken's pre-tokenising regex overflows on a run of about a million spaces or tabs (it
panics with ``pyo3_runtime.PanicException``, which is no ``Exception``). On that panic the text
is counted with each long run of one repeated whitespace character shortened by whole blocks
of 4,096 characters, adding back the tokens a block costs (tiktoken encodes such runs
periodically, checked per character), so the count stays exact; when that is not possible
(a long mix of different whitespace characters) the text is counted in pieces and the count
is flagged ``exact=False``.

gpt-oss (the ``o200k_harmony`` encoding) is served in OpenAI's harmony format, not the Chat
Completions one: a fixed system header (model identity, knowledge cutoff, date, reasoning level,
channels), system and developer text wrapped as a developer ``# Instructions`` message, a channel
on every assistant turn, tool calls and results addressed to ``functions.<name>``, tools rendered
as a TypeScript namespace, and a 2-token reply priming. Its requests are counted with that
framing, but a server's template may vary it (another date, reasoning level, a model identity of
its own), so :meth:`TiktokenCounter.count_messages` flags them ``exact=False``; :meth:`TiktokenCounter.count`
of plain text stays exact.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from .counting import TokenCount, TokenCounter, ToolLike, check_text, check_tools
from .encodings import get_encoding
from .errors import InvalidInputError
from .estimating import json_keys, not_json
from .images import openai_image_tokens
from .messages import ImagePart, Message, MessageLike, TextPart, to_message
from .registry import ModelInfo

__all__ = ["TiktokenCounter"]

_REPLY_PRIMING = 3
_TOOL_CALL_FRAMING = 3
# The harmony format of gpt-oss (see the module doc), as its published renderer writes a request.
# The date's digits and the reasoning level tokenise the same for any date and the default level.
_HARMONY_SYSTEM = (
    "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
    "Knowledge cutoff: 2024-06\nCurrent date: 2025-06-28\n\nReasoning: medium\n\n"
    "# Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|>"
)
_HARMONY_PRIMING = "<|start|>assistant"
_HARMONY_INSTRUCTIONS = ("# Instructions\n\n", "\n\n")  # around system and developer text
_HARMONY_CHANNEL = "<|channel|>final"  # on each assistant turn
# A call: <|start|>assistant<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>ARGS<|call|>
_HARMONY_CALL = "<|start|>assistant<|channel|>commentary to=functions. <|constrain|>json<|message|><|call|>"
# A result: <|start|>functions.NAME to=assistant<|channel|>commentary<|message|>RESULT<|end|>
_HARMONY_RESULT = "<|start|>functions. to=assistant<|channel|>commentary<|message|><|end|>"
# With tools: a line in the system header, and the developer message's namespace around them.
_HARMONY_TOOLS = (
    "\nCalls to these tools must go to the commentary channel: 'functions'.",
    "<|start|>developer<|message|># Tools\n\n## functions\n\n"
    "namespace functions {\n\n} // namespace functions<|end|>",
)
_BLOCK = 4_096  # whitespace runs are shortened by whole blocks of this many characters
# A run of one whitespace character other than a line break, at least 3 blocks long.
_LONG_RUN = re.compile(r"([^\S\r\n])\1{" + str(3 * _BLOCK - 1) + ",}")


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
        self._blocks: dict[str, tuple[int, bool]] = {}  # see _block_tokens
        self._messages = _BoundedCache(cache_size)
        self._role_tokens = _role_tokens(model.encoding)
        # gpt-oss: the harmony format's framing (see the module doc), counted but flagged inexact
        self._harmony = model.encoding == "o200k_harmony"
        framing = _harmony_framing(model.encoding) if self._harmony else {}
        self._priming = framing.get("priming", _REPLY_PRIMING)
        self._call_framing = framing.get("call", _TOOL_CALL_FRAMING)
        self._tools_framing = framing.get("tools", 0)
        # Framing of a message per role.
        self._role_framing: dict[str, int] = {
            r: self._per_message + n + framing.get(r, 0) for r, n in self._role_tokens.items()
        }
        # Framing of a plain message per role (tool messages need a call id: never fast-pathed).
        self._fast_roles: dict[object, int] = {r: n for r, n in self._role_framing.items() if r != "tool"}

    @property
    def encoding_name(self) -> str:
        """The tiktoken encoding this counter uses."""
        return self._enc.name

    def _result(self, n: int, exact: bool = True) -> TokenCount:
        return self._make_count(n, exact)

    def _request_result(self, n: int, exact: bool) -> TokenCount:
        """A request's count: never exact in the harmony format (a server's template varies it)."""
        return self._make_count(n, exact and not self._harmony)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (special-token strings are encoded as plain text).

        A text tiktoken panics on (a run of about a million spaces or tabs) is encoded in pieces
        of 65,536 characters: valid ids that decode to the text, but possibly a few more than
        tiktoken's own encoding would have (:meth:`count` stays exact).
        """
        text = check_text(text)
        try:
            return list(self._encode(text))
        except BaseException as e:  # noqa: BLE001 - only tiktoken's panic is handled
            _reraise_unless_panic(e)
        return self._encode_in_pieces(text)

    def decode(self, tokens: Sequence[int]) -> str:
        """Text of token ids."""
        return self._enc.decode(list(tokens))

    def count(self, text: str) -> TokenCount:
        """Tokens in ``text``; special-token strings such as ``<|endoftext|>`` count as plain text."""
        if type(text) is not str:
            check_text(text)
        n = self._texts.get(text)
        if n is None:  # a miss: tokenised, and cached when the count is exact
            return self._result(*self._tokens(text))
        return self._result(n)

    def count_messages(
        self, messages: Sequence[MessageLike], tools: Sequence[ToolLike] | None = None
    ) -> TokenCount:
        """Input tokens of a chat request (messages, reply priming and tool definitions).

        gpt-oss requests are counted in the harmony format, flagged ``exact=False`` (see the
        module doc)."""
        if type(messages) is not list and (
            isinstance(messages, str | bytes | Mapping) or not isinstance(messages, Sequence)
        ):
            raise InvalidInputError(
                "messages", f"expected a list of messages, got {type(messages).__name__}", value=messages
            )
        total = self._priming
        exact = True
        per_name, get_text, fast_roles = self._per_name, self._texts.get, self._fast_roles
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
                        n, ok = self._tokens(content)
                        exact = exact and ok
                    total += framing + n
                    if size == 3:
                        name = m["name"]
                        if type(name) is str:
                            n, ok = self._tokens(name)
                            total += n + per_name
                            exact = exact and ok
                        elif name is not None:  # None is no name (as to_message reads it)
                            to_message(m, where=f"messages[{i}]")  # raises, naming the field
                    continue
            msg = m if type(m) is Message else to_message(m, where=f"messages[{i}]")
            hit = self._messages.get(msg)
            if hit is None:
                hit = self._message_tokens(msg)
                self._messages.put(msg, hit)
            total += hit[0]
            exact = exact and hit[1]
        if tools:
            try:
                total += self._tools_tokens(check_tools(tools)) + self._tools_framing
            except BaseException as e:  # noqa: BLE001 - only tiktoken's panic is handled
                _reraise_unless_panic(e)
                total += self._tools_tokens(check_tools(tools), self._encode_in_pieces) + self._tools_framing
                exact = False
        elif tools is not None:
            check_tools(tools)
        return self._request_result(total, exact)

    def count_message(self, message: MessageLike) -> TokenCount:
        """Tokens one message adds to a request (framing included, reply priming excluded)."""
        n = self.count_messages([message])
        return self._request_result(int(n) - self._priming, n.exact)

    @property
    def reply_priming(self) -> int:
        """Tokens every request costs once on top of its messages: the reply priming (gpt-oss:
        the harmony format's system header too)."""
        return self._priming

    def _tokens(self, text: str, cache: bool = True) -> tuple[int, bool]:
        """Tokens of ``text`` and whether the count is exact (see :meth:`_after_panic`);
        ``cache``: looked up in and kept by the per-text cache (an exact count)."""
        n = self._texts.get(text) if cache else None
        if n is None:
            try:
                n = len(self._encode(text))
            except BaseException as e:  # noqa: BLE001 - only tiktoken's panic is handled
                n, exact = self._after_panic(e, text)
                if not exact:
                    return n, False
            if cache:
                self._texts.put(text, n)
        return int(n), True

    def _after_panic(self, e: BaseException, text: str) -> tuple[int, bool]:
        """Count ``text`` after tiktoken panicked on it (a run of about a million spaces or tabs
        overflows its regex); re-raise ``e`` when it is anything else.

        Each long run of one repeated whitespace character (not a line break) is shortened by
        whole blocks of :data:`_BLOCK` characters and the block's tokens added back: exact, as
        tiktoken encodes such runs with a period that divides the block (checked per character;
        the count is flagged inexact when the check fails). When the shortened text still
        panics (a long mix of whitespace characters), it is counted in pieces, flagged inexact.
        """
        _reraise_unless_panic(e)
        removed = 0
        exact = True
        pieces: list[str] = []
        start = 0
        for run in _LONG_RUN.finditer(text):
            blocks = (run.end() - run.start()) // _BLOCK - 2  # keep 2-3 blocks of the run
            per_block, checked = self._block_tokens(run.group(1))
            exact = exact and checked
            removed += blocks * per_block
            pieces.append(text[start : run.start() + 2 * _BLOCK])
            start = run.start() + (2 + blocks) * _BLOCK
        pieces.append(text[start:])
        short = "".join(pieces)
        try:
            return len(self._encode(short)) + removed, exact
        except BaseException as again:  # noqa: BLE001 - only tiktoken's panic is handled
            _reraise_unless_panic(again)
        return len(self._encode_in_pieces(text)), False

    def _block_tokens(self, char: str) -> tuple[int, bool]:
        """Tokens one block of ``char`` adds to a long run, and whether that is checked to hold."""
        known = self._blocks.get(char)
        if known is None:

            def n(k: int, r: int) -> int:
                return len(self._encode("x" + char * (k * _BLOCK + r) + "y"))

            per_block = n(2, 0) - n(1, 0)
            checks = ((3, 1), (2, 777), (3, _BLOCK - 1))
            known = per_block, all(n(k, r) - n(k - 1, r) == per_block for k, r in checks)
            self._blocks[char] = known
        return known

    def _encode_in_pieces(self, text: str) -> list[int]:
        """Token ids of ``text`` encoded in pieces of at most 65,536 characters: no panic, but a
        piece boundary can split what tiktoken would encode as one token (not exact)."""
        step = 65_536
        return [t for i in range(0, len(text), step) for t in self._encode(text[i : i + step])]

    def _message_tokens(self, m: Message) -> tuple[int, bool]:
        n = self._role_framing[m.role]
        exact = True
        texts: list[tuple[str, bool]] = []
        if isinstance(m.content, str):
            texts.append((m.content, True))
        else:
            for part in m.content:
                if isinstance(part, TextPart):
                    texts.append((part.text, False))
                elif isinstance(part, ImagePart):
                    img = openai_image_tokens(part, self.model.canonical)
                    n += img.tokens
                    exact = exact and img.exact
        if m.name is not None:
            texts.append((m.name, False))
            n += self._per_name
        for call in m.tool_calls:
            texts += ((call.name, False), (call.arguments, False))
            n += self._call_framing
        for text, cache in texts:
            k, ok = self._tokens(text, cache)
            n += k
            exact = exact and ok
        return n, exact

    def _tools_tokens(self, tools: list[ToolLike], encode: Any = None) -> int:
        """OpenAI's published formula for function definitions.

        A property's ``enum`` is a list (a tuple counts as the list the SDK sends); any other
        value is refused (:class:`~tokenbudget_core.errors.InvalidInputError`), as JSON Schema
        and the API refuse it.

        A schema with ``$defs`` / ``definitions`` (nested pydantic models) is counted with its
        local ``$ref`` pointers inlined, as the same schema written out in full; a definition that
        cannot be inlined (a recursive one, past its first expansion; one never referenced) is
        counted as its JSON on top, so the definitions sent are never free."""
        enc = encode or self._encode
        total = 0
        for i, tool in enumerate(tools):
            fn = _function_of(tool, i)
            total += self._func_init
            desc = str(fn.get("description") or "").removesuffix(".")
            total += len(enc(f"{fn['name']}:{desc}"))
            params = fn.get("parameters") or fn.get("input_schema") or {}
            if isinstance(params, Mapping) and any(k in params for k in _DEF_KEYS):
                params, leftover = _inline_refs(params)
                if leftover:  # definitions not inlined (recursive, unused): their JSON
                    total += len(enc(_defs_json(leftover, tool, fn, i)))
            props = params.get("properties") if isinstance(params, Mapping) else None
            if isinstance(props, Mapping) and props:
                total += 3  # properties header
                for key, spec in props.items():
                    total += 3
                    spec = spec if isinstance(spec, Mapping) else {}
                    enum = spec.get("enum")
                    if isinstance(enum, list | tuple):  # a tuple is sent as a JSON array too
                        total -= 3
                        for item in enum:
                            total += 3 + len(enc(str(item)))
                    elif enum is not None:  # no JSON schema: the API refuses it, a count would guess
                        raise InvalidInputError(
                            f"{_schema_field(tool, fn, i)}.properties.{key}.enum",
                            f"must be a list of the allowed values, got {type(enum).__name__}",
                            value=enum,
                            fix="give the allowed values as a list (a JSON schema enum is an array), "
                            'e.g. "enum": ["celsius", "fahrenheit"]',
                        )
                    p_type = spec.get("type", "object")
                    p_desc = str(spec.get("description") or "").removesuffix(".")
                    extra = {k: v for k, v in spec.items() if k not in ("type", "description", "enum")}
                    line = f"{key}:{p_type}:{p_desc}"
                    if extra:  # nested schemas: count their JSON so they are not free
                        line += _extra_json(extra, tool, fn, i, key)
                    total += len(enc(line))
        return total + 12


_ROLES = ("system", "developer", "user", "assistant", "tool", "function")


def _reraise_unless_panic(e: BaseException) -> None:
    """Re-raise ``e`` unless it is tiktoken's ``pyo3_runtime.PanicException`` (a BaseException
    that is no Exception, raised when its regex overflows on a huge whitespace run)."""
    if type(e).__name__ != "PanicException":
        raise e


@functools.cache
def _harmony_framing(encoding: str) -> dict[str, int]:
    """The harmony format's framing in ``encoding``, on top of the Chat Completions framing the
    counter adds (3 per message and the role): per role (system and developer text wrapped as
    ``# Instructions``, an assistant turn's channel, a tool result's address), ``priming`` (the
    system header and ``<|start|>assistant``), ``call`` (a tool call's framing, its name and
    arguments apart) and ``tools`` (the tools' namespace and system line)."""
    enc = get_encoding(encoding)

    def n(text: str) -> int:
        return len(enc.encode(text, allowed_special="all"))

    instructions = sum(n(t) for t in _HARMONY_INSTRUCTIONS)
    return {
        "system": instructions,
        "developer": instructions,
        "assistant": n(_HARMONY_CHANNEL),
        "tool": max(0, n(_HARMONY_RESULT) - 3 - n("tool")),
        "function": max(0, n(_HARMONY_RESULT) - 3 - n("function")),
        "priming": n(_HARMONY_SYSTEM) + n(_HARMONY_PRIMING),
        "call": n(_HARMONY_CALL),
        "tools": sum(n(t) for t in _HARMONY_TOOLS),
    }


@functools.cache
def _role_tokens(encoding: str) -> dict[str, int]:
    enc = get_encoding(encoding)
    return {r: len(enc.encode_ordinary(r)) for r in _ROLES}


def _extra_json(extra: dict[Any, Any], tool: ToolLike, fn: Mapping[str, Any], i: int, key: object) -> str:
    """The JSON of a property's nested schema, keys sorted. Keys of mixed types (``1`` and
    ``"x"``) are sorted as the strings JSON makes of them (the SDKs send ``"1"``).

    Raises:
        InvalidInputError: A value is not JSON (an Enum, a set, an object...): the OpenAI SDK
            could not send it either.
    """
    try:
        return _dumps(extra)
    except (TypeError, ValueError, RecursionError) as e:
        raise not_json(f"{_schema_field(tool, fn, i)}.properties.{key}", extra, e) from e


def _dumps(value: object) -> str:
    """Compact JSON of ``value``, keys sorted (mixed key types sorted as JSON's strings)."""
    try:
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    except (TypeError, ValueError, RecursionError):
        pass  # only now pay for a second try, keys as JSON strings
    return json.dumps(json_keys(value), separators=(",", ":"), sort_keys=True)


def _schema_field(tool: ToolLike, fn: Mapping[str, Any], i: int) -> str:
    """The field name of a tool's parameter schema, for errors (``tools[0].function.parameters``)."""
    schema = "parameters" if fn.get("parameters") or not fn.get("input_schema") else "input_schema"
    return f"tools[{i}]{'.function' if fn is not tool else ''}.{schema}"


def _defs_json(leftover: dict[str, object], tool: ToolLike, fn: Mapping[str, Any], i: int) -> str:
    """The JSON of the definitions :func:`_inline_refs` could not inline, keyed by pointer.

    Raises:
        InvalidInputError: A definition is not JSON.
    """
    try:
        return _dumps(leftover)
    except (TypeError, ValueError, RecursionError) as e:
        params = fn.get("parameters") or fn.get("input_schema") or {}
        key = next((k for k in _DEF_KEYS if k in params), "$defs")
        raise not_json(f"{_schema_field(tool, fn, i)}.{key}", leftover, e) from e


_DEF_KEYS = ("$defs", "definitions")
_MAX_SCHEMA_NODES = 50_000
"""Schema nodes :func:`_inline_refs` may write before it stops inlining (shared definitions
referenced at every level would otherwise grow exponentially)."""
_MISSING = object()


class _TooLarge(Exception):
    """Inlining a schema's ``$ref`` pointers would write more than :data:`_MAX_SCHEMA_NODES` nodes."""


def _inline_refs(params: Mapping[str, Any]) -> tuple[Mapping[str, Any], dict[str, object]]:
    """``params`` without its ``$defs`` / ``definitions``, each local ``$ref`` (``#/...``)
    replaced by the schema it points at (its sibling keys kept), and the definitions left to
    count as JSON, keyed by pointer: a recursive one (inlined once, then its ``$ref`` is left
    in place), one never referenced, and all of them when inlining would grow too large."""
    inliner = _Inliner(params)
    try:
        out = inliner.walk({k: v for k, v in params.items() if k not in _DEF_KEYS})
    except (_TooLarge, RecursionError):
        return params, {f"#/{k}": params[k] for k in _DEF_KEYS if k in params}
    leftover = inliner.leftover
    for key in _DEF_KEYS:
        if key not in params:
            continue
        defs = params[key]
        if not isinstance(defs, Mapping):
            leftover.setdefault(f"#/{key}", defs)
            continue
        for name, schema in defs.items():
            ref = f"#/{key}/{str(name).replace('~', '~0').replace('/', '~1')}"
            if ref not in inliner.expanded:
                leftover.setdefault(ref, schema)
    return (out if isinstance(out, Mapping) else params), leftover


class _Inliner:
    """Walks a schema, inlining local ``$ref`` pointers (see :func:`_inline_refs`)."""

    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root
        self.stack: list[str] = ["#"]  # pointers being inlined: a $ref to one is recursive
        self.expanded: set[str] = set()
        self.leftover: dict[str, object] = {}
        self.nodes = 0
        self.path: set[int] = set()  # containers on the current path (a Python-level cycle)

    def walk(self, node: object) -> object:
        self.nodes += 1
        if self.nodes > _MAX_SCHEMA_NODES:
            raise _TooLarge
        if not isinstance(node, Mapping | list | tuple) or id(node) in self.path:
            return node  # a cycle of Python objects is left for json.dumps to refuse
        self.path.add(id(node))
        try:
            if isinstance(node, Mapping):
                ref = node.get("$ref")
                if isinstance(ref, str) and (ref == "#" or ref.startswith("#/")):
                    target = _pointer(self.root, ref)
                    if target is not _MISSING:
                        if ref not in self.stack:
                            return self._inline(node, ref, target)
                        self.leftover.setdefault(ref, target)  # recursive: counted as JSON
                return {k: self.walk(v) for k, v in node.items()}
            return [self.walk(v) for v in node]
        finally:
            self.path.discard(id(node))

    def _inline(self, node: Mapping[Any, Any], ref: str, target: object) -> object:
        siblings = {k: self.walk(v) for k, v in node.items() if k != "$ref"}
        self.expanded.add(ref)
        self.stack.append(ref)
        try:
            resolved = self.walk(target)
        finally:
            self.stack.pop()
        if isinstance(resolved, Mapping) and all(
            k not in resolved or _same(resolved[k], v) for k, v in siblings.items()
        ):
            return {**resolved, **siblings}
        return {**siblings, "$ref": resolved}  # nothing of either is lost


def _same(a: object, b: object) -> bool:
    """``a == b``, ``False`` when the comparison itself fails (an array's ambiguous truth)."""
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - any failure only means the two are kept apart
        return False


def _pointer(root: Mapping[str, Any], ref: str) -> object:
    """What the local JSON pointer ``ref`` (``#/$defs/Address``) points at in ``root``."""
    node: object = root
    for part in ref.split("/")[1:]:
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list | tuple) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def _function_of(tool: ToolLike, i: int) -> Mapping[str, Any]:
    """The function definition of ``tool``: Chat Completions' nested ``{"type": "function",
    "function": {...}}``, or the tool itself (the Responses API's flat ``{"type": "function",
    "name": ...}``, Anthropic's ``{"name", "input_schema"}``)."""
    fn = tool.get("function") if tool.get("type") == "function" and "function" in tool else tool
    if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
        raise InvalidInputError(
            f"tools[{i}]",
            "a tool needs a name",
            value=tool,
            fix='use {"type": "function", "function": {"name": ..., "parameters": {...}}}',
        )
    return fn
