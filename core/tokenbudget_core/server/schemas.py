"""Request bodies of the HTTP service (pydantic models, published in its OpenAPI schema).

The models only describe the JSON shape and bound the figures a request may carry (so a
request can never overflow a 64-bit store counter); every rule (what a model is, what a
message may contain, what fits a budget) is checked by the core, whose errors the service
maps to ``422`` naming the field. Unknown fields are refused (``extra="forbid"``), so a typo
is a ``422`` too, not a silently ignored option. Integers are strict: ``true`` and ``1.5``
are not token counts.
"""

from __future__ import annotations

import datetime as _dt
import re
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from tokenbudget_core.errors import InvalidInputError

__all__ = [
    "MAX_CHOICES",
    "MAX_TOKENS",
    "SEND_RESERVATION_BACK",
    "CommitBody",
    "CostEstimateBody",
    "CountBody",
    "PromptBuildBody",
    "RecordBody",
    "ReleaseBody",
    "ReservationBody",
    "ReserveBody",
    "TruncateBody",
    "UsageBody",
    "canonical_day",
]

MAX_TOKENS = 10**12
"""The largest token figure a request may carry (a trillion: far above any real call)."""
MAX_CHOICES = 128
"""The most completions one call may ask for (OpenAI's ``n`` allows up to 128)."""
MAX_USD = Decimal(10**9)
"""The largest dollar amount a request may carry."""

Tokens = Annotated[int, Field(strict=True, ge=0, le=MAX_TOKENS)]
PositiveTokens = Annotated[int, Field(strict=True, ge=1, le=MAX_TOKENS)]
Model = Annotated[str, Field(min_length=1, max_length=200, description="A model name, e.g. gpt-4o.")]
Id = Annotated[str, Field(min_length=1, max_length=256)]
Usd = Annotated[Decimal, Field(ge=0, le=MAX_USD, allow_inf_nan=False, description="US dollars.")]
Strategy = Literal["keep_start", "keep_end", "keep_both", "smart"]
UnknownModel = Annotated[
    Literal["error", "unpriced"],
    Field(
        description="A model the registry does not know (a new snapshot, a fine-tune): 'error' "
        "refuses it (422 on model; a commit releases the reservation), 'unpriced' charges its tokens "
        "with no cost, counted in reports' unpriced_requests (never as $0)."
    ),
]
Message = dict[str, Any]

SEND_RESERVATION_BACK = "send the reservation back exactly as /budget/reserve returned it"
"""The fix of every refused ``reservation.day``."""
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def canonical_day(value: str) -> str:
    """``value`` when it is a date written ``YYYY-MM-DD`` (the only form a reservation's day has).

    Raises:
        InvalidInputError: Any other spelling (``2026-W48-2``, ``20261124``), or no such date.
    """
    if _DAY.fullmatch(value):
        try:
            _dt.date.fromisoformat(value)
        except ValueError:
            pass
        else:
            return value
    raise InvalidInputError(
        "reservation.day",
        "must be the day /budget/reserve returned, a date written YYYY-MM-DD (e.g. 2026-11-24)",
        value=value,
        fix=SEND_RESERVATION_BACK,
    )


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CountBody(_Body):
    """``POST /tokens/count``: give exactly one of ``text`` and ``messages``."""

    model: Model = "gpt-4o"
    text: str | None = Field(default=None, description="Plain text (no chat framing).")
    messages: list[Message] | None = Field(
        default=None, description="OpenAI-style chat messages; counted with the chat-format overhead."
    )
    tools: list[dict[str, Any]] | None = Field(default=None, description="Tool definitions (with messages).")


class TruncateBody(_Body):
    """``POST /tokens/truncate``: cut ``text`` to ``max_tokens`` tokens of ``model``."""

    text: str
    max_tokens: Tokens
    strategy: Strategy = "keep_start"
    model: Model = "gpt-4o"
    marker: str | None = Field(
        default=None, max_length=1000, description="Text put where the cut was; {n} becomes the tokens cut."
    )


class PromptBuildBody(_Body):
    """``POST /prompt/build``: system, examples, context, history and user input, guaranteed to fit."""

    model: Model = "gpt-4o"
    max_tokens: PositiveTokens | None = Field(default=None, description="Default: the model's window.")
    reserve_output: Tokens | None = Field(default=None, description="Tokens kept free for the reply.")
    system: str | None = None
    examples: list[tuple[str, str] | list[Message]] = Field(
        default_factory=list, description="(user, assistant) pairs or message lists, oldest first."
    )
    context: list[str] = Field(default_factory=list, description="Retrieved documents, most relevant first.")
    history: list[Message] = Field(default_factory=list, description="Earlier messages, oldest first.")
    user: str
    context_strategy: Strategy = "smart"
    on_overflow: Literal["raise", "truncate"] = "raise"


class UsageBody(_Body):
    """Tokens one call used, in the core's one convention (input includes cache reads and writes)."""

    input_tokens: Tokens = 0
    output_tokens: Tokens = 0
    cache_read_tokens: Tokens = 0
    cache_write_tokens: Tokens = 0
    cache_write_1h_tokens: Tokens = 0
    reasoning_tokens: Tokens = 0
    requests: Annotated[int, Field(strict=True, ge=0, le=10**9)] = 1
    estimated: Annotated[bool, Field(strict=True)] = False


class CostEstimateBody(UsageBody):
    """``POST /cost/estimate``: the usage figures, flat, and the model to price them on."""

    model: Model


class ReserveBody(_Body):
    """``POST /budget/check`` and ``POST /budget/reserve``: the worst case of one call."""

    model: Model
    input_tokens: Tokens
    max_output_tokens: Tokens | None = Field(default=None, description="Default: the model's output limit.")
    feature: Id | None = None
    user: Id | None = None
    conversation: Id | None = None
    request_id: Id | None = Field(
        default=None,
        description="Makes the reservation idempotent. On /budget/check, validated as reserve "
        "validates it and otherwise unused: a check holds nothing under it.",
    )
    choices: Annotated[
        int,
        Field(
            strict=True,
            ge=1,
            le=MAX_CHOICES,
            description="Completions the call asks for (OpenAI's n): the input is billed once, the "
            "output up to max_output_tokens per choice, so the worst case reserves choices * "
            "max_output_tokens output tokens (per-call output limits apply to each choice).",
        ),
    ] = 1
    cache_writes: Literal["5m", "1h"] | None = Field(
        default=None,
        description="The call carries prompt-cache markers (Anthropic's cache_control) writing a 5-minute "
        "or 1-hour cache: the worst case prices every input token at that write rate.",
    )


class ReservationBody(_Body):
    """A reservation as ``POST /budget/reserve`` returned it; send it back as is.

    Commit and release use its identity and payer (``request_id``, ``day``, ``model``,
    ``feature``, ``user``, ``conversation``, ``unchecked``) and the minute it was priced at
    (``priced_minute``: the commit prices the usage at it); ``reserved_usd`` and ``step`` are
    accepted so the round trip needs no editing, and ignored.
    """

    request_id: Id
    day: str = Field(
        max_length=64,
        description="The ledger day of the reservation, YYYY-MM-DD, as reserve returned it: "
        "at most tomorrow, at least the longest lease (a week) and a day before today.",
    )
    model: Model
    feature: Id | None = None
    user: Id | None = None
    conversation: Id | None = None
    input_tokens: Tokens = 0
    max_output_tokens: Tokens = 0
    reserved_usd: Usd | None = Field(default=None, description="As reserve returned it; not used.")
    step: str | None = Field(default=None, max_length=64, description="As reserve returned it; not used.")
    unchecked: Annotated[bool, Field(strict=True, description="True when the store was down at reserve.")] = (
        False
    )
    priced_minute: Annotated[
        int | None,
        Field(
            strict=True,
            ge=0,
            description="When reserve priced the call (epoch minutes): commit prices the usage at "
            "the same minute. Absent (an older client): priced at commit.",
        ),
    ] = None

    @field_validator("day")
    @classmethod
    def _iso_day(cls, value: str) -> str:
        """Only the form ``/budget/reserve`` writes: a day spelled another way (``20261124``,
        ``2026-W48-2``) would be another day's key in the store, so another charge."""
        return canonical_day(value)


class CommitBody(_Body):
    """``POST /budget/commit``: charge what a reserved call used (idempotent per request id)."""

    reservation: ReservationBody
    usage: UsageBody
    cache_hit: Annotated[bool, Field(strict=True)] = False
    saved_usd: Usd | None = None
    model: Model | None = Field(
        default=None,
        description="The model that answered, when it is not the reserved one (a router reserved "
        "its premium model's worst case, a fallback answered): the usage is priced and attributed on it.",
    )
    premium_model: Model | None = None
    """The call was routed and this is its premium tier's model (reports show what routing saved)."""
    unknown_model: UnknownModel = "error"


class ReleaseBody(_Body):
    """``POST /budget/release``: give a reservation back (the call failed)."""

    reservation: ReservationBody


class RecordBody(_Body):
    """``POST /usage/record``: charge usage that was never reserved (idempotent per request id)."""

    model: Model
    usage: UsageBody
    feature: Id | None = None
    user: Id | None = None
    conversation: Id | None = None
    request_id: Id | None = None
    cache_hit: Annotated[bool, Field(strict=True)] = False
    saved_usd: Usd | None = None
    premium_model: Model | None = None
    """The call was routed and this is its premium tier's model (reports show what routing saved)."""
    at: Annotated[AwareDatetime, Field(strict=False)] | None = None
    """When the call happened (ISO 8601 with a time zone; default now): the day it is charged to.
    A retry that sends the same ``at`` is applied once, even after midnight."""
    unknown_model: UnknownModel = "error"
