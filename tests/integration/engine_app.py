"""A tiny app on the engine for the engine tests, importable in-process and runnable as a
worker subprocess: `python engine_app.py URL EXECUTOR_ID VERSION MODE [ARGS...]`.

Every side effect is a row in `effects` (committed before the step returns), so tests count
how often each step really ran, across crashes and processes.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from extend_connector import engine
from extend_connector.store.database import begin_write

meta = sa.MetaData()
effects = sa.Table(
    "test_effects",
    meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("key", sa.String(100), nullable=False),
    sa.Column("value", sa.String(200)),
)
running = sa.Table("test_running", meta, sa.Column("key", sa.String(100), primary_key=True))
switches = sa.Table("test_switches", meta, sa.Column("name", sa.String(100), primary_key=True))

_db: sa.Engine | None = None


def use_database(db: sa.Engine) -> None:
    global _db
    _db = db
    meta.create_all(db)


def record(kind: str, key: str, value: str | None = None) -> None:
    assert _db is not None
    with _db.connect() as conn:
        begin_write(conn)
        conn.execute(effects.insert().values(kind=kind, key=key, value=value))
        conn.commit()


def count(db: sa.Engine, kind: str, key: str | None = None) -> int:
    query = sa.select(sa.func.count()).select_from(effects).where(effects.c.kind == kind)
    if key is not None:
        query = query.where(effects.c.key == key)
    with db.connect() as conn:
        return int(conn.execute(query).scalar_one())


def values(db: sa.Engine, kind: str) -> list[str | None]:
    with db.connect() as conn:
        return [
            r[0]
            for r in conn.execute(
                sa.select(effects.c.value).where(effects.c.kind == kind).order_by(effects.c.id)
            )
        ]


def switch_on(db: sa.Engine, name: str) -> None:
    with db.begin() as conn:
        conn.execute(switches.insert().values(name=name))


def switch_off(db: sa.Engine, name: str) -> None:
    with db.begin() as conn:
        conn.execute(switches.delete().where(switches.c.name == name))


def _switched(name: str) -> bool:
    assert _db is not None
    with _db.connect() as conn:
        return (
            conn.execute(sa.select(switches.c.name).where(switches.c.name == name)).first()
            is not None
        )


DEFAULT = engine.queue("test.default", poll_seconds=0.1)
PARTITIONED = engine.queue(
    "test.partitioned", partition_concurrency=1, worker_concurrency=2, poll_seconds=0.1
)
RATED = engine.queue(
    "test.rated", rate_limit=engine.RateLimit(limit=2, period_seconds=120), poll_seconds=0.1
)


# --- two async steps; the second can block forever so a test can SIGKILL it ---------------


@engine.step()
async def first_step(key: str) -> str:
    record("step1", key)
    return key


@engine.step()
async def second_step(key: str) -> str:
    record("step2-start", key)
    if os.environ.get("EC_TEST_BLOCK") == "1":
        await asyncio.sleep(600)
    record("step2-done", key)
    return key


@engine.workflow("test.two_steps")
async def two_steps(key: str) -> str:
    await first_step(key)
    await second_step(key)
    return f"done:{key}"


@engine.workflow("test.woken")
async def woken() -> str:
    """A drainer's shape: no arguments, it finds its work in the database."""
    return "woken"


# --- per-key serialisation -------------------------------------------------------------


@engine.step()
def guarded(key: str, job: str) -> None:
    assert _db is not None
    try:
        with _db.connect() as conn:
            begin_write(conn)
            conn.execute(running.insert().values(key=key))
            conn.commit()
    except sa.exc.IntegrityError:
        record("overlap", key, job)
        return
    time.sleep(0.05)
    with _db.connect() as conn:
        begin_write(conn)
        conn.execute(running.delete().where(running.c.key == key))
        conn.commit()
    record("ran", job, os.environ.get("EC_TEST_EXECUTOR", "in-process"))


@engine.workflow("test.partition_job")
def partition_job(key: str, job: str) -> None:
    guarded(key, job)


# --- failure, resume, replay ------------------------------------------------------------


@engine.step()
def sync_first(key: str) -> None:
    record("sync1", key)


@engine.step()
def flaky(key: str) -> str:
    record("flaky-attempt", key)
    if _switched("fail"):
        raise RuntimeError(f"boom for {key}")
    return "ok"


@engine.workflow("test.may_fail")
def may_fail(key: str) -> str:
    sync_first(key)
    return flaky(key)


# --- debounce, rate limit, schedules ----------------------------------------------------


@engine.workflow("test.collect")
def collect(value: str) -> None:
    record("collected", "debounce", value)


@engine.workflow("test.tick")
def tick(scheduled_at: datetime, context: Any) -> None:
    record("tick", scheduled_at.isoformat())


# --- worker subprocess ------------------------------------------------------------------


def main(argv: list[str]) -> int:
    from extend_connector.settings import EngineSettings, Settings, StoreSettings

    url, executor_id, version, mode = argv[:4]
    role = "all" if url.startswith("sqlite") else "worker"
    settings = Settings(
        store=StoreSettings(database_url=url),
        engine=EngineSettings(role=role, executor_id=executor_id, application_version=version),
    )
    os.environ["EC_TEST_EXECUTOR"] = executor_id
    eng = engine.Engine(settings)
    # Before the launch: a job recovered at launch may run its steps (which record here) at once.
    use_database(eng.db_engine)
    eng.launch()
    try:
        if mode == "run-two-steps":
            # Enqueue (idempotent on the id: a restart finds the job already there) and wait.
            wid = eng.enqueue(two_steps, argv[4], queue="test.default", workflow_id=argv[4])
            print("result", eng.wait(wid, timeout_seconds=140), flush=True)
        elif mode == "serve":
            # Execute until killed or `seconds` pass.
            time.sleep(float(argv[4]))
        else:
            raise SystemExit(f"unknown mode {mode}")
    finally:
        eng.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


# A queue DBOS would poll once an hour: a job on it starts only when the engine's bell rings.
HOURLY = engine.queue("test.hourly", poll_seconds=3600)
HOURLY_PARTITIONED = engine.queue(
    "test.hourly-partitioned", partition_concurrency=1, worker_concurrency=4, poll_seconds=3600
)
