"""Building frozen, slotted dataclasses on hot paths.

A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__`` (its own
``__setattr__`` refuses), which costs about as much as the rest of a small ledger operation.
:func:`positional_maker` returns a function that builds the same object by setting each slot
directly: the result compares, hashes and prints like one built with the class, stays frozen,
and is validated by the class's ``__post_init__`` as usual.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["positional_maker"]

T = TypeVar("T")


def positional_maker(cls: type[T]) -> Callable[..., T]:
    """A constructor of ``cls`` taking every field positionally, in declaration order.

    It applies no defaults (every field is given) and runs ``__post_init__`` if the class has one.

    Raises:
        TypeError: ``cls`` is not a frozen, slotted dataclass whose fields are all set by ``__init__``.
    """
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__} must be a frozen, slotted dataclass")
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    if not all(f.init for f in fields):
        raise TypeError(f"{cls.__name__} has fields that __init__ does not set")
    names = [f.name for f in fields]
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    namespace.update({f"_set_{n}": getattr(cls, n).__set__ for n in names})
    body = "".join(f"    _set_{n}(obj, {n})\n" for n in names)
    if hasattr(cls, "__post_init__"):
        body += "    obj.__post_init__()\n"
    source = f"def make({', '.join(names)}):\n    obj = _new(_cls)\n{body}    return obj\n"
    exec(source, namespace)  # generated from the field names only, as dataclasses does
    maker: Callable[..., T] = namespace["make"]
    maker.__qualname__ = f"positional_maker({cls.__name__})"
    return maker
