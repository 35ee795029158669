"""The demo's results: savings by technique, read back from the ledger, as a table and an HTML page.

The demo replays one workload once per stage, each stage adding one control, and charges each
stage to its own feature (``demo:<stage>``). :func:`summarise` turns the ledger's per-feature
spend into :class:`DemoSummary`: per stage the tokens and dollars, cost per active user per
day, and the saving against the baseline and against the stage before (what that technique
added). :func:`render_table` draws it with rich; :func:`render_html` writes a self-contained
page (inline SVG, no scripts, no CDN).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

from rich import box
from rich.table import Table

from .alerts import Alert
from .errors import InvalidInputError
from .money import jsonable
from .reports import Report

__all__ = ["DemoSummary", "StageRow", "StageStats", "render_html", "render_table", "summarise"]

_TECHNIQUE = {
    "baseline": "no controls (premium model, whole history)",
    "compression": "compression: whitespace of pasted text",
    "memory": "memory: history trimmed to a token budget",
    "caching": "caching: semantic response cache",
    "routing": "routing: simple requests to the cheap tier",
    "budgets": "budgets: per-user daily dollar limit",
}


@dataclass(frozen=True, kw_only=True, slots=True)
class StageStats:
    """What the replay of one stage observed (money comes from the ledger)."""

    stage: str
    calls: int
    """Turns answered by a model call."""
    cache_hits: int
    refused: int
    routed_cheap: int
    active_users: int
    tokens_compressed: int


@dataclass(frozen=True, kw_only=True, slots=True)
class StageRow:
    """One stage of the savings table."""

    stage: str
    technique: str
    requests: int
    """Calls charged in the ledger (cache hits included, as zero-cost records)."""
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal
    cost_per_active_user_usd: Decimal | None
    saved_vs_baseline_usd: Decimal
    saved_vs_previous_usd: Decimal
    """What this stage's technique saved on top of the stages before it."""
    saved_share: float
    """Share of the baseline's cost saved so far."""
    routing_saved_usd: Decimal
    """What the routed calls would have cost more on the premium model (the ledger's counterfactual)."""
    stats: StageStats


@dataclass(frozen=True, kw_only=True, slots=True)
class DemoSummary:
    """The demo's outcome."""

    users: int
    turns: int
    day: str
    rows: tuple[StageRow, ...]
    alerts: tuple[Alert, ...]
    store: str
    html: str | None = None
    """Where the run wrote its HTML report (``None``: it wrote none)."""
    own_files: tuple[str, ...] = ()
    """The files made for this run alone because another demo run was going in the directory
    (its ledger ``tokenbudget-demo-run-<id>.db``, its report ``tokenbudget-demo-run-<id>.html``):
    kept after the run, for its report and ``tokenbudget report``; nothing removes them."""
    no_lock: bool = False
    """The run needed its directory's demo lock (on the demo's own store, or for the default
    report) and none can be taken there (Windows, a file system without locks): it used the
    default files (``tokenbudget-demo.db`` recreated, ``tokenbudget-demo.html``), so a demo run
    started in the directory meanwhile is not kept apart from it (it may recreate or overwrite
    them). Not another run holding the lock: that one gets ``own_files``."""

    @property
    def baseline(self) -> StageRow:
        return self.rows[0]

    @property
    def controlled(self) -> StageRow:
        return self.rows[-1]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (money as decimal strings)."""
        return {
            "users": self.users,
            "turns": self.turns,
            "day": self.day,
            "store": self.store,
            "html": self.html,
            "own_files": list(self.own_files),
            "no_lock": self.no_lock,
            "stages": [jsonable(asdict(r)) for r in self.rows],
            "alerts": [a.as_dict() for a in self.alerts],
        }


def summarise(
    report: Report,
    stats: Sequence[StageStats],
    *,
    users: int,
    turns: int,
    alerts: Sequence[Alert] = (),
    store: str = "",
) -> DemoSummary:
    """Build the savings table from a ledger report broken down by feature.

    Args:
        report: :func:`~tokenbudget_core.reports.build_report` of the demo's day with
            ``by=("feature",)`` (and a ``top`` at least the number of stages).
        stats: What each stage's replay observed, baseline first.
        users: Users in the workload.
        turns: User turns per user.
        alerts: Budget alerts fired during the run.
        store: The store URL (for the record; credentials already redacted).

    Raises:
        InvalidInputError: ``stats`` is empty, or a stage has no spend in ``report``.
    """
    if not stats:
        raise InvalidInputError("stats", "needs at least the baseline stage")
    by_feature: Mapping[str | None, Any] = {}
    for b in report.breakdowns:
        if b.dimension == "feature":
            by_feature = {row.key: row for row in b.rows}
    rows: list[StageRow] = []
    for s in stats:
        spend = by_feature.get(f"demo:{s.stage}")
        if spend is None:
            raise InvalidInputError(
                "report", f"no spend for feature demo:{s.stage}", fix="build the report with by=('feature',)"
            )
        cost = spend.cost_usd
        base = rows[0].cost_usd if rows else cost
        prev = rows[-1].cost_usd if rows else cost
        rows.append(
            StageRow(
                stage=s.stage,
                technique=_TECHNIQUE.get(s.stage, s.stage),
                requests=spend.requests,
                input_tokens=spend.input_tokens,
                output_tokens=spend.output_tokens,
                cost_usd=cost,
                cost_per_active_user_usd=(cost / s.active_users) if s.active_users else None,
                saved_vs_baseline_usd=base - cost,
                saved_vs_previous_usd=prev - cost,
                saved_share=float((base - cost) / base) if base else 0.0,
                routing_saved_usd=getattr(spend, "routing_saved_usd", Decimal(0)),
                stats=s,
            )
        )
    return DemoSummary(
        users=users,
        turns=turns,
        day=report.days[-1],
        rows=tuple(rows),
        alerts=tuple(alerts),
        store=store,
    )


def _usd(v: Decimal | None, places: int = 4) -> str:
    if v is None:
        return "-"
    sign = "-" if v < 0 else ""
    return f"{sign}${abs(v):,.{places}f}"


def render_table(summary: DemoSummary) -> Table:
    """The savings table: one row per stage, each adding its technique to the ones above (fits 80 columns)."""
    table = Table(
        title=f"Savings by technique ({summary.users} users x {summary.turns} turns, {summary.day})",
        caption="each stage adds one control; input: tokens; $/user: cost per active user per day",
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
    )
    for i, name in enumerate(("stage", "calls", "hits", "input", "cost", "$/user", "saved", "total")):
        table.add_column(name, justify="left" if i == 0 else "right", no_wrap=True)
    for i, r in enumerate(summary.rows):
        table.add_row(
            r.stage if i == 0 else f"+ {r.stage}",
            f"{r.stats.calls:,}",
            f"{r.stats.cache_hits:,}",
            f"{r.input_tokens:,}",
            _usd(r.cost_usd, 2),
            _usd(r.cost_per_active_user_usd, 4),
            _usd(r.saved_vs_previous_usd, 2),
            f"{r.saved_share:.0%}",
        )
    return table


def _bar_chart(rows: Sequence[StageRow]) -> str:
    top = max((r.cost_usd for r in rows), default=Decimal(0)) or Decimal(1)
    bar_h, gap, width = 26, 10, 520
    parts = []
    for i, r in enumerate(rows):
        y = i * (bar_h + gap)
        w = int(Decimal(width) * r.cost_usd / top)
        label = html.escape(r.stage)
        parts.append(
            f'<text x="0" y="{y + 18}" class="lbl">{label}</text>'
            f'<rect x="110" y="{y}" width="{max(w, 1)}" height="{bar_h}" class="bar"/>'
            f'<text x="{116 + w}" y="{y + 18}" class="val">{html.escape(_usd(r.cost_usd))}</text>'
        )
    height = len(rows) * (bar_h + gap)
    return (
        f'<svg role="img" aria-label="cost per stage" width="{width + 220}" height="{height}" '
        f'xmlns="http://www.w3.org/2000/svg">{"".join(parts)}</svg>'
    )


def render_html(summary: DemoSummary) -> str:
    """A self-contained HTML report (no scripts, no external resources)."""
    head = (
        "<tr>" + "".join(f"<th>{h}</th>" for h in (
            "stage", "calls", "cache hits", "refused", "routed cheap", "routing saved vs premium",
            "input tokens", "output tokens", "cost", "cost / active user / day", "saved (this step)",
            "saved (total)")) + "</tr>"
    )  # fmt: skip
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(c))}</td>"
            for c in (
                r.technique,
                f"{r.stats.calls:,}",
                f"{r.stats.cache_hits:,}",
                f"{r.stats.refused:,}",
                f"{r.stats.routed_cheap:,}",
                _usd(r.routing_saved_usd),
                f"{r.input_tokens:,}",
                f"{r.output_tokens:,}",
                _usd(r.cost_usd),
                _usd(r.cost_per_active_user_usd, 5),
                _usd(r.saved_vs_previous_usd),
                f"{_usd(r.saved_vs_baseline_usd)} ({r.saved_share:.0%})",
            )
        )
        + "</tr>"
        for r in summary.rows
    )
    alerts = "".join(f"<li>{html.escape(a.text)}</li>" for a in summary.alerts)
    b, c = summary.baseline, summary.controlled
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tokenbudget demo report</title>
<style>
body {{ font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #1c2430; }}
table {{ border-collapse: collapse; width: 100%; margin: 1rem 0; }}
th, td {{ border-bottom: 1px solid #dde3ea; padding: .35rem .5rem; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
.kpi {{ display: inline-block; margin-right: 2.5rem; }} .kpi b {{ font-size: 1.6rem; display: block; }}
.bar {{ fill: #3b82f6; }} .lbl, .val {{ font-size: 13px; fill: #1c2430; }}
</style></head><body>
<h1>tokenbudget demo</h1>
<p>{summary.users} users &times; {summary.turns} support-chat turns, replayed once per stage on {summary.day}
(store: <code>{html.escape(summary.store)}</code>).</p>
<div class="kpi">cost per active user per day, no controls
<b id="cpu-baseline">{_usd(b.cost_per_active_user_usd, 5)}</b></div>
<div class="kpi">with all controls<b id="cpu-controlled">{_usd(c.cost_per_active_user_usd, 5)}</b></div>
<div class="kpi">saved<b id="saved-share">{c.saved_share:.0%}</b></div>
<h2>Savings by technique</h2>
<table id="savings">{head}{body}</table>
<h2>Cost per stage</h2>
{_bar_chart(summary.rows)}
<h2>Budget alerts ({len(summary.alerts)})</h2>
<ul id="alerts">{alerts or "<li>none</li>"}</ul>
</body></html>
"""
