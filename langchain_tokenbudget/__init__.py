"""LangChain adapters for tokenbudget."""
