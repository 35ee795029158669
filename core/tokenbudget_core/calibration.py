"""Self-calibrating estimates: a per-model correction factor learned from reported usage.

Offline estimates for models whose tokenizer is not published (Claude when its
counting API is unreachable, Gemini, Mistral...) are tiktoken counts times a factor.
Each time the provider reports the real input tokens of a call whose input was
estimated, :meth:`Calibration.observe` moves the model's factor toward
``actual / estimate`` (the first report sets it; later ones are an exponential moving
average), so estimates converge on the provider's tokenizer.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from .errors import InvalidInputError

__all__ = ["Calibration", "CalibrationState", "default_calibration"]

DEFAULT_PRIOR = 1.2
"""Starting factor: non-OpenAI tokenizers usually need more tokens than cl100k for the same text,
so the prior errs high (a budget check should over-count rather than under-count)."""

_MAX_TOKENS = 2**53
"""The most tokens a figure may name (the integers a float holds exactly)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class CalibrationState:
    """The learned correction of one model."""

    factor: float
    """Multiply a raw estimate by this."""
    observations: int
    """How many reported usages it was learned from."""


class Calibration:
    """Per-model correction factors, thread-safe.

    The first observation of a model sets its factor (the prior is only a guess); each later one
    is averaged in with weight ``alpha``.

    Args:
        prior: The factor before any observation.
        alpha: Weight of each observation after the first (0 < alpha <= 1).
        bounds: Factors are kept within these bounds, so one odd report cannot wreck estimates.

    Raises:
        InvalidInputError: ``prior``, ``alpha`` or ``bounds`` is not a real number (a bool is
            not one) in its range, named.

    Example:
        >>> cal = Calibration(prior=1.0, alpha=0.5)
        >>> cal.observe("claude-sonnet-4-5", estimated=100, actual=120)
        >>> round(cal.factor("claude-sonnet-4-5"), 2)
        1.2
        >>> cal.observe("claude-sonnet-4-5", estimated=100, actual=100)
        >>> round(cal.factor("claude-sonnet-4-5"), 2)
        1.1
    """

    def __init__(
        self, *, prior: float = DEFAULT_PRIOR, alpha: float = 0.2, bounds: tuple[float, float] = (0.5, 3.0)
    ):
        if not (_real(prior) and math.isfinite(prior) and prior > 0):
            raise InvalidInputError("prior", "must be a positive number", value=prior)
        if not (_real(alpha) and 0 < alpha <= 1):
            raise InvalidInputError("alpha", "must be in (0, 1]", value=alpha)
        if not (
            isinstance(bounds, tuple | list)
            and len(bounds) == 2
            and all(_real(b) and math.isfinite(b) for b in bounds)
        ):
            raise InvalidInputError(
                "bounds", "must be a (low, high) pair of numbers", value=bounds, fix="e.g. bounds=(0.5, 3.0)"
            )
        lo, hi = bounds
        if not (0 < lo <= prior <= hi):
            raise InvalidInputError("bounds", "must satisfy 0 < low <= prior <= high", value=bounds)
        self.prior = float(prior)
        self.alpha = float(alpha)
        self.bounds = (float(lo), float(hi))
        self._lock = threading.Lock()
        self._states: dict[str, CalibrationState] = {}

    def factor(self, model: str) -> float:
        """The current correction factor for ``model``.

        Raises:
            InvalidInputError: ``model`` is not a non-empty string.
        """
        state = self._states.get(_check_model(model))
        return self.prior if state is None else state.factor

    def state(self, model: str) -> CalibrationState:
        """The factor and the number of observations behind it.

        Raises:
            InvalidInputError: ``model`` is not a non-empty string.
        """
        return self._states.get(_check_model(model)) or CalibrationState(factor=self.prior, observations=0)

    def apply(self, model: str, raw_estimate: int) -> int:
        """A raw estimate corrected by the model's factor (rounded up).

        Raises:
            InvalidInputError: ``model`` is not a non-empty string, or ``raw_estimate`` is not a
                non-negative int (a bool, float, NaN or ``None`` is refused, never rounded).
        """
        if (
            isinstance(raw_estimate, bool)
            or not isinstance(raw_estimate, int)
            or not 0 <= raw_estimate <= _MAX_TOKENS
        ):
            raise InvalidInputError(
                "raw_estimate", f"must be an integer from 0 to {_MAX_TOKENS:,}", value=raw_estimate
            )
        corrected = raw_estimate * self.factor(model)
        if not math.isfinite(corrected) or corrected > _MAX_TOKENS:
            raise InvalidInputError(
                "raw_estimate",
                f"corrected by {model!r}'s factor it exceeds {_MAX_TOKENS:,} tokens",
                value=raw_estimate,
                fix="lower the calibration's prior or upper bound",
            )
        return math.ceil(corrected)

    def observe(self, model: str, *, estimated: int, actual: int) -> None:
        """Learn from one call: the *raw* (uncorrected) ``estimated`` and the reported ``actual`` tokens.

        Raises:
            InvalidInputError: ``model`` is not a non-empty string, or a figure is negative or not
                an integer.
        """
        _check_model(model)
        for field, value in (("estimated", estimated), ("actual", actual)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_TOKENS:
                raise InvalidInputError(field, f"must be an integer from 0 to {_MAX_TOKENS:,}", value=value)
        if estimated == 0 or actual == 0:
            return
        ratio = min(max(actual / estimated, self.bounds[0]), self.bounds[1])
        with self._lock:
            old = self._states.get(model)
            if old is None:
                new = CalibrationState(factor=ratio, observations=1)
            else:
                f = (1 - self.alpha) * old.factor + self.alpha * ratio
                new = CalibrationState(factor=f, observations=old.observations + 1)
            self._states[model] = new

    def reset(self, model: str | None = None) -> None:
        """Forget what was learned for ``model`` (or for every model).

        Raises:
            InvalidInputError: ``model`` is neither ``None`` nor a non-empty string.
        """
        if model is not None:
            _check_model(model)
        with self._lock:
            if model is None:
                self._states.clear()
            else:
                self._states.pop(model, None)


def _real(value: object) -> bool:
    """A real number: an int or float, not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_model(model: object) -> str:
    if not isinstance(model, str) or not model.strip():
        raise InvalidInputError("model", "must be a non-empty model name", value=model)
    return model


def check_calibration(calibration: object) -> Calibration:
    """``calibration`` itself when it is a :class:`Calibration`, the process-wide one for ``None``.

    Raises:
        InvalidInputError: Anything else, named ``calibration``.
    """
    if calibration is None:
        return default_calibration()
    if not isinstance(calibration, Calibration):
        raise InvalidInputError(
            "calibration",
            f"must be a Calibration (or None), got {type(calibration).__name__}",
            value=calibration,
            fix="pass Calibration(), or leave it out for the process-wide one",
        )
    return calibration


_default = Calibration()


def default_calibration() -> Calibration:
    """The process-wide calibration table used when none is passed."""
    return _default
