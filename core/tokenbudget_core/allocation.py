"""Split a model's window across the parts of a prompt: :func:`allocate_budget`.

A prompt has six parts, always listed in this (document) order::

    system   examples   context   history   user   output

Each part's share is either **fixed** (an ``int``: that many tokens) or **proportional**
(a ``float`` in ``(0, 1]``: that fraction of what remains after the fixed shares). The
proportions may sum to less than 1; the rest goes to the ``leftover`` part (``history``
by default), on top of any share of its own. ``output`` is the reply's reservation and
is always fixed (``reserve_output``). A part with no share gets 0 tokens.

Integer rounding is deterministic: each proportional part gets the floor of its exact
quota, and the tokens left by rounding go one each to the largest remainders (ties in
document order), so the parts always sum exactly to the total.

:meth:`Allocation.rebalance` moves tokens a part does not use to the parts that can use
them: by default the proportional parts not named in ``used``, in proportion to their
weights (largest remainder again, ties in document order). :meth:`Allocation.fill` does
that until every part either has what it needs or is short (water-filling).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal, TypeAlias, get_args

from .counting import TokenCounter
from .errors import InvalidInputError
from .registry import ModelInfo, get_model

__all__ = ["PARTS", "Allocation", "Part", "allocate_budget"]

Part: TypeAlias = Literal["system", "examples", "context", "history", "user", "output"]
PARTS: tuple[Part, ...] = get_args(Part)
"""The parts of a prompt, in document order."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Allocation:
    """Per-part token budgets that sum exactly to :attr:`total`. Make one with :func:`allocate_budget`.

    Example:
        >>> a = allocate_budget(1_000, reserve_output=200, shares={"system": 100, "context": 0.5})
        >>> a.as_dict()
        {'system': 100, 'examples': 0, 'context': 350, 'history': 350, 'user': 0, 'output': 200}
        >>> a.rebalance(used={"system": 60}).context
        370
    """

    total: int
    """The whole window: the parts sum exactly to it."""
    system: int
    """Tokens for the system prompt."""
    examples: int
    """Tokens for few-shot examples."""
    context: int
    """Tokens for retrieved context."""
    history: int
    """Tokens for the conversation history."""
    user: int
    """Tokens for the new user input."""
    output: int
    """Tokens reserved for the reply."""
    weights: tuple[tuple[Part, float], ...] = ()
    """The proportional parts (leftover included) and their fractions of the pool that
    remained after the fixed shares, in document order. These receive tokens on rebalance."""
    leftover: Part = "history"
    """The part that receives what the proportions leave, and what nobody else can take."""

    def __post_init__(self) -> None:
        """Raises :class:`~tokenbudget_core.errors.InvalidInputError` (named) for a total or part
        that is not a non-negative int, parts that do not sum to the total, an unknown
        ``leftover`` part, or ``weights`` that are not ``(part, fraction)`` pairs (a part other
        than ``output``, at most once; a fraction in ``(0, 1]``)."""
        _check_tokens("total", self.total)
        for part in PARTS:
            _check_tokens(part, getattr(self, part))
        if sum(getattr(self, p) for p in PARTS) != self.total:
            raise InvalidInputError(
                "total", f"must be the sum of the parts ({', '.join(PARTS)})", value=self.total,
                fix="make one with allocate_budget(...)",
            )  # fmt: skip
        _check_part(self.leftover, "leftover")
        _check_weights(self.weights)

    @property
    def prompt(self) -> int:
        """Tokens for the prompt: :attr:`total` minus :attr:`output`."""
        return self.total - self.output

    def as_dict(self) -> dict[str, int]:
        """The per-part budgets in document order (they sum to :attr:`total`)."""
        return {p: getattr(self, p) for p in PARTS}

    def rebalance(self, used: Mapping[str, int], *, to: str | Iterable[str] | None = None) -> Allocation:
        """A new allocation in which the named parts keep only what they use.

        Each part named in ``used`` is cut to its use; the tokens freed go to the
        receiving parts in proportion to their weights (equally when none has a weight),
        rounded by largest remainder, ties in document order. The named parts stop being
        proportional, so a later rebalance gives them nothing more.

        Args:
            used: Tokens each named part actually needs, at most its allocation.
            to: The part or parts that receive the freed tokens. Default: the proportional
                parts not named in ``used``; when there are none, the :attr:`leftover` part.

        Returns:
            A new :class:`Allocation` with the same :attr:`total`.

        Raises:
            InvalidInputError: ``used`` is not a dict, ``to`` is not a part name or a list of
                them, an unknown part, a negative or non-integer use, a use above the part's
                allocation, or a receiver named in ``used``.

        Example:
            >>> a = allocate_budget(1_000, shares={"system": 300, "context": 0.25})
            >>> b = a.rebalance(used={"system": 100})
            >>> (b.system, b.context, b.history)
            (100, 225, 675)
        """
        if not isinstance(used, Mapping):
            raise InvalidInputError(
                "used", "must be a dict of part name to tokens", value=used, fix="e.g. used={'system': 120}"
            )
        current = self.as_dict()
        cuts: dict[str, int] = {}
        for part, n in used.items():
            field = f"used[{part!r}]"
            _check_part(part, field)
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise InvalidInputError(
                    field, "must be a non-negative integer", value=n, fix="pass tokens used"
                )
            if n > current[part]:
                raise InvalidInputError(
                    field,
                    f"{n} tokens exceed the part's allocation of {current[part]}",
                    value=n,
                    fix="give the part a larger share, or cut it to its allocation first",
                )
            cuts[part] = n
        weights: dict[str, Fraction] = {p: Fraction(w) for p, w in self.weights if p not in cuts}
        if to is None:
            receivers = list(weights) or [self.leftover]
        else:
            if not isinstance(to, str | Iterable):
                raise InvalidInputError(
                    "to",
                    f"must be a part name or a list of part names, got {type(to).__name__}",
                    value=to,
                    fix="e.g. to='history' or to=['context', 'history']",
                )
            listed = [to] if isinstance(to, str) else list(to)
            for part in listed:
                _check_part(part, "to")
            names = set(listed)
            if not names:
                raise InvalidInputError("to", "names no part", fix="name at least one part, or pass None")
            receivers = [p for p in PARTS if p in names]
            for part in receivers:
                if part in cuts:
                    raise InvalidInputError(
                        "to", f"{part!r} is named in used and cannot receive tokens", value=part
                    )
        freed = sum(current[p] - n for p, n in cuts.items())
        share: dict[str, Fraction] = {p: weights.get(p, Fraction(0)) for p in receivers}
        if not any(share.values()):
            share = {p: Fraction(1) for p in receivers}
        current.update(cuts)
        for part, extra in _split(freed, share).items():
            current[part] += extra
        return _make(self.total, current, weights, self.leftover)

    def fill(self, demand: Mapping[str, int]) -> Allocation:
        """Give each named part what it needs, up to what it can get, passing surpluses on.

        Repeatedly: each part whose demand fits its budget keeps just its demand
        (:meth:`rebalance`), and the tokens it frees go to the named parts still short, by
        their weights; to the short parts without weights (equally) only once no part with
        a weight is short. Parts not named in ``demand`` keep their budgets (and, when every
        named part is satisfied, the proportional ones among them receive the rest).

        Args:
            demand: Tokens each part would use if it were not cut.

        Returns:
            A new :class:`Allocation`; a part is cut exactly when its demand exceeds its budget.

        Raises:
            InvalidInputError: ``demand`` is not a dict, an unknown part or a negative demand.

        Example:
            >>> a = allocate_budget(1_000, shares={"context": 0.5})
            >>> a.fill({"context": 100, "history": 2_000, "examples": 300}).as_dict()
            {'system': 0, 'examples': 0, 'context': 100, 'history': 900, 'user': 0, 'output': 0}
        """
        if not isinstance(demand, Mapping):
            raise InvalidInputError(
                "demand",
                f"must be a dict of part name to tokens, got {type(demand).__name__}",
                value=demand,
                fix="e.g. demand={'context': 1200, 'history': 3000}",
            )
        for part, n in demand.items():
            _check_part(part, f"demand[{part!r}]")
            _check_tokens(f"demand[{part!r}]", n)
        short = set(demand)
        alloc = self
        while True:
            budgets = alloc.as_dict()
            fits = {p: demand[p] for p in short if demand[p] <= budgets[p]}
            if not fits:
                return alloc
            short -= fits.keys()
            alloc = alloc.rebalance(fits, to=short or None)  # weighted parts first: see rebalance


def allocate_budget(
    total: int | str | ModelInfo | TokenCounter,
    *,
    reserve_output: int | None = None,
    shares: Mapping[str, int | float] | None = None,
    leftover: str = "history",
) -> Allocation:
    """Split a window across system, examples, context, history, user input and output.

    Args:
        total: The window in tokens, or a model (name, :class:`ModelInfo` or
            :class:`TokenCounter`) whose registry ``context_window`` is the window.
        reserve_output: Tokens reserved for the reply. Default: the model's
            ``max_output_tokens`` when ``total`` is a model, else 0.
        shares: Part name to share: an ``int`` is fixed tokens, a ``float`` in ``(0, 1]``
            a fraction of what remains after the fixed shares (``1`` is one token,
            ``1.0`` is everything). Parts without a share get 0 (except ``leftover``).
        leftover: The part that receives what the proportions leave unassigned.

    Returns:
        An :class:`Allocation` whose parts sum exactly to the total.

    Raises:
        InvalidInputError: Names the field: an unknown part, a negative or malformed
            share, an ``output`` share besides ``reserve_output``, fixed shares above the
            total, proportions summing above 1, or a model without a known window.
        UnknownModelError: ``total`` names a model the registry does not know.

    Example:
        >>> a = allocate_budget("gpt-4o", shares={"system": 500, "context": 0.6, "examples": 0.1})
        >>> (a.total, a.output, a.system, a.context, a.examples, a.history)
        (128000, 16384, 500, 66669, 11112, 33335)
    """
    window, default_reserve = _window(total)
    _check_part(leftover, "leftover")
    if shares is None:
        shares = {}
    if not isinstance(shares, Mapping):
        raise InvalidInputError(
            "shares",
            "must be a dict of part name to int or float",
            value=shares,
            fix="e.g. shares={'system': 500, 'context': 0.5}",
        )
    if reserve_output is not None:
        _check_tokens("reserve_output", reserve_output)
        if "output" in shares:
            raise InvalidInputError(
                "shares['output']",
                "the output share is given twice",
                fix="pass either reserve_output=... or shares={'output': ...}, not both",
            )
    fixed: dict[str, int] = {"output": default_reserve if reserve_output is None else reserve_output}
    weights: dict[str, Fraction] = {}
    for part, share in shares.items():
        field = f"shares[{part!r}]"
        _check_part(part, field)
        if isinstance(share, bool) or not isinstance(share, int | float):
            raise InvalidInputError(
                field,
                f"must be an int (tokens) or a float (fraction), got {type(share).__name__}",
                value=share,
                fix="e.g. 500 for 500 tokens, 0.5 for half of the rest",
            )
        if isinstance(share, int):
            fixed[part] = _check_tokens(field, share)
        elif part == "output":
            raise InvalidInputError(
                field, "the output reservation must be fixed tokens", value=share, fix="pass an int"
            )
        elif not 0 < share <= 1:
            fix = "use the int 0 for no tokens" if share == 0 else "use a fraction in (0, 1]"
            raise InvalidInputError(field, f"{share!r} is not a fraction in (0, 1]", value=share, fix=fix)
        else:
            # 0.1 is 1/10, so 0.1 + 0.9 is exactly 1 (float(): a float subclass such as numpy's too)
            weights[part] = Fraction(repr(float(share)))
    need = sum(fixed.values())
    if need > window:
        what = ", ".join(f"{p}={n}" for p, n in fixed.items() if n)
        field = "reserve_output" if fixed["output"] > window else "shares"
        raise InvalidInputError(
            field,
            f"fixed shares ({what}) need {need} tokens but the total is {window}",
            value=need,
            fix="lower the fixed shares or use fractions (floats) for the flexible parts",
        )
    ratio = sum(weights.values(), Fraction(0))
    if ratio > 1:
        what = " + ".join(f"{p}={float(w)}" for p, w in weights.items())
        raise InvalidInputError(
            "shares",
            f"the proportions sum to {float(ratio):g} ({what}), more than 1",
            value=float(ratio),
            fix="scale the fractions down so they sum to 1 or less",
        )
    if ratio < 1:
        weights[leftover] = weights.get(leftover, Fraction(0)) + 1 - ratio
    parts: dict[str, int] = {p: fixed.get(p, 0) for p in PARTS}
    for part, extra in _split(window - need, weights).items():
        parts[part] += extra
    return _make(window, parts, weights, leftover)


def _make(total: int, parts: Mapping[str, int], weights: Mapping[str, Fraction], leftover: str) -> Allocation:
    return Allocation(
        total=total,
        system=parts["system"],
        examples=parts["examples"],
        context=parts["context"],
        history=parts["history"],
        user=parts["user"],
        output=parts["output"],
        weights=tuple((p, float(weights[p])) for p in PARTS if p in weights),
        leftover=_part(leftover),
    )


def _split(pool: int, weights: Mapping[str, Fraction]) -> dict[str, int]:
    """``pool`` split by weight (normalised), largest remainder, ties in document order."""
    total_weight = sum(weights.values(), Fraction(0))
    if pool <= 0 or total_weight <= 0:
        return {}
    quotas = {p: pool * w / total_weight for p, w in weights.items()}
    out = {p: int(q) for p, q in quotas.items()}  # floor: quotas are non-negative
    rest = pool - sum(out.values())
    order = sorted(out, key=lambda p: (-(quotas[p] - out[p]), PARTS.index(_part(p))))
    for p in order[:rest]:
        out[p] += 1
    return out


def _window(total: object) -> tuple[int, int]:
    """The window and the default output reservation for ``total``."""
    if isinstance(total, int) and not isinstance(total, bool):
        return _check_tokens("total", total), 0
    if isinstance(total, TokenCounter):
        info = total.model
    elif isinstance(total, ModelInfo):
        info = total
    elif isinstance(total, str):
        info = get_model(total)
    else:
        raise InvalidInputError(
            "total", "must be a number of tokens or a model name", value=total, fix="e.g. 8_000 or 'gpt-4o'"
        )
    if info.context_window is None:
        raise InvalidInputError(
            "total", f"{info.name!r} has no known context window", fix="pass the total in tokens instead"
        )
    return info.context_window, info.max_output_tokens or 0


def _check_tokens(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInputError(
            field, "must be a non-negative integer (tokens)", value=value, fix="pass a number of tokens"
        )
    return value


def _check_weights(weights: object) -> None:
    """Refuse ``weights`` that :meth:`Allocation.rebalance` cannot split by (it would fail on them
    with a bare ``ValueError``, far from where they were made)."""
    fix = (
        "pass a tuple of (part, fraction) pairs, e.g. (('context', 0.5), ('history', 0.5)), "
        "or make one with allocate_budget(...)"
    )
    if not isinstance(weights, tuple):
        raise InvalidInputError(
            "weights",
            f"must be a tuple of (part, fraction) pairs, got {type(weights).__name__}",
            value=weights,
            fix=fix,
        )
    seen: set[object] = set()
    for i, pair in enumerate(weights):
        field = f"weights[{i}]"
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise InvalidInputError(field, "must be a (part, fraction) pair", value=pair, fix=fix)
        part, weight = pair
        _check_part(part, f"{field}[0]")
        if part == "output" or part in seen:
            problem = (
                "the output reservation is fixed, it takes no share"
                if part == "output"
                else f"{part!r} is weighted twice"
            )
            raise InvalidInputError(f"{field}[0]", problem, value=part, fix=fix)
        seen.add(part)
        if (
            isinstance(weight, bool)
            or not isinstance(weight, int | float)
            or not math.isfinite(weight)
            or not 0 < weight <= 1
        ):
            raise InvalidInputError(
                f"{field}[1]", f"{weight!r} is not a fraction in (0, 1]", value=weight, fix=fix
            )


def _check_part(part: object, field: str) -> None:
    if part not in PARTS:
        raise InvalidInputError(
            field, f"unknown part {part!r}", value=part, fix=f"use one of {', '.join(PARTS)}"
        )


def _part(name: str) -> Part:
    for p in PARTS:
        if p == name:
            return p
    raise InvalidInputError("part", f"unknown part {name!r}", value=name, fix=f"use one of {PARTS}")
