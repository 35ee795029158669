"""The ``tokenbudget`` command line: count tokens, price a call, run the demo, report spend and budgets.

The commands only parse arguments and print; counting, pricing, the demo and the reports live
in :mod:`~tokenbudget_core.counting`, :mod:`~tokenbudget_core.pricing`,
:mod:`~tokenbudget_core.demo`, :mod:`~tokenbudget_core.reports` and
:mod:`~tokenbudget_core.ledger`. Every error tokenbudget raises on purpose is printed
as one ``error: ...`` line on stderr, without a traceback, and mapped to an exit code.
"""

from __future__ import annotations

import codecs
import errno
import json
import os
import re
import sqlite3
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

import click
from rich.console import Console, Group, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from ._version import __version__
from .budget_status import GLOBAL_BUDGETS
from .counting import TokenCounter
from .errors import (
    BudgetUnavailableError,
    EncodingUnavailableError,
    InvalidInputError,
    MissingDependencyError,
    StoreRefusedError,
    TokenBudgetError,
    TokenCountError,
    UnknownModelError,
    UnpricedModelError,
    environment_value,
)
from .fallbacks import http_status, is_retryable
from .money import jsonable
from .pricing import format_usd, price_of
from .usage import Usage
from .visible import visible

if TYPE_CHECKING:
    from .ledger import Ledger
    from .reports import Report
    from .stores.base import LedgerStore

__all__ = ["EXIT_BAD_INPUT", "EXIT_OK", "EXIT_UNAVAILABLE", "EXIT_UNPRICED", "EXIT_USAGE", "cli", "main"]

EXIT_OK = 0
"""Success."""
EXIT_BAD_INPUT = 1
"""Bad input: malformed JSON or message list, unknown model, bad figure or day, unreadable or missing file."""
EXIT_USAGE = 2
"""Command-line usage error (click's own: unknown option, missing required option)."""
EXIT_UNPRICED = 3
"""The model is known but has no price."""
EXIT_UNAVAILABLE = 4
"""A resource is unavailable (tiktoken encoding file, provider counting API, optional extra, ledger store
unreachable or refusing the ledger's credentials or ACL, the address ``serve`` is to listen on, stdout
when it cannot be written: a full disk)."""
_EXIT_PIPE_CLOSED = 141
"""Stdout was closed before the output ended (``tokenbudget report | head``): what a shell reports
for a command that ``SIGPIPE`` ended (128 + 13)."""

_EXIT_CODES_HELP = """
\b
Exit codes:
  0  success
  1  bad input (malformed JSON or messages, unknown model, bad figure or day,
     unreadable or missing file: input, ledger, budget policy)
  2  usage error (unknown option, missing required option)
  3  the model has no known price
  4  a resource is unavailable (tiktoken encoding, provider API, optional extra,
     the ledger store: unreachable, or refusing its credentials or ACL; the port
     serve is to listen on; stdout, when it cannot be written: a full disk)
  141  stdout was closed before the output ended (piped into head)
"""


def _shown(text: str) -> str:
    """``text`` as :func:`~tokenbudget_core.visible.visible` shows it, for stdout: a character
    stdout's encoding cannot write (an id in Chinese on a cp1252 or ASCII stdout) is shown as an
    escape (``\\u7528``) too, so printing an id never fails."""
    text = visible(text)
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        return text.encode(encoding, "backslashreplace").decode(encoding)
    except LookupError:  # a stream naming an encoding Python does not know: its own problem
        pass
    return text


class _CliError(click.ClickException):
    """A one-line ``error: ...`` on stderr; the subclass sets the exit code."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str) -> None:
        super().__init__(visible(" ".join(message.split())))

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class _UnpricedError(_CliError):
    exit_code = EXIT_UNPRICED


class _UnavailableError(_CliError):
    exit_code = EXIT_UNAVAILABLE


def _cli_error(error: TokenBudgetError) -> _CliError:
    # the models' and prices' fixes as a shell user applies them: files named by the environment
    if isinstance(error, UnknownModelError):
        return _CliError(str(error.with_fix("add it to a models file named by $TOKENBUDGET_MODELS")))
    if isinstance(error, UnpricedModelError):
        return _UnpricedError(
            f"No price is known for model {error.model!r}: add one to a prices file named by "
            "$TOKENBUDGET_PRICES, or update genai-prices."
        )
    if isinstance(
        error, EncodingUnavailableError | TokenCountError | MissingDependencyError | BudgetUnavailableError
    ):
        return _UnavailableError(str(error))
    if isinstance(error, StoreRefusedError):  # up but refusing: the store's or the URL's to fix
        return _UnavailableError(_refused_for_reading(error))
    return _CliError(str(error))


def _live_failure(error: Exception) -> _CliError:
    """A ``--live`` run's provider error as one line: unreachable, timed out, rate-limited or
    failing (exit 4, the provider API is unavailable), or refusing the request (exit 1: a key it
    does not accept, a model it does not serve). Anything else is not the provider's: re-raised."""
    status = http_status(error)
    text = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
    if status is None and not is_retryable(error):  # no response and not a connection error: ours
        raise error
    if is_retryable(error):
        return _UnavailableError(
            f"--live: the OpenAI API is unavailable ({type(error).__name__}: {text}); "
            "check the network (or OPENAI_BASE_URL) and retry"
        )
    key = " check OPENAI_API_KEY," if status in (401, 403) else ""
    return _CliError(f"--live: OpenAI refused the request (HTTP {status}: {text});{key} or drop --live")


def _refused_for_reading(error: StoreRefusedError) -> str:
    """What a store that refuses the ledger (a wrong or missing password, an ACL) means for a
    command: the store's reason and what to check, and where the command's credentials come from."""
    text = str(error).rstrip().rstrip(".")
    if not getattr(error, "fix", None):  # a refusal that says nothing of what to check
        text += ": check the store's credentials and its ACL (the ledger's user must be allowed its commands)"
    return (
        f"{text}. Nothing was read: correct the credentials in --store (or $TOKENBUDGET_STORE), "
        "or the store's ACL, then retry."
    )


class _Group(click.Group):
    """Turns tokenbudget's errors into one-line click errors, so no traceback reaches the user."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except InvalidInputError as e:
            raise _cli_error(_named_by_flag(e)) from e
        except TokenBudgetError as e:
            raise _cli_error(e) from e
        except BrokenPipeError as e:  # the reader left (`| head`): stop quietly, nothing to report
            _discard_stdout()
            raise click.exceptions.Exit(_EXIT_PIPE_CLOSED) from e
        except OSError as e:
            if not _writing_output(e):  # not the output's: not ours to explain
                raise
            # a full disk or a failing device (`> /dev/full`): the output is lost, which the user
            # must learn (a cron job's report file), in one line rather than a traceback
            _discard_stdout()
            raise _UnavailableError(f"cannot write the output to stdout: {e.strerror or e}") from e


_OUTPUT_WRITERS = {("click.utils", "echo"), ("click.termui", "secho")}
"""The functions the commands write their output with (besides a rich console's methods)."""


def _writing_output(error: OSError) -> bool:
    """Whether ``error`` was raised writing the command's output: its traceback passes through
    ``click.echo`` or a rich console, which raise an ``OSError`` only from the stream they write."""
    tb = error.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        module = frame.f_globals.get("__name__", "")
        if module == "rich.console" or (module, frame.f_code.co_name) in _OUTPUT_WRITERS:
            return True
        tb = tb.tb_next
    return False


class _Console(Console):
    """A rich console whose closed stdout is the CLI's to handle (rich's own exits with code 1).

    It writes to ``sys.stdout`` as it is when it writes (what click's ``CliRunner`` captures),
    even in a Jupyter kernel: rich would send the tables to the notebook's display there, so a
    notebook's ``CliRunner().invoke(cli, [...]).output`` would hold none of them.
    """

    def __init__(self, **options: Any) -> None:
        options.setdefault("force_jupyter", False)
        super().__init__(**options)

    def on_broken_pipe(self) -> None:
        self.quiet = True  # nothing more to write
        raise BrokenPipeError(errno.EPIPE, "stdout was closed")


def _discard_stdout() -> None:
    """Point stdout at the null device, so what is still buffered for the closed pipe is dropped
    when the process exits instead of failing again (as the Python docs on SIGPIPE advise)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a file (a test runner's buffer)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


_FLAGS = {
    "timezone": "--timezone",
    "day": "--day",
    "last_days": "--days",
    "top": "--top",
    "by": "--by",
    "store": "--store",
    "policy_file": "--policy",
    "feature": "--feature",
    "user": "--user",
    "model": "--model",
    "max_tokens": "--max-tokens",
    "marker": "--marker",
    "users": "--users",
    "turns": "--turns",
    "html": "--html",
}
"""The core's argument names (an error's ``field``) and the flags that set them."""
_USAGE_FLAGS = {
    "input_tokens": "--input",
    "output_tokens": "--output",
    "cache_read_tokens": "--cache-read",
    "cache_write_tokens": "--cache-write",
    "cache_write_1h_tokens": "--cache-write-1h",
    "reasoning_tokens": "--reasoning",
}
"""``Usage`` fields (``usage.<name>`` in errors, and named in their text) and ``cost``'s flags."""
_USAGE_NAME = re.compile(r"\b(" + "|".join(sorted(_USAGE_FLAGS, key=len, reverse=True)) + r")\b")


def _named_by_flag(error: InvalidInputError) -> InvalidInputError:
    """``error`` naming the flag the user typed instead of the core's argument name."""
    field = error.field
    if field.startswith("usage.") and field[len("usage.") :] in _USAGE_FLAGS:

        def flags(text: str | None) -> str | None:
            return None if text is None else _USAGE_NAME.sub(lambda m: _USAGE_FLAGS[m.group(1)], text)

        return InvalidInputError(
            _USAGE_FLAGS[field[len("usage.") :]],
            flags(error.problem) or "",
            value=error.value,
            fix=flags(error.fix),
        )
    if field in _FLAGS:
        return InvalidInputError(_FLAGS[field], error.problem, value=error.value, fix=error.fix)
    return error


@click.group(cls=_Group, epilog=_EXIT_CODES_HELP)
@click.version_option(__version__, prog_name="tokenbudget")
def cli() -> None:
    """Count tokens and price LLM calls before they go out; report spend and budgets."""


# -- count ----------------------------------------------------------------------------------------

_F = TypeVar("_F", bound=Callable[..., Any])
_LOOKS_LIKE_MESSAGES = re.compile(r"^\s*\[\s*\{")
_ENCODING_OPTION = click.option(
    "--encoding",
    default="utf-8",
    show_default=True,
    metavar="NAME",
    help="The text encoding of FILE or stdin (e.g. latin-1, cp1252, utf-16); "
    "a UTF-8 byte order mark is left out.",
)


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
@_ENCODING_OPTION
def count(file: str, *, model: str, input_format: str, as_json: bool, encoding: str) -> None:
    """Count the tokens of FILE (or stdin): plain text or a JSON list of chat messages.

    A message list is OpenAI's Chat Completions shape, e.g.
    [{"role": "user", "content": "Hi"}]; its count includes the chat framing.
    """
    raw = _read_input(file, encoding)
    messages = _parse_messages(raw, input_format)
    counter = TokenCounter.for_model(model)
    n = counter.count(raw) if messages is None else counter.count_messages(messages)
    if as_json:
        click.echo(json.dumps({**n.as_dict(), "kind": "text" if messages is None else "messages"}))
    else:
        click.echo(str(int(n)))
    if not n.exact:
        click.echo(f"note: {int(n)} is an estimate (method={n.method}); it is not an exact count.", err=True)


def _read_input(file: str, encoding: str = "utf-8") -> str:
    """The text of FILE, or of stdin for ``-``, read the same way: its bytes decoded with
    ``encoding`` (strictly: a byte that is not valid is an error naming the input and
    ``--encoding``, never a silent replacement), line endings kept as they are; in UTF-8, a
    leading byte order mark is left out."""
    try:  # (b"" would not do: Python decodes it without looking the name up)
        b"\0\0\0\0".decode(encoding)  # a LookupError for a name Python does not know, or rot13
    except UnicodeDecodeError:
        pass
    except (LookupError, UnicodeError) as e:  # a bare UnicodeError: a codec that decodes no text
        # file ('undefined' refuses everything, 'punycode' is for a domain name's labels)
        raise InvalidInputError(
            "--encoding",
            f"{encoding!r} is not a text encoding Python knows",
            value=encoding,
            fix="e.g. --encoding utf-8, latin-1, cp1252 or utf-16",
        ) from e
    if file == "-":
        field, name, data = "stdin", "", _read_stdin()
    else:
        field, name = "FILE", f"{file!r} "
        try:
            data = Path(file).read_bytes()
        except OSError as e:
            raise InvalidInputError("FILE", f"cannot read {file!r}: {e.strerror or e}", value=file) from e
    is_utf8 = codecs.lookup(encoding).name == "utf-8"
    skip = len(codecs.BOM_UTF8) if is_utf8 and data.startswith(codecs.BOM_UTF8) else 0
    try:  # a UTF-8 byte order mark (Notepad, PowerShell) is not text: left out, as utf-8-sig does
        return data[skip:].decode(encoding)
    except UnicodeError as e:  # a bare one has no offset (idna: a label that is not punycode)
        label = "UTF-8" if is_utf8 else encoding
        if isinstance(e, UnicodeDecodeError):
            at = e.start + skip
            why = f"invalid byte 0x{data[at]:02x} at offset {at}"
        else:
            why = str(e.__cause__ or e)
        raise InvalidInputError(
            field,
            f"{name}is not {label} text ({why})",
            value=file,
            fix="pass its encoding, e.g. --encoding latin-1, or convert it to UTF-8"
            if is_utf8
            else "pass its encoding with --encoding",
        ) from e


def _read_stdin() -> bytes:
    """The bytes of stdin (not the locale's decoding of them); a closed stdin (a daemon started
    with fd 0 closed: ``<&-``) or one that fails to read is an error naming it."""
    if sys.stdin is None:  # Python's stdin when fd 0 is closed
        raise InvalidInputError(
            "stdin", "is closed (no input)", fix="pass FILE, or give the text on stdin (e.g. < FILE)"
        )
    try:
        return sys.stdin.buffer.read()
    except (OSError, ValueError) as e:  # ValueError: a stream closed in-process
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise InvalidInputError("stdin", f"cannot be read: {why}", fix="pass FILE instead") from e


def _parse_messages(raw: str, input_format: str) -> list[Any] | None:
    """The message list in ``raw``, or ``None`` when ``raw`` is to be counted as text."""
    if input_format == "text":
        return None
    try:
        data = json.loads(raw)
    except RecursionError:
        fix = "pass --format text to count it as plain text"
        raise InvalidInputError("input", "is nested too deeply to parse as JSON", fix=fix) from None
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


# -- truncate -------------------------------------------------------------------------------------


@cli.command(epilog=_EXIT_CODES_HELP)
@click.argument("file", default="-", metavar="[FILE|-]")
@click.option("--max-tokens", "-n", "max_tokens", required=True, metavar="N", help="The token budget.")
@click.option("--model", "-m", default="gpt-4o", show_default=True, help="Model whose tokenizer to use.")
@click.option(
    "--strategy",
    "-s",
    type=click.Choice(["keep_start", "keep_end", "keep_both", "smart"]),
    default="keep_start",
    show_default=True,
    help="What to keep: the start, the end, both ends, or whole sentences (smart).",
)
@click.option(
    "--marker",
    metavar="TEXT",
    help="Text put where the cut was; {n} in it becomes the number of tokens cut. Default: a "
    "'[… {n} tokens truncated …]' line for keep_both, ' […]' at the end for smart, none for keep_start "
    "and keep_end. --marker '' for none.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the text and the counts as JSON.")
@_ENCODING_OPTION
def truncate(
    file: str, *, max_tokens: str, model: str, strategy: str, marker: str | None, as_json: bool, encoding: str
) -> None:
    """Cut the text of FILE (or stdin) to at most --max-tokens tokens of --model.

    The text is written to stdout exactly as cut, with no line end added (on a terminal, one
    is added after text that does not end a line), so `truncate -n N FILE > OUT` writes at most
    N tokens and a text within budget unchanged. With --json: an object with the text, the
    tokens before and after, whether anything was cut, and whether the counts are exact.

    A Claude model's budget includes its user-message framing (a few tokens): the text is
    counted as the one user message of a request, as count counts it. Without ANTHROPIC_API_KEY
    its counts are estimates, flagged as count flags them ("exact": false, and a note on stderr).
    """
    from .truncation import Strategy, truncate_text_detailed

    raw = _read_input(file, encoding)
    budget = _tokens("--max-tokens", max_tokens)
    counter = TokenCounter.for_model(model)
    result = truncate_text_detailed(raw, budget, cast("Strategy", strategy), counter=counter, marker=marker)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "text": result.text,
                    "tokens_before": result.tokens_before,
                    "tokens_after": result.tokens_after,
                    "truncated": result.truncated,
                    "strategy": result.strategy,
                    "model": model,
                    "exact": result.exact,
                    "method": result.method,
                }
            )
        )
    else:
        # the text as cut: a line end added here would be one more token in `> OUT`, and a text
        # within budget would not come out as it went in; color=True: escape sequences in the
        # text are the text's (click strips them from output that is not a terminal)
        end = "\n" if _on_terminal() and not result.text.endswith("\n") else ""
        click.echo(result.text + end, nl=False, color=True)
    if not result.exact:
        click.echo(
            f"note: the token counts ({result.tokens_before} before, {result.tokens_after} after) are "
            f"estimates (method={result.method}); they are not exact counts.",
            err=True,
        )


# -- cost -----------------------------------------------------------------------------------------


def _token_option(flag: str, dest: str, help_text: str, *, required: bool = False) -> Callable[[_F], _F]:
    # Taken as text and checked by _tokens, so a bad figure is a one-line error (exit 1), not a usage screen.
    # A required option gets no default at all: click (8.3+) takes an explicit ``default=None``
    # as a value, so a missing --output would reach _tokens as None instead of a usage error.
    if required:
        return click.option(flag, dest, metavar="N", required=True, help=help_text)
    return click.option(flag, dest, metavar="N", default="0", help=help_text)


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
    click.echo(_shown(f"{format_usd(b.total)}  {model} (prices: {b.source}, as {b.priced_as})"))
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
    _print_tables(table)


def _tokens(flag: str, value: str) -> int:
    text = value.strip().replace("_", "")
    if not text.isascii() or not text.isdigit():
        raise InvalidInputError(flag, f"must be a non-negative integer, got {value!r}", value=value)
    return _whole(flag, value, text.lstrip("0") or "0", "a non-negative integer")


def _whole(flag: str, value: str, digits: str, what: str) -> int:
    """``digits`` (no leading zeros) as an int, refused past 100 digits: out of range for any
    figure, and past what ``int()`` converts (4,300 digits) it would be a traceback."""
    if len(digits) > 100:
        raise InvalidInputError(
            flag,
            f"must be {what} of at most 100 digits, got one of {len(digits):,} digits",
            value=value,
            fix="pass a smaller N",
        )
    return int(digits)


# -- demo -----------------------------------------------------------------------------------------


@cli.command(epilog=_EXIT_CODES_HELP)
@click.option(
    "--store",
    "store_url",
    metavar="URL",
    help="Ledger store (default: a fresh embedded SQLite file, tokenbudget-demo.db, recreated, however "
    "a URL names it; redis://... works).",
)
@click.option("--users", default="50", show_default=True, metavar="N", help="Users in the workload.")
@click.option("--turns", default="20", show_default=True, metavar="N", help="Support-chat turns per user.")
@click.option("--seed", default="7", show_default=True, metavar="N", help="Workload seed.")
@click.option(
    "--html",
    "html_path",
    metavar="PATH",
    help="Where to write the HTML report ('-' for none). Default: tokenbudget-demo.html; a run "
    "started while another demo run is going in this directory writes tokenbudget-demo-run-<id>.html "
    "(beside its own ledger file tokenbudget-demo-run-<id>.db, without --store). That needs a lock "
    "of the directory: where none can be taken (Windows, a file system without locks), runs at once "
    "share those files; give each its own --store and --html.",
)
@click.option("--live", is_flag=True, help="Call OpenAI for real (needs OPENAI_API_KEY; costs money).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def demo(
    *,
    store_url: str | None,
    users: str,
    turns: str,
    seed: str,
    html_path: str | None,
    live: bool,
    as_json: bool,
    no_progress: bool,
) -> None:
    """Replay a day of support chat twice over: without controls, then adding one control at a time.

    50 users x 20 turns (by default) go through a LangChain pipeline with a fake chat model
    that reports exact usage: first with no controls, then adding prompt compression, memory
    trimming, a semantic cache, tiered routing and per-user budgets. Every call is charged to
    the ledger; the savings table, cost per active user per day and the budget alerts are read
    back from it, and an HTML report is written (tokenbudget-demo.html; a run started while another
    demo run is going in this directory writes tokenbudget-demo-run-<id>.html, and without --store
    records to tokenbudget-demo-run-<id>.db, so that neither run's report shows the other's figures;
    those files are kept, and the run names them: delete them when done). Runs are told apart by a
    lock of the directory: where none can be taken (Windows, a file system without locks), every
    run uses tokenbudget-demo.db (without --store) and tokenbudget-demo.html (without --html) and
    says so; give runs at once their own --store and --html.
    """
    try:
        from langchain_tokenbudget.demo_pipeline import (
            DEFAULT_DEMO_HTML,
            STAGES,
            check_live,
            run_demo,
        )
    except MissingDependencyError:  # the adapters' own: not installed, or too old
        raise
    except ImportError as e:
        raise MissingDependencyError("langchain-core", "langchain") from e
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .demo_report import render_table

    n_users, n_turns = _positive("--users", users), _positive("--turns", turns)
    n_seed = _tokens("--seed", seed)
    if live:
        check_live()
    if html_path is None:  # the default, in the current directory: name it, and the way out
        in_here = "" if store_url is not None else " and --store sqlite:///writable/path.db"
        _check_writable(
            "--html",
            DEFAULT_DEMO_HTML,
            default=True,
            fix="run the demo from a writable directory, or pass --html PATH in one (--html - for none)"
            + in_here,
        )
    elif html_path != "-":
        _check_writable("--html", html_path)
    total = n_users * n_turns * len(STAGES)
    console = _Console(soft_wrap=not _on_terminal())  # piped: each line whole, never cut at 80 columns
    progress = Progress(
        TextColumn("replaying"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=no_progress or as_json,
    )
    with progress:
        task = progress.add_task("demo", total=total)
        try:
            summary = run_demo(
                store=_given_store(store_url),
                users=n_users,
                turns=n_turns,
                seed=n_seed,
                live=live,
                on_turn=lambda: progress.advance(task),
                # the default: tokenbudget-demo.html, or one of the run's own while another run is here
                html=True if html_path is None else (False if html_path == "-" else html_path),
            )
        except Exception as e:
            if live and not isinstance(e, TokenBudgetError):
                raise _live_failure(e) from e
            raise
    if as_json:
        click.echo(json.dumps(summary.as_dict(), indent=2))
        return
    _print_tables(render_table(summary))
    b, c = summary.baseline, summary.controlled
    console.print(
        f"cost per active user per day: {_money(b.cost_per_active_user_usd, places=5)} without controls, "
        f"{_money(c.cost_per_active_user_usd, places=5)} with them ({c.saved_share:.0%} saved)"
    )
    console.print(f"budget alerts fired: {len(summary.alerts)}")
    for a in summary.alerts[:5]:
        console.print(
            _shown(f"  {a.text}"),
            markup=False,
            emoji=False,
        )
    if len(summary.alerts) > 5:
        where = "in the HTML report" if summary.html is not None else "with --json"
        console.print(f"  ... and {len(summary.alerts) - 5} more ({where})", markup=False, emoji=False)
    if summary.html is not None:
        console.print(_shown(f"HTML report: {summary.html}"), markup=False, emoji=False)
    if store_url is not None and _in_process(store_url):  # gone with this process: nothing to report on
        hint = "in-process: gone with this run; for tokenbudget report, pass --store sqlite:///path.db"
    else:
        hint = f"try: tokenbudget report --store {summary.store} --day {summary.day} --by feature"
    console.print(_shown(f"ledger: {summary.store}  ({hint})"), markup=False, emoji=False)
    if summary.own_files:  # made because another run was going here: kept, so say so
        they, them = ("they are", "them") if len(summary.own_files) > 1 else ("it is", "it")
        console.print(
            _shown(
                "note: another demo run was going in this directory, so this run used files of its "
                f"own: {', '.join(summary.own_files)}; {they} kept (no later run removes {them}): "
                f"delete {them} when done"
            ),
            markup=False,
            emoji=False,
        )
    if summary.no_lock:  # not another run: none could be told apart
        console.print(
            _shown(
                "note: no demo lock can be taken in this directory (Windows, a file system without locks, "
                "or a directory this user cannot read), so a demo run started here meanwhile is not kept "
                "apart from this one (it may recreate or overwrite this run's files): give runs at once "
                "their own --store and --html"
            ),
            markup=False,
            emoji=False,
        )


def _check_writable(flag: str, path: str, *, default: bool = False, fix: str | None = None) -> None:
    """Refuse ``path`` now if a file cannot be written there (a missing folder, a directory, no
    permission), rather than after a long run. Never creates, changes or removes ``path``: a file
    there is opened to append nothing; else a file of a unique name is made beside it and removed
    (``path`` itself may be written meanwhile, by another demo run writing its report there).
    ``default``: ``path`` is the flag's default, not given: the error names its directory; ``fix``
    replaces the default advice (another path, or none).
    """
    target = Path(path)
    try:
        if target.exists():
            with target.open("ab"):  # appends nothing: the file is left as it was
                pass
        else:
            fd, probe = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".check", dir=target.parent)
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        why = f"{e.strerror or e}"
        if default and (isinstance(e, PermissionError) or e.errno == errno.EROFS):
            why += "; the directory is not writable"
        where = f" (the default {flag}) in {os.path.abspath(target.parent)}" if default else ""
        raise InvalidInputError(
            flag,
            f"cannot write {path!r}{where}: {why}",
            value=path,
            fix=fix or f"pass a {flag} path in a writable folder, or {flag} - for none",
        ) from e


def _on_terminal() -> bool:
    """Whether stdout is a terminal (not a pipe, a file or a closed stream)."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # no stdout, or a closed one
        return False


# -- explain --------------------------------------------------------------------------------------


@cli.command(epilog=_EXIT_CODES_HELP)
@click.option("--model", "-m", default="gpt-4o", show_default=True, help="Model to count the messages for.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def explain(*, model: str, as_json: bool) -> None:
    """Count and price a built-in support conversation with a tool call, end to end.

    Shows the tokens of each message on --model, the prompt and expected output
    tokens, and the call's cost on --model, gpt-4o, gpt-4o-mini and claude-sonnet-4-5.
    Claude is counted offline as a flagged estimate unless ANTHROPIC_API_KEY is set.
    """
    from .explain import render_demo, run_demo

    report = run_demo(model=model)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        _print_tables(render_demo(report))


# -- report and budgets ---------------------------------------------------------------------------

_STORE_HELP = (
    "Ledger store URL (default: $TOKENBUDGET_STORE, else sqlite:///tokenbudget.db): sqlite:///path.db, "
    "redis://host:port/db, rediss://..., redis+cluster://host:port; a Redis ledger's namespace= and "
    "retention_days= as query options (redis://host:6379/0?namespace=prod)."
)
_NAMESPACE_HELP = (
    "Namespace of a Redis ledger (the app's RedisStore(namespace=); the same as the URL's ?namespace=)."
)
_TZ_HELP = "The IANA time zone the ledger's days are in (the Ledger's timezone=)."


def _given_store(url: str | None) -> str | None:
    """``--store`` as given (``None``: not given); an empty one is refused, as ``open_store`` does,
    not read as "the default" (a missing variable in ``--store "$LEDGER"``)."""
    if url is not None and not url.strip():
        raise InvalidInputError(
            "--store",
            "is empty",
            value=url,
            fix="pass the store your app records to (sqlite:///path/to/ledger.db or redis://host:port/db), "
            "or leave --store out for $TOKENBUDGET_STORE, else ./tokenbudget.db",
        )
    return url


def _namespaced(url: str | None, namespace: str | None) -> str | None:
    """The store URL (``url``, else ``$TOKENBUDGET_STORE``) naming ``namespace`` in its query;
    ``url`` as it is without one."""
    url = _given_store(url)
    if namespace is None:
        return url
    from urllib.parse import parse_qs, quote, urlsplit

    from .stores import default_store_url
    from .stores.base import redact_url

    url = url or default_store_url()
    if not url.lower().startswith(("redis://", "rediss://", "redis+cluster://")):
        raise InvalidInputError(
            "--namespace",
            f"only a Redis ledger has a namespace, and the store is {redact_url(url)!r}",
            value=namespace,
            fix="pass --store redis://host:port/db with it, or leave --namespace out",
        )
    if not namespace:
        raise InvalidInputError(
            "--namespace", "must not be empty", value=namespace, fix="e.g. --namespace prod"
        )
    base, hash_, fragment = url.partition("#")
    if "namespace" in parse_qs(urlsplit(base).query, keep_blank_values=True):
        raise InvalidInputError(
            "--namespace",
            f"the store URL {redact_url(url)!r} names a namespace already",
            value=namespace,
            fix="give the namespace once: --namespace, or ?namespace= in the URL",
        )
    return f"{base}{'&' if '?' in base else '?'}namespace={quote(namespace, safe='')}{hash_}{fragment}"


def _in_process(url: str) -> bool:
    """Whether the store at ``url`` lives in its process alone (``memory://``, an in-memory SQLite
    database): another command opening it finds a fresh, empty one."""
    prefix = "sqlite:///"
    return url.lower().startswith("memory://") or (
        url.lower().startswith(prefix) and url[len(prefix) :].split("?", 1)[0] in ("", ":memory:")
    )


@contextmanager
def _opened_store(url: str | None) -> Iterator[LedgerStore]:
    """The store at ``url``, to read: a SQLite file is opened read-only and never modified, and
    one that does not exist or holds no ledger is an error, not a new empty ledger."""
    from .stores import default_store_url, open_store
    from .stores.base import redact_url
    from .stores.sqlite import sqlite_path

    url = _given_store(url) or default_store_url()
    prefix = "sqlite:///"
    options: dict[str, object] = {}
    if _in_process(url):
        raise InvalidInputError(
            "--store",
            f"{url} is an in-process store: this command would open a fresh, empty one, with nothing to read",
            value=url,
            fix="pass the store your app records to (sqlite:///path/to/ledger.db or redis://host:port/db)",
        )
    if url.lower().startswith(prefix):
        try:
            path = Path(sqlite_path(url))
        except InvalidInputError as e:  # options in its query (they name another, empty file)
            raise InvalidInputError(
                "--store",
                e.problem,
                value=url,
                fix="drop the query: reading a SQLite ledger takes no options",
            ) from e
        if not path.is_file():
            raise InvalidInputError(
                "--store",
                f"no ledger at {str(path.absolute())!r}",
                value=url,
                fix="pass --store URL or set $TOKENBUDGET_STORE to the store your app records to",
            )
        options["read_only"] = True
    try:
        with _store_log_muted():
            store = open_store(url, **options)
            try:
                yield store
            finally:
                store.close()
    except InvalidInputError as e:  # the URL, found bad when opened or when read (a Redis database)
        if e.field != "store":
            raise
        raise InvalidInputError("--store", e.problem, value=redact_url(url), fix=e.fix) from e
    except BudgetUnavailableError as e:
        damaged = _not_a_database(e)
        if damaged is None:
            raise _for_reading(e) from e
        raise InvalidInputError(
            "--store",
            f"{url[len(prefix) :]!r} is not a SQLite ledger ({damaged})",
            value=redact_url(url),
            fix="pass the ledger file your app records to (sqlite:///path/to/ledger.db)",
        ) from e


@contextmanager
def _reading_ledger(store: LedgerStore, **options: Any) -> Iterator[Ledger]:
    """A :class:`~tokenbudget_core.ledger.Ledger` on ``store`` for a command that only reads it.

    Its spool is a file of its own in a temporary directory, never an app's (``spool_path=``,
    ``$TOKENBUDGET_SPOOL`` and the default per-store spool are not used), and it has no alert
    sinks: a ledger's store calls replay its spool, and a replay sends the threshold alerts of the
    commits it applies and marks them sent in the store. An app's spooled commits are the app's
    to replay, so that its own sinks (a webhook) get their alerts; read from here, they would go
    to this command's stderr and be lost to the app, and the figures shown would not be the
    store's.
    """
    import tempfile

    from .ledger import Ledger

    with tempfile.TemporaryDirectory(prefix="tokenbudget-read-") as folder:
        yield Ledger(store, spool_path=Path(folder) / "spool.jsonl", alerts=[], **options)


_STORE_LOGGERS = ("tokenbudget.stores.redis",)
"""The stores' loggers: what they log while a command reads (a store refusing its credentials)
is an error the command reports itself, on its one ``error:`` line."""


@contextmanager
def _store_log_muted() -> Iterator[None]:
    """The stores' log records dropped while a command reads: an app's log needs them, the
    command's stderr would show the same error twice."""
    import logging

    def drop(record: logging.LogRecord) -> bool:
        return False

    loggers = [logging.getLogger(name) for name in _STORE_LOGGERS]
    for logger in loggers:
        logger.addFilter(drop)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(drop)


def _for_reading(error: BudgetUnavailableError) -> BudgetUnavailableError:
    """``error`` saying what it means for a command that only reads: nothing was read (not that a
    call was not sent, nor to choose ``on_unavailable``, which applies to apps' calls)."""
    return BudgetUnavailableError(
        error.store,
        error.detail,
        consequence="nothing was read. Check that the store is up and that --store (or "
        "$TOKENBUDGET_STORE) names the one your app records to, then retry.",
    )


def _not_a_database(error: BaseException) -> sqlite3.DatabaseError | None:
    """The SQLite error behind ``error`` when the file is not a database (or is damaged), not
    merely out of reach (locked, unreadable: those are ``OperationalError``)."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, sqlite3.DatabaseError) and not isinstance(cause, sqlite3.OperationalError):
            return cause
        cause = cause.__cause__
    return None


def _positive(flag: str, value: str) -> int:
    text = value.strip().replace("_", "")
    digits = text.lstrip("0") if text.isascii() and text.isdigit() else ""
    if not digits:
        raise InvalidInputError(flag, f"must be a positive integer, got {value!r}", value=value)
    return _whole(flag, value, digits, "a positive integer")


def _money(amount: Decimal | None, *, places: int | None = None) -> str:
    """Dollars as :func:`format_usd` prints them (a ratio rounded to ``places``); ``None`` as ``-``."""
    if amount is None:
        return "-"
    return format_usd(amount if places is None else amount.quantize(Decimal(1).scaleb(-places)))


def _percent(share: Decimal | None) -> str:
    """A share as a percentage with one decimal; ``None`` as ``-``."""
    return "-" if share is None else f"{share * 100:.1f}%"


def _plain(text: str, *, style: str = "") -> Text:
    """Text shown as it is: ids, URLs and zones in a table are never read as rich markup or emoji
    codes, and their control characters (and those stdout cannot encode) are shown as escapes
    (:func:`_shown`)."""
    return Text(_shown(text), style=style)


def _table(*columns: str) -> Table:
    """The first column left-aligned, numbers right-aligned. A table too wide for the terminal
    is printed as records instead (:func:`_print_tables`); a cell is never cut, and as a last
    resort (a column narrower than its header) folded onto the next line."""
    table = Table(show_header=True)
    for i, name in enumerate(columns):
        table.add_column(name, justify="left" if i == 0 else "right", overflow="fold")
    return table


_UNLIMITED_WIDTH = 1_000_000
"""The console width when stdout is not a terminal: a table is as wide as its widest row."""


def _print_tables(*tables: RenderableType) -> None:
    """``tables`` on stdout (and any other renderable, a :class:`~rich.console.Group`'s parts
    each in turn). Piped or redirected, their width is not limited, so each row stays one line
    that ``grep`` or ``cut`` see whole (``$COLUMNS`` does not apply: a pipe has no width). On a
    terminal, a table that fits its width is drawn as a table; one that does not is printed as
    records (:func:`_records`), so no number or id is cut or folded across lines."""
    terminal = _on_terminal()
    console = _Console(soft_wrap=False, width=None if terminal else _UNLIMITED_WIDTH)
    for table in _parts(tables):
        if not isinstance(table, Table):
            console.print(table)
            continue
        needed = Measurement.get(console, console.options.update_width(_UNLIMITED_WIDTH), table)
        if needed.maximum <= console.width:
            console.print(table, crop=False)
        else:
            for line, prose in _records(table):
                # a title or caption wraps at words; a record's line is left whole to the terminal
                console.print(line, soft_wrap=not prose)


def _parts(renderables: Sequence[RenderableType]) -> Iterator[RenderableType]:
    """``renderables`` with each :class:`~rich.console.Group` replaced by its parts."""
    for r in renderables:
        if isinstance(r, Group):
            yield from _parts(r.renderables)
        else:
            yield r


def _records(table: Table) -> list[tuple[Text, bool]]:
    """The lines of ``table`` as records, each with whether it is prose (a title or caption):
    the title, then per row its first cell and each other cell under its column's name (a
    two-column table: ``name: value`` per row), then the caption."""
    columns = table.columns
    rows = [[_cell_text(c) for c in column.cells] for column in columns]
    lines: list[tuple[Text, bool]] = []
    if table.title is not None:
        lines.append((_cell_text(table.title), True))
    elif columns:  # a breakdown's title is its first column's name ("user", "feature")
        lines.append((Text.assemble("by ", _cell_text(columns[0].header)), True))
    if len(columns) == 2:
        for name, value in zip(rows[0], rows[1], strict=True):
            lines.append((Text.assemble(name, ": ", value), False))
    else:
        labels = [_cell_text(column.header) for column in columns[1:]]
        width = max((len(label) for label in labels), default=0)
        for i, first in enumerate(rows[0]):
            shown = first.plain != ""
            lines.append((first, False))
            for label, cells in zip(labels, rows[1:], strict=True):
                if not shown and cells[i].plain:  # a row with no first cell: its first one heads it
                    lines[-1] = (cells[i], False)
                    shown = True
                elif cells[i].plain:  # an empty cell (the "(n more)" row's counts) says nothing
                    pad = " " * (width - len(label) + 2)
                    lines.append((Text.assemble("  ", label, pad, cells[i]), False))
    if table.caption is not None:
        lines.append((_cell_text(table.caption), True))
    lines.append((Text(""), True))
    return lines


def _cell_text(cell: object) -> Text:
    """A table cell, title or header as text (a plain string is the CLI's own text, not markup)."""
    return cell.copy() if isinstance(cell, Text) else Text(str(cell))


_UNPRICED_NOTE = (
    "*: leaves out calls of models without a known price (their cost is unknown, not $0; "
    "see unpriced requests)"
)


def _cost(amount: Decimal | None, unpriced: int) -> str:
    """A cost for a report table, marked ``*`` when it leaves out ``unpriced`` calls (a model
    without a known price is never shown as free); ``None`` (unknown) as ``-``."""
    text = _money(amount)
    return f"{text}*" if unpriced and amount is not None else text


def _noted(table: Table, marked: bool) -> None:
    """Add :data:`_UNPRICED_NOTE` under ``table`` when one of its costs is marked."""
    if not marked:
        return
    note = Text(_UNPRICED_NOTE)
    table.caption = note if table.caption is None else Text.assemble(_cell_text(table.caption), "\n", note)


def _render_report(r: Report) -> list[Table]:
    t = r.totals
    month_unpriced = r.projection.unpriced_requests
    span = r.days[0] if len(r.days) == 1 else f"{r.days[0]} .. {r.days[-1]}"
    totals = _table("total", "value")
    totals.title = _plain(f"Spend {span} ({r.timezone})", style="table.title")
    for name, value in (
        ("requests", f"{t.requests:,}"),
        ("input tokens", f"{t.input_tokens:,}"),
        ("output tokens", f"{t.output_tokens:,}"),
        ("cache read / write tokens", f"{t.cache_read_tokens:,} / {t.cache_write_tokens:,}"),
        ("cost", _cost(t.cost_usd, t.unpriced_requests)),
        ("cache hits (saved)", f"{t.cache_hits:,} ({_money(t.saved_usd)})"),
        ("cache hit rate", _percent(t.hit_rate)),
        ("routed requests (saved vs premium)", f"{t.routed_requests:,} ({_money(t.routing_saved_usd)})"),
        ("overhead cost", _money(t.overhead_usd)),
        ("estimated / unpriced requests", f"{t.estimated_requests:,} / {t.unpriced_requests:,}"),
        ("active users", f"{t.active_users:,}"),
        ("conversations", f"{t.conversations:,}"),
        (f"{r.projection.month} to date", _cost(r.projection.month_to_date_usd, month_unpriced)),
        (
            f"{r.projection.month} projected",
            "- (too early, see below)"
            if r.projection.projected_usd is None
            else _cost(r.projection.projected_usd, month_unpriced),
        ),
    ):
        totals.add_row(name, value)
    if r.projection.projected_usd is None and r.projection.reason:
        totals.caption = _plain(
            f"{r.projection.month} projected: {r.projection.reason}"
        )  # prose: wraps at words
    _noted(totals, bool(t.unpriced_requests or month_unpriced))
    tables = [totals]
    for b in r.breakdowns:
        table = _table(b.dimension, "requests", "input", "output", "cost", "hit rate", "routing saved")
        table.caption = "hit rate: answered from a cache; routing saved: vs the premium tier"
        for row in b.rows:
            table.add_row(
                _plain("(none)" if row.key is None else row.key),
                f"{row.requests:,}",
                f"{row.input_tokens:,}",
                f"{row.output_tokens:,}",
                _cost(row.cost_usd, row.unpriced_requests),
                _percent(row.hit_rate),
                _money(row.routing_saved_usd) if row.routed_requests else "-",
            )
        if b.omitted:
            omitted_cost = _cost(b.omitted_cost_usd, b.omitted_unpriced_requests)
            table.add_row(f"({b.omitted} more)", "", "", "", omitted_cost, "", "")
        _noted(table, any(row.unpriced_requests for row in b.rows) or bool(b.omitted_unpriced_requests))
        tables.append(table)
    days = _table("day", "requests", "cost", "users", "cost/user", "convs", "cost/conv")
    days.title = "Per day"
    days.caption = (
        "users: active users; cost/user: the day's cost per active user (- when unknown: nobody "
        "active, or only calls of models without a known price)"
    )
    for d in r.per_day:
        days.add_row(
            d.day,
            f"{d.requests:,}",
            _cost(d.cost_usd, d.unpriced_requests),
            f"{d.active_users:,}",
            _cost(d.cost_per_active_user_usd, d.unpriced_requests),
            f"{d.conversations:,}",
            _cost(d.cost_per_conversation_usd, d.unpriced_requests),
        )
    _noted(days, any(d.unpriced_requests for d in r.per_day))
    tables.append(days)
    if r.call_costs:
        calls = _table("feature", "calls", "p50 / call", "p95 / call")
        for c in r.call_costs:
            calls.add_row(
                _plain("(none)" if c.feature is None else c.feature),
                f"{c.calls:,}",
                _money(c.p50_usd),
                _money(c.p95_usd),
            )
        tables.append(calls)
    return tables


@cli.command(epilog=_EXIT_CODES_HELP)
@click.option("--store", "store_url", metavar="URL", help=_STORE_HELP)
@click.option("--namespace", metavar="NAME", help=_NAMESPACE_HELP)
@click.option("--day", metavar="YYYY-MM-DD", help="Report this one day.")
@click.option(
    "--days", "last_days", metavar="N", help="Report the N days ending today (default 7, at most 3,660)."
)
@click.option(
    "--by",
    type=click.Choice(["feature", "user", "model"]),
    default="feature",
    show_default=True,
    help="Break the spend down by this dimension.",
)
@click.option("--top", default="10", metavar="N", show_default=True, help="Show the N biggest spenders.")
@click.option("--timezone", "tz", default="UTC", show_default=True, metavar="ZONE", help=_TZ_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (money as strings).")
def report(
    *,
    store_url: str | None,
    namespace: str | None,
    day: str | None,
    last_days: str | None,
    by: str,
    top: str,
    tz: str,
    as_json: bool,
) -> None:
    """Report spend: totals, spend by feature, user or model, and per day the cost per active user.

    Reads the attribution the ledger records; nothing is written, and usage an app spooled
    while the store was down is left for the app to replay (with its budget alerts).
    """
    from .reports import MAX_LAST_DAYS, build_report

    n_days = None if last_days is None else _positive("--days", last_days)
    if n_days is not None and n_days > MAX_LAST_DAYS:
        raise InvalidInputError(
            "--days",
            f"must be at most {MAX_LAST_DAYS:,} (ten years), got {last_days!r}",
            value=last_days,
            fix="pass a smaller N, or --day for one day",
        )
    n_top = _positive("--top", top)
    if day is not None and n_days is not None:
        raise InvalidInputError("--day", "give --day or --days, not both")
    with (
        _opened_store(_namespaced(store_url, namespace)) as store,
        _reading_ledger(store, timezone=tz) as ledger,
    ):
        r = build_report(ledger, day=day, last_days=n_days, by=(by,), top=n_top)  # type: ignore[arg-type]
    if r.totals.requests == 0:  # a wrong --store, --namespace or day reads as a quiet day: say so
        days = r.days[0] if len(r.days) == 1 else f"{r.days[0]} to {r.days[-1]}"
        click.echo(
            visible(
                f"note: no usage recorded in this store for {days}; check --store, --namespace, the day "
                f"and --timezone (these are {tz} days; pass the time zone your app gives its Ledger)"
            ),
            err=True,
        )
    if as_json:
        click.echo(json.dumps(r.as_dict(), indent=2))
        return
    _print_tables(*_render_report(r))


@cli.command(epilog=_EXIT_CODES_HELP)
@click.option("--store", "store_url", metavar="URL", help=_STORE_HELP)
@click.option("--namespace", metavar="NAME", help=_NAMESPACE_HELP)
@click.option(
    "--policy",
    "policy_path",
    default="budgets.toml",
    show_default=True,
    metavar="FILE",
    help="Budget policy.",
)
@click.option(
    "--feature",
    help="Only this feature (default: every feature in the policy, and calls naming none when "
    "[default_feature] sets a limit).",
)
@click.option(
    "--no-feature",
    "no_feature",
    is_flag=True,
    help="Only calls naming no feature (the [default_feature] limits); not with --feature.",
)
@click.option("--user", help="Also show this user's budgets.")
@click.option(
    "--no-user",
    "no_user",
    is_flag=True,
    help="Also show the per-user budgets of calls naming no user (one anonymous user); not with --user.",
)
@click.option("--timezone", "tz", default="UTC", show_default=True, metavar="ZONE", help=_TZ_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the budgets as JSON (money as strings).")
def budgets(
    *,
    store_url: str | None,
    namespace: str | None,
    policy_path: str,
    feature: str | None,
    no_feature: bool,
    user: str | None,
    no_user: bool,
    tz: str,
    as_json: bool,
) -> None:
    """Show today's budgets: limit, spent + reserved, headroom and ladder step of each.

    Per-user budgets are shown for --user (or, with --no-user, those of calls naming no user);
    the ladder step is that of the budgets shown. The figures are the store's: usage an app
    spooled while the store was down is left for the app to replay (with its budget alerts).
    """
    from .budget_status import budget_rows, features_of
    from .budgets import load_policy

    for flag, value in (("--user", user), ("--feature", feature)):
        if value == "":  # `--user "$U"` with U unset: a mistake, not "no filter" (the service refuses it too)
            raise InvalidInputError(
                flag,
                "is empty (is the variable you passed set?)",
                value=value,
                fix=f"pass a {flag[2:]} id, or leave {flag} out",
            )
    if no_user and user is not None:
        raise InvalidInputError(
            "--no-user",
            f"cannot be combined with --user {user!r}: one shows that user's budgets, the other "
            "those of calls naming no user",
            fix="pass one of them",
        )
    if no_feature and feature is not None:
        raise InvalidInputError(
            "--no-feature",
            f"cannot be combined with --feature {feature!r}: one names calls of that feature, the "
            "other calls naming none",
            fix="pass one of them",
        )
    policy = load_policy(policy_path)
    features: list[str | None] = [None] if no_feature else [feature] if feature else features_of(policy)
    if feature and feature not in policy.features:
        click.echo(visible(_unconfigured(feature, policy_path, sorted(policy.features))), err=True)
    with (
        _opened_store(_namespaced(store_url, namespace)) as store,
        _reading_ledger(store, policy=policy, timezone=tz) as ledger,
    ):
        today = ledger.day()
        rows, steps = budget_rows(ledger, features, user, no_user=no_user)
    if as_json:
        text = jsonable(rows)
        click.echo(json.dumps({"day": today, "user": user, "budgets": text, "steps": steps}, indent=2))
        return
    if not rows:
        click.echo(
            _shown(f"no budgets in {policy_path} apply here")
            + ("" if user or no_user else " (pass --user or --no-user for per-user ones)")
        )
        return

    def fmt(row: dict[str, Any], key: str) -> str:
        value = row[key]
        if value is None:
            return "-"
        return format_usd(value) if row["unit"] == "usd" else f"{value:,}"

    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        scope = "all features" if row["budget"] in GLOBAL_BUDGETS else row["feature"] or "(no feature)"
        groups.setdefault(scope, []).append(row)
    for scope, group in groups.items():
        table = _table("budget", "limit", "spent + reserved", "headroom", "used", "step")
        table.show_edge = False
        whose = " (per-user ones: calls naming no user)" if no_user else ""
        table.title = _plain(f"{scope}: budgets on {today} ({tz}){whose}", style="table.title")
        for row in group:
            name = row["budget"].removesuffix(" (all features)")
            share = f"{row['share']:.0%}"
            table.add_row(name, fmt(row, "limit"), fmt(row, "used"), fmt(row, "headroom"), share, row["step"])
        _print_tables(table)
    someone = f" user {user}" if user else " (calls naming no user)" if no_user else ""
    for s in steps:
        who = f"{s['feature'] or '(no feature)'}{someone}"
        click.echo(f"ladder step for {_shown(who)}: {s['step']}")


def _unconfigured(feature: str, policy_path: str, configured: list[str]) -> str:
    """The note for ``budgets --feature`` naming a feature the policy has no entry for: its
    default limits apply, which a typo would make easy to miss."""
    import difflib

    key = feature if re.fullmatch(r"[A-Za-z0-9_-]+", feature) else json.dumps(feature, ensure_ascii=False)
    note = f"note: {policy_path} has no [features.{key}] entry, so the default limits apply to it"
    if not configured:
        return f"{note}; it configures no features."
    close = difflib.get_close_matches(feature, configured, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"{note}; the features it configures: {', '.join(configured)}.{hint}"


@cli.command(epilog=_EXIT_CODES_HELP)
@click.option("--store", "store_url", metavar="URL", help=_STORE_HELP)
@click.option("--namespace", metavar="NAME", help=_NAMESPACE_HELP)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default="8000", show_default=True, metavar="PORT", help="TCP port.")
@click.option(
    "--token",
    envvar="TOKENBUDGET_TOKEN",
    metavar="TOKEN",
    help="Require 'Authorization: Bearer TOKEN' (default: $TOKENBUDGET_TOKEN; neither: no auth, "
    "on a loopback --host only unless --allow-no-auth). An empty TOKEN is refused.",
)
@click.option(
    "--allow-no-auth",
    is_flag=True,
    help="Listen on a --host that is not loopback without a token (when a proxy in front authenticates).",
)
@click.option("--policy", "policy_path", metavar="FILE", help="Budget policy TOML (default: no limits).")
@click.option("--timezone", "tz", default="UTC", show_default=True, metavar="ZONE", help=_TZ_HELP)
@click.option(
    "--alert",
    "alert_sinks",
    multiple=True,
    envvar="TOKENBUDGET_ALERTS",
    metavar="SINK",
    help="Where the service's ledger sends budget alerts: 'log' or a webhook URL; repeatable "
    "(default: $TOKENBUDGET_ALERTS, sinks separated by whitespace, else 'log'). Give the sinks "
    "your apps give their Ledger: an alert fires once per store, from whichever ledger's commit "
    "crosses the threshold. A URL holding a secret is better set in $TOKENBUDGET_ALERTS (a "
    "command line is visible to other users).",
)
@click.option(
    "--on-unavailable",
    type=click.Choice(["closed", "open"]),
    default="closed",
    show_default=True,
    help="While the store is down: 'closed' refuses reservations (503); 'open' lets them through "
    "unchecked and spools their usage, replayed once the store is back (the apps' "
    "Ledger(on_unavailable=)).",
)
def serve(
    *,
    store_url: str | None,
    namespace: str | None,
    host: str,
    port: str,
    token: str | None,
    allow_no_auth: bool,
    policy_path: str | None,
    tz: str,
    alert_sinks: tuple[str, ...],
    on_unavailable: Literal["closed", "open"],
) -> None:
    """Run the HTTP service and dashboard (needs the server extra).

    JSON endpoints for counting, truncation, prompts, prices, budgets and reports; the
    dashboard at /dashboard; the OpenAPI schema at /openapi.json. See docs/service.md.
    Pass the --timezone your apps give their ledger, so the service judges the same days, and
    the --alert sinks they give it, so the alerts its requests cross reach them too.
    Without a token the service listens on a loopback --host only, unless --allow-no-auth.
    """
    from .server import serve as run
    from .server.app import ListenError
    from .server.guards import is_loopback

    n = _positive("--port", port)
    if n > 65_535:
        raise InvalidInputError("--port", f"must be at most 65535, got {port!r}", value=port)
    token = _serve_token(token)
    if token is None and not allow_no_auth and not is_loopback(host):
        raise InvalidInputError(
            "--token",
            f"is needed to listen on --host {host!r}, which is not a loopback address: without a "
            "token anyone who can reach the port can record spend, read reports and use up budgets",
            fix="pass --token (or set TOKENBUDGET_TOKEN), keep --host 127.0.0.1, or pass "
            "--allow-no-auth when a proxy in front of the service authenticates",
        )
    alerts_flag = _alerts_flag()
    store_url = _namespaced(store_url, namespace)
    try:
        run(
            store_url,
            host=host,
            port=n,
            token=token,
            allow_no_auth=allow_no_auth,
            policy_path=policy_path,
            timezone=tz,
            alerts=list(alert_sinks) or None,
            on_unavailable=on_unavailable,
        )
    except InvalidInputError as e:  # ``alerts[i]``: named as the user gave it
        if not e.field.startswith("alerts["):
            raise
        raise InvalidInputError(alerts_flag, e.problem, value=e.value, fix=e.fix) from e
    except ListenError as e:  # only a failure to bind is the port's (or the host's) to fix
        raise _UnavailableError(
            f"--port: cannot listen on {host}:{n} ({e.strerror or e}); "
            "choose another --port (or --host), or stop what is listening there"
        ) from e
    except OSError as e:  # building the ledger or starting the server: not the port's
        detail = str(e) if type(e) is OSError else f"{type(e).__name__}: {e}"
        raise _UnavailableError(f"the service did not start: {detail}") from e


def _alerts_flag() -> str:
    """Where ``serve``'s alert sinks come from, as errors name it: ``--alert`` or
    ``$TOKENBUDGET_ALERTS``; a variable set but empty or blank is refused (it would quietly
    mean the default, ``log``), as for ``$TOKENBUDGET_TOKEN``."""
    source = click.get_current_context().get_parameter_source("alert_sinks")
    if source is click.core.ParameterSource.COMMANDLINE:
        return "--alert"
    environment_value(
        "TOKENBUDGET_ALERTS",
        fix="set it to the alert sinks ('log', webhook URLs, separated by whitespace), or unset "
        "it to log alerts only",
    )
    return "$TOKENBUDGET_ALERTS"


def _serve_token(token: str | None) -> str | None:
    """``serve``'s bearer token, ``None`` when neither --token nor $TOKENBUDGET_TOKEN is given.

    An empty (or blank) one is refused, never read as "no auth": ``--token "$SECRET"`` with
    ``SECRET`` unset, or ``TOKENBUDGET_TOKEN=`` left empty, is a mistake, not a choice.
    """
    source = click.get_current_context().get_parameter_source("token")
    if token is None and os.environ.get("TOKENBUDGET_TOKEN") == "":  # click reads "" as unset
        raise InvalidInputError(
            "TOKENBUDGET_TOKEN",
            "is set but empty, which would turn auth off",
            fix="set it to the secret clients send, or unset it to run without a token",
        )
    if token is not None and not token.strip():
        if source is click.core.ParameterSource.ENVIRONMENT:
            raise InvalidInputError(
                "TOKENBUDGET_TOKEN",
                "is blank, which would turn auth off",
                fix="set it to the secret clients send, or unset it to run without a token",
            )
        raise InvalidInputError(
            "--token",
            "is empty, which would turn auth off (is the variable you passed set?)",
            fix='pass the secret clients send (--token "$SECRET" with SECRET set), '
            "or leave --token out to run without a token",
        )
    return token


def main(argv: Sequence[str] | None = None) -> None:
    """Run the ``tokenbudget`` command (the console-script entry point); exits the process."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="tokenbudget")
