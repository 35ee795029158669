"""Reading token usage out of provider responses, each provider's semantics applied.

Every function returns a :class:`~tokenbudget_core.usage.Usage` in the one
convention of this package (``input_tokens`` counts *all* input, cache reads and
writes included; ``reasoning_tokens`` are part of ``output_tokens``). Providers
disagree on that convention, which is what this module exists for:

* **OpenAI Chat Completions**: ``prompt_tokens`` includes
  ``prompt_tokens_details.cached_tokens``; ``completion_tokens`` includes
  ``completion_tokens_details.reasoning_tokens``.
* **OpenAI Responses**: ``input_tokens`` includes ``input_tokens_details.cached_tokens``;
  ``output_tokens`` includes ``output_tokens_details.reasoning_tokens``.
* **Anthropic Messages**: ``input_tokens`` *excludes* ``cache_read_input_tokens`` and
  ``cache_creation_input_tokens``, so they are added here;
  ``cache_creation.ephemeral_1h_input_tokens`` gives the 1-hour cache writes.
* **LangChain** ``usage_metadata``: ``input_tokens`` includes
  ``input_token_details.cache_read`` and ``cache_creation``; keys may carry a
  service-tier prefix (``priority_cache_read``, ``flex_reasoning``).
* **Google Gemini** ``usage_metadata``: ``prompt_token_count`` includes
  ``cached_content_token_count``; ``thoughts_token_count`` is billed as output but *not* part of
  ``candidates_token_count``, so it is added to the output here; ``tool_use_prompt_token_count``
  (the prompt of a built-in tool: search results, code output) is billed as input, so added there.
* **Amazon Bedrock Converse**: ``inputTokens`` *excludes* ``cacheReadInputTokens`` and
  ``cacheWriteInputTokens``, so they are added here (as for Anthropic); ``cacheDetails``
  (``[{"ttl": "1h", "inputTokens": n}, ...]``) gives the 1-hour cache writes.
* **Ollama**: ``prompt_eval_count`` in, ``eval_count`` out, at the response's top level. A
  response with ``eval_count`` alone (a prompt served from Ollama's KV cache) reports no input:
  its output is exact, its input 0 and the usage flagged ``estimated`` (the ledger charges the
  counted input in its place).
* **LlamaIndex** ``ChatResponse.raw``: the provider's own response; its shape is detected.

Each function accepts SDK objects (anything with ``model_dump()``) or plain dicts,
a whole response or just its ``usage`` part. Missing, negative, boolean or
non-integer figures raise :class:`~tokenbudget_core.errors.InvalidInputError`
naming the field, e.g. ``response.usage.prompt_tokens``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from ._frozen import positional_maker
from .errors import InvalidInputError
from .usage import Usage

__all__ = [
    "usage_from_anthropic",
    "usage_from_langchain",
    "usage_from_llamaindex",
    "usage_from_ollama",
    "usage_from_openai_chat",
    "usage_from_openai_responses",
]

_new_usage = positional_maker(Usage)  # all eight fields, validated as Usage(...) validates them
_INCLUDE_USAGE_FIX = (
    "non-streaming responses always carry usage; for a stream pass "
    'stream_options={"include_usage": True} and read the last chunk, or use OpenAIStreamUsage'
)
_CHAT_OBJECTS = frozenset({"chat.completion", "chat.completion.chunk"})
_RESPONSE_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})
_TTL_SPLIT_KEYS = ("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens")
_ANTHROPIC_CACHE_KEYS = ("cache_read_input_tokens", "cache_creation_input_tokens", "cache_creation")
_BEDROCK_TTLS = ("5m", "1h")  # CacheDetail.ttl's documented values


def as_dict(obj: object, where: str) -> dict[str, Any]:
    """A plain dict of ``obj``: a mapping, or an SDK/pydantic object dumped with ``model_dump()``.

    Raises:
        InvalidInputError: ``obj`` is neither.
    """
    if isinstance(obj, Mapping):
        return dict(obj)
    dump = getattr(obj, "model_dump", None)
    if callable(dump):
        try:
            data = dump(warnings=False)  # the SDKs build objects unvalidated; we validate below
        except (TypeError, ValueError):
            data = dump()
        if isinstance(data, Mapping):
            return dict(data)
    raise InvalidInputError(
        where,
        f"expected a dict or an SDK object with model_dump(), got {type(obj).__name__}",
        value=obj,
        fix="pass the provider's response object (or its JSON as a dict)",
    )


def count_field(data: Mapping[str, Any], key: str, where: str, *, required: bool = False) -> int:
    """Read one token figure: a non-negative ``int`` (``None`` or absent is 0 unless ``required``).

    Raises:
        InvalidInputError: The figure is missing (when required), a bool, not an int, or negative.
    """
    value = data.get(key)
    field = f"{where}.{key}"
    if value is None:
        if required:
            raise InvalidInputError(field, "is missing", fix=f"the provider's usage always has {key!r}")
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(field, f"must be an integer, got {type(value).__name__}", value=value)
    if value < 0:
        raise InvalidInputError(field, f"must be >= 0, got {value}", value=value)
    return value


def _details(data: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    value = data.get(key)
    return {} if value is None else as_dict(value, f"{where}.{key}")


def _usage_part(
    data: dict[str, Any], where: str, markers: tuple[str, ...], fix: str
) -> tuple[dict[str, Any], str]:
    """The usage dict of a response, or ``data`` itself when it already is a usage dict."""
    if "usage" in data:
        if data["usage"] is None:
            raise InvalidInputError(f"{where}.usage", "is missing (null)", fix=fix)
        return as_dict(data["usage"], f"{where}.usage"), f"{where}.usage"
    if any(m in data for m in markers):
        return data, where
    raise InvalidInputError(f"{where}.usage", "is missing", fix=fix)


def _make(where: str, **figures: Any) -> Usage:
    try:
        return Usage(**figures)
    except InvalidInputError as e:
        name = e.field.removeprefix("usage.")
        problem = e.problem if e.problem.startswith(name) else f"{name} {e.problem}"  # named once
        raise InvalidInputError(where, f"inconsistent figures: {problem}", value=figures, fix=e.fix) from e


def openai_chat_usage(data: dict[str, Any], where: str) -> Usage:
    """Convert an OpenAI Chat Completions response (or chunk, or usage) dict; errors name ``where``."""
    usage, w = _usage_part(data, where, ("prompt_tokens", "completion_tokens"), _INCLUDE_USAGE_FIX)
    prompt = _details(usage, "prompt_tokens_details", w)
    completion = _details(usage, "completion_tokens_details", w)
    # DeepSeek reports its cache hits as prompt_cache_hit_tokens (no prompt_tokens_details)
    hits = count_field(usage, "prompt_cache_hit_tokens", w)
    prompt_tokens = count_field(usage, "prompt_tokens", w, required=True)
    output = count_field(usage, "completion_tokens", w, required=True)
    reasoning = count_field(completion, "reasoning_tokens", f"{w}.completion_tokens_details")
    total = usage.get("total_tokens")
    if reasoning and type(total) is int and total == prompt_tokens + output + reasoning:
        output += reasoning  # xAI: reasoning on top of completion_tokens (total says so), billed as output
    audio = count_field(prompt, "audio_tokens", f"{w}.prompt_tokens_details") + count_field(
        completion, "audio_tokens", f"{w}.completion_tokens_details"
    )
    return _make(
        w,
        input_tokens=prompt_tokens,
        output_tokens=output,
        cache_read_tokens=max(count_field(prompt, "cached_tokens", f"{w}.prompt_tokens_details"), hits),
        cache_write_tokens=count_field(prompt, "cache_write_tokens", f"{w}.prompt_tokens_details"),
        reasoning_tokens=reasoning,
        # priced at the text and standard-tier rates: flagged as estimates (see README, "Not priced")
        estimated=bool(audio) or _priced_tier(data),
    )


def _priced_tier(data: Mapping[str, Any]) -> bool:
    """A response served on a tier with prices of its own (OpenAI's ``priority`` / ``flex``)."""
    return data.get("service_tier") in ("priority", "flex")


def _openai_responses(data: dict[str, Any], where: str) -> Usage:
    if data.get("type") in _RESPONSE_EVENTS and data.get("response") is not None:
        data, where = as_dict(data["response"], f"{where}.response"), f"{where}.response"
    usage, w = _usage_part(
        data,
        where,
        ("input_tokens", "output_tokens"),
        "pass the completed response (for a stream: the 'response.completed' event's response)",
    )
    inp = _details(usage, "input_tokens_details", w)
    out = _details(usage, "output_tokens_details", w)
    return _make(
        w,
        input_tokens=count_field(usage, "input_tokens", w, required=True),
        output_tokens=count_field(usage, "output_tokens", w, required=True),
        cache_read_tokens=count_field(inp, "cached_tokens", f"{w}.input_tokens_details"),
        cache_write_tokens=count_field(inp, "cache_write_tokens", f"{w}.input_tokens_details"),
        reasoning_tokens=count_field(out, "reasoning_tokens", f"{w}.output_tokens_details"),
    )


def anthropic_usage(usage: Mapping[str, Any], where: str) -> Usage:
    """Convert an Anthropic ``usage`` dict (``input_tokens`` excludes cache reads and writes).

    When ``cache_creation_input_tokens`` and the per-TTL ``cache_creation`` split
    disagree, the larger is taken (over- rather than under-counting a budget).
    """
    split = _details(usage, "cache_creation", where)
    w_split = f"{where}.cache_creation"
    write_5m = count_field(split, "ephemeral_5m_input_tokens", w_split)
    write_1h = count_field(split, "ephemeral_1h_input_tokens", w_split)
    cache_write = max(count_field(usage, "cache_creation_input_tokens", where), write_5m + write_1h)
    cache_read = count_field(usage, "cache_read_input_tokens", where)
    thinking = count_field(
        _details(usage, "output_tokens_details", where), "thinking_tokens", f"{where}.output_tokens_details"
    )
    tools = _details(usage, "server_tool_use", where)
    searches = count_field(tools, "web_search_requests", f"{where}.server_tool_use")
    return _make(
        where,
        input_tokens=count_field(usage, "input_tokens", where, required=True) + cache_read + cache_write,
        output_tokens=count_field(usage, "output_tokens", where, required=True),
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        cache_write_1h_tokens=write_1h,
        reasoning_tokens=thinking,
        # web searches' fees and the fast speed's prices are not charged: flagged (README, "Not priced")
        estimated=bool(searches) or usage.get("speed") == "fast",
    )


def _anthropic(data: dict[str, Any], where: str) -> Usage:
    usage, w = _usage_part(
        data, where, ("input_tokens", "output_tokens"), "pass the Message returned by messages.create()"
    )
    return anthropic_usage(usage, w)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def gemini_usage(meta: Mapping[str, Any], where: str) -> Usage:
    """Convert a Gemini ``usage_metadata`` dict (snake_case, as google-genai dumps it, or the REST
    API's camelCase ``usageMetadata``).

    ``prompt_token_count`` already includes ``cached_content_token_count`` (the cache reads);
    ``thoughts_token_count`` is billed as output but not counted in ``candidates_token_count``, so
    the output is their sum and the thoughts are its reasoning part; ``tool_use_prompt_token_count``
    (a built-in tool's prompt) is billed as input and added to it.
    """

    def figure(name: str, *, required: bool = False) -> int:
        key = name if name in meta or _camel(name) not in meta else _camel(name)
        return count_field(meta, key, where, required=required)

    thoughts = figure("thoughts_token_count")
    return _make(
        where,
        input_tokens=figure("prompt_token_count", required=True) + figure("tool_use_prompt_token_count"),
        output_tokens=figure("candidates_token_count") + thoughts,
        cache_read_tokens=figure("cached_content_token_count"),
        reasoning_tokens=thoughts,
        # audio is priced at its own rate, not at the text rate charged here (README, "Not priced")
        estimated=_gemini_audio(meta),
    )


def _gemini_audio(meta: Mapping[str, Any]) -> bool:
    """Whether a Gemini usage's per-modality details (``prompt_tokens_details``,
    ``candidates_tokens_details``; snake or camel case) hold audio tokens."""
    for name in ("prompt_tokens_details", "candidates_tokens_details"):
        entries = meta.get(name, meta.get(_camel(name)))
        if not isinstance(entries, list):
            continue
        for entry in entries:
            if not isinstance(entry, Mapping):
                continue
            modality = entry.get("modality")
            tokens = entry.get("token_count", entry.get("tokenCount"))
            # google-genai dumps the enum as "AUDIO"; an undumped one reads "MediaModality.AUDIO"
            if str(getattr(modality, "value", modality)).upper() == "AUDIO" and tokens:
                return True
    return False


def _bedrock_cache_details(usage: Mapping[str, Any], where: str) -> tuple[int, int, bool]:
    """Bedrock's ``cacheDetails``, the cache writes by TTL: ``(all writes, 1-hour writes, a TTL
    other than the documented "5m" / "1h" was met)``; ``(0, 0, False)`` when absent or null."""
    details = usage.get("cacheDetails")
    if details is None:
        return 0, 0, False
    w = f"{where}.cacheDetails"
    if not isinstance(details, list | tuple):
        raise InvalidInputError(
            w,
            f"must be a list of CacheDetail ({{'ttl', 'inputTokens'}}), got {type(details).__name__}",
            value=details,
        )
    written = one_hour = 0
    unknown_ttl = False
    for i, item in enumerate(details):
        wi = f"{w}[{i}]"
        entry = as_dict(item, wi)
        ttl = entry.get("ttl")
        if not isinstance(ttl, str):
            raise InvalidInputError(
                f"{wi}.ttl",
                "is missing" if ttl is None else f"must be a string, got {type(ttl).__name__}",
                value=ttl,
                fix="each CacheDetail names its TTL: '5m' or '1h'",
            )
        tokens = count_field(entry, "inputTokens", wi, required=True)
        written += tokens
        if ttl != "5m":  # "1h", or a TTL AWS added since: charged at the 1h rate, the higher known
            one_hour += tokens
            unknown_ttl = unknown_ttl or ttl not in _BEDROCK_TTLS
    return written, one_hour, unknown_ttl


def _bedrock(usage: Mapping[str, Any], where: str) -> Usage:
    """Convert a Bedrock Converse ``usage`` (``TokenUsage``; ``inputTokens`` excludes cache reads
    and writes).

    ``cacheDetails`` breaks ``cacheWriteInputTokens`` down by TTL, a list of ``CacheDetail``
    (``{"ttl": "5m" | "1h", "inputTokens": n}``, AWS's Bedrock API reference): its ``"1h"``
    writes become ``cache_write_1h_tokens``, priced at the 1-hour rate. When
    ``cacheWriteInputTokens`` and the breakdown's sum disagree, the larger is taken (over- rather
    than under-counting a budget, as for Anthropic). A TTL other than those two (not documented)
    is charged at the 1-hour rate and the usage flagged ``estimated``.
    """
    cache_read = count_field(usage, "cacheReadInputTokens", where)
    split, write_1h, unknown_ttl = _bedrock_cache_details(usage, where)
    cache_write = max(count_field(usage, "cacheWriteInputTokens", where), split)
    return _make(
        where,
        input_tokens=count_field(usage, "inputTokens", where, required=True) + cache_read + cache_write,
        output_tokens=count_field(usage, "outputTokens", where, required=True),
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        cache_write_1h_tokens=write_1h,
        estimated=unknown_ttl,
    )


def _ollama(data: Mapping[str, Any], where: str) -> Usage:
    """Convert an Ollama chat response's ``prompt_eval_count`` / ``eval_count``.

    ``prompt_eval_count`` is "the number of tokens in the prompt", those read from Ollama's KV
    cache included (Ollama's API docs; ollama/ollama#5371 made caching not change it). Ollama
    omits a count of 0 (``omitempty``) and, before that fix, counted only the prompt tokens it
    evaluated, so a repeated prompt served whole from its cache comes back with ``eval_count``
    alone (ollama/ollama#2068). Such a response does not say how long the prompt was, and 0 is
    not its length: the output is exact, the input is left at 0 and the usage is flagged
    ``estimated``; :meth:`~tokenbudget_core.ledger.Ledger.settle` (how the budget callback
    handlers close a call) then charges the counted input in its place, still flagged.
    ``eval_count`` is required.
    """
    output = count_field(data, "eval_count", where, required=True)
    if data.get("prompt_eval_count") is None:  # not reported (absent, or None in a client's dump)
        return _make(where, input_tokens=0, output_tokens=output, estimated=True)
    return _make(
        where,
        input_tokens=count_field(data, "prompt_eval_count", where, required=True),
        output_tokens=output,
    )


def usage_from_ollama(response: Any) -> Usage:
    """Usage of an Ollama chat response: its top-level ``prompt_eval_count`` / ``eval_count``
    (the REST JSON, ``dict()`` of the ollama client's response, or LangChain's
    ``AIMessage.response_metadata`` of a ``ChatOllama`` reply, where langchain-ollama copies
    them). ``eval_count`` alone (a prompt served from Ollama's cache) gives the exact output and
    an input of 0 flagged ``estimated`` (see :func:`_ollama`).

    Raises:
        InvalidInputError: ``eval_count`` is missing, or a count is not a non-negative integer.
    """
    return _ollama(as_dict(response, "response"), "response")


def usage_from_openai_chat(response: Any) -> Usage:
    """Usage of an OpenAI Chat Completions response, or of a stream chunk that carries usage.

    ``prompt_tokens`` already includes ``prompt_tokens_details.cached_tokens`` and
    ``completion_tokens`` includes ``completion_tokens_details.reasoning_tokens``.

    Args:
        response: A ``ChatCompletion`` / ``ChatCompletionChunk`` (SDK object or dict),
            or its ``usage`` part alone.

    Raises:
        InvalidInputError: ``response.usage`` is null or missing (a stream without
            ``stream_options={"include_usage": True}``), or a figure is invalid.

    Example:
        >>> usage_from_openai_chat({"usage": {"prompt_tokens": 1200, "completion_tokens": 80,
        ...     "prompt_tokens_details": {"cached_tokens": 1024}}}).uncached_input_tokens
        176
    """
    return openai_chat_usage(as_dict(response, "response"), "response")


def usage_from_openai_responses(response: Any) -> Usage:
    """Usage of an OpenAI Responses API response.

    ``input_tokens`` includes ``input_tokens_details.cached_tokens`` and
    ``output_tokens`` includes ``output_tokens_details.reasoning_tokens``.

    Args:
        response: A ``Response`` (SDK object or dict), a ``response.completed`` stream
            event, or the ``usage`` part alone.

    Raises:
        InvalidInputError: The usage is missing or a figure is invalid.
    """
    return _openai_responses(as_dict(response, "response"), "response")


def usage_from_anthropic(response: Any) -> Usage:
    """Usage of an Anthropic Messages response.

    Anthropic's ``input_tokens`` excludes cache reads and writes, so the result's
    ``input_tokens`` is ``input_tokens + cache_read_input_tokens +
    cache_creation_input_tokens``; ``cache_creation.ephemeral_1h_input_tokens``
    becomes ``cache_write_1h_tokens`` and ``output_tokens_details.thinking_tokens``
    becomes ``reasoning_tokens``.

    Args:
        response: A ``Message`` (SDK object or dict), or its ``usage`` part alone.

    Raises:
        InvalidInputError: The usage is missing or a figure is invalid.

    Example:
        >>> usage_from_anthropic({"usage": {"input_tokens": 20, "output_tokens": 5,
        ...     "cache_read_input_tokens": 1000}}).input_tokens
        1020
    """
    return _anthropic(as_dict(response, "response"), "response")


def _tiered(details: Mapping[str, Any], name: str, where: str) -> int:
    """``details[name]``, or the sum of service-tier-prefixed keys (``priority_<name>``), the larger."""
    prefixed = sum(count_field(details, k, where) for k in details if k.endswith(f"_{name}"))
    return max(count_field(details, name, where), prefixed)


def usage_from_langchain(
    usage_metadata: Any, *, marked_ttl: Literal["5m", "1h", "mixed"] | None = None
) -> Usage:
    """Usage from a LangChain ``UsageMetadata`` dict (``AIMessage.usage_metadata``).

    LangChain already normalises to this package's convention: ``input_tokens``
    includes cache reads (``input_token_details.cache_read``) and writes
    (``cache_creation``). Handled as langchain-core 1.x and its partner packages
    write them:

    * service-tier prefixes (``priority_cache_read``, ``flex_reasoning``...) are
      read like the plain keys; the bare ``priority`` / ``flex`` counts are ignored;
    * audio (``input_token_details.audio``, ``output_token_details.audio``) and a
      ``priority`` / ``flex`` tier are charged at the text and standard rates, so such usage is
      flagged ``estimated`` (README, "Not priced"), as :func:`usage_from_openai_chat` flags it;
    * Anthropic's TTL split ``ephemeral_5m_input_tokens`` /
      ``ephemeral_1h_input_tokens``: cache writes are the larger of
      ``cache_creation`` and the split's sum (some versions zero ``cache_creation``
      when the split is present).

    Cache writes reported *without* that split are 5-minute writes, unless ``marked_ttl`` says
    the request marked its prompt for the 1-hour cache. A streamed Claude reply reports no split:
    its usage is ``message_delta``'s running total, which has none, and langchain-anthropic
    (1.7) drops ``message_start``'s; Anthropic bills the writes at the TTL the request's
    ``cache_control`` markers named. So with ``marked_ttl="1h"`` (every marker names 1h, as
    :func:`~tokenbudget_core.prompt_caching.cache_marks_of` finds it) unsplit writes are
    charged as 1-hour writes (``cache_write_1h_tokens``); with ``"mixed"`` (both TTLs marked:
    which blocks were written is unknown) they stay 5-minute writes and the usage is flagged
    ``estimated``; a reported split is always kept.

    Args:
        usage_metadata: The dict, or an ``AIMessage`` (anything with ``.usage_metadata``).
        marked_ttl: The TTLs of the request's ``cache_control`` markers
            (:func:`~tokenbudget_core.prompt_caching.cache_marks_of`; ``None``: no marker;
            ``"5m"`` changes nothing).

    Raises:
        InvalidInputError: It is ``None`` (the model reported no usage) or a figure is invalid.

    Example:
        >>> streamed = {"input_tokens": 1020, "output_tokens": 7,
        ...     "input_token_details": {"cache_creation": 1000}}
        >>> usage_from_langchain(streamed, marked_ttl="1h").cache_write_1h_tokens
        1000
    """
    if type(usage_metadata) is dict and not (
        usage_metadata.get("input_token_details") or usage_metadata.get("output_token_details")
    ):  # the common shape: two plain counts (checked like any other below when they are not)
        i, o = usage_metadata.get("input_tokens"), usage_metadata.get("output_tokens")
        if type(i) is int and type(o) is int and i >= 0 and o >= 0:
            return _new_usage(i, o, 0, 0, 0, 0, 1, False)  # Usage(input_tokens=i, output_tokens=o)
    where = "usage_metadata"
    if not isinstance(usage_metadata, Mapping) and hasattr(usage_metadata, "usage_metadata"):
        usage_metadata, where = usage_metadata.usage_metadata, "message.usage_metadata"
    if usage_metadata is None:
        raise InvalidInputError(
            where, "is None", fix="the model reported no usage; for streams enable stream_usage=True"
        )
    data = as_dict(usage_metadata, where)
    inp = _details(data, "input_token_details", where)
    out = _details(data, "output_token_details", where)
    w_in, w_out = f"{where}.input_token_details", f"{where}.output_token_details"
    write_1h = count_field(inp, "ephemeral_1h_input_tokens", w_in)
    split = count_field(inp, "ephemeral_5m_input_tokens", w_in) + write_1h
    cache_write = max(_tiered(inp, "cache_creation", w_in), split)
    unsplit = cache_write > 0 and all(inp.get(k) is None for k in _TTL_SPLIT_KEYS)
    if marked_ttl == "1h" and unsplit:
        write_1h = cache_write  # no split reported: the writes are at the TTL the request marked
    return _make(
        where,
        input_tokens=count_field(data, "input_tokens", where, required=True),
        output_tokens=count_field(data, "output_tokens", where, required=True),
        cache_read_tokens=_tiered(inp, "cache_read", w_in),
        cache_write_tokens=cache_write,
        cache_write_1h_tokens=write_1h,
        reasoning_tokens=_tiered(out, "reasoning", w_out),
        # kept as 5m writes (some may be 1h ones); or priced at the text and standard-tier rates
        estimated=(marked_ttl == "mixed" and unsplit)
        or _unpriced_details(inp, w_in)
        or _unpriced_details(out, w_out),
    )


def _unpriced_details(details: Mapping[str, Any], where: str) -> bool:
    """Whether a LangChain token-details dict holds audio tokens or a ``priority`` / ``flex``
    tier's (``priority``, ``flex_cache_read``...): figures this package prices at other rates."""
    return any(
        isinstance(k, str)
        and (k == "audio" or k.partition("_")[0] in _PRICED_TIERS)
        and count_field(details, k, where) > 0
        for k in details
    )


_PRICED_TIERS = frozenset({"priority", "flex"})


def usage_from_llamaindex(raw: Any) -> Usage:
    """Usage from a LlamaIndex ``ChatResponse.raw``: the provider response it wraps.

    The shape is detected: an OpenAI ``chat.completion`` (or chunk), an OpenAI
    ``response``, or an Anthropic ``message``; failing those, the keys of its
    ``usage`` decide (``prompt_tokens`` is OpenAI Chat; Anthropic cache keys are
    Anthropic; ``input_tokens_details`` or ``reasoning_tokens`` is OpenAI Responses;
    ``inputTokens`` is Bedrock Converse, its ``cacheDetails`` giving the 1-hour cache writes).
    Without ``usage``: Gemini's ``usage_metadata`` (llama-index-llms-google-genai; thinking
    tokens charged as output), or Ollama's ``prompt_eval_count`` / ``eval_count``
    (llama-index-llms-ollama, which also copies them into an OpenAI-style ``usage`` when both
    are reported; ``eval_count`` alone, a prompt served from Ollama's cache, gives the exact
    output and an input of 0 flagged ``estimated``, which the ledger replaces with the count).

    Args:
        raw: ``ChatResponse.raw`` (SDK object or dict, e.g. ``dict(message)``), or the
            ``ChatResponse`` itself.

    Raises:
        InvalidInputError: ``raw`` is ``None``, has no usage, or its shape is unknown.
    """
    if hasattr(raw, "raw") and hasattr(raw, "message"):  # a ChatResponse
        raw = raw.raw
    if raw is None:
        raise InvalidInputError(
            "raw", "is None", fix="this LLM integration did not keep the provider response; count instead"
        )
    data = as_dict(raw, "raw")
    if data.get("object") in _CHAT_OBJECTS:
        return openai_chat_usage(data, "raw")
    if data.get("object") == "response" or data.get("type") in _RESPONSE_EVENTS:
        return _openai_responses(data, "raw")
    if data.get("type") == "message":
        return _anthropic(data, "raw")
    usage = data.get("usage")
    if usage is None:
        for key in ("usage_metadata", "usageMetadata"):  # Gemini (google-genai dump, REST JSON)
            if data.get(key) is not None:
                return gemini_usage(as_dict(data[key], f"raw.{key}"), f"raw.{key}")
        if data.get("prompt_eval_count") is not None or data.get("eval_count") is not None:
            return _ollama(data, "raw")
        raise InvalidInputError(
            "raw.usage", "is missing", fix="pass the provider response (ChatResponse.raw) that carries usage"
        )
    keys = as_dict(usage, "raw.usage")
    if "prompt_tokens" in keys:
        return openai_chat_usage(data, "raw")
    if "inputTokens" in keys or "outputTokens" in keys:  # Bedrock Converse
        return _bedrock(keys, "raw.usage")
    if any(k in keys for k in _ANTHROPIC_CACHE_KEYS):
        return _anthropic(data, "raw")
    out = _details(keys, "output_tokens_details", "raw.usage")
    if "input_tokens_details" in keys or "reasoning_tokens" in out:
        return _openai_responses(data, "raw")
    if "input_tokens" in keys:  # no cache or reasoning split: Anthropic and Responses read the same
        return _anthropic(data, "raw")
    raise InvalidInputError(
        "raw.usage",
        f"unknown usage shape with keys {sorted(keys)}",
        value=usage,
        fix="use Usage.from_openai / from_anthropic / from_openai_responses directly",
    )
