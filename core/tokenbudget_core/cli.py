"""The ``tokenbudget`` command line: count tokens, price a call, run the demo.

The commands only parse arguments and print; counting, pricing and the demo live in
:mod:`~tokenbudget_core.counting`, :mod:`~tokenbudget_core.pricing` and
:mod:`~tokenbudget_core.demo`. Every error tokenbudget raises on purpose is printed
as one ``error: ...`` line on stderr, without a traceback, and mapped to an exit code.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from ._version import __version__
from .counting import TokenCounter
from .errors import (
    EncodingUnavailableError,
    InvalidInputError,
    MissingDependencyError,
    TokenBudgetError,
    TokenCountError,
    UnpricedModelError,
)
from .pricing import format_usd, price_of
from .usage import Usage

__all__ = ["EXIT_BAD_INPUT", "EXIT_OK", "EXIT_UNAVAILABLE", "EXIT_UNPRICED", "EXIT_USAGE", "cli", "main"]

EXIT_OK = 0
"""Success."""
EXIT_BAD_INPUT = 1
"""Bad input: malformed JSON or message list, unknown model, bad token figure, unreadable file."""
EXIT_USAGE = 2
"""Command-line usage error (click's own: unknown option, missing required option)."""
EXIT_UNPRICED = 3
"""The model is known but has no price."""
EXIT_UNAVAILABLE = 4
"""A counting resource is unavailable (tiktoken encoding file, provider counting API, optional extra)."""

_EXIT_CODES_HELP = """
\b
Exit codes:
  0  success
  1  bad input (malformed JSON or messages, unknown model, bad token figure, unreadable file)
  2  usage error (unknown option, missing required option)
  3  the model has no known price
  4  a counting resource is unavailable (tiktoken encoding, provider API, optional extra)
"""


class _CliError(click.ClickException):
    """A one-line ``error: ...`` on stderr; the subclass sets the exit code."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class _UnpricedError(_CliError):
    exit_code = EXIT_UNPRICED


class _UnavailableError(_CliError):
    exit_code = EXIT_UNAVAILABLE


def _cli_error(error: TokenBudgetError) -> _CliError:
    if isinstance(error, UnpricedModelError):
        return _UnpricedError(str(error))
    if isinstance(error, EncodingUnavailableError | TokenCountError | MissingDependencyError):
        return _UnavailableError(str(error))
    return _CliError(str(error))


class _Group(click.Group):
    """Turns tokenbudget's errors into one-line click errors, so no traceback reaches the user."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TokenBudgetError as e:
            raise _cli_error(e) from e


@click.group(cls=_Group, epilog=_EXIT_CODES_HELP)
@click.version_option(__version__, prog_name="tokenbudget")
def cli() -> None:
    """Count tokens and price LLM calls before they go out."""


# -- count ----------------------------------------------------------------------------------------

_F = TypeVar("_F", bound=Callable[..., Any])
_LOOKS_LIKE_MESSAGES = re.compile(r"^\s*\[\s*\{")


@cli.command(epilog=_EXIT_CODES_HELP)
@click.argument("file", default="-", metavar="[FILE|-]")
@click.option("--model", "-m", default="gpt-4o", show_default=True, help="Model whose tokenizer to use.")
@click.option(
    "--format",
    "input_format",
    type=click.Choice(["auto", "text", "messages"]),
    default="auto",
    show_default=True,
    help="auto: a JSON array of objects is a message list, anything else plain text.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the count as JSON.")
def count(file: str, *, model: str, input_format: str, as_json: bool) -> None:
    """Count the tokens of FILE (or stdin): plain text or a JSON list of chat messages.

    A message list is OpenAI's Chat Completions shape, e.g.
    [{"role": "user", "content": "Hi"}]; its count includes the chat framing.
    """
    raw = _read_input(file)
    messages = _parse_messages(raw, input_format)
    counter = TokenCounter.for_model(model)
    n = counter.count(raw) if messages is None else counter.count_messages(messages)
    if as_json:
        click.echo(json.dumps({**n.as_dict(), "kind": "text" if messages is None else "messages"}))
    else:
        click.echo(str(int(n)))
    if not n.exact:
        click.echo(f"note: {int(n)} is an estimate (method={n.method}); it is not an exact count.", err=True)


def _read_input(file: str) -> str:
    if file == "-":
        return sys.stdin.read()
    try:
        return Path(file).read_text(encoding="utf-8")
    except OSError as e:
        raise InvalidInputError("FILE", f"cannot read {file!r}: {e.strerror or e}", value=file) from e
    except UnicodeDecodeError as e:
        raise InvalidInputError("FILE", f"{file!r} is not UTF-8 text", value=file) from e


def _parse_messages(raw: str, input_format: str) -> list[Any] | None:
    """The message list in ``raw``, or ``None`` when ``raw`` is to be counted as text."""
    if input_format == "text":
        return None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        if input_format == "messages" or _LOOKS_LIKE_MESSAGES.match(raw):
            raise InvalidInputError(
                "input",
                f"not a valid JSON message list: {e.msg} at line {e.lineno}, column {e.colno}",
                fix="fix the JSON, or pass --format text to count it as plain text",
            ) from e
        return None
    if isinstance(data, list) and (input_format == "messages" or any(isinstance(m, dict) for m in data)):
        return data
    if input_format == "messages":
        raise InvalidInputError(
            "input", f"expected a JSON array of messages, got {type(data).__name__}", fix="wrap it in [...]"
        )
    return None


# -- cost -----------------------------------------------------------------------------------------


def _token_option(flag: str, dest: str, help_text: str, *, required: bool = False) -> Callable[[_F], _F]:
    # Taken as text and checked by _tokens, so a bad figure is a one-line error (exit 1), not a usage screen.
    default = None if required else "0"
    return click.option(flag, dest, metavar="N", required=required, default=default, help=help_text)


@cli.command(epilog=_EXIT_CODES_HELP)
@click.option("--model", "-m", required=True, help="Model to price (dated and provider/model names work).")
@_token_option("--input", "input_tokens", "All input tokens, cache reads and writes included.", required=True)
@_token_option("--output", "output_tokens", "All output tokens, reasoning included.", required=True)
@_token_option("--cache-read", "cache_read", "Input tokens read from the prompt cache.")
@_token_option("--cache-write", "cache_write", "Input tokens written to the prompt cache (all TTLs).")
@_token_option("--cache-write-1h", "cache_write_1h", "The part of --cache-write written with a 1-hour TTL.")
@_token_option("--reasoning", "reasoning", "The part of --output that is reasoning.")
@click.option("--json", "as_json", is_flag=True, help="Print the breakdown as JSON (money as strings).")
def cost(
    *,
    model: str,
    input_tokens: str,
    output_tokens: str,
    cache_read: str,
    cache_write: str,
    cache_write_1h: str,
    reasoning: str,
    as_json: bool,
) -> None:
    """Print what a call with these token figures costs, in USD, per component.

    Prices come from genai-prices, or from overrides in $TOKENBUDGET_PRICES.
    """
    usage = Usage(
        input_tokens=_tokens("--input", input_tokens),
        output_tokens=_tokens("--output", output_tokens),
        cache_read_tokens=_tokens("--cache-read", cache_read),
        cache_write_tokens=_tokens("--cache-write", cache_write),
        cache_write_1h_tokens=_tokens("--cache-write-1h", cache_write_1h),
        reasoning_tokens=_tokens("--reasoning", reasoning),
    )
    b = price_of(usage, model)
    if not b.priced:
        raise UnpricedModelError(model)
    if as_json:
        click.echo(json.dumps(b.as_dict(), indent=2))
        return
    click.echo(f"{format_usd(b.total)}  {model} (prices: {b.source}, as {b.priced_as})")
    table = Table(show_header=True)
    table.add_column("component")
    table.add_column("tokens", justify="right")
    table.add_column("cost", justify="right")
    rows = (
        ("input (uncached)", usage.uncached_input_tokens, b.input_cost),
        ("cache read", usage.cache_read_tokens, b.cache_read_cost),
        ("cache write", usage.cache_write_tokens, b.cache_write_cost),
        ("output", usage.output_tokens, b.output_cost),
    )
    for name, tokens, amount in rows:
        table.add_row(name, f"{tokens:,}", format_usd(amount))
    if b.request_cost:
        table.add_row("request fee", f"{usage.requests} req", format_usd(b.request_cost))
    table.add_section()
    table.add_row("total", f"{usage.total_tokens:,}", format_usd(b.total))
    Console(soft_wrap=False).print(table)


def _tokens(flag: str, value: str) -> int:
    text = value.strip().replace("_", "")
    if not text.isascii() or not text.isdigit():
        raise InvalidInputError(flag, f"must be a non-negative integer, got {value!r}", value=value)
    return int(text)


# -- demo -----------------------------------------------------------------------------------------


@cli.command(epilog=_EXIT_CODES_HELP)
@click.option("--model", "-m", default="gpt-4o", show_default=True, help="Model to count the messages for.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def demo(*, model: str, as_json: bool) -> None:
    """Count and price a built-in support conversation with a tool call, end to end.

    Shows the tokens of each message on --model, the prompt and expected output
    tokens, and the call's cost on --model, gpt-4o, gpt-4o-mini and claude-sonnet-4-5.
    Claude is counted offline as a flagged estimate unless ANTHROPIC_API_KEY is set.
    """
    from .demo import render_demo, run_demo

    report = run_demo(model=model)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        Console(soft_wrap=False).print(render_demo(report))


def main(argv: Sequence[str] | None = None) -> None:
    """Run the ``tokenbudget`` command (the console-script entry point); exits the process."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="tokenbudget")
