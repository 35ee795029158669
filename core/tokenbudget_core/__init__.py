"""tokenbudget: keep LLM applications inside their token and dollar budgets."""
from ._version import __version__

__all__ = ["__version__"]
