"""The demo application: a LangChain support bot replayed over the demo workload, stage by stage.

This is an example app, not an adapter: it shows the adapters working together the way a team
would wire them. Each stage replays the whole workload (:mod:`tokenbudget_core.demo_workload`)
through the same pipeline — history, prompt, chat model, cost callback — with one more control
switched on than the stage before:

1. ``baseline``: the premium model, the whole history on every call.
2. ``compression``: whitespace removed from what users paste (``compress_prompt``), so the
   history carries the smaller text too.
3. ``memory``: the history trimmed to a token budget (:class:`TokenBudgetChatMessageHistory`).
4. ``caching``: a semantic response cache scoped to the tenant, model and system prompt.
5. ``routing``: simple requests to the cheap tier (:class:`RouterChatModel` over the two models).
6. ``budgets``: per-user daily dollar budgets, enforced before each call (refusals are soft).

Every call is charged by :class:`BudgetCallbackHandler` to a :class:`~tokenbudget_core.Ledger`
under the feature ``demo:<stage>``, so the savings table is read back from the ledger. On a store
other than the demo's own (which each run recreates) runs never mix: a run's features are
``demo:<stage>@run-<id>`` and its user and conversation ids start with ``run-<id>-``. Two runs on
the demo's own store at once never mix either: the second one (the directory's demo lock is
held) records to a fresh file of its own beside it, ``tokenbudget-demo-run-<id>.db``. Nor do two
runs' HTML reports: a run started while another holds the lock writes
``tokenbudget-demo-run-<id>.html``, whatever its store. These files of a run's own are kept
(named in its summary's ``own_files``; delete them when done), as the demo's own files are until
the next run. A run is one ledger day: one that crosses midnight is charged to the day it
started on.
Offline the chat model is :class:`DemoChatModel`, which answers from the workload and reports
usage counted exactly with tiktoken; ``live=True`` uses ``ChatOpenAI`` instead.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import date, datetime, timedelta
from datetime import time as clock_time
from decimal import Decimal
from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field, PrivateAttr

from tokenbudget_core.alerts import Alert
from tokenbudget_core.attribution import attribute
from tokenbudget_core.budgets import BudgetPolicy, FeatureBudget
from tokenbudget_core.complexity import HeuristicClassifier
from tokenbudget_core.compression import compress_prompt
from tokenbudget_core.counting import TokenCounter
from tokenbudget_core.demo_report import DemoSummary, StageStats, render_html, summarise
from tokenbudget_core.demo_workload import SYSTEM_PROMPT, Workload, build_workload, reply_to
from tokenbudget_core.errors import BudgetExceededError, InvalidInputError, MissingDependencyError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import Report, build_report
from tokenbudget_core.semantic_cache import SemanticCache
from tokenbudget_core.stores.base import redact_url
from tokenbudget_core.stores.sqlite import sqlite_path

from .budget_callback import ROUTE_KEY, BudgetCallbackHandler
from .chat_history import TokenBudgetChatMessageHistory
from .llm_cache import CACHE_HIT_KEY, TokenBudgetLLMCache
from .messages import to_core_messages
from .router_chat_model import RouterChatModel

if sys.platform != "win32":
    import fcntl

__all__ = [
    "DEFAULT_DEMO_HTML",
    "DEFAULT_DEMO_STORE",
    "STAGES",
    "DemoChatModel",
    "check_live",
    "demo_html_path",
    "run_demo",
    "run_stage",
]

STAGES: tuple[str, ...] = ("baseline", "compression", "memory", "caching", "routing", "budgets")
"""The stages, each adding one control to the one before."""

PREMIUM, CHEAP = "gpt-4o", "gpt-4o-mini"
TENANT = "acme-cloud"
HISTORY_TOKENS = 1_500
MAX_OUTPUT = 600
USER_DAILY_USD = Decimal("0.09")
REFUSAL = "You have reached today's assistant budget; a human agent will follow up by email."


@functools.cache
def _counter(model: str) -> TokenCounter:
    """One counter per model, so its per-message count cache lasts the whole replay."""
    return TokenCounter.for_model(model)


class DemoChatModel(BaseChatModel):
    """A chat model that answers from the demo workload and reports exact usage.

    The answer to a user message is :func:`~tokenbudget_core.demo_workload.reply_to` of the
    workload turn with that text; ``usage_metadata`` holds the prompt's tiktoken count (chat
    framing included) and the answer's, as a provider would report them.
    """

    model_name: str = Field(default=PREMIUM, description="The model this fake stands in for.")
    calls: int = Field(default=0, description="How many calls reached the model.")
    _replies: Mapping[str, str] = PrivateAttr(default_factory=dict)

    def __init__(self, *, replies: Mapping[str, str] | None = None, **kwargs: Any) -> None:
        """``replies``: user text (whitespace collapsed) -> answer."""
        super().__init__(**kwargs)
        self._replies = dict(replies or {})

    @property
    def _llm_type(self) -> str:
        return "tokenbudget-demo"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name}

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.calls += 1
        last = next((m for m in reversed(messages) if isinstance(m, HumanMessage)), None)
        said = " ".join(str(last.content).split()) if last else ""
        text = self._replies.get(said, "I can help with that.")
        counter = _counter(self.model_name)
        prompt = int(counter.count_messages(to_core_messages(messages)))
        output = int(counter.count(text))
        message = AIMessage(
            text,
            usage_metadata={"input_tokens": prompt, "output_tokens": output, "total_tokens": prompt + output},
            response_metadata={"model_name": self.model_name, "finish_reason": "stop"},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])


def check_live() -> None:
    """Raise :class:`InvalidInputError` unless a live run can call OpenAI (``OPENAI_API_KEY`` set)."""
    if not os.environ.get("OPENAI_API_KEY"):
        raise InvalidInputError(
            "--live", "needs OPENAI_API_KEY in the environment", fix="set it, or drop --live"
        )


def _live_model(model: str) -> BaseChatModel:
    check_live()
    try:
        from langchain_openai import ChatOpenAI
    except ImportError as e:  # pragma: no cover - the all extra has it
        raise MissingDependencyError("langchain-openai", "openai") from e
    return ChatOpenAI(model=model, max_completion_tokens=MAX_OUTPUT, stream_usage=True)


def demo_policy(run: str = "") -> BudgetPolicy:
    """The budget policy of the demo: a per-user daily dollar limit on the ``budgets`` stage only
    (``run``: the suffix of a run's features, see :func:`run_stage`)."""
    return BudgetPolicy(features={f"demo:{s}{run}": FeatureBudget() for s in STAGES if s != "budgets"} | {
        f"demo:budgets{run}": FeatureBudget(user_daily_usd=USER_DAILY_USD)
    })  # fmt: skip


def run_stage(
    stage: str,
    workload: Workload,
    ledger: Ledger,
    *,
    live: bool = False,
    user_prefix: str = "",
    feature_suffix: str = "",
    on_turn: Callable[[], None] | None = None,
) -> StageStats:
    """Replay ``workload`` with the controls of ``stage`` and the ones before it; what it observed
    (the money is read back from the ledger by the caller).

    Args:
        stage: One of :data:`STAGES`.
        workload: The turns to replay.
        ledger: Where every call is charged (feature ``demo:<stage>`` + ``feature_suffix``).
        live: Use ``ChatOpenAI`` (needs ``OPENAI_API_KEY``) instead of :class:`DemoChatModel`.
        user_prefix: Put before each user and conversation id (keeps runs apart in a shared store).
        feature_suffix: Put after the stage's feature (keeps runs apart in a shared store; the
            ledger's policy must name the same features, see :func:`demo_policy`).
        on_turn: Called after each turn (a progress bar).

    Raises:
        InvalidInputError: An unknown stage, or ``live`` without an API key.
    """
    if stage not in STAGES:
        raise InvalidInputError("stage", f"unknown stage {stage!r}", fix=f"one of {', '.join(STAGES)}")
    level = STAGES.index(stage)
    replies = {" ".join(t.text.split()): reply_to(t) for convo in workload.conversations for t in convo}
    if live:
        premium, cheap = _live_model(PREMIUM), _live_model(CHEAP)
    else:
        premium = DemoChatModel(model_name=PREMIUM, replies=replies)
        cheap = DemoChatModel(model_name=CHEAP, replies=replies)
    if level >= STAGES.index("caching"):
        # One semantic cache for the tenant: FAQ answers do not depend on the conversation.
        cache = TokenBudgetLLMCache(
            SemanticCache(threshold=0.9, match_history=False, scope_fields=("tenant",))
        )
        premium.cache = cheap.cache = cache
    feature = f"demo:{stage}{feature_suffix}"
    calls = hits = refused = routed_cheap = compressed = 0
    active: set[str] = set()
    handler = BudgetCallbackHandler(ledger, max_output_tokens=MAX_OUTPUT)
    counter = _counter(PREMIUM)
    model: BaseChatModel = premium
    if level >= STAGES.index("routing"):
        model = RouterChatModel(
            {"small": cheap, "large": premium},
            models={"small": CHEAP, "large": PREMIUM},
            classifier=HeuristicClassifier(tiers=("small", "large")),
            max_tokens=MAX_OUTPUT,
        )
    for convo in workload.conversations:
        history = (
            TokenBudgetChatMessageHistory(model=counter, max_tokens=HISTORY_TOKENS)
            if level >= STAGES.index("memory")
            else None
        )
        transcript: list[BaseMessage] = []
        for turn in convo:
            user = user_prefix + turn.user
            text = turn.text
            if level >= STAGES.index("compression"):
                squeezed = compress_prompt(text, counter=counter)
                compressed += squeezed.tokens_saved
                text = squeezed.text
            past = history.messages if history is not None else transcript
            prompt: Sequence[BaseMessage] = [SystemMessage(SYSTEM_PROMPT), *past, HumanMessage(text)]
            with attribute(
                tenant=TENANT, feature=feature, user=user, conversation=user_prefix + turn.conversation
            ):
                try:
                    answer = model.invoke(prompt, config={"callbacks": [handler]})
                    reply: BaseMessage = answer
                    active.add(user)
                    if CACHE_HIT_KEY in answer.response_metadata:
                        hits += 1
                    else:
                        calls += 1
                        route = answer.response_metadata.get(ROUTE_KEY) or {}
                        routed_cheap += route.get("tier") == "small"
                except BudgetExceededError:
                    reply = AIMessage(REFUSAL)
                    refused += 1
            new = [HumanMessage(text), reply]
            if history is not None:
                history.add_messages(new)
            else:
                transcript.extend(new)
            if on_turn is not None:
                on_turn()
    return StageStats(
        stage=stage,
        calls=calls,
        cache_hits=hits,
        refused=refused,
        routed_cheap=routed_cheap,
        active_users=len(active),
        tokens_compressed=compressed,
    )


_ALL_FEATURES = 1_000_000_000
DEFAULT_DEMO_STORE = "sqlite:///tokenbudget-demo.db"
"""The demo's own embedded store (recreated by each run; a run started while another uses it
records to a new file beside it), so it never mixes with an app's ledger nor another run."""
DEFAULT_DEMO_HTML = "tokenbudget-demo.html"
"""Where a demo run writes its HTML report unless told (``run_demo(html=True)``, ``tokenbudget
demo``), but for a run started while another demo run here holds the directory's demo lock: that
one writes ``tokenbudget-demo-run-<id>.html`` (see :func:`demo_html_path`)."""


def demo_html_path(store: str) -> str:
    """Where a run on the demo's own store, whose summary names ``store``, writes its HTML report
    unless told: beside a ledger file of the run's own (``tokenbudget-demo-run-<id>.db``, a run
    started while another used the demo's own store), the same name ending ``.html``, so that two
    runs at once never write one report; else :data:`DEFAULT_DEMO_HTML`. (A run on another store
    started while another demo run is here writes ``tokenbudget-demo-run-<id>.html`` too, ``<id>``
    its run's, see :func:`run_demo`.)"""
    if re.fullmatch(re.escape(DEFAULT_DEMO_STORE.removesuffix(".db")) + r"-run-[0-9a-f]{12}\.db", store):
        return store.removeprefix("sqlite:///").removesuffix(".db") + ".html"
    return DEFAULT_DEMO_HTML


def _run_html(run: str) -> str:
    """The HTML report of the run ``run`` (``run-<id>``) when another demo run here writes
    :data:`DEFAULT_DEMO_HTML`: ``tokenbudget-demo-run-<id>.html``."""
    default = Path(DEFAULT_DEMO_HTML)
    return str(default.with_name(f"{default.stem}-{run}{default.suffix}"))


@contextlib.contextmanager
def _quiet_langchain() -> Iterator[None]:
    """LangChain logs every exception a handler raises, refusals included; the demo counts them."""
    log = logging.getLogger("langchain_core.callbacks.manager")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


def _remove_sqlite(path: Path) -> None:
    """Delete the SQLite file ``path`` and its ``-wal`` / ``-shm`` companions (missing ones are fine).

    Raises:
        PermissionError: A file is open elsewhere and the system refuses to delete it (Windows),
            or the directory is not writable.
        OSError: The file cannot be deleted for another reason (a read-only file system).
    """
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        p.unlink(missing_ok=True)


_ERROR_SHARING_VIOLATION = 32
"""Windows' error for a file another process has open (``WinError 32``)."""


def _in_use(error: OSError) -> bool:
    """Whether ``error`` is Windows refusing to delete a file another process has open (a run
    using it), not a directory this process may not write (which is any other ``PermissionError``,
    on Linux and macOS always)."""
    return isinstance(error, PermissionError) and getattr(error, "winerror", None) == _ERROR_SHARING_VIOLATION


def _not_writable(url: str, path: Path, error: OSError) -> InvalidInputError:
    """The error of a run that cannot write its demo store file ``path`` (``url``): its directory
    is not writable (or the file system is read-only), named with the way out."""
    folder = os.path.abspath(path.parent)
    why = f"{error.strerror or error}"
    if isinstance(error, PermissionError) or error.errno == errno.EROFS:
        why += "; the directory is not writable"
    return InvalidInputError(
        "store",
        f"the demo cannot write its ledger {path.name} in {folder} ({why})",
        value=url,
        fix="run the demo from a writable directory, or give it a store in one: "
        "tokenbudget demo --store sqlite:///writable/path.db (run_demo(store=...) in Python)",
    )


_NO_LOCK = -1
"""What :func:`_lock_directory` returns when no lock can be taken in a directory at all: Windows
(no ``fcntl``), a directory that cannot be opened to lock it, a file system without locks. Not
another run holding it: the run goes on as if it held it, and says runs here are not kept apart."""


def _lock_directory(folder: Path) -> int | None:
    """An exclusive lock of ``folder`` (the open descriptor, released when closed); None when
    another run holds it; :data:`_NO_LOCK` when no lock can be taken there (Windows, a directory
    that cannot be opened read-only, a file system without ``flock``)."""
    if sys.platform == "win32":
        return _NO_LOCK
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return _NO_LOCK
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # another run holds it
        os.close(fd)
        return None
    except OSError:  # a file system without locks (ENOLCK, EOPNOTSUPP, ...)
        os.close(fd)
        return _NO_LOCK
    return fd


@contextlib.contextmanager
def _default_store(url: str) -> Iterator[tuple[str, bool]]:
    """The store of a run on the demo's own store ``url`` (:data:`DEFAULT_DEMO_STORE`, maybe
    spelt another way, see :func:`_is_demo_store`), fresh: the file recreated while this run
    holds its directory's demo lock; when another run holds it (or, on Windows, the file cannot
    be deleted because another run has it open), a new file of this run's own beside it,
    ``<name>-run-<id>.db``, so that neither run deletes the other's file nor mixes in its calls.
    Yields the store and whether no lock could be taken in the directory at all (Windows, a file
    system without locks): then the run recreates the file as if it held the lock (on Windows,
    but for a file another run has open), and is not kept apart from a run started meanwhile.

    Raises:
        InvalidInputError: ``store``: the file cannot be deleted or created because its directory
            is not writable; it names the directory and the fix (another store, or another
            directory), rather than a per-run file the user never asked for.
    """
    path = Path(DEFAULT_DEMO_STORE.removeprefix("sqlite:///"))  # ``url`` may name it otherwise
    fd = _lock_directory(path.parent)
    try:
        target = path
        if fd is None or not _recreated(url, path):
            target = path.with_name(f"{path.stem}-run-{uuid.uuid4().hex[:12]}{path.suffix}")
        try:  # created now, so that a directory it cannot be written in is named as such
            target.open("ab").close()
        except OSError as e:
            raise _not_writable(url, path, e) from e
        yield url if target == path else "sqlite:///" + target.as_posix(), fd == _NO_LOCK
    finally:
        if fd is not None and fd >= 0:
            os.close(fd)


def _is_demo_store(url: str) -> bool:
    """Whether ``url`` is the demo's own store, :data:`DEFAULT_DEMO_STORE` (``tokenbudget-demo.db``
    in the working directory), however it is spelt (``sqlite:////abs/path/tokenbudget-demo.db``,
    ``sqlite:///./tokenbudget-demo.db``, ``..``, a symlink to it: the same resolved path), so
    that a run on it takes the directory's demo lock as a run on the default does: a run started
    meanwhile never deletes the file under it. A URL that is not a SQLite file's (or is
    malformed, refused later by the ledger) is not, nor is a hard link to the file: it is a name
    of its own, which the run recreating ``tokenbudget-demo.db`` would leave on the old file, so
    it is a store like any other (runs marked apart, recorded to as given; a plain run deleting
    ``tokenbudget-demo.db`` leaves it be)."""
    if url == DEFAULT_DEMO_STORE:
        return True
    try:
        given = sqlite_path(url)
    except InvalidInputError:
        return False
    own = sqlite_path(DEFAULT_DEMO_STORE)
    if given == ":memory:":
        return False
    return os.path.realpath(given) == os.path.realpath(own)


def _recreated(url: str, path: Path) -> bool:
    """Delete the demo store file ``path`` (``url``) of an earlier run: True; False when it is
    open in another run (Windows refuses to delete it). Any other refusal is this run's to report.
    """
    try:
        _remove_sqlite(path)
    except OSError as e:
        if _in_use(e):
            return False
        raise _not_writable(url, path, e) from e
    return True


def _pin_day(ledger: Ledger) -> None:
    """Keep ``ledger`` on the day it is on now: from the day's last millisecond on, its clock
    reads that millisecond (a run that crosses midnight charges, enforces the per-user daily
    budgets and reports its whole run on one day, the day it started on)."""
    clock = ledger.clock
    now = clock()
    today = ledger.day(now)
    midnight = datetime.combine(date.fromisoformat(today) + timedelta(days=1), clock_time(), ledger.tz)
    last = midnight.timestamp() - 0.001
    if ledger.day(last) != today:  # a zone whose day does not end at 00:00 (not UTC, the demo's)
        last = now

    def pinned() -> float:
        return min(clock(), last)

    ledger.clock = pinned


def _this_run(report: Report, suffix: str) -> Report:
    """``report`` with only this run's features (``demo:<stage><suffix>``), named ``demo:<stage>``."""
    if not suffix:
        return report
    breakdowns = tuple(
        replace(
            b,
            rows=tuple(
                replace(row, key=row.key.removesuffix(suffix))
                for row in b.rows
                if row.key is not None and row.key.endswith(suffix)
            ),
            omitted=0,
            omitted_cost_usd=Decimal(0),
        )
        if b.dimension == "feature"
        else b
        for b in report.breakdowns
    )
    return replace(report, breakdowns=breakdowns)


def run_demo(
    *,
    store: str | None = None,
    users: int = 50,
    turns: int = 20,
    seed: int = 7,
    stages: Sequence[str] = STAGES,
    live: bool = False,
    on_turn: Callable[[], None] | None = None,
    clock: Callable[[], float] = time.time,
    html: str | bool = False,
) -> DemoSummary:
    """Replay the workload once per stage and read the savings back from the ledger.

    The run is one ledger day, the day it starts on: a run that crosses midnight (UTC, the demo
    ledger's zone) charges its calls after midnight to that day's last millisecond, so the
    per-user daily budgets and the savings table are those of a run within one day.

    Args:
        store: Ledger store URL (default :data:`DEFAULT_DEMO_STORE`, recreated; while another
            run uses it, this run records to a new file beside it, ``tokenbudget-demo-run-<id>.db``,
            named in the summary's ``store``; a URL naming that same file another way, such as
            ``sqlite:////abs/dir/tokenbudget-demo.db``, is that store). With any other store, runs
            never mix: features get a run suffix (``demo:<stage>@run-<id>``), user and
            conversation ids a run prefix, and the savings are read from this run's only.
        users: Users in the workload.
        turns: User turns per user.
        seed: Workload seed.
        stages: Stages to run, ``baseline`` first, in :data:`STAGES` order.
        live: Call OpenAI for real (``OPENAI_API_KEY``; ``OPENAI_BASE_URL`` is honoured).
        on_turn: Called after every turn of every stage (``users * turns * len(stages)`` calls).
        clock: Returns epoch seconds, the ledger's clock (tests pass a fake one).
        html: Write the run's HTML report (named in the summary's ``html``): ``True`` for the
            default place, :data:`DEFAULT_DEMO_HTML`, but for a run started while another demo
            run here holds the directory's demo lock (it writes that file), which writes
            ``tokenbudget-demo-run-<id>.html`` (beside its own ledger file on the demo's own
            store, see :func:`demo_html_path`; with another store, ``<id>`` is its run's), so
            that a run's report never shows another run's figures; a path to write it there;
            ``False`` (the default) for none. Runs are told apart by a lock of the directory:
            where none can be taken (Windows, a file system without locks), a run uses the
            default files, not kept apart from a run at the same time (the summary's
            ``no_lock``).

    Returns:
        The savings table read back from the ledger. Its ``own_files`` name the files made
        for this run alone because another run was going (a ``tokenbudget-demo-run-<id>``
        ledger file and report): they are kept, for the report and ``tokenbudget report``
        (the summary's ``store``), and nothing removes them; the files it was given are never
        among them.

    Raises:
        InvalidInputError: A bad figure, an unknown stage or stage order, a bad clock,
            ``live`` without a key, (``store``) the demo's own store in a directory that
            cannot be written (the error names it; pass a ``store`` in a writable one), or
            (``html``) a bad ``html`` or a report that cannot be written there.
        BudgetUnavailableError: The store cannot be reached.
    """
    stages = list(stages)
    if not stages or stages[0] != "baseline" or any(s not in STAGES for s in stages):
        raise InvalidInputError("stages", "must start with 'baseline' and name known stages", value=stages)
    if [STAGES.index(s) for s in stages] != sorted(STAGES.index(s) for s in stages):
        raise InvalidInputError("stages", f"must follow the order {', '.join(STAGES)}", value=stages)
    workload = build_workload(users=users, turns=turns, seed=seed)
    if live:
        check_live()
    if not isinstance(html, str | bool) or html == "":
        raise InvalidInputError(
            "html", "must be True (the default place), a path, or False (none)", value=html
        )
    url = store or DEFAULT_DEMO_STORE
    run = "" if _is_demo_store(url) else f"run-{uuid.uuid4().hex[:12]}"
    with _run_files(url, run, html) as (own, report, no_lock):
        summary = _run(own, run, workload, stages, live=live, on_turn=on_turn, clock=clock)
        made = [own.removeprefix("sqlite:///")] if own != url else []  # never a file it was given
        if html is True and report != DEFAULT_DEMO_HTML:
            made.append(str(report))
        summary = replace(summary, own_files=tuple(made), no_lock=no_lock)
        if report is None:
            return summary
        try:
            Path(report).write_text(render_html(summary), encoding="utf-8")
        except OSError as e:
            raise InvalidInputError(
                "html",
                f"cannot write {report!r}: {e.strerror or e}",
                value=report,
                fix=f"the run's figures are in the ledger ({summary.store}); "
                "give the report a writable path next time",
            ) from e
        return replace(summary, html=report)


@contextlib.contextmanager
def _run_files(url: str, run: str, html: str | bool) -> Iterator[tuple[str, str | None, bool]]:
    """The store (``url``, or a file of the run's own) and HTML report (``None``: none) of a run
    (``run``: its id, ``""`` on the demo's own store), kept while the run records to them and
    writes its report: the directory's demo lock, when this run takes it, is held until then, so
    that a run started meanwhile writes files of its own. The last item: the run needed that
    lock and none can be taken there (:data:`_NO_LOCK`), so it uses the default files (it cannot
    tell whether another run is going), not kept apart from a run started meanwhile."""
    if not run:  # the demo's own store, however it was named
        with _default_store(url) as (own, no_lock):
            yield own, demo_html_path(own) if html is True else html or None, no_lock
        return
    if html is not True:
        yield url, html or None, False
        return
    fd = _lock_directory(Path(DEFAULT_DEMO_HTML).parent)  # another run may be writing the default
    try:
        yield url, DEFAULT_DEMO_HTML if fd is not None else _run_html(run), fd == _NO_LOCK
    finally:
        if fd is not None and fd >= 0:
            os.close(fd)


def _run(
    url: str,
    run: str,
    workload: Workload,
    stages: Sequence[str],
    *,
    live: bool,
    on_turn: Callable[[], None] | None,
    clock: Callable[[], float],
) -> DemoSummary:
    """:func:`run_demo` on the store ``url``, its ids marked with ``run`` (none: a fresh store)."""
    prefix, suffix = (f"{run}-", f"@{run}") if run else ("", "")
    fired: list[Alert] = []
    ledger = Ledger(url, policy=demo_policy(suffix), alerts=[fired.append], clock=clock)
    try:
        _pin_day(ledger)
        day = ledger.day()
        stats = []
        with _quiet_langchain():
            for stage in stages:
                stats.append(
                    run_stage(
                        stage,
                        workload,
                        ledger,
                        live=live,
                        user_prefix=prefix,
                        feature_suffix=suffix,
                        on_turn=on_turn,
                    )
                )
        # every feature of the day (other runs' included), so none of this run's is cut
        report = build_report(ledger, day=day, by=("feature",), top=_ALL_FEATURES)
        return summarise(
            _this_run(report, suffix),
            stats,
            users=workload.users,
            turns=workload.turns_per_user,
            alerts=fired,
            store=redact_url(url),
        )
    finally:
        ledger.close()
