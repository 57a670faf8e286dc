"""Steps wait out transient database errors (SQLite, and PostgreSQL when configured).

The faults are real SQLAlchemy errors raised by the database layer: an event on the engine
makes the first statements a step runs against `test_effects` fail as a locked SQLite file or a
refused PostgreSQL connection does; the step then writes its row for real. Before the fix the
first such error ended the workflow in ERROR for good.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import engine_app as app
import pytest
import sqlalchemy as sa

from extend_connector import engine
from extend_connector.settings import Settings
from support.dbfaults import Faults, duplicate, locked, refused, shutting_down

pytestmark = pytest.mark.timeout(120)

QUEUE = engine.queue("test.transient", poll_seconds=0.1)


def _in_step(statement: str) -> bool:
    """Statements touching `test_effects` run by a job."""
    return "test_effects" in statement and engine.workflow_id() is not None


FAULTS = Faults()


@engine.step()
def _sync_write(key: str) -> str:
    app.record("sync", key)
    return "sync"


@engine.step()
async def _async_write(key: str) -> str:
    app.record("async", key)
    return "async"


@engine.step()
def _offloaded_write(key: str) -> str:
    app.record("offloaded", key)
    return "offloaded"


@engine.workflow("test.transient_sync")
def sync_job(key: str) -> str:
    return str(_sync_write(key))


@engine.workflow("test.transient_async")
async def async_job(key: str) -> str:
    first = await _async_write(key)
    second = await engine.offload(_offloaded_write, key)
    return f"{first}+{second}"


@pytest.fixture
def running(migrated_url: str, make_settings: Callable[..., Settings]) -> Iterator[engine.Engine]:
    eng = engine.Engine(make_settings(migrated_url), scheduler_poll_seconds=0.2).launch()
    app.use_database(eng.db_engine)
    sa.event.listen(eng.db_engine, "before_cursor_execute", FAULTS.before)
    fast = engine.TransientRetry(
        first_wait_seconds=0.05, max_wait_seconds=0.2, give_up_after_seconds=30
    )
    engine.configure_transient_retry(fast)
    try:
        yield eng
    finally:
        FAULTS.arm(0, locked, _in_step)
        sa.event.remove(eng.db_engine, "before_cursor_execute", FAULTS.before)
        eng.shutdown()


@pytest.mark.parametrize(
    "error", [locked, refused, shutting_down], ids=["sqlite-locked", "pg-refused", "pg-shutdown"]
)
def test_sync_step_waits_out_a_transient_database_error(
    running: engine.Engine, error: Callable[[str], Exception]
) -> None:
    FAULTS.arm(2, error, _in_step)
    job = running.enqueue(sync_job, "s1", queue=QUEUE.name)
    assert running.wait(job, timeout_seconds=60) == "sync"
    assert FAULTS.raised == 2
    assert app.count(running.db_engine, "sync", "s1") == 1


def test_async_step_and_offloaded_step_wait_out_transient_errors(running: engine.Engine) -> None:
    FAULTS.arm(2, refused, _in_step)  # both on the async step
    job = running.enqueue(async_job, "a1", queue=QUEUE.name)
    assert running.wait(job, timeout_seconds=60) == "async+offloaded"
    assert FAULTS.raised == 2
    FAULTS.arm(3, locked, _in_step)
    job = running.enqueue(async_job, "a2", queue=QUEUE.name)
    assert running.wait(job, timeout_seconds=60) == "async+offloaded"
    assert FAULTS.raised == 3
    assert [
        app.count(running.db_engine, k, key) for k in ("async", "offloaded") for key in ("a1", "a2")
    ] == [1] * 4


def test_a_constraint_error_is_not_retried(running: engine.Engine) -> None:
    FAULTS.arm(5, duplicate, _in_step)
    job = running.enqueue(sync_job, "d1", queue=QUEUE.name)
    with pytest.raises(engine.WorkflowFailedError):
        running.wait(job, timeout_seconds=60)
    assert FAULTS.raised == 1
    assert app.count(running.db_engine, "sync", "d1") == 0


def test_a_step_gives_up_after_the_configured_time(running: engine.Engine) -> None:
    engine.configure_transient_retry(
        # 1 s, not less: on a loaded CI machine the first attempt alone took 0.3 s once, and
        # the step gave up without a second one.
        engine.TransientRetry(
            first_wait_seconds=0.05, max_wait_seconds=0.05, give_up_after_seconds=1.0
        )
    )
    FAULTS.arm(10_000, locked, _in_step)
    job = running.enqueue(sync_job, "g1", queue=QUEUE.name)
    with pytest.raises(engine.WorkflowFailedError):
        running.wait(job, timeout_seconds=60)
    assert 1 < FAULTS.raised < 10_000
