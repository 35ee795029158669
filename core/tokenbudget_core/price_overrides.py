"""User price overrides: :class:`PriceOverride` values kept in a :class:`PriceTable`.

Overrides win over the genai-prices data. The process-wide table is filled by
:func:`register_price`, :func:`load_prices` and ``$TOKENBUDGET_PRICES`` (a TOML or
JSON file with ``[prices."<model>"]`` tables). Prices are ``Decimal`` USD per million
tokens; floats are read through ``str()`` and NaN, infinities and negatives are refused.
"""

from __future__ import annotations

import json
import os
import threading
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, TypeAlias

from .errors import InvalidInputError, environment_value
from .registry import check_registry, config_file_path

__all__ = ["PriceLike", "PriceOverride", "PriceTable", "default_price_table", "load_prices", "register_price"]

PriceLike: TypeAlias = Decimal | int | str | float
"""A price as accepted from callers: a Decimal, an int, a decimal string, or a float (read via ``str``)."""

_PRICE_FIELDS = ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok", "cache_write_1h_mtok")


def _to_price(field: str, value: object, *, required: bool) -> Decimal | None:
    if value is None:
        if required:
            raise InvalidInputError(field, "is required", fix="give USD per million tokens, e.g. '2.5'")
        return None
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str | float):
        kind = type(value).__name__
        raise InvalidInputError(field, f"must be a Decimal, int or decimal string, got {kind}", value=value)
    try:  # floats go through str() so 2.5 is Decimal('2.5'), not its binary approximation
        price = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except InvalidOperation as e:
        raise InvalidInputError(field, f"is not a number: {value!r}", value=value) from e
    if not price.is_finite() or price < 0:
        raise InvalidInputError(field, f"must be a finite number >= 0, got {value!r}", value=value)
    return price


@dataclass(frozen=True, kw_only=True, slots=True, init=False)
class PriceOverride:
    """A user's price for a model, in USD per million tokens; wins over genai-prices.

    Prices are stored as :class:`~decimal.Decimal`. Ints, decimal strings and Decimals
    are taken as they are; floats are read through ``str()`` (``2.5`` -> ``Decimal('2.5')``).
    An optional price left out falls back to its parent's: cache reads and writes cost
    ``input_mtok``, 1-hour cache writes cost ``cache_write_mtok``.

    Args:
        input_mtok: Price of a million uncached input tokens.
        output_mtok: Price of a million output tokens (reasoning included).
        cache_read_mtok: Price of a million input tokens read from the prompt cache.
        cache_write_mtok: Price of a million input tokens written to the cache (5-minute TTL).
        cache_write_1h_mtok: Price of a million input tokens written with a 1-hour TTL.

    Raises:
        InvalidInputError: A price is missing, negative, NaN, infinite or not a number;
            the error names the field.

    Example:
        >>> override = PriceOverride(input_mtok="2.5", output_mtok=10, cache_read_mtok=1.25)
        >>> override.cache_read_mtok
        Decimal('1.25')
    """

    input_mtok: Decimal
    """USD per million uncached input tokens."""
    output_mtok: Decimal
    """USD per million output tokens."""
    cache_read_mtok: Decimal | None
    """USD per million cache-read tokens (``None``: the input price)."""
    cache_write_mtok: Decimal | None
    """USD per million cache-write tokens (``None``: the input price)."""
    cache_write_1h_mtok: Decimal | None
    """USD per million 1-hour cache-write tokens (``None``: the cache-write price)."""

    def __init__(
        self,
        *,
        input_mtok: PriceLike,
        output_mtok: PriceLike,
        cache_read_mtok: PriceLike | None = None,
        cache_write_mtok: PriceLike | None = None,
        cache_write_1h_mtok: PriceLike | None = None,
    ) -> None:
        given = (input_mtok, output_mtok, cache_read_mtok, cache_write_mtok, cache_write_1h_mtok)
        for i, (name, value) in enumerate(zip(_PRICE_FIELDS, given, strict=True)):
            object.__setattr__(self, name, _to_price(f"price_override.{name}", value, required=i < 2))


class PriceTable:
    """User price overrides by model name. Instances are independent; one is process-wide.

    A name is matched as the caller wrote it first, then as the registry's canonical
    id, so an override for ``gpt-4o`` also prices ``gpt-4o-2024-08-06``.

    Args:
        overrides: Initial overrides by model name.

    Raises:
        InvalidInputError: ``overrides`` is not a mapping, a name is empty or an override is not a
            :class:`PriceOverride`.

    Example:
        >>> from tokenbudget_core import ModelRegistry, Usage, cost_of
        >>> registry = ModelRegistry()
        >>> _ = registry.register("acme-7b", provider="acme", context_window=32_000, max_output_tokens=4_096)
        >>> table = PriceTable()
        >>> table.register("acme-7b", PriceOverride(input_mtok="0.2", output_mtok="0.8"))
        >>> cost_of(Usage(input_tokens=1_000_000), "acme-7b", registry=registry, prices=table)
        Decimal('0.2')
    """

    def __init__(self, overrides: Mapping[str, PriceOverride] | None = None) -> None:
        self._lock = threading.Lock()
        self._overrides: dict[str, PriceOverride] = {}
        self.version = 0
        """Bumped by every change to the overrides (caches of resolved prices compare it)."""
        if overrides is None:
            return
        if not isinstance(overrides, Mapping):
            raise InvalidInputError(
                "overrides", f"must map model names to PriceOverride, got {type(overrides).__name__}",
                value=overrides, fix="pass {'<model>': PriceOverride(...)}",
            )  # fmt: skip
        for name, override in overrides.items():
            self.register(name, override)

    def register(self, model: str, override: PriceOverride) -> None:
        """Set the price of ``model`` (replacing any earlier override for it)."""
        if not isinstance(model, str) or not model.strip():
            raise InvalidInputError("model", "must be a non-empty model name", value=model)
        if not isinstance(override, PriceOverride):
            kind = type(override).__name__
            raise InvalidInputError("override", f"must be a PriceOverride, got {kind}", value=override)
        with self._lock:
            self._overrides[model.strip()] = override
            self.version += 1

    def unregister(self, model: str) -> None:
        """Forget the override for ``model`` (no error when there is none)."""
        with self._lock:
            self._overrides.pop(model.strip(), None)
            self.version += 1

    def get(self, model: str) -> PriceOverride | None:
        """The override registered under exactly ``model``, if any."""
        return self._overrides.get(model.strip())

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and model.strip() in self._overrides

    def __len__(self) -> int:
        return len(self._overrides)

    def load_file(self, path: str | os.PathLike[str]) -> dict[str, PriceOverride]:
        """Load overrides from a TOML or JSON file (``.json`` is JSON, anything else TOML).

        The file holds a ``prices`` table keyed by model name, e.g. in TOML::

            [prices."gpt-4o"]
            input_mtok = "2.5"
            output_mtok = "10"
            cache_read_mtok = "1.25"

        Numbers are read as decimals, never through binary floats. Nothing is
        registered unless every entry is valid.

        Raises:
            InvalidInputError: ``path`` is not a path (``None``, empty: named ``path``), or the
                file is missing, unparsable, or an entry is malformed.
        """
        p = config_file_path(path, "prices")
        kind = "JSON" if p.suffix.lower() == ".json" else "TOML"
        try:
            text = p.read_bytes().decode()
            load = json.loads if kind == "JSON" else tomllib.loads
            data: Any = load(text, parse_float=Decimal)
        except OSError as e:
            raise InvalidInputError("prices_file", f"cannot read {p}: {e.strerror}", value=str(p)) from e
        except (ValueError, UnicodeDecodeError) as e:
            raise InvalidInputError("prices_file", f"{p} is not valid {kind}: {e}", value=str(p)) from e
        prices = data.get("prices") if isinstance(data, dict) else None
        if not isinstance(prices, dict):
            raise InvalidInputError("prices_file", f"{p} has no 'prices' table", fix='add [prices."<model>"]')
        loaded: dict[str, PriceOverride] = {}
        for name, entry in prices.items():
            where = f"prices[{name!r}]"
            if not isinstance(name, str) or not name.strip():
                raise InvalidInputError(where, "must be named by a non-empty model name", value=name)
            if not isinstance(entry, dict):
                raise InvalidInputError(where, "must be a table of prices", value=entry)
            extra = sorted(set(entry) - set(_PRICE_FIELDS))
            if extra:
                raise InvalidInputError(
                    f"{where}.{extra[0]}", "is not a price field", fix=f"use {_PRICE_FIELDS}"
                )
            try:
                loaded[name] = PriceOverride(**{k: entry.get(k) for k in _PRICE_FIELDS})  # type: ignore[arg-type]
            except InvalidInputError as e:
                field = e.field.replace("price_override", where, 1)
                raise InvalidInputError(field, e.problem, value=e.value, fix=e.fix) from e
        for name, override in loaded.items():
            self.register(name, override)
        return loaded


_default_table: PriceTable | None = None
_default_lock = threading.Lock()


def default_price_table() -> PriceTable:
    """The process-wide overrides; loads ``$TOKENBUDGET_PRICES`` on first use if set."""
    global _default_table
    table = _default_table
    if table is not None:  # made already: no lock to take on every call
        return table
    with _default_lock:
        if _default_table is None:
            table = PriceTable()
            path = environment_value(
                "TOKENBUDGET_PRICES",
                fix="unset it for the default prices, else name a TOML or JSON prices file",
            )
            if path is not None:
                table.load_file(path)
            _default_table = table
        return _default_table


def register_price(model: str, override: PriceOverride, *, table: PriceTable | None = None) -> None:
    """Set the price of ``model`` in ``table`` (default: the process-wide table).

    Raises:
        InvalidInputError: ``model`` is empty, ``override`` is not a :class:`PriceOverride`, or
            ``table`` is not a :class:`PriceTable` (or ``None``).
    """
    check_table(table, "table").register(model, override)


def load_prices(path: str | os.PathLike[str], *, table: PriceTable | None = None) -> dict[str, PriceOverride]:
    """Load a TOML/JSON prices file into ``table`` (default: the process-wide table).

    Raises:
        InvalidInputError: ``path`` is not a path (``None``, empty: named ``path``), or the file
            is missing, unparsable, or an entry is malformed; or ``table`` is not a
            :class:`PriceTable` (or ``None``).
    """
    return check_table(table, "table").load_file(path)


def check_price_options(registry: object, prices: object, *, fallback: str = "") -> None:
    """``registry`` is a :class:`~tokenbudget_core.registry.ModelRegistry` and ``prices`` a
    :class:`PriceTable`, or ``None``: the options every entry point that prices a call takes,
    checked where they are given (not at the first price, deep inside a call).

    Args:
        fallback: What ``None`` stands for, added to the fix (e.g. "the ledger's").

    Raises:
        InvalidInputError: Naming ``registry`` or ``prices``.
    """
    if registry is not None:
        check_registry(registry, fallback=fallback)
    if prices is not None:
        check_table(prices, "prices", fallback=fallback)


def check_table(table: object, field: str, *, fallback: str = "") -> PriceTable:
    """``table`` itself when it is a :class:`PriceTable`, :func:`default_price_table` for ``None``.

    Raises:
        InvalidInputError: Anything else, named ``field``.
    """
    if table is None:
        return default_price_table()
    if not isinstance(table, PriceTable):
        leave_out = f", or leave it out ({fallback})" if fallback else ""
        raise InvalidInputError(
            field,
            f"must be a PriceTable (or None), got {type(table).__name__}",
            value=table,
            fix=f"PriceTable({{'<model>': PriceOverride(...)}}){leave_out}",
        )
    return table
