"""LlamaIndex adapters for tokenbudget."""
