"""Durability with real processes: SIGKILL mid-step, two workers on one partitioned queue,
and recovery under a pinned application version. Side effects are counted in a table."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import engine_app as app
import pytest
import sqlalchemy as sa

from extend_connector import engine
from extend_connector.settings import Settings
from extend_connector.store.database import create_db_engine
from extend_connector.store.migrate import migrate

pytestmark = pytest.mark.timeout(300)

APP = str(Path(__file__).with_name("engine_app.py"))


class Worker:
    """`engine_app.py` as a child process with its output in a log file."""

    def __init__(self, tmp_path: Path, name: str, *argv: str, block: bool = False) -> None:
        self.log = tmp_path / f"{name}.log"
        env = {**os.environ, "EC_TEST_BLOCK": "1" if block else "0"}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, APP, *argv], env=env, stdout=out, stderr=subprocess.STDOUT
            )

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def wait_ok(self, timeout: float = 150) -> str:
        code = self.proc.wait(timeout)
        text = self.log.read_text(errors="replace")
        assert code == 0, f"worker failed ({code}):\n{text[-4000:]}"
        return text


def wait_until(
    predicate: Callable[[], bool], timeout: float = 60.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout}s")
        time.sleep(0.05)


@pytest.fixture
def probe(migrated_url: str) -> Iterator[sa.Engine]:
    """The test database, migrated, with the effects tables, and an engine to read it."""
    db = create_db_engine(migrated_url, pool_size=2)
    app.meta.create_all(db)
    try:
        yield db
    finally:
        db.dispose()


def test_sigkill_mid_step_finishes_after_restart_without_rerunning_done_steps(
    migrated_url: str, probe: sa.Engine, tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    first = Worker(
        tmp_path, "first", migrated_url, "exec-a", "7", "run-two-steps", "job-kill", block=True
    )
    try:
        wait_until(
            lambda: app.count(probe, "step2-start", "job-kill") == 1, what="second step started"
        )
    finally:
        first.kill()
    assert app.count(probe, "step1", "job-kill") == 1
    assert app.count(probe, "step2-done", "job-kill") == 0

    # A restart with a different pinned version must leave the job alone...
    other = Worker(tmp_path, "other-version", migrated_url, "exec-a", "8", "serve", "3")
    other.wait_ok()
    assert app.count(probe, "step2-start", "job-kill") == 1
    # ...and the restart with the same executor id and version finishes it.
    second = Worker(tmp_path, "second", migrated_url, "exec-a", "7", "run-two-steps", "job-kill")
    out = second.wait_ok()
    assert "result done:job-kill" in out
    assert app.count(probe, "step1", "job-kill") == 1  # completed before the kill: not re-run
    assert app.count(probe, "step2-start", "job-kill") == 2  # killed mid-step: run again
    assert app.count(probe, "step2-done", "job-kill") == 1

    eng = engine.Engine(make_settings(migrated_url)).connect()
    try:
        info = eng.get_status("job-kill")
        assert info is not None and info.status == "SUCCESS" and info.application_version == "7"
    finally:
        eng.shutdown()


def test_job_enqueued_under_a_version_runs_on_a_worker_of_that_version(
    migrated_url: str, probe: sa.Engine, tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    # Enqueued by a process that executes nothing (the web role's path), version 5.
    eng = engine.Engine(make_settings(migrated_url, application_version="5")).connect()
    try:
        wid = eng.enqueue(app.two_steps, "job-v5", queue="test.default", workflow_id="job-v5")
        Worker(tmp_path, "v6", migrated_url, "exec-b", "6", "serve", "3").wait_ok()
        assert eng.get_status(wid).status == "ENQUEUED"  # type: ignore[union-attr]
        Worker(tmp_path, "v5", migrated_url, "exec-b", "5", "run-two-steps", "job-v5").wait_ok()
        assert eng.get_status(wid).status == "SUCCESS"  # type: ignore[union-attr]
        assert app.count(probe, "step1", "job-v5") == 1
    finally:
        eng.shutdown()


@pytest.fixture
def pg_probe(pg_url: str) -> Iterator[sa.Engine]:
    migrate(pg_url)
    db = create_db_engine(pg_url, pool_size=2)
    app.meta.create_all(db)
    try:
        yield db
    finally:
        db.dispose()


def test_two_workers_share_a_partitioned_queue_without_overlap_or_duplicates(
    pg_url: str, pg_probe: sa.Engine, tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    keys = [f"sku:{n}" for n in range(8)]
    jobs = [(keys[i % len(keys)], f"job-{i}") for i in range(48)]
    eng = engine.Engine(make_settings(pg_url, role="web")).connect()
    workers = [Worker(tmp_path, f"w{n}", pg_url, f"w{n}", "1", "serve", "120") for n in (1, 2)]
    try:
        for key, job in jobs:
            eng.enqueue(
                app.partition_job,
                key,
                job,
                queue="test.partitioned",
                partition_key=key,
                workflow_id=job,
            )
        # Enqueue again: ids are idempotent, nothing may run twice.
        for key, job in jobs[:10]:
            eng.enqueue(
                app.partition_job,
                key,
                job,
                queue="test.partitioned",
                partition_key=key,
                workflow_id=job,
            )
        # A job that met another of its key records "overlap" instead of "ran".
        wait_until(
            lambda: app.count(pg_probe, "ran") + app.count(pg_probe, "overlap") >= len(jobs),
            timeout=120,
            what="all jobs ran",
        )
        time.sleep(1.0)  # anything running twice would show up now
        statuses = {eng.get_status(job).status for _, job in jobs}  # type: ignore[union-attr]
    finally:
        for w in workers:
            w.stop()
        eng.shutdown()
    assert statuses == {"SUCCESS"}
    assert app.count(pg_probe, "overlap") == 0, "two jobs of one partition key ran at the same time"
    with pg_probe.connect() as conn:
        ran = conn.execute(
            sa.select(app.effects.c.key, app.effects.c.value).where(app.effects.c.kind == "ran")
        ).all()
    assert sorted(r[0] for r in ran) == sorted(job for _, job in jobs)  # each exactly once
    assert {r[1] for r in ran} == {"w1", "w2"}  # both processes did work
