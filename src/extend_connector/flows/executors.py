"""Executors: no job stays marked running by a process that does not run it.

DBOS recovers the jobs a process held as running (PENDING) only when a process with the same
executor id and application version launches again. Two ways that leaves a job stuck for good:

- the process never comes back under that id (scaled down, replaced by a container with a new
  name, its host lost): its jobs wait for a launch that never happens;
- the process is alive, but a job it claimed never started in it (the database went away between
  DBOS's claim and the start, or the claim's commit answer was lost): the live process has no
  reason to look again.

Every process that runs jobs (`engine.role` `all` or `worker`) keeps a `Liveness` thread. Every
`engine.heartbeat_seconds` it

1. writes its row in `engine_executors` (`seen_at`);
2. puts back on their queues the jobs its own executor id holds as running that are not running
   in this process and were claimed at least `engine.executor_dead_seconds` ago
   (`Engine.adopt_orphans`; only once the process has run that long, so DBOS's own start-up
   recovery of what it held before is left to finish);
3. hands back to their queues the running jobs of every other executor id not seen for
   `engine.executor_dead_seconds` (no row, or a row that old), when those jobs were claimed that
   long ago too (`Engine.recover`, idempotent: the processes that do it at once move each job once).

Two live processes with one executor id would take each other's running jobs for orphans: a
process that finds its row written by another since its own last beat logs `executor_id_shared`
and stops step 2.

A job put back starts again at its first unrecorded step, exactly as after a crash, which every
flow is written to survive (an order is looked up in Extend before it is posted again).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session

from extend_connector import metrics
from extend_connector.engine import Engine
from extend_connector.flows.freshness import process_name
from extend_connector.store.database import Database
from extend_connector.store.models import ExecutorRow
from extend_connector.store.repositories import upsert

log = structlog.get_logger("extend_connector.executors")


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, kw_only=True, slots=True)
class Beat:
    """What one heartbeat did: the jobs it put back, this process's and those of gone ones."""

    adopted: tuple[str, ...] = ()
    handed_over: dict[str, int] | None = None  # executor id -> jobs put back


def live_executors(db: Database, *, now: datetime, dead_after: timedelta) -> set[str]:
    with db.read() as session:
        return set(
            session.scalars(
                sa.select(ExecutorRow.executor_id).where(ExecutorRow.seen_at >= now - dead_after)
            )
        )


GONE_ALERT_HOURS = 24.0  # a process gone for longer is no longer alerted on (its row stays)


@dataclass(frozen=True, kw_only=True, slots=True)
class Gone:
    """A process that ran jobs, stopped beating without a clean stop, and has not come back."""

    executor_id: str
    role: str
    process: str
    seen_at: datetime


def gone_executors(session: Session, *, now: datetime, dead_after: timedelta) -> list[Gone]:
    """Processes not heard of for `dead_after` (a clean stop removes its row), for at most
    `GONE_ALERT_HOURS`: what the `executor_gone` alert reports."""
    rows = session.scalars(
        sa.select(ExecutorRow)
        .where(
            ExecutorRow.seen_at < now - dead_after,
            ExecutorRow.seen_at >= now - timedelta(hours=GONE_ALERT_HOURS),
        )
        .order_by(ExecutorRow.executor_id)
    )
    return [
        Gone(executor_id=r.executor_id, role=r.role, process=r.process, seen_at=r.seen_at)
        for r in rows
    ]


def listing(
    db: Database, engine: Engine, *, now: datetime, dead_after: timedelta
) -> list[dict[str, object]]:
    """Every process that has run jobs, newest first, with whether it counts as alive and how
    many jobs its executor id holds as running (what `extend-connector status` shows)."""
    try:
        running: dict[str, int] | None = engine.pending_executors()
    except Exception:  # the job tables may not exist before the first start
        running = None
    with db.read() as session:
        rows = session.scalars(sa.select(ExecutorRow).order_by(ExecutorRow.seen_at.desc()))
        listed: list[dict[str, object]] = [
            {
                "executorId": row.executor_id,
                "role": row.role,
                "process": row.process,
                "applicationVersion": row.application_version,
                "seenAt": row.seen_at.isoformat(),
                "secondsSinceSeen": round(max(0.0, (now - row.seen_at).total_seconds()), 1),
                "alive": row.seen_at >= now - dead_after,
                "runningJobs": None if running is None else running.pop(row.executor_id, 0),
            }
            for row in rows
        ]
    # Jobs held by an executor id that never wrote a row (a process older than the heartbeat).
    listed.extend(
        {
            "executorId": executor,
            "role": None,
            "process": None,
            "applicationVersion": None,
            "seenAt": None,
            "secondsSinceSeen": None,
            "alive": False,
            "runningJobs": count,
        }
        for executor, count in sorted((running or {}).items())
    )
    return listed


class Liveness:
    """The heartbeat of one process that runs jobs (module docstring); `beat()` is one round."""

    def __init__(
        self,
        db: Database,
        engine: Engine,
        *,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        settings = engine.settings.engine
        self.db = db
        self.engine = engine
        self.clock = clock
        self.executor_id = settings.executor_id
        self.interval = settings.heartbeat_seconds
        self.dead_after = timedelta(seconds=settings.executor_dead_seconds)
        self.process = process_name()
        self.started_at = clock()
        self.failed = 0
        self.shared = False  # another live process uses this executor id (then: no adoption)
        self._written_at: datetime | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> Beat:
        now = self.clock()
        with self.db.write() as session:
            row = session.get(ExecutorRow, self.executor_id)
            # Someone else wrote our row since our last beat: another live process has the same
            # executor id (after a restart the old process writes no more).
            if (
                row is not None
                and row.process != self.process
                and self._written_at is not None
                and row.seen_at > self._written_at
            ):
                if not self.shared:
                    log.error(
                        "executor_id_shared",
                        executor=self.executor_id,
                        this_process=self.process,
                        other_process=row.process,
                        why="two live processes with one engine.executor_id: each would take "
                        "the other's running jobs for orphans; this one stops putting back its "
                        "own; give every worker its own engine.executor_id",
                    )
                self.shared = True
            upsert(
                session,
                ExecutorRow,
                {
                    "executor_id": self.executor_id,
                    "application_version": self.engine.application_version,
                    "role": self.engine.role,
                    "process": self.process,
                    "started_at": self.started_at,
                    "seen_at": now,
                },
            )
        self._written_at = now
        age = self.dead_after.total_seconds()
        # What this executor id held before this launch is DBOS's start-up recovery's to run;
        # once that had `dead_after` to do it, whatever is still not running here is orphaned.
        adopted = (
            self.engine.adopt_orphans(older_than_seconds=age)
            if now - self.started_at >= self.dead_after and not self.shared
            else []
        )
        if adopted:
            metrics.JOBS_PUT_BACK.labels("not_started").inc(len(adopted))
            log.warning(
                "orphaned_jobs_put_back",
                executor=self.executor_id,
                jobs=len(adopted),
                workflow_ids=adopted[:20],
                why="claimed by this process but not running in it",
            )
        others = set(self.engine.pending_executors(older_than_seconds=age)) - {self.executor_id}
        handed: dict[str, int] = {}
        if others:
            gone = others - live_executors(self.db, now=now, dead_after=self.dead_after)
            for executor in sorted(gone):
                moved = self.engine.recover([executor], older_than_seconds=age)
                if moved:
                    handed[executor] = moved
                    metrics.JOBS_PUT_BACK.labels("executor_gone").inc(moved)
                    log.warning(
                        "gone_executor_jobs_put_back",
                        executor=executor,
                        jobs=moved,
                        by=self.executor_id,
                        why=f"not heard of for over {age:g} s (engine.executor_dead_seconds)",
                    )
        return Beat(adopted=tuple(adopted), handed_over=handed or None)

    def _run(self) -> None:
        while True:
            try:
                self.beat()
                if self.failed:
                    log.info("heartbeat_recovered", executor=self.executor_id, failed=self.failed)
                self.failed = 0
            except Exception as exc:  # the database is away: beat again when it is back
                self.failed += 1
                if self.failed == 1 or self.failed % 30 == 0:
                    log.warning(
                        "heartbeat_failed",
                        executor=self.executor_id,
                        failed=self.failed,
                        error=f"{type(exc).__name__}: {exc}"[:300],
                    )
            if self._stop.wait(self.interval):
                return

    def start(self) -> Liveness:
        if self._thread is None:
            self._stop.clear()
            self.started_at = self.clock()
            self._thread = threading.Thread(
                target=self._run, name="executor-heartbeat", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """A clean stop: the thread ends and the row goes (a stopped process is not gone; the
        jobs it leaves running are recovered by its next launch or, after
        `engine.executor_dead_seconds`, by the others)."""
        self._stop.set()
        if self._thread is None:
            return
        self._thread.join(10)
        self._thread = None
        try:
            with self.db.write() as session:
                session.execute(
                    sa.delete(ExecutorRow).where(
                        ExecutorRow.executor_id == self.executor_id,
                        ExecutorRow.process == self.process,
                    )
                )
        except Exception as exc:  # the database is away: the row ages into "gone"
            log.warning(
                "heartbeat_row_not_removed",
                executor=self.executor_id,
                error=f"{type(exc).__name__}: {exc}"[:300],
            )
