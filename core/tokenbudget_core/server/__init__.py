"""The HTTP service and dashboard (``tokenbudget serve``), under the ``server`` extra.

``create_app(ledger_or_store_url, token=..., max_body_bytes=...)`` returns the FastAPI app;
``serve(...)`` runs it with uvicorn. FastAPI is imported only when one of them is used, so
``import tokenbudget_core`` never needs it; without it they raise
:class:`~tokenbudget_core.errors.MissingDependencyError` naming the ``server`` extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tokenbudget_core.errors import MissingDependencyError

if TYPE_CHECKING:
    from .app import create_app, serve

__all__ = ["create_app", "serve"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise MissingDependencyError(e.name or "fastapi", "server") from e
    from . import app

    return getattr(app, name)
