"""Engine throughput: transactional enqueue rate and trivial-workflow throughput, on SQLite
and PostgreSQL, each against a naive baseline measured in the same run.

    .venv/bin/python benchmarks/engine_throughput.py [--jobs 500] [--workflows 300]
        [--postgres postgresql://postgres@127.0.0.1:5432/postgres]
        # --postgres defaults to EXTEND_CONNECTOR_TEST_POSTGRES_URL

Rows (per backend):
  baseline insert      one inbox-like row per committed write transaction (no DBOS)
  enqueue in txn       the same row + `enqueue_in_transaction` of a job, one commit
  2-step workflows     jobs pre-enqueued, then one process (role all) runs them to SUCCESS
Writes benchmarks/results/engine_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from extend_connector import engine
from extend_connector.settings import EngineSettings, Settings, StoreSettings
from extend_connector.store import Database, migrate
from extend_connector.store.models import InboxRow

BENCH = engine.queue("bench", worker_concurrency=16, poll_seconds=0.05)


@engine.step()
def bench_step(n: int) -> int:
    return n + 1


@engine.workflow("bench.two_steps")
def bench_two_steps(n: int) -> int:
    return bench_step(bench_step(n))


def _settings(url: str) -> Settings:
    return Settings(
        store=StoreSettings(database_url=url), engine=EngineSettings(worker_concurrency=16)
    )


def baseline_inserts(db: Database, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        with db.write() as session:
            session.add(InboxRow(delivery_id=f"base-{i}", raw_body='{"Id":"x"}'))
    return n / (time.perf_counter() - start)


def enqueue_in_txn(eng: engine.Engine, db: Database, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        with db.write() as session:
            session.add(InboxRow(delivery_id=f"enq-{i}", raw_body='{"Id":"x"}'))
            eng.enqueue_in_transaction(
                session, bench_two_steps, i, queue="bench", workflow_id=f"enq-{i}"
            )
    return n / (time.perf_counter() - start)


def workflow_throughput(url: str, n: int) -> float:
    eng = engine.Engine(_settings(url)).connect()
    ids = [eng.enqueue(bench_two_steps, i, queue="bench", workflow_id=f"wf-{i}") for i in range(n)]
    eng.shutdown()
    eng = engine.Engine(_settings(url)).launch()
    try:
        start = time.perf_counter()
        remaining = set(ids)
        while remaining:
            done = eng.client.list_workflows(
                workflow_ids=list(remaining), status="SUCCESS", load_input=False, load_output=False
            )
            remaining -= {d.workflow_id for d in done}
            time.sleep(0.02)
        return n / (time.perf_counter() - start)
    finally:
        eng.shutdown()


def run_backend(name: str, url: str, jobs: int, workflows: int) -> dict[str, Any]:
    migrate(url)
    eng = engine.Engine(_settings(url)).connect()
    db = Database(url, engine=eng.db_engine)
    try:
        base = baseline_inserts(db, jobs)
        enq = enqueue_in_txn(eng, db, jobs)
        # Clear the enqueued jobs so the throughput run measures only its own.
        for wid in [f"enq-{i}" for i in range(jobs)]:
            eng.client.cancel_workflow(wid)
    finally:
        eng.shutdown()
    wf = workflow_throughput(url, workflows)
    return {
        "backend": name,
        "baseline_inserts_per_s": round(base, 1),
        "enqueue_in_txn_per_s": round(enq, 1),
        "enqueue_vs_baseline": round(enq / base, 3),
        "two_step_workflows_per_s": round(wf, 1),
        "workflows_vs_baseline": round(wf / base, 3),
        "jobs": jobs,
        "workflows": workflows,
    }


def _pg_database(admin_url: str) -> tuple[str, Any]:
    admin_url = "postgresql+psycopg://" + admin_url.split("://", 1)[1]
    name = f"ec_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False), drop


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--workflows", type=int, default=300)
    parser.add_argument("--postgres", default=os.environ.get("EXTEND_CONNECTOR_TEST_POSTGRES_URL"))
    args = parser.parse_args()

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        results.append(
            run_backend("sqlite", f"sqlite:///{tmp}/bench.db", args.jobs, args.workflows)
        )
    if args.postgres:
        url, drop = _pg_database(args.postgres)
        try:
            results.append(run_backend("postgresql", url, args.jobs, args.workflows))
        finally:
            drop()

    header = (
        f"{'backend':<11} {'baseline ins/s':>14} {'enqueue/s':>10} {'ratio':>6} "
        f"{'2-step wf/s':>12} {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r['backend']:<11} {r['baseline_inserts_per_s']:>14.1f} "
            f"{r['enqueue_in_txn_per_s']:>10.1f} {r['enqueue_vs_baseline']:>6.2f} "
            f"{r['two_step_workflows_per_s']:>12.1f} {r['workflows_vs_baseline']:>6.2f}"
        )
    out = Path(__file__).parent / "results" / "engine_throughput.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "command": " ".join([Path(sys.executable).name, *sys.argv]),
                "python": platform.python_version(),
                "machine": platform.machine(),
                "cpus": os.cpu_count(),
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
