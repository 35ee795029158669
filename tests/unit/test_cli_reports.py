"""``tokenbudget report`` and ``tokenbudget budgets`` on a real SQLite ledger file.

Expected figures are computed here with ``cost_of`` on the usages the test recorded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from cli_support import assert_one_line_error, run
from tokenbudget_core.budgets import load_policy
from tokenbudget_core.cli import EXIT_BAD_INPUT, EXIT_USAGE
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.pricing import cost_of, format_usd
from tokenbudget_core.stores import open_store
from tokenbudget_core.usage import Usage

pytestmark = pytest.mark.usefixtures("isolated")

SCRIPT = Path(sys.executable).with_name("tokenbudget")
DAY = "2026-11-18"
AT = datetime(2026, 11, 18, 12, tzinfo=UTC).timestamp()
# (feature, user, model, usage, conversation)
CALLS = (
    ("support", "alice", "gpt-4o", Usage(input_tokens=2_000, output_tokens=300), "c1"),
    ("support", "bob", "gpt-4o-mini", Usage(input_tokens=1_000, output_tokens=100), "c2"),
    ("search/ü", "zoë/x:1", "gpt-4o", Usage(input_tokens=400, output_tokens=40), None),
    ("search/ü", None, "gpt-4o-mini", Usage(input_tokens=300, output_tokens=30), None),
)
COSTS = [cost_of(usage, model) for _, _, model, usage, _ in CALLS]
TOTAL = sum(COSTS, Decimal(0))

POLICY = """
daily_usd = "1"
user_daily_usd = "0.5"

[features.support]
user_daily_usd = "0.01"
user_daily_tokens = 10000
feature_daily_usd = "0.1"

[features.search]
feature_daily_usd = "2"
"""


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A ledger file with CALLS recorded on DAY."""
    path = tmp_path / "ledger.db"
    ledger = Ledger(open_store(f"sqlite:///{path}"), clock=lambda: AT)
    for feature, user, model, usage, conversation in CALLS:
        ledger.record(usage, model=model, feature=feature, user=user, conversation=conversation)
    ledger.close()
    return path


def check_report_json(data: dict[str, object]) -> None:
    assert data["days"] == [DAY]
    totals = data["totals"]
    assert isinstance(totals, dict)
    assert Decimal(totals["cost_usd"]) == TOTAL
    assert totals["requests"] == len(CALLS)
    assert totals["input_tokens"] == sum(c[3].input_tokens for c in CALLS)
    assert totals["conversations"] == 2
    per_day = data["per_day"]
    assert isinstance(per_day, list)
    (row,) = per_day
    assert row["active_users"] == 3  # alice, bob, zoë/x:1 (the anonymous call is not a user)
    assert abs(Decimal(row["cost_per_active_user_usd"]) - TOTAL / 3) <= Decimal("5e-10")
    assert abs(Decimal(row["cost_per_conversation_usd"]) - TOTAL / 2) <= Decimal("5e-10")


def test_report_json(db: Path) -> None:
    result = run("report", "--store", f"sqlite:///{db}", "--day", DAY, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    check_report_json(data)
    (features,) = data["breakdowns"]
    assert features["dimension"] == "feature"
    expected = {"support": COSTS[0] + COSTS[1], "search/ü": COSTS[2] + COSTS[3]}
    assert {r["key"]: Decimal(r["cost_usd"]) for r in features["rows"]} == expected


def test_report_by_user_top_n(db: Path) -> None:
    result = run("report", "--store", f"sqlite:///{db}", "--day", DAY, "--by", "user", "--top", "2", "--json")
    assert result.exit_code == 0, result.output
    (users,) = json.loads(result.stdout)["breakdowns"]
    spend = sorted(
        ((user, c) for (_, user, _, _, _), c in zip(CALLS, COSTS, strict=True)), key=lambda kv: -kv[1]
    )
    assert [(r["key"], Decimal(r["cost_usd"])) for r in users["rows"]] == spend[:2]
    assert spend[0][0] == "alice"
    assert users["omitted"] == 2
    assert Decimal(users["omitted_cost_usd"]) == spend[2][1] + spend[3][1]


def test_report_tables(db: Path) -> None:
    result = run("report", "--store", f"sqlite:///{db}", "--day", DAY, "--by", "model")
    assert result.exit_code == 0, result.output
    out = result.stdout
    for needle in (
        f"Spend {DAY} (UTC)",
        "cost/user",
        "cost per active user",
        format_usd((TOTAL / 3).quantize(Decimal("1e-6"))),
        format_usd(TOTAL),
        format_usd(COSTS[0] + COSTS[2]),  # gpt-4o
        "gpt-4o-mini",
        "p95 / call",
        "search/ü",
    ):
        assert needle in out, needle


def test_report_store_from_the_environment(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENBUDGET_STORE", f"sqlite:///{db}")
    result = run("report", "--day", DAY, "--json")
    assert result.exit_code == 0, result.output
    check_report_json(json.loads(result.stdout))


def test_report_last_days_ends_today(tmp_path: Path) -> None:
    path = tmp_path / "now.db"
    ledger = Ledger(f"sqlite:///{path}")  # the real clock, like the command's
    usage = Usage(input_tokens=1_234, output_tokens=56)
    ledger.record(usage, model="gpt-4o", user="u")
    recorded_day = ledger.day()
    ledger.close()
    # Two days: still covers the recorded day if midnight passes between the two lines.
    result = run("report", "--store", f"sqlite:///{path}", "--days", "2", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert len(data["days"]) == 2
    assert recorded_day in data["days"]
    assert Decimal(data["totals"]["cost_usd"]) == cost_of(usage, "gpt-4o")


def test_installed_script_reports_json(db: Path) -> None:
    assert SCRIPT.is_file(), f"{SCRIPT} is not installed: pip install -e ."
    out = subprocess.run(
        [str(SCRIPT), "report", "--store", f"sqlite:///{db}", "--day", DAY, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin", "TOKENBUDGET_SPOOL": str(db.parent / "spool.jsonl")},
    )
    assert out.returncode == 0, out.stderr
    check_report_json(json.loads(out.stdout))


# -- report errors -----------------------------------------------------------------------------------


def test_report_refuses_a_missing_ledger_file_and_does_not_create_it(tmp_path: Path) -> None:
    path = tmp_path / "nope.db"
    result = run("report", "--store", f"sqlite:///{path}")
    assert_one_line_error(result, EXIT_BAD_INPUT, "--store", "no ledger at", "TOKENBUDGET_STORE")
    assert not path.exists()


def test_report_on_a_file_that_is_not_a_database_is_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not a database" * 100)
    result = run("report", "--store", f"sqlite:///{path}", "--day", DAY)
    assert_one_line_error(result, EXIT_BAD_INPUT, "--store", "not a SQLite ledger", str(path))
    assert "unreachable" not in result.stderr
    assert "on_unavailable" not in result.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--day", DAY, "--days", "3"), "--day"),
        (("--days", "0"), "--days"),
        (("--days", "three"), "--days"),
        (("--top", "0"), "--top"),
        (("--day", "18/11/2026"), "day"),
        (("--store", "ftp://x"), "unsupported store URL"),
    ],
)
def test_report_bad_input_is_one_line(db: Path, args: tuple[str, ...], needle: str) -> None:
    store = () if "--store" in args else ("--store", f"sqlite:///{db}")
    assert_one_line_error(run("report", *store, *args), EXIT_BAD_INPUT, needle)


def test_report_unknown_dimension_is_a_usage_error(db: Path) -> None:
    result = run("report", "--store", f"sqlite:///{db}", "--by", "team")
    assert result.exit_code == EXIT_USAGE


# -- budgets -----------------------------------------------------------------------------------------


@pytest.fixture
def today_db(tmp_path: Path) -> tuple[Path, Path, dict[str, Decimal]]:
    """Today's spend under POLICY (real clock, as the command uses), with one live reservation."""
    policy_path = tmp_path / "budgets.toml"
    policy_path.write_text(POLICY)
    path = tmp_path / "today.db"
    ledger = Ledger(f"sqlite:///{path}", policy=load_policy(policy_path))
    spent = {
        "alice/support": cost_of(Usage(input_tokens=2_000, output_tokens=300), "gpt-4o"),
        "alice/search": cost_of(Usage(input_tokens=1_000), "gpt-4o"),
        "bob/support": cost_of(Usage(input_tokens=1_000, output_tokens=100), "gpt-4o-mini"),
        "reserved": cost_of(Usage(input_tokens=100, output_tokens=50), "gpt-4o"),
    }
    ledger.record(
        Usage(input_tokens=2_000, output_tokens=300), model="gpt-4o", feature="support", user="alice"
    )
    ledger.record(Usage(input_tokens=1_000), model="gpt-4o", feature="search", user="alice")
    ledger.record(
        Usage(input_tokens=1_000, output_tokens=100), model="gpt-4o-mini", feature="support", user="bob"
    )
    ledger.reserve(model="gpt-4o", input_tokens=100, max_output_tokens=50, feature="support", user="alice")
    ledger.close()
    return path, policy_path, spent


def test_budgets_json_for_one_user(today_db: tuple[Path, Path, dict[str, Decimal]]) -> None:
    path, policy_path, s = today_db
    result = run(
        "budgets", "--store", f"sqlite:///{path}", "--policy", str(policy_path), "--user", "alice", "--json"
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    rows = {(r["feature"], r["budget"]): r for r in data["budgets"]}
    alice_support = s["alice/support"] + s["reserved"]
    everyone = s["alice/support"] + s["alice/search"] + s["bob/support"] + s["reserved"]
    expected = {
        ("search", "feature_daily_usd"): (Decimal(2), s["alice/search"]),
        (None, "daily_usd"): (Decimal(1), everyone),
        (None, "user_daily_usd (all features)"): (Decimal("0.5"), alice_support + s["alice/search"]),
        ("support", "user_daily_usd"): (Decimal("0.01"), alice_support),
        ("support", "feature_daily_usd"): (Decimal("0.1"), alice_support + s["bob/support"]),
    }
    money = {k: (Decimal(r["limit"]), Decimal(r["used"])) for k, r in rows.items() if r["unit"] == "usd"}
    assert money == expected
    for key, (limit, used) in expected.items():
        assert Decimal(rows[key]["headroom"]) == limit - used
        assert rows[key]["share"] == pytest.approx(float(used / limit))
    tokens = rows[("support", "user_daily_tokens")]
    assert (tokens["limit"], tokens["used"], tokens["headroom"]) == (10_000, 2_300 + 150, 10_000 - 2_450)
    # alice has used 87.5% of her support budget: past 0.75 (smaller_context), below 0.9 (cache_only).
    assert float(alice_support / Decimal("0.01")) == pytest.approx(0.875)
    assert rows[("support", "user_daily_usd")]["step"] == "smaller_context"
    assert rows[("support", "feature_daily_usd")]["step"] == "normal"
    assert {s["feature"]: s["step"] for s in data["steps"]} == {
        "search": "normal",
        "support": "smaller_context",
    }
    assert data["user"] == "alice"
    assert data["day"] == datetime.now(UTC).date().isoformat()


def test_budgets_without_user_hide_per_user_budgets(today_db: tuple[Path, Path, dict[str, Decimal]]) -> None:
    path, policy_path, s = today_db
    result = run(
        "budgets",
        "--store",
        f"sqlite:///{path}",
        "--policy",
        str(policy_path),
        "--feature",
        "support",
        "--json",
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["budgets"]
    assert [(r["feature"], r["budget"]) for r in rows] == [
        ("support", "feature_daily_usd"),
        (None, "daily_usd"),
    ]
    assert Decimal(rows[0]["used"]) == s["alice/support"] + s["reserved"] + s["bob/support"]


def test_budgets_table(today_db: tuple[Path, Path, dict[str, Decimal]]) -> None:
    path, policy_path, s = today_db
    result = run("budgets", "--store", f"sqlite:///{path}", "--policy", str(policy_path), "--user", "alice")
    assert result.exit_code == 0, result.output
    out = result.stdout
    alice_support = s["alice/support"] + s["reserved"]
    for needle in (
        "spent + reserved",
        "user_daily_usd",
        format_usd(Decimal("0.01")),
        format_usd(alice_support),
        format_usd(Decimal("0.01") - alice_support),
        "88%",
        "2,450",
        "support: budgets on",
        "all features: budgets on",
        "ladder step for support user alice: smaller_context",
    ):
        assert needle in out, needle


def test_budgets_bad_policy_is_one_line(tmp_path: Path, db: Path) -> None:
    store = ("--store", f"sqlite:///{db}")
    missing = run("budgets", *store, "--policy", str(tmp_path / "none.toml"))
    assert_one_line_error(missing, EXIT_BAD_INPUT, "cannot read")
    bad = tmp_path / "bad.toml"
    bad.write_text('monthly_usd = "5"\n')
    assert_one_line_error(run("budgets", *store, "--policy", str(bad)), EXIT_BAD_INPUT, "monthly_usd")


def test_budgets_without_limits_say_so(tmp_path: Path, db: Path) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    result = run("budgets", "--store", f"sqlite:///{db}", "--policy", str(empty))
    assert result.exit_code == 0, result.output
    assert "no budgets" in result.stdout


def test_budgets_of_a_policy_without_features(tmp_path: Path, db: Path) -> None:
    policy = tmp_path / "default.toml"
    policy.write_text('daily_usd = "1"\n\n[default_feature]\nfeature_daily_usd = "0.5"\n')
    store = ("--store", f"sqlite:///{db}", "--policy", str(policy))
    # db holds DAY's spend, not today's: today's budgets are untouched.
    data = json.loads(run("budgets", *store, "--json").stdout)
    assert [(r["feature"], r["budget"], r["used"], r["headroom"]) for r in data["budgets"]] == [
        (None, "feature_daily_usd", "0", "0.5"),
        (None, "daily_usd", "0", "1"),
    ]
    out = run("budgets", *store).stdout
    assert out.count("all features: budgets on") == 1
    assert out.count("(no feature): budgets on") == 1


def test_report_in_the_ledgers_time_zone(tmp_path: Path) -> None:
    path = tmp_path / "tokyo.db"
    at = datetime(2026, 11, 18, 20, tzinfo=UTC).timestamp()  # 05:00 on the 19th in Tokyo
    ledger = Ledger(f"sqlite:///{path}", timezone="Asia/Tokyo", clock=lambda: at)
    usage = Usage(input_tokens=5_000, output_tokens=500)
    ledger.record(usage, model="gpt-4o", user="kenji")
    ledger.close()
    store = ("--store", f"sqlite:///{path}", "--json")
    tokyo = json.loads(run("report", *store, "--day", "2026-11-19", "--timezone", "Asia/Tokyo").stdout)
    assert tokyo["timezone"] == "Asia/Tokyo"
    assert Decimal(tokyo["totals"]["cost_usd"]) == cost_of(usage, "gpt-4o")
    assert tokyo["per_day"][0]["active_users"] == 1
    utc = json.loads(run("report", *store, "--day", "2026-11-18").stdout)
    assert utc["timezone"] == "UTC"
    assert Decimal(utc["totals"]["cost_usd"]) == 0  # the ledger filed it under its own (Tokyo) day
    bad = run("report", *store, "--timezone", "Mars/Olympus")
    assert_one_line_error(bad, EXIT_BAD_INPUT, "timezone", "Mars/Olympus")


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("redis://127.0.0.1:notaport/0", "notaport"),
        ("redis://127.0.0.1:6379/0?namespace=", "namespace"),
        ("redis://127.0.0.1:6379/0?retention_days=-1", "retention_days"),
        ("memory://", "in-process store"),
        ("sqlite:///:memory:", "in-process store"),
    ],
)
@pytest.mark.parametrize("command", ["report", "budgets"])
def test_a_store_that_cannot_be_read_is_a_one_line_store_error(
    tmp_path: Path, command: str, url: str, needle: str
) -> None:
    policy = tmp_path / "budgets.toml"
    policy.write_text('daily_usd = "10"\n')
    extra = ("--policy", str(policy)) if command == "budgets" else ()
    assert_one_line_error(run(command, "--store", url, *extra), EXIT_BAD_INPUT, "--store", needle)


def test_budgets_show_the_exact_use_of_a_zero_limit_and_of_a_limit_set_later(tmp_path: Path) -> None:
    """A budget whose limit is 0 still shows what was used, and a per-user limit across
    features shows what the user spent before it was configured, to the nano-dollar and token."""
    path = tmp_path / "today.db"
    ledger = Ledger(f"sqlite:///{path}")
    usage = Usage(input_tokens=1_000, output_tokens=155)
    ledger.record(usage, model="gpt-4o", feature="chat", user="b")
    ledger.close()
    policy = tmp_path / "p.toml"
    policy.write_text('user_daily_tokens = 1500\n\n[features.chat]\nfeature_daily_usd = "0"\n')
    store = ("--store", f"sqlite:///{path}", "--policy", str(policy))
    data = json.loads(run("budgets", *store, "--user", "b", "--json").stdout)
    used = {r["budget"]: r["used"] for r in data["budgets"]}
    assert Decimal(used["feature_daily_usd"]) == cost_of(usage, "gpt-4o")
    assert used["user_daily_tokens (all features)"] == 1155
