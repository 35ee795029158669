"""``tokenbudget explain``: count and price a conversation message by message, end to end.

:func:`run_demo` counts the sample request (system prompt, user and assistant turns,
a tool call and its result, one tool definition) per message for one model, counts
the expected reply as output, and prices the call on a few models. :func:`render_demo`
draws the result with rich; :meth:`DemoReport.as_dict` gives it as JSON. The CLI only
calls these.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from .counting import TokenCount, TokenCounter
from .messages import to_message
from .pricing import CostBreakdown, PriceTable, format_usd, price_of
from .registry import ModelRegistry, check_registry
from .usage import Usage

__all__ = [
    "DEFAULT_MODELS",
    "SAMPLE_MESSAGES",
    "SAMPLE_REPLY",
    "SAMPLE_TOOLS",
    "DemoReport",
    "MessageRow",
    "ModelCost",
    "render_demo",
    "run_demo",
]

DEFAULT_MODELS: tuple[str, ...] = ("gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5")
"""The models the demo prices the sample call on (plus the one asked for)."""

SAMPLE_TOOLS: tuple[dict[str, Any], ...] = (
    {
        "type": "function",
        "function": {
            "name": "get_order_status",
            "description": "Look up the shipping status of a customer's order.",
            "parameters": {
                "type": "object",
                "properties": {
                    "order_id": {"type": "string", "description": "The order number, e.g. A-10442."},
                },
                "required": ["order_id"],
            },
        },
    },
)
"""The tool definition sent with the sample request."""

SAMPLE_MESSAGES: tuple[dict[str, Any], ...] = (
    {
        "role": "system",
        "content": "You are the support assistant of a small online bookshop. Answer briefly and "
        "politely. Use the tools to look orders up; never guess a delivery date.",
    },
    {"role": "user", "content": "Hi! I ordered two books last week and they haven't arrived yet."},
    {"role": "assistant", "content": "Sorry to hear that! Could you give me your order number?"},
    {"role": "user", "content": "Sure, it's A-10442."},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_order_status", "arguments": '{"order_id": "A-10442"}'},
            }
        ],
    },
    {
        "role": "tool",
        "tool_call_id": "call_1",
        "content": '{"order_id": "A-10442", "status": "in transit", "carrier": "DHL", '
        '"shipped": "2025-03-03", "estimated_delivery": "2025-03-07"}',
    },
)
"""The sample request: a support chat that has just received a tool result."""

SAMPLE_REPLY = (
    "Thanks for waiting! Your order A-10442 shipped on March 3 with DHL and is in transit. "
    "The estimated delivery date is March 7. I'll be happy to help if it hasn't arrived by then."
)
"""The reply the model is expected to write; its tokens are the call's output."""


@dataclass(frozen=True, kw_only=True, slots=True)
class MessageRow:
    """Tokens one sample message adds to the request."""

    index: int
    """Position in :data:`SAMPLE_MESSAGES`."""
    role: str
    """The message's role."""
    preview: str
    """The start of its text (or of its tool call)."""
    tokens: int
    """Tokens it adds, its chat framing included."""
    exact: bool
    """False when the figure is an estimate."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelCost:
    """The sample call counted and priced on one model."""

    model: str
    """The model name."""
    prompt_tokens: TokenCount
    """Input tokens of the request (messages, framing, tool definition)."""
    output_tokens: TokenCount
    """Tokens of :data:`SAMPLE_REPLY`."""
    cost: CostBreakdown
    """The price of that usage (``cost.priced`` is False when the model has no price)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class DemoReport:
    """Everything ``tokenbudget demo`` shows.

    Example:
        >>> report = run_demo(model="gpt-4o")
        >>> sum(r.tokens for r in report.rows) + report.overhead_tokens == report.prompt_tokens
        True
    """

    model: str
    """The model the per-message table is counted for."""
    rows: tuple[MessageRow, ...]
    """Tokens per sample message."""
    overhead_tokens: int
    """Request framing (reply priming) and the tool definition."""
    prompt_tokens: TokenCount
    """The request's input tokens on :attr:`model`."""
    output_tokens: TokenCount
    """The expected reply's tokens on :attr:`model`."""
    costs: tuple[ModelCost, ...]
    """The call priced on each compared model, :attr:`model` first."""

    def as_dict(self) -> dict[str, Any]:
        """The report for JSON output (money as decimal strings)."""
        return {
            "model": self.model,
            "messages": [
                {"index": r.index, "role": r.role, "tokens": r.tokens, "exact": r.exact, "preview": r.preview}
                for r in self.rows
            ],
            "overhead_tokens": self.overhead_tokens,
            "prompt_tokens": self.prompt_tokens.as_dict(),
            "output_tokens": self.output_tokens.as_dict(),
            "costs": [
                {
                    "model": c.model,
                    "prompt_tokens": int(c.prompt_tokens),
                    "output_tokens": int(c.output_tokens),
                    "exact": c.prompt_tokens.exact and c.output_tokens.exact,
                    "method": c.prompt_tokens.method,
                    **c.cost.as_dict(),
                }
                for c in self.costs
            ],
        }


def run_demo(
    *,
    model: str = "gpt-4o",
    compare: Sequence[str] = DEFAULT_MODELS,
    registry: ModelRegistry | None = None,
    prices: PriceTable | None = None,
) -> DemoReport:
    """Count the sample conversation on ``model`` and price it on ``model`` and ``compare``.

    Claude models are counted exactly through Anthropic's API when
    ``ANTHROPIC_API_KEY`` is set, else estimated (and flagged ``exact=False``).

    Args:
        model: The model whose per-message counts are shown.
        compare: Further models to price the same call on.
        registry: The model registry (default: the process-wide one).
        prices: Price overrides (default: the process-wide table).

    Raises:
        UnknownModelError: A model is not in the registry.
    """
    reg = check_registry(registry)
    counter = TokenCounter.for_model(model, registry=reg)
    rows, overhead = _message_rows(counter)
    costs = []
    for name in dict.fromkeys((model, *compare)):  # the asked-for model first, no duplicates
        c = counter if name == model else TokenCounter.for_model(name, registry=reg)
        prompt = c.count_messages(list(SAMPLE_MESSAGES), list(SAMPLE_TOOLS))
        output = _output_tokens(c)
        usage = Usage(
            input_tokens=int(prompt), output_tokens=int(output), estimated=not (prompt.exact and output.exact)
        )
        costs.append(
            ModelCost(
                model=name,
                prompt_tokens=prompt,
                output_tokens=output,
                cost=price_of(usage, name, registry=reg, prices=prices),
            )
        )
    first = costs[0]
    return DemoReport(
        model=model,
        rows=rows,
        overhead_tokens=overhead,
        prompt_tokens=first.prompt_tokens,
        output_tokens=first.output_tokens,
        costs=tuple(costs),
    )


def _output_tokens(counter: TokenCounter) -> TokenCount:
    """Tokens of the sample reply as output: exact with tiktoken; else the offline text estimate
    (a provider API would count it as an input message, framing included)."""
    from .openai_counting import TiktokenCounter

    if isinstance(counter, TiktokenCounter):
        return counter.count(SAMPLE_REPLY)
    from .estimating import EstimatingTokenCounter

    return EstimatingTokenCounter(counter.model).count(SAMPLE_REPLY)


def _message_rows(counter: TokenCounter) -> tuple[tuple[MessageRow, ...], int]:
    """Per-message tokens, and the rest of the request (framing, tools) so the rows add up.

    Exact for tiktoken models. A provider that counts whole requests only (Anthropic's
    API) has no per-message figure, so the rows are then the offline estimate.
    """
    from .openai_counting import TiktokenCounter

    per_message: TokenCounter = counter
    if not isinstance(counter, TiktokenCounter):
        from .estimating import EstimatingTokenCounter

        per_message = EstimatingTokenCounter(counter.model)
    empty = per_message.count_messages([])
    rows = []
    for i, raw in enumerate(SAMPLE_MESSAGES):
        if isinstance(per_message, TiktokenCounter):
            n = per_message.count_message(raw)
        else:
            n = TokenCount(
                per_message.count_messages([raw]) - empty, exact=False, model=counter.name, method="estimate"
            )
        rows.append(
            MessageRow(index=i, role=raw["role"], preview=_preview(raw), tokens=int(n), exact=n.exact)
        )
    whole = per_message.count_messages(list(SAMPLE_MESSAGES), list(SAMPLE_TOOLS))
    return tuple(rows), int(whole) - sum(r.tokens for r in rows)


def _preview(raw: dict[str, Any], width: int = 60) -> str:
    msg = to_message(raw)
    text = msg.text or " ".join(f"{c.name}({c.arguments})" for c in msg.tool_calls)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def render_demo(report: DemoReport) -> RenderableType:
    """The report as rich tables: tokens per message, then the call's cost per model."""
    p, o = report.prompt_tokens, report.output_tokens
    rows_exact = all(r.exact for r in report.rows)
    token_rows: list[tuple[str, str, str | Text, str]] = [
        (str(r.index), r.role, r.preview, _tokens(r.tokens, r.exact)) for r in report.rows
    ]
    framing = Text("chat framing + tool definition", style="dim")
    token_rows.append(("", "", framing, _tokens(report.overhead_tokens, rows_exact)))
    totals: list[tuple[str, str, str | Text, str]] = [
        ("", "", Text("prompt tokens", style="bold"), _tokens(int(p), p.exact)),
        ("", "", Text("expected output (the sample reply)", style="bold"), _tokens(int(o), o.exact)),
    ]
    tokens = _table(
        f"Sample request on {report.model}", ("#", "role", "content", "tokens"), token_rows + totals
    )
    tokens.rows[len(token_rows) - 1].end_section = True

    cost_rows: list[tuple[str, str, str, str, str, str | Text]] = []
    estimated = not (rows_exact and p.exact and o.exact)
    for c in report.costs:
        estimated = estimated or not (c.prompt_tokens.exact and c.output_tokens.exact)
        b = c.cost
        parts = (b.input_cost, b.cache_read_cost, b.cache_write_cost)
        input_total = None if None in parts else sum((x for x in parts if x is not None), Decimal(0))
        cost_rows.append(
            (
                c.model,
                _tokens(int(c.prompt_tokens), c.prompt_tokens.exact),
                _tokens(int(c.output_tokens), c.output_tokens.exact),
                format_usd(input_total),
                format_usd(b.output_cost),
                Text(format_usd(b.total), style="bold" if b.priced else "yellow"),
            )
        )
    headers = ("model", "input", "output", "input $", "output $", "total $")
    costs = _table("Cost of this call (USD)", headers, cost_rows)
    parts_out: list[RenderableType] = [tokens, costs]
    if estimated:
        note = (
            "~ marks an estimate. Claude is counted exactly only through Anthropic's API "
            "(ANTHROPIC_API_KEY); models whose tokenizer is not published (Gemini...) are always estimated."
        )
        parts_out.append(Text(note, style="dim"))
    return Group(*parts_out)


def _table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str | Text]]) -> Table:
    """A compact table: figures are never cut; long text is (content) or folds (model names)."""
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    for i, header in enumerate(headers):
        widest = max([len(header), *(len(str(row[i])) for row in rows)])
        if header == "content":
            table.add_column(header, max_width=44, no_wrap=True, overflow="ellipsis")
        elif header == "model":
            table.add_column(header, max_width=18, overflow="fold")
        else:
            table.add_column(
                header, justify="left" if header == "role" else "right", min_width=widest, no_wrap=True
            )
    for row in rows:
        table.add_row(*row)
    return table


def _tokens(n: int, exact: bool) -> str:
    return f"{n:,}" if exact else f"~{n:,}"
