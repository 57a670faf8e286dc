"""No job stays marked running by a process that does not run it (flows/executors.py).

One connector process (role `all`) against the in-process simulator, on SQLite and PostgreSQL,
with a fast heartbeat (0.2 s) and a process taken for gone after 1 s. The fault is injected
where DBOS starts a job it has just claimed (`dbos._queue.execute_dequeued_workflow`):

- the start fails once (the database went away between the claim and the start): the job stays
  PENDING under this live process, which before the heartbeat never looked at it again;
- the claim turns out to be another worker's that died right after it (the row names a gone
  executor): nothing but a launch of that executor id would ever run it.

Either way the order must reach Extend exactly once, and the put-back is counted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import pytest
import sqlalchemy as sa
from dbos import _queue as dbos_queue

from extend_connector import metrics
from extend_connector.flows import executors, failures
from extend_connector.service import Connector
from extend_connector.settings import Settings
from extend_connector.store.database import Database
from extend_connector.store.models import ExecutorRow, OrderRow
from support.order_stack import order_stack
from support.postgres import throwaway_database
from support.processes import wait_for

pytestmark = pytest.mark.timeout(180)

TOKEN = {"authorization": "Bearer shop-token"}
FAST = {"heartbeat_seconds": 0.2, "executor_dead_seconds": 1.0, "watchdog_minutes": 60}


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    if request.param == "sqlite":
        yield None
        return
    with throwaway_database("ec_liveness") as url:
        yield url


class Dispatch:
    """Wraps DBOS's start of a claimed job: `plan[workflow_id]` decides what the first start of
    that job does instead ("fail", or "gone": the row is handed to a dead executor first)."""

    def __init__(self, connector: Connector, plan: dict[str, str]) -> None:
        self.connector = connector
        self.plan = dict(plan)
        self.done: list[str] = []
        self.original = dbos_queue.execute_dequeued_workflow

    def __call__(self, dbos: Any, status: Any, owner_xid: str) -> Any:
        workflow_id = status["workflow_uuid"]
        what = self.plan.pop(workflow_id, None)
        if what == "gone":
            table = "workflow_status" if self.connector.db.is_sqlite else "dbos.workflow_status"
            with self.connector.db.engine.begin() as conn:
                conn.execute(
                    sa.text(
                        f"UPDATE {table} SET executor_id = 'gone-worker' WHERE workflow_uuid = :w"
                    ),
                    {"w": workflow_id},
                )
        if what is not None:
            self.done.append(workflow_id)
            raise RuntimeError(f"injected: the start of {workflow_id} never happened ({what})")
        return self.original(dbos, status, owner_xid)


def _counter(why: str) -> float:
    return metrics.JOBS_PUT_BACK.labels(why)._value.get()


@pytest.mark.parametrize("fault", ["fail", "gone"])
def test_a_claimed_job_that_never_started_still_sends_its_order(
    tmp_path: Path,
    database_url: str | None,
    monkeypatch: pytest.MonkeyPatch,
    fault: str,
) -> None:
    why = "not_started" if fault == "fail" else "executor_gone"
    before = _counter(why)
    with order_stack(tmp_path, engine_settings=FAST, database_url=database_url) as (
        sim,
        connector,
        url,
    ):
        dispatch = Dispatch(connector, {"order-L-1": fault})
        monkeypatch.setattr(dbos_queue, "execute_dequeued_workflow", dispatch)
        http = httpx2.Client(timeout=30)
        body = {
            "shopRef": "L-1",
            "lines": [{"productNumber": "P000001", "quantity": 1, "unitPrice": "5.00"}],
        }
        assert http.post(f"{url}/v1/orders", json=body, headers=TOKEN).status_code == 202
        wait_for(lambda: dispatch.done == ["order-L-1"], 30, what="the injected lost start")

        def sent() -> str | None:
            with connector.db.read() as session:
                row = session.get(OrderRow, "L-1")
                return row.order_number if row is not None else None

        wait_for(sent, 60, what="order L-1 in Extend after its lost start")
        data: Any = http.get(f"{sim.admin_url}/state/orders").json()
        items = data["items"] if isinstance(data, dict) else data
        assert sum(1 for o in items if o.get("orderNumberExternal") == "L-1") == 1
        job = wait_for(
            lambda: (j := connector.engine.get_status("order-L-1")) and j.status == "SUCCESS" and j,
            30,
            what="the job done",
        )
        assert job.executor_id == connector.settings.engine.executor_id
        with connector.db.read() as session:
            me = session.get(ExecutorRow, connector.settings.engine.executor_id)
            assert me is not None and me.role == "all"
        # `extend-connector status` lists this process, alive, and nobody holding the job.
        listed = {e["executorId"]: e for e in failures.status_snapshot()["executors"]}
        assert listed[connector.settings.engine.executor_id]["alive"] is True
        # (This process may be running other work at this instant: a balance flush, a drain.)
        assert listed.get("gone-worker", {"runningJobs": 0})["runningJobs"] == 0
    assert _counter(why) - before == 1


class FakeEngine:
    """What `Liveness` asks of the engine, with the running jobs per executor set by the test."""

    def __init__(self, settings: Any, pending: dict[str, int]) -> None:
        self.settings = settings
        self.role = settings.engine.role
        self.application_version = settings.engine.application_version
        self.pending = dict(pending)
        self.recovered: list[str] = []
        self.adopt_calls = 0

    def pending_executors(self, *, older_than_seconds: float = 0.0) -> dict[str, int]:
        return dict(self.pending)

    def recover(self, executor_ids: list[str], *, older_than_seconds: float = 0.0) -> int:
        moved = sum(self.pending.pop(e, 0) for e in executor_ids)
        self.recovered.extend(executor_ids)
        return moved

    def adopt_orphans(self, *, older_than_seconds: float) -> list[str]:
        self.adopt_calls += 1
        return []


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_only_executors_not_heard_of_for_the_threshold_lose_their_jobs(
    db: Database, migrated_url: str, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        migrated_url, executor_id="w1", heartbeat_seconds=10, executor_dead_seconds=60
    )
    clock = Clock()
    eng = FakeEngine(settings, {"w1": 1, "w-live": 2, "w-gone": 3, "w-never-seen": 4})
    me = executors.Liveness(db, eng, clock=clock)  # type: ignore[arg-type]
    with db.write() as session:
        session.add_all(
            [
                _row("w-live", clock.now - timedelta(seconds=30)),
                _row("w-gone", clock.now - timedelta(seconds=61)),
            ]
        )
    beat = me.beat()
    assert beat.handed_over == {"w-gone": 3, "w-never-seen": 4}
    assert sorted(eng.recovered) == ["w-gone", "w-never-seen"]  # never its own, never a live one
    assert eng.adopt_calls == 0  # its own start-up recovery goes first
    clock.now += timedelta(seconds=60)
    me.beat()
    assert eng.adopt_calls == 1
    # w-live has not beaten for 90 s now: gone.
    assert eng.recovered[-1] == "w-live"
    listed = {
        e["executorId"]: e
        for e in executors.listing(db, eng, now=clock.now, dead_after=timedelta(seconds=60))  # type: ignore[arg-type]
    }
    assert listed["w1"]["alive"] is True and listed["w1"]["runningJobs"] == 1
    assert listed["w-gone"]["alive"] is False and listed["w-gone"]["runningJobs"] == 0


def test_two_live_processes_with_one_executor_id_stop_taking_each_others_jobs(
    db: Database, migrated_url: str, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        migrated_url, executor_id="local", heartbeat_seconds=10, executor_dead_seconds=30
    )
    clock = Clock()
    first = executors.Liveness(db, FakeEngine(settings, {}), clock=clock)  # type: ignore[arg-type]
    second = executors.Liveness(db, FakeEngine(settings, {}), clock=clock)  # type: ignore[arg-type]
    first.process, second.process = "host-a:1", "host-b:2"
    # Both beat from their start; by the time either may adopt (30 s) each has seen the other.
    for _ in range(5):
        first.beat()
        clock.now += timedelta(seconds=5)
        second.beat()
        clock.now += timedelta(seconds=5)
    assert first.shared and second.shared
    assert first.engine.adopt_calls == 0 and second.engine.adopt_calls == 0  # type: ignore[attr-defined]
    # A restart (a new process, the old one gone) is not a twin.
    clock.now += timedelta(seconds=60)
    restarted = executors.Liveness(db, FakeEngine(settings, {}), clock=clock)  # type: ignore[arg-type]
    restarted.process = "host-a:3"
    for _ in range(3):
        restarted.beat()
        clock.now += timedelta(seconds=10)
    assert not restarted.shared


def _row(executor: str, seen: datetime) -> ExecutorRow:
    return ExecutorRow(
        executor_id=executor,
        application_version="1",
        role="worker",
        process=f"h:{executor}",
        started_at=seen,
        seen_at=seen,
    )


def test_a_clean_stop_removes_the_row_and_a_silent_process_is_reported_gone_for_a_day(
    db: Database, migrated_url: str, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        migrated_url, executor_id="w1", heartbeat_seconds=0.1, executor_dead_seconds=60
    )
    me = executors.Liveness(db, FakeEngine(settings, {}))  # type: ignore[arg-type]
    me.start()
    wait_for(lambda: _seen(db, "w1"), 10, what="the first heartbeat")
    me.stop()
    assert not _seen(db, "w1")  # stopped cleanly: not gone, no alert
    now = datetime.now(UTC)
    with db.write() as session:
        session.add_all(
            [
                _row("w-crashed", now - timedelta(minutes=5)),
                _row("w-long-ago", now - timedelta(hours=25)),
                _row("w-alive", now - timedelta(seconds=5)),
            ]
        )
    with db.read() as session:
        gone = executors.gone_executors(session, now=now, dead_after=timedelta(seconds=60))
    assert [g.executor_id for g in gone] == ["w-crashed"]


def _seen(db: Database, executor: str) -> bool:
    with db.read() as session:
        return session.get(ExecutorRow, executor) is not None
