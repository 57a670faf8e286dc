"""Shared rate limit: the cost of one fleet-wide reservation, on SQLite and PostgreSQL.

    .venv/bin/python benchmarks/rate_limit.py [--n 2000] [--threads 8]
        [--postgres postgresql://postgres@127.0.0.1:5432/postgres]
        # --postgres defaults to EXTEND_CONNECTOR_TEST_POSTGRES_URL

Rows (per backend, on the connector's own SQLAlchemy engine, as `service` wires it):
  baseline SELECT 1    a connection checkout and one `SELECT 1` round trip (the naive floor)
  reserve              `RateBuckets.reserve`: the atomic GCRA UPDATE ... RETURNING, committed
  acquire (async)      `RateBudget.acquire` with the bucket attached: reserve in a worker thread
                       from the event loop, then local pacing (what an Extend call pays)
  reserve x threads    the same reserve from N threads at once (one row: the contended case),
                       time per reservation = wall time / total reservations
The bucket's limit is set so high that no reservation has to wait: only the cost is measured.
Writes benchmarks/results/rate_limit.json.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import postgres_database, postgres_server, print_table, ratio, write_results

from extend_connector.extend import RateBudget, ThreadedFleetBucket
from extend_connector.store import Database, RateBuckets, migrate

NO_WAIT = (1e9, 1.0)  # limit, period: a slot every nanosecond, so nobody waits


def per_op(n: int, op: Any) -> float:
    op()  # warm: connection, statement cache, the bucket's row
    start = time.perf_counter()
    for _ in range(n):
        op()
    return (time.perf_counter() - start) / n


def baseline(db: Database, n: int) -> float:
    def select_one() -> None:
        with db.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1")).scalar_one()
            conn.rollback()

    return per_op(n, select_one)


def acquire(db: Database, n: int) -> float:
    budget = RateBudget()
    budget.attach_fleet(
        ThreadedFleetBucket(RateBuckets(db.engine, "bench-acquire")),
        limits={"standard": (int(NO_WAIT[0]), NO_WAIT[1])},
        headroom=1.0,
    )

    async def run() -> float:
        await budget.acquire("standard")
        start = time.perf_counter()
        for _ in range(n):
            await budget.acquire("standard")
        return (time.perf_counter() - start) / n

    seconds = asyncio.run(run())
    assert budget.fleet_failures == 0
    return seconds


def threaded(db: Database, n: int, threads: int) -> float:
    buckets = RateBuckets(db.engine, "bench-threads")
    buckets.reserve("standard", *NO_WAIT)
    each = max(1, n // threads)
    go = threading.Event()

    def work() -> None:
        go.wait()
        for _ in range(each):
            buckets.reserve("standard", *NO_WAIT)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    start = time.perf_counter()
    go.set()
    for w in workers:
        w.join()
    return (time.perf_counter() - start) / (each * threads)


def run_backend(name: str, url: str, n: int, threads: int) -> dict[str, Any]:
    migrate(url)
    db = Database(url)
    try:
        buckets = RateBuckets(db.engine, "bench")
        figures = {
            "baseline_select1_s": baseline(db, n),
            "reserve_s": per_op(n, lambda: buckets.reserve("standard", *NO_WAIT)),
            "acquire_s": acquire(db, n),
            "reserve_threads_s": threaded(db, n, threads),
        }
    finally:
        db.dispose()
    return {"backend": name, "n": n, "threads": threads, **figures}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=2000, help="Operations per row.")
    parser.add_argument("--threads", type=int, default=8, help="Threads of the contended row.")
    parser.add_argument(
        "--postgres", default=None, help="postgresql://user@host:port/db (a throw-away db is made)."
    )
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        results.append(
            run_backend("sqlite", f"sqlite:///{Path(tmp) / 'bench.db'}", args.n, args.threads)
        )
    server = postgres_server(args.postgres)
    if server:
        with postgres_database(server, "bench_ratelimit") as url:
            results.append(run_backend("postgresql", url, args.n, args.threads))
    else:
        print(
            "PostgreSQL: not measured (set "
            "EXTEND_CONNECTOR_TEST_POSTGRES_URL or pass --postgres URL)"
        )
    rows = []
    for r in results:
        base = r["baseline_select1_s"]
        for label, key in (
            ("baseline SELECT 1", "baseline_select1_s"),
            ("reserve", "reserve_s"),
            ("acquire (async)", "acquire_s"),
            (f"reserve x {r['threads']} threads", "reserve_threads_s"),
        ):
            rows.append([r["backend"], label, f"{r[key] * 1000:.3f} ms", ratio(r[key], base)])
    print_table(
        f"Shared rate limit: cost per reservation ({args.n} each)",
        ["backend", "operation", "time per op", "ratio to SELECT 1"],
        rows,
    )
    path = write_results("rate_limit", {"results": results})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
