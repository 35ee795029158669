"""RedisStore through failures a long-running service meets: connections dropped mid-call,
write refusals, flushed scripts, huge batches, bad settings and bad credentials.

Each test runs a real ``redis-server`` and checks what a user relies on afterwards: a healthy
server is usable again, no usage is lost, and every error is a ``TokenBudgetError``.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from redis_server import RedisServer
from store_contract import DAY, reserve, totals
from tokenbudget_core import Usage
from tokenbudget_core.errors import BudgetUnavailableError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import build_report
from tokenbudget_core.stores.base import Check, CommitOutcome, CommitRequest, ReserveOutcome, ReserveRequest
from tokenbudget_core.stores.redis import RedisRefusedError, RedisStore

pytestmark = pytest.mark.integration


@pytest.fixture
def own_server(redis_server_binary: str) -> Iterator[RedisServer]:
    server = RedisServer(redis_server_binary).start()
    yield server
    server.stop()


@pytest.fixture
def raw(own_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(own_server.url, decode_responses=True)
    yield client
    client.close()


def test_calls_dropped_mid_flight_never_use_up_the_connection_pool(
    own_server: RedisServer, raw: redis.Redis
) -> None:
    """Every timed-out call drops the scripts' connection; once the server answers again the store
    works, reads and writes, however many calls failed (here more than the pool may hold)."""
    s = RedisStore(own_server.url + "?max_connections=1", socket_timeout=0.2)
    try:
        assert reserve(s, "a", 10, 100).ok
        assert s.rollup([DAY]) == []  # a pool read while the scripts' connection is open
        raw.execute_command("CLIENT", "PAUSE", 60_000, "WRITE")  # EVALSHA waits: the call times out
        try:
            for i in range(3):
                with pytest.raises(BudgetUnavailableError, match="Timeout"):
                    reserve(s, f"paused{i}", 10, 100)
        finally:
            raw.execute_command("CLIENT", "UNPAUSE")
        assert reserve(s, "b", 10, 100).ok
        assert s.rollup([DAY]) == []
        assert s.mark_once("alert", 60)
        assert totals(s)[1] >= 20
    finally:
        s.close()


def test_a_refused_write_keeps_the_connection(own_server: RedisServer, raw: redis.Redis) -> None:
    """An OOM reply leaves the connection in step: the store reports Redis unavailable without
    opening a new connection per refused call, and works again once the server takes writes."""
    s = RedisStore(own_server.url)
    try:
        assert reserve(s, "a", 10, 100).ok
        opened = int(raw.info("stats")["total_connections_received"])
        raw.config_set("maxmemory-policy", "noeviction")
        raw.config_set("maxmemory", 1)
        try:
            for i in range(5):
                with pytest.raises(BudgetUnavailableError, match="OutOfMemoryError"):
                    reserve(s, f"oom{i}", 10, 100)
        finally:
            raw.config_set("maxmemory", 0)
        assert reserve(s, "b", 10, 100).ok
        assert int(raw.info("stats")["total_connections_received"]) == opened
        assert totals(s) == (0, 20)
    finally:
        s.close()


class SplittingProxy:
    """A TCP proxy whose first connection goes to ``first`` and every later one to ``rest``: the
    store's scripts run on one server while the scripts it loads (through its pool) land on
    another, so every ``EVALSHA`` answers ``NOSCRIPT``, however often the script is loaded."""

    def __init__(self, first: int, rest: int) -> None:
        self.targets = [first, rest]
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            target = self.targets[min(self.accepted, 1)]
            self.accepted += 1
            upstream = socket.create_connection(("127.0.0.1", target))
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65_536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()
        for s in self.sockets:
            s.close()


def test_a_script_missing_again_and_again_is_unavailable_and_usage_is_spooled(
    own_server: RedisServer, redis_server_binary: str, tmp_path: Path
) -> None:
    """NOSCRIPT proves the script did not run: the store loads it and sends again a few times,
    then reports Redis unavailable (never a refusal), so a fail-open ledger spools the usage."""
    other = RedisServer(redis_server_binary).start()
    proxy = SplittingProxy(own_server.port, other.port)
    url = f"redis://127.0.0.1:{proxy.port}/0"
    try:
        s = RedisStore(url)
        try:
            with pytest.raises(BudgetUnavailableError, match="NoScriptError"):
                reserve(s, "a", 10, 100)
        finally:
            s.close()
        proxy.accepted = 0  # the ledger's own store: its scripts on the first server again
        ledger = Ledger(url, on_unavailable="open", spool_path=tmp_path / "spool.jsonl", alerts=[])
        try:
            charge = ledger.record(Usage(input_tokens=100, output_tokens=10), model="gpt-4o-mini")
            assert charge.spooled
        finally:
            ledger.close()
    finally:
        proxy.close()
        other.stop()


def test_a_big_batch_on_a_healthy_server_is_reserved_and_committed_whole(own_server: RedisServer) -> None:
    """reserve_many / commit_many send a batch in round trips of bounded size: a batch whose scripts
    together run longer than socket_timeout still goes through (it failed whole as 'unreachable'
    while most of it ran)."""
    s = RedisStore(own_server.url, socket_timeout=0.5)
    n = 30_000
    try:
        reserved = s.reserve_many(
            [
                ReserveRequest(
                    day=DAY,
                    request_id=f"r{i}",
                    checks=[Check(scope="g", metric="nanos", amount=1, limit=None)],
                    now_ms=1_000,
                    lease_ms=600_000,
                )
                for i in range(n)
            ]
        )
        assert [r for r in reserved if not (isinstance(r, ReserveOutcome) and r.ok)] == []
        committed = s.commit_many(
            [
                CommitRequest(
                    day=DAY,
                    request_id=f"r{i}",
                    charges=[Check(scope="g", metric="nanos", amount=2)],
                    rollup_key="k",
                    rollup={"requests": 1},
                    now_ms=1_500,
                )
                for i in range(n)
            ]
        )
        assert [c for c in committed if not (isinstance(c, CommitOutcome) and c.applied)] == []
        assert s.totals(DAY, [("g", "nanos")], 2_000)[("g", "nanos")] == (2 * n, 0)
    finally:
        s.close()


def test_a_wrong_password_is_a_refusal_not_an_outage(
    own_server: RedisServer, raw: redis.Redis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Credentials the server refuses cannot pass by themselves: every call fails with a
    RedisRefusedError saying what to fix (a fail-open ledger does not let calls through
    unchecked for ever), and one ERROR is logged."""
    raw.acl_setuser("tb", enabled=True, passwords=["+right"], keys=["*"], commands=["+@all"])
    wrong = f"redis://tb:wr0ng@127.0.0.1:{own_server.port}/0"
    s = RedisStore(wrong)
    try:
        for call in (
            lambda: reserve(s, "a", 10, 100),
            lambda: s.rollup([DAY]),
            lambda: reserve(s, "b", 10, 100),
        ):
            with pytest.raises(RedisRefusedError) as info:
                call()
            assert not isinstance(info.value, BudgetUnavailableError)
            assert "password" in str(info.value)
            assert "wr0ng" not in str(info.value)
    finally:
        s.close()
    assert [r.levelname for r in caplog.records if "credentials" in r.getMessage()] == ["ERROR"]
    ledger = Ledger(wrong, on_unavailable="open", spool_path=tmp_path / "spool.jsonl", alerts=[])
    try:
        with pytest.raises(RedisRefusedError):
            ledger.reserve(model="gpt-4o-mini", input_tokens=100, max_output_tokens=10)
    finally:
        ledger.close()
    right = RedisStore(f"redis://tb:right@127.0.0.1:{own_server.port}/0")
    try:
        assert reserve(right, "c", 10, 100).ok
    finally:
        right.close()


def test_each_caller_of_a_failed_shared_round_trip_gets_an_exception_of_its_own(
    own_server: RedisServer, raw: redis.Redis
) -> None:
    """Threads whose calls shared one round trip that timed out each raise their own exception:
    its traceback holds that thread's frames only."""
    s = RedisStore(own_server.url, socket_timeout=1.0)
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        try:
            totals(s)
        except BudgetUnavailableError as e:
            with lock:
                errors.append(e)

    try:
        assert totals(s) == (0, 0)
        raw.execute_command("CLIENT", "PAUSE", 60_000, "WRITE")
        try:
            threads = [threading.Thread(target=worker) for _ in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            raw.execute_command("CLIENT", "UNPAUSE")
        assert len(errors) == 6
        assert len({id(e) for e in errors}) == 6
        for e in errors:
            frames = traceback.extract_tb(e.__traceback__)
            assert [f.name for f in frames].count("worker") == 1
            assert isinstance(e, BudgetUnavailableError)
            assert "Timeout" in str(e)
    finally:
        s.close()


def test_a_commit_refused_for_credentials_is_spooled_and_replayed_once_they_are_fixed(
    own_server: RedisServer, raw: redis.Redis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A password rotated while a call is in flight: its commit is refused, not lost. It is
    spooled (with an ERROR logged), and a ledger with the new password replays it."""
    raw.acl_setuser("tb", enabled=True, passwords=["+old"], keys=["*"], commands=["+@all"])
    spool = tmp_path / "spool.jsonl"
    url = f"redis://tb:{{}}@127.0.0.1:{own_server.port}/0?namespace=rotated"
    ledger = Ledger(url.format("old"), spool_path=spool, alerts=[])
    try:
        held = [
            ledger.reserve(
                model="gpt-4o-mini", input_tokens=10, max_output_tokens=10, user=f"u{i}", conversation=f"c{i}"
            )
            for i in range(4)
        ]
        raw.acl_setuser(  # rotated mid-call
            "tb", enabled=True, reset_passwords=True, passwords=["+new"], keys=["*"], commands=["+@all"]
        )
        raw.execute_command("CLIENT", "KILL", "USER", "tb")  # the old sessions end with it
        lane = ledger.commit(held[0], Usage(input_tokens=10, output_tokens=4))
        general = ledger.commit(held[1], Usage(input_tokens=10, output_tokens=4), model="gpt-4o-mini")
        batch = ledger.commit_many([(r, Usage(input_tokens=10, output_tokens=4)) for r in held[2:]])
        assert (lane.spooled, general.spooled) == (True, True)
        assert (lane.applied, general.applied) == (False, False)
        assert [(c.spooled, c.applied) for c in batch] == [(True, False)] * 2  # type: ignore[union-attr]
        assert ledger.replay_spool() == 0  # still the old password: the lines wait, none quarantined
    finally:
        ledger.close()
    assert not (tmp_path / "spool.jsonl.bad").exists()
    assert any(r.levelname == "ERROR" and "refused a commit" in r.getMessage() for r in caplog.records)
    fixed = Ledger(url.format("new"), spool_path=spool, alerts=[])
    try:
        assert fixed.replay_spool() == 4
        totals = build_report(fixed, day=held[0].day).totals
        assert (totals.requests, totals.output_tokens, totals.conversations) == (4, 16, 4)
    finally:
        fixed.close()


def test_a_commit_refused_by_the_acl_waits_for_the_acl_to_be_fixed(
    own_server: RedisServer, raw: redis.Redis, tmp_path: Path
) -> None:
    """NOPERM is the server's configuration, like a password: the commits it refuses stay spooled
    (a replay while it still refuses keeps them) and are applied once the ACL allows them."""
    raw.acl_setuser("acl", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all"])
    spool = tmp_path / "spool.jsonl"
    url = f"redis://acl:pw@127.0.0.1:{own_server.port}/0?namespace=acl"
    ledger = Ledger(url, spool_path=spool, alerts=[])
    try:
        held = ledger.reserve(model="gpt-4o-mini", input_tokens=10, max_output_tokens=10)
        raw.acl_setuser("acl", commands=["-evalsha", "-eval"])  # scripts forbidden from now on
        assert ledger.commit(held, Usage(input_tokens=10, output_tokens=4)).spooled
        assert ledger.replay_spool() == 0
        assert not (tmp_path / "spool.jsonl.bad").exists()
        raw.acl_setuser("acl", commands=["+@all"])
        assert ledger.replay_spool() == 1
        assert build_report(ledger, day=held.day).totals.requests == 1
    finally:
        ledger.close()


def test_a_commit_whose_alert_mark_the_acl_refuses_is_still_a_commit(
    own_server: RedisServer, raw: redis.Redis, tmp_path: Path
) -> None:
    """The usage is stored; an alert mark the ACL refuses (``SET`` forbidden) costs the alert, not
    the caller an error for a commit that succeeded."""
    from tokenbudget_core.budgets import BudgetPolicy, FeatureBudget

    raw.acl_setuser("noset", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-set"])
    url = f"redis://noset:pw@127.0.0.1:{own_server.port}/0?namespace=noset"
    policy = BudgetPolicy(default_feature=FeatureBudget(user_daily_tokens=100))
    got: list[object] = []
    ledger = Ledger(url, policy=policy, spool_path=tmp_path / "s", alerts=[got.append])
    try:
        held = ledger.reserve(model="gpt-4o-mini", input_tokens=10, max_output_tokens=10, user="u")
        charge = ledger.commit(held, Usage(input_tokens=85, output_tokens=5))  # past 80%: an alert is due
        assert charge.applied
        assert build_report(ledger, day=held.day).totals.input_tokens == 85
    finally:
        ledger.close()
