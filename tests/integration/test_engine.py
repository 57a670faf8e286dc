"""The engine's API on a real database (SQLite, and PostgreSQL when configured):
transactional enqueue, idempotent ids, debounce, schedules, failures, rate limits."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import engine_app as app
import pytest
import sqlalchemy as sa

from extend_connector import engine
from extend_connector.settings import Settings
from extend_connector.store.database import Database
from extend_connector.store.migrate import migrate
from extend_connector.store.models import InboxRow

pytestmark = pytest.mark.timeout(120)


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


@pytest.fixture
def connected(migrated_url: str, make_settings: Callable[..., Settings]) -> Iterator[engine.Engine]:
    """An engine that enqueues but executes nothing (like the web role)."""
    eng = engine.Engine(make_settings(migrated_url)).connect()
    app.use_database(eng.db_engine)
    try:
        yield eng
    finally:
        eng.shutdown()


@pytest.fixture
def running(migrated_url: str, make_settings: Callable[..., Settings]) -> Iterator[engine.Engine]:
    """A launched engine executing queues in this process (role `all`)."""
    eng = engine.Engine(make_settings(migrated_url), scheduler_poll_seconds=0.2).launch()
    app.use_database(eng.db_engine)
    try:
        yield eng
    finally:
        eng.shutdown()


def _inbox_count(db: Database, delivery_id: str) -> int:
    with db.read() as session:
        return session.query(InboxRow).filter_by(delivery_id=delivery_id).count()


def test_inbox_row_and_job_commit_together_or_not_at_all(connected: engine.Engine) -> None:
    db = Database(connected.url, engine=connected.db_engine)

    class Forced(Exception):
        pass

    with pytest.raises(Forced), db.write() as session:
        session.add(InboxRow(delivery_id="d-1", raw_body="{}"))
        session.flush()
        connected.enqueue_in_transaction(
            session, app.two_steps, "k1", queue="test.default", workflow_id="job-d-1"
        )
        raise Forced
    assert _inbox_count(db, "d-1") == 0
    assert connected.get_status("job-d-1") is None

    with db.write() as session:
        session.add(InboxRow(delivery_id="d-1", raw_body="{}"))
        connected.enqueue_in_transaction(
            session, app.two_steps, "k1", queue="test.default", workflow_id="job-d-1"
        )
    assert _inbox_count(db, "d-1") == 1
    info = connected.get_status("job-d-1")
    assert info is not None and info.status == "ENQUEUED" and info.args == ["k1"]
    assert info.application_version == "1"


def test_enqueue_is_idempotent_on_workflow_id(connected: engine.Engine) -> None:
    db = Database(connected.url, engine=connected.db_engine)
    first = connected.enqueue(app.two_steps, "a", queue="test.default", workflow_id="same")
    second = connected.enqueue(app.two_steps, "b", queue="test.default", workflow_id="same")
    with db.write() as session:
        third = connected.enqueue_in_transaction(
            session, app.two_steps, "c", queue="test.default", workflow_id="same"
        )
    assert first == second == third == "same"
    jobs = connected.list_workflows(name="test.two_steps")
    assert [(j.workflow_id, j.args) for j in jobs] == [("same", ["a"])]


def test_a_run_waiting_to_start_is_seen_until_it_leaves_the_queue(
    connected: engine.Engine,
) -> None:
    db = Database(connected.url, engine=connected.db_engine)
    assert not connected.has_waiting_run(app.woken, queue="test.partitioned", partition_key="p")
    with db.write() as session:
        connected.enqueue_in_transaction(
            session, app.woken, queue="test.partitioned", partition_key="p", workflow_id="w-0"
        )
    assert connected.has_waiting_run(app.woken, queue="test.partitioned", partition_key="p")
    assert not connected.has_waiting_run(app.woken, queue="test.partitioned", partition_key="q")
    assert not connected.has_waiting_run(app.two_steps, queue="test.partitioned")
    connected.cancel("w-0")  # left the queue (started, or here cancelled)
    assert not connected.has_waiting_run(app.woken, queue="test.partitioned", partition_key="p")


def test_enqueue_checks_queue_and_partition(connected: engine.Engine) -> None:
    with pytest.raises(engine.EngineStateError, match="not declared"):
        connected.enqueue(app.two_steps, "a", queue="nope")
    with pytest.raises(engine.EngineStateError, match="partitioned"):
        connected.enqueue(app.partition_job, "k", "j", queue="test.partitioned")
    with pytest.raises(engine.EngineStateError, match="not partitioned"):
        connected.enqueue(app.two_steps, "a", queue="test.default", partition_key="x")
    with pytest.raises(engine.EngineStateError, match="launch"):
        connected.start(app.two_steps, "a")


def test_workflow_runs_steps_once_and_returns_json(running: engine.Engine) -> None:
    wid = running.enqueue(app.two_steps, "k", queue="test.default")
    assert running.wait(wid) == "done:k"
    assert app.count(running.db_engine, "step1", "k") == 1
    assert app.count(running.db_engine, "step2-done", "k") == 1
    assert [s.name for s in running.list_steps(wid)][-2:] == [
        "first_step",
        "second_step",
    ] or len(running.list_steps(wid)) == 2


def test_failed_job_is_listed_resumed_and_replayed(running: engine.Engine) -> None:
    db = running.db_engine
    app.switch_on(db, "fail")
    wid = running.enqueue(app.may_fail, "f1", queue="test.default", workflow_id="fail-1")
    with pytest.raises(engine.WorkflowFailedError):
        running.wait(wid)
    failed = running.list_failed()
    assert [f.workflow_id for f in failed] == ["fail-1"]
    assert failed[0].name == "test.may_fail" and failed[0].args == ["f1"]
    assert failed[0].error is not None and "boom for f1" in failed[0].error
    assert failed[0].error_type == "RuntimeError"

    app.switch_off(db, "fail")
    running.resume(wid)
    assert running.wait(wid) == "ok"
    assert running.list_failed() == []
    # Resume continued after the completed first step: it ran once in total.
    assert app.count(db, "sync1", "f1") == 1
    assert app.count(db, "flaky-attempt", "f1") == 2

    fork = running.replay(wid)  # from step 1: everything again, as a new job
    assert fork != wid and running.wait(fork) == "ok"
    assert app.count(db, "sync1", "f1") == 2
    fork2 = running.replay(wid, from_step=2)  # reuse step 1's checkpoint
    assert running.wait(fork2) == "ok"
    assert app.count(db, "sync1", "f1") == 2
    assert app.count(db, "flaky-attempt", "f1") == 4
    assert running.get_status(fork2).forked_from == wid  # type: ignore[union-attr]

    with pytest.raises(engine.UnknownWorkflowError):
        running.resume("no-such-job")


def test_debounce_coalesces_a_burst_into_one_run_with_the_last_arguments(
    running: engine.Engine,
) -> None:
    ids = {
        running.debounce("balances", app.collect, f"v{i}", queue="test.default", period_seconds=1.0)
        for i in range(10)
    }
    assert len(ids) == 1
    running.wait(ids.pop())
    time.sleep(0.5)
    assert app.values(running.db_engine, "collected") == ["v9"]
    # A later burst is a new run.
    later = running.debounce("balances", app.collect, "w", queue="test.default", period_seconds=0.2)
    running.wait(later)
    assert app.values(running.db_engine, "collected") == ["v9", "w"]


def test_a_debounced_job_is_moved_onto_its_queue_when_due_not_at_dbos_next_sweep(
    migrated_url: str, make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """DBOS moves due delayed jobs onto their queue from a background sweep once a second, so a
    0.3 s debounce window meant 0.3-1.3 s. Here that sweep runs once an hour: only the engine's
    own wake-up (engine/_due.py) can start the job."""
    import dbos._workflow_commands as dbos_commands

    monkeypatch.setattr(dbos_commands, "_BACKGROUND_JOBS_INTERVAL_SEC", 3600.0)
    eng = engine.Engine(make_settings(migrated_url), scheduler_poll_seconds=0.2).launch()
    app.use_database(eng.db_engine)
    try:
        time.sleep(0.5)  # the sweep's first round (at launch) is behind us
        wid = eng.debounce("due", app.collect, "d", queue="test.default", period_seconds=0.2)
        eng.wait(wid, timeout_seconds=30)
        assert app.values(eng.db_engine, "collected") == ["d"]
    finally:
        eng.shutdown()


# Queues polled once an hour (engine_app.HOURLY*): without the engine's bells (engine/_bells.py)
# none of these jobs would start within the test's timeout.


def test_a_job_this_process_enqueues_starts_without_waiting_for_its_queue_poll(
    running: engine.Engine,
) -> None:
    wid = running.enqueue(app.collect, "now", queue="test.hourly")
    running.wait(wid, timeout_seconds=30)
    assert app.values(running.db_engine, "collected") == ["now"]


def test_a_job_enqueued_in_a_transaction_starts_when_it_commits_and_never_if_it_rolls_back(
    running: engine.Engine,
) -> None:
    db = Database(running.url, engine=running.db_engine)
    with pytest.raises(RuntimeError), db.write() as session:
        running.enqueue_in_transaction(
            session, app.collect, "rolled-back", queue="test.hourly", workflow_id="tx-rolled"
        )
        raise RuntimeError("rolled back")
    with db.write() as session:
        running.enqueue_in_transaction(
            session, app.collect, "committed", queue="test.hourly", workflow_id="tx-committed"
        )
    running.wait("tx-committed", timeout_seconds=30)
    assert running.get_status("tx-rolled") is None
    assert app.values(running.db_engine, "collected") == ["committed"]


def test_a_job_waiting_behind_its_partition_key_starts_when_the_one_ahead_ends(
    running: engine.Engine,
) -> None:
    ids = [
        running.enqueue(
            app.partition_job, "k", f"j{i}", queue="test.hourly-partitioned", partition_key="k"
        )
        for i in range(3)
    ]
    for wid in ids:
        running.wait(wid, timeout_seconds=30)
    assert sorted(app.values(running.db_engine, "ran")) == ["in-process"] * 3
    assert app.count(running.db_engine, "overlap") == 0


def test_debounced_and_delayed_jobs_start_when_due_on_a_queue_polled_hourly(
    running: engine.Engine,
) -> None:
    debounced = running.debounce(
        "hourly", app.collect, "d", queue="test.hourly", period_seconds=0.2
    )
    delayed = running.enqueue(app.collect, "l", queue="test.hourly", delay_seconds=0.3)
    running.wait(debounced, timeout_seconds=30)
    running.wait(delayed, timeout_seconds=30)
    assert sorted(app.values(running.db_engine, "collected")) == ["d", "l"]


def test_a_due_wake_rings_only_the_queues_whose_jobs_it_made_due(running: engine.Engine) -> None:
    """Each ring is a DBOS poll of that queue (several statements; network round trips on
    PostgreSQL). A wake for one queue's debounced job rang every queue that had ever had one:
    under a steady trickle of balance flushes that was a poll of each such queue per wake."""
    hourly = running._bells._bells["test.hourly"]
    running.debounce("later", app.collect, "later", queue="test.hourly", period_seconds=3600)
    before = hourly.rings
    for i in range(3):
        wid = running.debounce(
            f"now-{i}", app.collect, f"n{i}", queue="test.default", period_seconds=0.1
        )
        running.wait(wid, timeout_seconds=30)
    assert running._due_waker is not None and running._due_waker.moves >= 3
    assert hourly.rings == before
    assert sorted(app.values(running.db_engine, "collected")) == ["n0", "n1", "n2"]


def test_a_job_held_by_a_steady_stream_starts_at_its_deadline_on_a_queue_polled_hourly(
    running: engine.Engine,
) -> None:
    """A steady stream pushes a debounced job back until its deadline (first call + longest
    delay). No call's wake aims at that instant: the job was left to DBOS's own sweep, which
    moves it without ringing, so it waited for its queue's next poll."""
    wid = running.debounce(
        "stream",
        app.collect,
        "s",
        queue="test.hourly",
        period_seconds=3600,
        max_delay_seconds=0.3,
    )
    running.wait(wid, timeout_seconds=30)
    assert app.values(running.db_engine, "collected") == ["s"]


def test_a_job_dbos_moved_itself_at_its_deadline_is_still_rung(
    running: engine.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DBOS's once-a-second sweep may move the job between its deadline and the engine's wake;
    that wake then moves nothing, and must ring the queue all the same. Here the test is the
    sweep, and the wake comes 0.3 s after the deadline so the test surely moves the job first."""
    from extend_connector.engine import _due
    from extend_connector.engine._dbos_private import move_due_delayed

    monkeypatch.setattr(_due, "MARGIN_SECONDS", 0.3)
    wid = running.debounce(
        "swept",
        app.collect,
        "w",
        queue="test.hourly",
        period_seconds=3600,
        max_delay_seconds=0.2,
    )
    deadline = time.monotonic() + 10
    while "test.hourly" not in move_due_delayed(running.client):  # DBOS's sweep, not rung
        assert time.monotonic() < deadline, "the job never fell due"
        time.sleep(0.005)
    running.wait(wid, timeout_seconds=30)
    assert app.values(running.db_engine, "collected") == ["w"]


def test_a_wake_that_moved_no_job_of_a_queue_does_not_ring_it(running: engine.Engine) -> None:
    """A later debounce call pushes the job back, so the earlier call's wake finds it not yet
    due. Ringing its queue then was a poll for nothing (balance triggers debounce every 50 ms
    under load, each pushing the flush back)."""
    hourly = running._bells._bells["test.hourly"]
    before = hourly.rings
    running.debounce("pushed", app.collect, "a", queue="test.hourly", period_seconds=0.1)
    running.debounce("pushed", app.collect, "b", queue="test.hourly", period_seconds=3600)
    waker = running._due_waker
    assert waker is not None
    deadline = time.monotonic() + 10
    while waker.moves < 1 and time.monotonic() < deadline:  # the first call's wake
        time.sleep(0.02)
    assert waker.moves >= 1
    assert hourly.rings == before
    assert app.values(running.db_engine, "collected") == []


def test_a_queue_poller_reads_its_queue_row_and_the_version_once_per_lookup_window(
    running: engine.Engine,
) -> None:
    """DBOS's poll reloads the queue's row and reads the application's latest version on every
    poll (about once a second per queue, idle or not): two of an idle poll's four statements.
    The engine keeps both for `POLL_LOOKUP_SECONDS` (5 s) in its pollers."""
    import collections
    import re

    from extend_connector.engine import _dbos_private

    assert _dbos_private.POLL_LOOKUP_SECONDS >= 4.0
    lookups: collections.Counter[tuple[str, str]] = collections.Counter()
    pattern = re.compile(r"FROM (\w+\.)?(queues|application_versions)\b")

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        thread = threading.current_thread().name
        found = pattern.search(statement)
        if thread.startswith("queue-worker-") and found:
            lookups[(thread, found.group(2))] += 1

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", seen)
    try:
        time.sleep(0.5)  # the pollers' first round
        lookups.clear()
        time.sleep(4.0)  # about four polls of each queue
        counted = dict(lookups)
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", seen)
    assert counted, "no poll in 4 s"
    # One read per window, two if the window expired in those 4 s (DBOS: one per poll).
    assert max(counted.values()) <= 2, counted
    # Jobs still start (a lookup served from the cache is the one read a moment ago).
    wid = running.enqueue(app.collect, "still", queue="test.default")
    running.wait(wid, timeout_seconds=30)


def test_a_queue_poller_that_fails_outside_dbos_guards_comes_back(
    running: engine.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DBOS restarts its own queue threads when they die; the engine restarts the ones it runs
    (a dead poller would leave its queue's jobs waiting for ever)."""
    from dbos import _dbos as dbos_module

    active = dbos_module._dbos_global_instance._active_workflows_set  # type: ignore[union-attr]
    count = active.count_for_queue
    failed: list[str] = []

    def fails_once(queue_name: str) -> int:
        if queue_name == "test.hourly" and not failed:
            failed.append(queue_name)
            raise RuntimeError("a bug in the poll loop")
        return count(queue_name)

    monkeypatch.setattr(active, "count_for_queue", fails_once)
    first = running.enqueue(app.collect, "first", queue="test.hourly")
    wait_until(lambda: bool(failed))
    second = running.enqueue(app.collect, "second", queue="test.hourly")
    running.wait(first, timeout_seconds=30)
    running.wait(second, timeout_seconds=30)
    assert sorted(app.values(running.db_engine, "collected")) == ["first", "second"]


def test_the_queue_pollers_stop_before_dbos_stops_the_loop_they_start_jobs_on(
    migrated_url: str, make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """CI printed `coroutine 'execute_dequeued_workflow.<locals>.start_workflow_task' was never
    awaited` at a test's engine stop: DBOS's shutdown stops the event loop right after telling
    the pollers to stop and joins them only afterwards, so a poller between its claim and the
    job's start found no loop; the claimed job stayed PENDING until this executor's next launch.
    The engine ends its pollers (each finishes the poll it is in) before DBOS's shutdown."""
    from dbos import DBOS

    eng = engine.Engine(make_settings(migrated_url), scheduler_poll_seconds=0.2).launch()
    app.use_database(eng.db_engine)
    alive_at_destroy: list[str] = []
    destroy = DBOS.destroy

    def recording_destroy(*args: Any, **kwargs: Any) -> None:
        alive_at_destroy.extend(
            t.name for t in threading.enumerate() if t.name.startswith("queue-worker-test.")
        )
        destroy(*args, **kwargs)

    monkeypatch.setattr(DBOS, "destroy", recording_destroy)
    try:
        eng.enqueue(app.collect, "before-stop", queue="test.hourly")
    finally:
        eng.shutdown()
    assert alive_at_destroy == []


def test_rate_limited_queue_starts_no_more_than_its_limit(running: engine.Engine) -> None:
    ids = [running.enqueue(app.collect, f"r{i}", queue="test.rated") for i in range(6)]
    wait_until(lambda: app.count(running.db_engine, "collected") >= 2)
    time.sleep(1.5)  # several poll rounds: nothing else may start within the 120 s window
    statuses = sorted(running.get_status(i).status for i in ids)  # type: ignore[union-attr]
    assert statuses == ["ENQUEUED"] * 4 + ["SUCCESS"] * 2
    assert app.count(running.db_engine, "collected") == 2
    # (The engine's own schedules, e.g. the watchdog's, may have a job on their queues too.)
    assert running.queue_depth().get("test.rated") == 4


def test_cancel_keeps_a_job_from_running(connected: engine.Engine) -> None:
    wid = connected.enqueue(app.collect, "c", queue="test.default")
    connected.cancel(wid)
    assert connected.get_status(wid).status == "CANCELLED"  # type: ignore[union-attr]


@pytest.fixture
def ticking() -> Iterator[None]:
    engine.schedule("test.every-second", app.tick, every=timedelta(seconds=1))
    try:
        yield
    finally:
        engine._declare.forget_schedule("test.every-second")


def test_schedule_fires_once_per_tick(
    ticking: None, migrated_url: str, make_settings: Callable[..., Settings]
) -> None:
    # Two engines on one database would be two processes in production; one in-process
    # engine plus the uniqueness of each tick's workflow id is what keeps ticks single.
    eng = engine.Engine(make_settings(migrated_url), scheduler_poll_seconds=0.2).launch()
    try:
        app.use_database(eng.db_engine)
        wait_until(lambda: app.count(eng.db_engine, "tick") >= 3)
        with eng.db_engine.connect() as conn:
            keys = [
                r[0]
                for r in conn.execute(
                    sa.select(app.effects.c.key).where(app.effects.c.kind == "tick")
                )
            ]
        assert len(keys) == len(set(keys))
        runs = eng.list_workflows(name="test.tick")
        assert all(r.workflow_id.startswith("sched-test.every-second-") for r in runs)
    finally:
        eng.shutdown()
    # The schedule is gone from the database once no longer declared.
    engine._declare.forget_schedule("test.every-second")
    eng2 = engine.Engine(make_settings(migrated_url)).launch()
    try:
        from dbos import DBOS

        assert "test.every-second" not in {s["schedule_name"] for s in DBOS.list_schedules()}
    finally:
        eng2.shutdown()


def test_interval_to_cron() -> None:
    assert engine.interval_to_cron(timedelta(seconds=5)) == "*/5 * * * * *"
    assert engine.interval_to_cron(timedelta(minutes=15)) == "0 */15 * * * *"
    assert engine.interval_to_cron(timedelta(hours=6)) == "0 0 */6 * * *"
    with pytest.raises(engine.DeclarationError, match="divide"):
        engine.interval_to_cron(timedelta(minutes=7))


def test_one_launched_engine_per_process(
    running: engine.Engine, make_settings: Callable[..., Settings]
) -> None:
    other = engine.Engine(make_settings(running.url))
    with pytest.raises(engine.EngineStateError, match="already running"):
        other.launch()
    other.shutdown()


def test_migrations_then_engine_share_one_database(
    migrated_url: str, make_settings: Callable[..., Settings]
) -> None:
    # Running the app migrations again after DBOS created its tables changes nothing.
    eng = engine.Engine(make_settings(migrated_url)).connect()
    try:
        assert migrate(migrated_url, engine=eng.db_engine) == migrate(migrated_url)
    finally:
        eng.shutdown()


def test_on_launch_runs_once_per_launch_in_roles_that_execute(
    migrated_url: str, make_settings: Callable[..., Settings]
) -> None:
    """Start-up work hooks onto the launch instead of polling until the engine executes."""
    seen: list[tuple[str, bool]] = []

    def record(eng: engine.Engine) -> None:
        seen.append((eng.role, eng.executes))
        # Queues run already: the callback can start work.
        eng.enqueue(app.two_steps, "boot", queue="test.default", workflow_id="on-launch-job")

    def broken(_: engine.Engine) -> None:
        raise RuntimeError("a start-up shortcut failed")

    engine.on_launch("test.broken", broken)
    engine.on_launch("test.record", record)
    # web and worker processes need PostgreSQL; on SQLite everything runs in role `all`.
    roles = ["web", "worker", "all"] if migrated_url.startswith("postgresql") else ["all"]
    try:
        engine.Engine(make_settings(migrated_url)).connect().shutdown()
        assert seen == []  # connecting (the CLI, the sync command) executes nothing
        for role in roles:
            eng = engine.Engine(
                make_settings(migrated_url, role=role)
            ).launch()  # a failing callback is logged
            try:
                app.use_database(eng.db_engine)
                if role != "web":
                    assert seen[-1] == (role, True)
                    assert eng.wait("on-launch-job", timeout_seconds=60) == "done:boot"
            finally:
                eng.shutdown()
        assert seen == [(role, True) for role in roles if role != "web"]
    finally:
        engine.forget_on_launch("test.record")
        engine.forget_on_launch("test.broken")


def test_prune_deletes_only_jobs_that_succeeded_before_the_cutoff(running: engine.Engine) -> None:
    from datetime import UTC, datetime

    db = running.db_engine
    done = [running.enqueue(app.two_steps, f"p{i}", queue="test.default") for i in range(3)]
    for wid in done:
        assert running.wait(wid) == f"done:p{done.index(wid)}"
    app.switch_on(db, "fail")
    failed = running.enqueue(app.may_fail, "pf", queue="test.default", workflow_id="prune-fail")
    with pytest.raises(engine.WorkflowFailedError):
        running.wait(failed)
    app.switch_off(db, "fail")

    # Nothing finished before an old cutoff.
    assert running.prune_succeeded(completed_before=datetime(2000, 1, 1, tzinfo=UTC)) == 0
    # A cutoff after all of them, two at a time: the successes go with their steps, the
    # failure stays (it is evidence, and `failures retry` resumes it).
    later = datetime.now(UTC) + timedelta(seconds=1)
    assert running.prune_succeeded(completed_before=later, limit=2) == 2
    assert running.prune_succeeded(completed_before=later, limit=2) == 1
    assert running.prune_succeeded(completed_before=later) == 0
    assert all(running.get_status(wid) is None for wid in done)
    assert running.list_steps(done[0]) == []
    info = running.get_status(failed)
    assert info is not None and info.failed
    with pytest.raises(ValueError, match="aware"):
        running.prune_succeeded(completed_before=datetime(2030, 1, 1))
