"""Webhook alerts reach the webhook: delivered before the process exits (a bounded wait), retried
when a POST fails for a reason that may pass, kept in order through an outage and sent when the
webhook answers again (a bounded queue; what cannot wait is logged with its content), never
redirected; credentials in the URL become an Authorization header; and no log or error ever
shows the URL's secrets (user info, path token, query), only scheme://host:port. Real HTTP
servers on 127.0.0.1."""

from __future__ import annotations

import base64
import gc
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tokenbudget_core.alerts import Alert, dispatch, resolve_sinks
from tokenbudget_core.errors import InvalidInputError

ALERT = Alert(day="2026-11-23", budget="daily_usd", scope="all", threshold=0.8, used="0.0087", limit="0.01")


@dataclass
class Seen:
    """One request a webhook server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Hook:
    """A webhook on 127.0.0.1 answering each request with the next of ``answers`` (then 204)."""

    answers: list[int | Callable[[BaseHTTPRequestHandler], object]] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)
    port: int = 0

    def url(self, userinfo: str = "", path: str = "/hook") -> str:
        return f"http://{userinfo}127.0.0.1:{self.port}{path}"

    def wait_for(self, n: int, timeout: float = 10.0) -> list[Seen]:
        deadline = time.monotonic() + timeout
        while len(self.seen) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.seen


def answer_after(seconds: float, status: int) -> Callable[[BaseHTTPRequestHandler], None]:
    """A webhook answer (for ``Hook.answers``) that takes ``seconds`` before ``status``."""

    def answer(handler: BaseHTTPRequestHandler) -> None:
        time.sleep(seconds)
        handler.send_response(status)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return answer


@contextmanager
def serving(state: Hook, port: int = 0) -> Iterator[Hook]:
    """``state``'s webhook served on 127.0.0.1 (``port``: any free one) while the block runs."""

    class Handler(BaseHTTPRequestHandler):
        def handle_one(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            state.seen.append(Seen(self.command, self.path, dict(self.headers.items()), body))
            answer = state.answers.pop(0) if state.answers else 204
            if callable(answer):
                answer(self)
                return
            self.send_response(answer)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_POST = do_GET = handle_one

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.released.set()
        from tokenbudget_core import alerts

        alerts.flush(timeout=10)  # what is still waiting is sent, not left to a later test's webhook
        server.shutdown()
        server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    with serving(Hook()) as state:
        yield state


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pauses between POSTs of 20 to 100 ms here (0.5 s growing to a minute in use)."""
    from tokenbudget_core import alerts

    monkeypatch.setattr(alerts, "_FIRST_PAUSE_S", 0.02)
    monkeypatch.setattr(alerts, "MAX_PAUSE_S", 0.1)


def comes_back(port: int) -> Hook:
    """A webhook starting to listen on ``port`` (refused until now) takes every alert still
    waiting for it; what it received."""
    from tokenbudget_core import alerts

    with serving(Hook(), port) as back:
        assert alerts.flush(timeout=10) == 0
    return back


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def final_error(caplog: pytest.LogCaptureFixture, timeout: float = 10.0) -> logging.LogRecord:
    """The ERROR a webhook logs when it gives an alert up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        errors = [r for r in caplog.records if r.name == "tokenbudget.alerts" and r.levelno >= logging.ERROR]
        if errors:
            return errors[0]
        time.sleep(0.01)
    raise AssertionError("no ERROR was logged")


def send(url: str) -> None:
    dispatch(resolve_sinks([url]), ALERT)


# -- delivered before the process exits ----------------------------------------------------------

CHILD = """
import logging, sys
logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
from tokenbudget_core import Usage
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.ledger import Ledger
led = Ledger("memory://", policy=BudgetPolicy(daily_usd="0.01"), alerts=[sys.argv[1]])
r = led.reserve(model="gpt-4o", input_tokens=1000, max_output_tokens=500)
led.commit(r, Usage(input_tokens=1000, output_tokens=500))   # $0.0075 of $0.01: 75%
r = led.reserve(model="gpt-4o", input_tokens=100, max_output_tokens=100)
led.commit(r, Usage(input_tokens=100, output_tokens=100))    # 87.5%: the 80% alert
"""


def test_an_alert_crossed_just_before_the_process_exits_is_delivered(hook: Hook) -> None:
    slow = answer_after(0.3, 200)  # a webhook taking 300 ms to answer

    hook.answers = [slow]
    child = subprocess.run(
        [sys.executable, "-c", CHILD, hook.url()], capture_output=True, text=True, timeout=30
    )
    assert child.returncode == 0, child.stderr
    assert len(hook.seen) == 1  # received before the child was gone, not some time after
    alert = json.loads(hook.seen[0].body)
    assert (alert["type"], alert["budget"], alert["threshold"]) == ("tokenbudget.alert", "daily_usd", 0.8)
    assert child.stderr == ""


def test_an_exiting_process_waits_a_bounded_time_for_a_webhook_that_hangs(hook: Hook) -> None:
    hook.answers = [lambda handler: hook.released.wait(60)]  # never answers while the child runs
    url = hook.url("bot:s3cret@", "/T000/B000/SECRETPATH?token=abc123")
    started = time.monotonic()
    child = subprocess.run([sys.executable, "-c", CHILD, url], capture_output=True, text=True, timeout=60)
    took = time.monotonic() - started
    assert child.returncode == 0
    assert took < 10  # the wait is bounded: 5 s in all (three POSTs could take 15 s)
    assert "1 alert(s) not delivered before the process exited" in child.stderr
    assert f"http://127.0.0.1:{hook.port}" in child.stderr
    for secret in ("s3cret", "SECRETPATH", "abc123", "/T000"):
        assert secret not in child.stderr


FORKER = """
import os, sys
from tokenbudget_core.alerts import Alert, dispatch, resolve_sinks

def alert(budget):
    return Alert(day="d", budget=budget, scope="all", threshold=0.8, used="1", limit="2")

sinks = resolve_sinks([sys.argv[1]])
dispatch(sinks, alert("parent"))  # its worker may be mid-POST when the process forks
pid = os.fork()
if pid == 0:
    dispatch(sinks, alert("child"))  # the child's own worker sends it before the child exits
    sys.exit(0)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_sends_its_own_alerts_and_not_the_parents(hook: Hook) -> None:
    slow = answer_after(0.3, 204)

    hook.answers = [slow, slow]
    child = subprocess.run(
        [sys.executable, "-c", FORKER, hook.url()], capture_output=True, text=True, timeout=30
    )
    assert child.returncode == 0, child.stderr
    assert sorted(json.loads(s.body)["budget"] for s in hook.seen) == ["child", "parent"]


# -- retried; an outage logged once, its alerts kept -------------------------------------------------------


def test_a_failed_post_is_retried_until_delivered(hook: Hook, caplog: pytest.LogCaptureFixture) -> None:
    hook.answers = [503, 502]
    with caplog.at_level(logging.INFO, logger="tokenbudget.alerts"):
        send(hook.url())
        seen = hook.wait_for(3)
        time.sleep(0.2)
    assert [s.method for s in seen] == ["POST"] * 3
    assert seen[0].body == seen[2].body
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    retries = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(retries) == 2
    assert "HTTP 503" in retries[0]


def test_a_webhook_that_keeps_failing_is_logged_once_and_gets_the_alert_when_it_answers(
    hook: Hook, caplog: pytest.LogCaptureFixture
) -> None:
    from tokenbudget_core import alerts

    hook.answers = [500] * 6
    with caplog.at_level(logging.INFO, logger="tokenbudget.alerts"):
        send(hook.url())
        error = final_error(caplog)
        assert alerts.flush(timeout=10) == 0
    assert len(hook.seen) == 7  # six failures, then delivered: an outage delays the alert, never loses it
    assert {s.body for s in hook.seen} == {hook.seen[0].body}
    assert "is failing (attempt 3 of the alert" in error.getMessage()
    assert "HTTP 500" in error.getMessage()
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1  # one ERROR per outage
    (back,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert back.startswith(f"alert webhook http://127.0.0.1:{hook.port} answers again")


def crossed(budget: str) -> Alert:
    return Alert(day="2026-11-23", budget=budget, scope="all", threshold=0.8, used="8", limit="10")


def test_alerts_that_come_during_an_outage_are_all_sent_in_order_when_it_ends(
    hook: Hook, caplog: pytest.LogCaptureFixture
) -> None:
    from tokenbudget_core import alerts

    hook.answers = [503] * 5
    (sink,) = resolve_sinks([hook.url()])
    budgets = [f"b{i}" for i in range(6)]
    with caplog.at_level(logging.INFO, logger="tokenbudget.alerts"):
        for budget in budgets:
            dispatch([sink], crossed(budget))
        assert alerts.flush(timeout=10) == 0
    sent = [json.loads(s.body)["budget"] for s in hook.seen]
    assert sent == ["b0"] * 6 + budgets[1:]  # only the first was retried; each delivered once
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1


def test_a_full_queue_logs_the_alerts_it_cannot_take_with_their_content(
    hook: Hook, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tokenbudget_core import alerts

    monkeypatch.setattr(alerts, "MAX_QUEUED", 2)
    hook.answers = [lambda handler: hook.released.wait(60)]  # the first POST hangs
    (sink,) = resolve_sinks([hook.url()])
    with caplog.at_level(logging.ERROR, logger="tokenbudget.alerts"):
        for budget in ("b0", "b1", "b2", "b3"):
            dispatch([sink], crossed(budget))
        refused = [r.getMessage() for r in caplog.records]
        hook.released.set()
        assert alerts.flush(timeout=10) == 0
    assert len(refused) == 2
    assert "2 alerts are waiting" in refused[0]
    assert "budget b2 for all passed 80%: 8 of 10 (2026-11-23)" in refused[0]
    assert crossed("b2").id in refused[0]
    assert "budget b3 for all" in refused[1]
    assert [json.loads(s.body)["budget"] for s in hook.seen[1:]] == ["b0", "b1"]  # after the hung one


def test_a_client_error_is_not_retried(hook: Hook, caplog: pytest.LogCaptureFixture) -> None:
    hook.answers = [404]
    with caplog.at_level(logging.INFO, logger="tokenbudget.alerts"):
        send(hook.url(path="/services/T1/B2/tok"))
        error = final_error(caplog)
    assert len(hook.seen) == 1
    assert error.getMessage().startswith(f"alert webhook http://127.0.0.1:{hook.port} failed (attempt 1)")
    assert "budget daily_usd for all passed 80%" in error.getMessage()  # its content: nothing else has it
    assert "HTTP 404" in error.getMessage()
    assert "tok" not in error.getMessage()


def test_a_redirect_is_not_followed(hook: Hook, caplog: pytest.LogCaptureFixture) -> None:
    def redirect(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(302)
        handler.send_header("Location", f"http://127.0.0.1:{hook.port}/elsewhere")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    hook.answers = [redirect]
    with caplog.at_level(logging.INFO, logger="tokenbudget.alerts"):
        send(hook.url("bot:s3cret@"))
        error = final_error(caplog)
        time.sleep(0.2)
    assert [s.path for s in hook.seen] == ["/hook"]  # the credentials never went anywhere else
    assert "HTTP 302: redirects are not followed" in error.getMessage()


# -- credentials in the URL ----------------------------------------------------------------------


def test_credentials_in_the_url_are_sent_as_basic_auth(hook: Hook) -> None:
    send(hook.url("bot:tok3n@", "/hook?channel=ops"))
    (seen,) = hook.wait_for(1)
    assert seen.headers["Authorization"] == "Basic " + base64.b64encode(b"bot:tok3n").decode()
    assert seen.headers["Host"] == f"127.0.0.1:{hook.port}"
    assert seen.path == "/hook?channel=ops"
    assert json.loads(seen.body)["budget"] == "daily_usd"


def test_percent_encoded_credentials_are_decoded(hook: Hook) -> None:
    send(hook.url("bot%40corp:p%3Ass%2Fw%40rd@"))
    (seen,) = hook.wait_for(1)
    assert seen.headers["Authorization"] == "Basic " + base64.b64encode(b"bot@corp:p:ss/w@rd").decode()


def test_a_url_without_credentials_sends_no_authorization(hook: Hook) -> None:
    send(hook.url())
    (seen,) = hook.wait_for(1)
    assert "Authorization" not in seen.headers


# -- secrets never shown -------------------------------------------------------------------------

SECRETS = ("S3cretPassw0rd", "alerts", "XXXXSECRETTOKENXXXX", "T0001", "abc123")


def test_a_failing_webhook_is_logged_without_its_secrets(caplog: pytest.LogCaptureFixture) -> None:
    port = closed_port()
    url = (
        f"http://alerts:S3cretPassw0rd@127.0.0.1:{port}/services/T0001/B0001/XXXXSECRETTOKENXXXX?token=abc123"
    )
    (sink,) = resolve_sinks([url])
    with caplog.at_level(logging.DEBUG, logger="tokenbudget"):
        dispatch([sink], ALERT)
        error = final_error(caplog)
        comes_back(port)
    assert error.getMessage().startswith(f"alert webhook http://127.0.0.1:{port} is failing (attempt 3")
    shown = [r.getMessage() for r in caplog.records] + [repr(sink), str(sink)]
    for secret in SECRETS:
        assert not [text for text in shown if secret in text], secret


@pytest.mark.parametrize(
    "url",
    [
        "http://bot:pa/ss0rd@127.0.0.1:1/hook",  # '/' in the password: the host would be 'bot'
        "http://bot:1234/ss0rd@127.0.0.1:1/hook",  # ... with a password that reads as a port
        "http://bot:pa?ss0rd@127.0.0.1:1/hook",
        "https:///ss0rd",
        "http://a b/ss0rd",  # http.client would refuse it at every send
        "http://127.0.0.1:1/ss0rd\n",
    ],
)
def test_a_url_that_would_send_elsewhere_is_refused_without_showing_it(url: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        resolve_sinks(["log", url])
    error = caught.value
    assert error.field == "alerts[1]"
    assert "percent-encoded" in str(error)
    assert "ss0rd" not in str(error)
    assert "ss0rd" not in str(error.value)


# -- processes that end with os._exit ------------------------------------------------------------

MP_WORKER = """
import multiprocessing as mp, sys
if sys.argv[2] == "parent":
    import tokenbudget_core.alerts  # imported before the fork, as well as after

def job(url):
    from tokenbudget_core.alerts import Alert, dispatch, resolve_sinks
    alert = Alert(day="d", budget="worker", scope="all", threshold=0.8, used="1", limit="2")
    dispatch(resolve_sinks([url]), alert)

if __name__ == "__main__":
    p = mp.get_context("fork").Process(target=job, args=(sys.argv[1],))
    p.start()
    p.join()
    sys.exit(p.exitcode)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
@pytest.mark.parametrize("imported", ["parent", "child"])
def test_a_multiprocessing_worker_sends_its_last_alert_before_it_exits(hook: Hook, imported: str) -> None:
    slow = answer_after(0.3, 204)  # the worker is gone before a fast one answers

    hook.answers = [slow]
    child = subprocess.run(
        [sys.executable, "-c", MP_WORKER, hook.url(), imported], capture_output=True, text=True, timeout=30
    )
    assert child.returncode == 0, child.stderr
    assert [json.loads(s.body)["budget"] for s in hook.seen] == ["worker"]  # before the worker was gone


OS_EXIT = """
import os, sys
from tokenbudget_core import alerts
alerts.dispatch(alerts.resolve_sinks([sys.argv[1]]), alerts.Alert(
    day="d", budget="last", scope="all", threshold=1.0, used="2", limit="2"))
if sys.argv[2] == "flush":
    print(alerts.flush(timeout=5.0), flush=True)
os._exit(0)
"""


def test_flush_lets_a_process_that_ends_with_os_exit_deliver_its_alerts(hook: Hook) -> None:
    slow = answer_after(0.3, 204)

    hook.answers = [slow]
    child = subprocess.run(
        [sys.executable, "-c", OS_EXIT, hook.url(), "flush"], capture_output=True, text=True, timeout=30
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == "0"  # nothing left unsent
    assert [json.loads(s.body)["budget"] for s in hook.seen] == ["last"]


def test_flush_returns_and_logs_what_is_still_unsent(hook: Hook, caplog: pytest.LogCaptureFixture) -> None:
    from tokenbudget_core import alerts

    hook.answers = [lambda handler: hook.released.wait(60)]  # never answers while the test waits
    with caplog.at_level(logging.ERROR, logger="tokenbudget.alerts"):
        send(hook.url("bot:s3cret@"))
        assert alerts.flush(timeout=0.2) == 1
    (message,) = [r.getMessage() for r in caplog.records]
    assert "1 alert(s) not delivered before flush() returned (waited 0 s)" in message
    assert "s3cret" not in message
    hook.released.set()
    assert alerts.flush(timeout=10) == 0


# -- one alert, one id ---------------------------------------------------------------------------


def test_an_alerts_id_names_the_threshold_crossing() -> None:
    same = Alert(
        day="2026-11-23", budget="daily_usd", scope="all", threshold=0.8, used="0.0099", limit="0.01"
    )
    assert ALERT.id == same.id  # the spend differs, the crossing is the same
    raised = Alert(day="2026-11-23", budget="daily_usd", scope="all", threshold=0.8, used="9", limit="10")
    assert ALERT.id != raised.id  # the limit was raised during the day: its own crossing
    assert ALERT.id.startswith("tb-alert-")
    others = [
        Alert(day="2026-11-24", budget="daily_usd", scope="all", threshold=0.8, used="1", limit="2"),
        Alert(day="2026-11-23", budget="daily_tokens", scope="all", threshold=0.8, used="1", limit="2"),
        Alert(day="2026-11-23", budget="daily_usd", scope="feature=x", threshold=0.8, used="1", limit="2"),
        Alert(day="2026-11-23", budget="daily_usd", scope="all", threshold=1.0, used="1", limit="2"),
    ]
    assert len({ALERT.id, *(a.id for a in others)}) == 5


def test_a_webhook_answering_too_late_gets_the_same_id_on_every_retry(
    hook: Hook, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tokenbudget_core import alerts

    monkeypatch.setattr(alerts, "_TIMEOUT_S", 0.3)  # (5 s in use) kept short here
    monkeypatch.setattr(alerts, "_FIRST_PAUSE_S", 0.05)

    def late(handler: BaseHTTPRequestHandler) -> None:  # takes the alert, answers after the timeout
        time.sleep(0.6)
        try:
            handler.send_response(200)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
        except OSError:
            pass

    hook.answers = [late, late, late]
    with caplog.at_level(logging.ERROR, logger="tokenbudget.alerts"):
        send(hook.url())
        error = final_error(caplog)
    seen = hook.wait_for(3)
    ids = {json.loads(s.body)["id"] for s in seen}
    assert ids == {ALERT.id}
    assert {s.headers["Idempotency-Key"] for s in seen} == {ALERT.id}
    assert "may not have been delivered" in error.getMessage()
    assert ALERT.id in error.getMessage()


def test_a_webhook_that_cannot_be_reached_gets_the_alert_once_it_listens(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = closed_port()
    with caplog.at_level(logging.ERROR, logger="tokenbudget.alerts"):
        send(f"http://127.0.0.1:{port}/hook")
        error = final_error(caplog)
    assert "is not delivered yet" in error.getMessage()
    back = comes_back(port)
    assert [json.loads(s.body)["id"] for s in back.seen] == [ALERT.id]


def test_with_no_thread_to_start_a_failing_webhook_holds_the_call_briefly_and_keeps_the_alert(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_thread(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")  # what threading says when none is left

    port = closed_port()
    with monkeypatch.context() as patched:
        patched.setattr(threading.Thread, "start", no_thread)
        started = time.monotonic()
        send(f"http://127.0.0.1:{port}/hook")  # sent from the caller's thread: a few POSTs, not the outage
        assert time.monotonic() - started < 5
    back = comes_back(port)  # threads again: the alert was kept
    assert [json.loads(s.body)["id"] for s in back.seen] == [ALERT.id]


def test_alerts_waiting_for_a_failing_webhook_outlive_the_sinks_that_queued_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The ledger (here: the sink list) that queued an alert may be gone before the webhook answers
    again: the alert is still sent (the webhook was only weakly held, and a garbage collection
    under load dropped it with its queue)."""

    def no_thread(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    port = closed_port()
    with monkeypatch.context() as patched:
        patched.setattr(threading.Thread, "start", no_thread)
        send(f"http://127.0.0.1:{port}/hook")  # its sinks are dropped when it returns
    gc.collect()
    back = comes_back(port)
    assert [json.loads(s.body)["id"] for s in back.seen] == [ALERT.id]


@pytest.mark.skipif(not hasattr(__import__("signal"), "setitimer"), reason="setitimer")
def test_a_ctrl_c_during_a_send_from_the_callers_thread_does_not_stop_the_webhook(
    hook: Hook, monkeypatch: pytest.MonkeyPatch
) -> None:
    import signal

    from tokenbudget_core import alerts

    start = threading.Thread.start

    def no_thread(self: threading.Thread) -> None:  # none for alerts (the webhook server has its own)
        if self.name == "tokenbudget-alert-webhook":
            raise RuntimeError("can't start new thread")
        start(self)

    hook.answers = [answer_after(1.0, 204)]  # the first POST takes a second
    (sink,) = resolve_sinks([hook.url()])
    previous = signal.signal(signal.SIGALRM, signal.default_int_handler)
    try:
        with monkeypatch.context() as patched:
            patched.setattr(threading.Thread, "start", no_thread)
            signal.setitimer(signal.ITIMER_REAL, 0.3)  # Ctrl-C while the caller's thread sends
            with pytest.raises(KeyboardInterrupt):
                dispatch([sink], crossed("b0"))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    dispatch([sink], crossed("b1"))  # threads again: a worker takes both
    assert alerts.flush(timeout=10) == 0
    assert [json.loads(s.body)["budget"] for s in hook.seen[1:]] == ["b0", "b1"]


def test_flush_keeps_its_timeout_when_no_thread_can_start(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tokenbudget_core import alerts

    def no_thread(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    port = closed_port()
    with caplog.at_level(logging.CRITICAL, logger="tokenbudget.alerts"), monkeypatch.context() as patched:
        patched.setattr(threading.Thread, "start", no_thread)
        send(f"http://127.0.0.1:{port}/hook")  # sent from the caller's thread, bounded, then kept
        started = time.monotonic()
        assert alerts.flush(timeout=0.2) == 1  # not sent from flush's thread: its timeout holds
        assert time.monotonic() - started < 1
    comes_back(port)


SETTLES_AT_EXIT = """
import gc, sys, time, warnings
from typing import Any
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_tokenbudget import BudgetCallbackHandler
from tokenbudget_core import Usage, finalizing
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.ledger import Ledger
warnings.filterwarnings("ignore")
ledger = Ledger("memory://", policy=BudgetPolicy(user_daily_tokens=100), alerts=[sys.argv[1]])
first = ledger.reserve(model="gpt-4o-mini", input_tokens=70, max_output_tokens=5, user="u")
ledger.commit(first, Usage(input_tokens=70, output_tokens=5))  # 75% used
handler = BudgetCallbackHandler(ledger, model="gpt-4o-mini", user="u", max_output_tokens=5)
model = GenericFakeChatModel(messages=iter(["one two three four five six"]), callbacks=[handler])
stream = model.stream("hi"); next(stream); next(stream)
holder: list[Any] = [stream]; holder.append(holder)
del stream, holder
finalizing.defer(time.sleep, 0.5)  # the deferred-work thread is busy
gc.collect()  # the stream's end is deferred behind it, and crosses 80% when settled
"""


def test_an_alert_a_stream_end_settled_at_exit_crosses_is_delivered(hook: Hook) -> None:
    child = subprocess.run(
        [sys.executable, "-c", SETTLES_AT_EXIT, hook.url()], capture_output=True, text=True, timeout=60
    )
    assert child.returncode == 0, child.stderr
    assert [(a["budget"], a["threshold"]) for a in map(json.loads, (s.body for s in hook.wait_for(1)))] == [
        ("user_daily_tokens (all features)", 0.8)
    ]


EXIT_IN_OUTAGE = """
import sys
from tokenbudget_core.alerts import Alert, dispatch, resolve_sinks
sinks = resolve_sinks([sys.argv[1]])
for budget in ("b0", "b1", "b2"):
    dispatch(sinks, Alert(day="d", budget=budget, scope="user=u-1", threshold=1.0, used="2", limit="2"))
"""


def test_a_process_exiting_during_an_outage_logs_each_alert_it_could_not_send() -> None:
    url = f"http://bot:s3cret@127.0.0.1:{closed_port()}/T000/SECRETPATH"
    started = time.monotonic()
    child = subprocess.run(
        [sys.executable, "-c", EXIT_IN_OUTAGE, url], capture_output=True, text=True, timeout=60
    )
    assert child.returncode == 0
    assert time.monotonic() - started < 10
    assert "3 alert(s) not delivered before the process exited" in child.stderr
    for budget in ("b0", "b1", "b2"):
        assert f"budget {budget} for user=u-1 passed 100%: 2 of 2 (d)" in child.stderr
    for secret in ("s3cret", "SECRETPATH", "/T000"):
        assert secret not in child.stderr


# -- schemes in any case, and no URL in an error's value -----------------------------------------


def test_an_upper_case_scheme_is_a_webhook(hook: Hook) -> None:
    send(hook.url("bot:tok3n@").replace("http://", "HTTP://"))
    (seen,) = hook.wait_for(1)
    assert seen.headers["Authorization"] == "Basic " + base64.b64encode(b"bot:tok3n").decode()
    (sink,) = resolve_sinks(["HTTPS://bot:s3cr3t-token@hooks.example.com/services/T0/B0/XXXXSECRET"])
    assert "s3cr3t" not in repr(sink)
    assert "XXXXSECRET" not in repr(sink)


@pytest.mark.parametrize(
    ("sink", "shown"),
    [
        (
            "ftp://bot:s3cr3t-token@hooks.example.com:21/services/XXXXSECRET?token=s3cr3t",
            "ftp://hooks.example.com:21",
        ),
        ("hooks.example.com/services/T0/B0/XXXXSECRET", None),  # no scheme: hidden whole
        ("bot:s3cr3t-token@hooks.example.com", None),
        ("logs", "logs"),
    ],
)
def test_a_string_that_is_not_a_sink_is_refused_without_its_secrets(sink: str, shown: str | None) -> None:
    with pytest.raises(InvalidInputError) as caught:
        resolve_sinks([sink])
    error = caught.value
    assert error.field == "alerts[0]"
    for text in (str(error), repr(error.value)):
        assert "s3cr3t" not in text
        assert "XXXXSECRET" not in text
    if shown is not None:
        assert error.value == shown
