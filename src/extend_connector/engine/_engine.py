"""The `Engine`: DBOS configured for this app, behind a small typed surface.

One SQLAlchemy engine serves both the app tables and DBOS's tables (same database), so an
inbox row and the job it enqueues commit in one transaction. Roles (`settings.engine.role`):
`all` and `worker` launch DBOS and execute queued work in this process; `web` only
connects (enqueue, inspect, resume) and never executes. `connect()` alone is what the CLI
and the web role use.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa
from dbos import (
    DBOS,
    DBOSClient,
    DBOSConfig,
    DBOSPortableJSONSerializer,
    DebouncerClient,
    EnqueueOptions,
    WorkflowHandle,
    WorkflowStatus,
)
from sqlalchemy.orm import Session

from extend_connector.engine._bells import ALONE_POLL_SECONDS, Bells
from extend_connector.engine._dbos_private import (
    DBOSException,
    DBOSNonExistentWorkflowError,
    active_workflow_ids,
    move_due_delayed,
    on_job_released,
    reenqueue_for_recovery,
    serve_queue,
)
from extend_connector.engine._declare import (
    QueueSpec,
    dbos_function,
    declared_on_launch,
    declared_queues,
    declared_schedules,
    to_json_value,
    workflow_name,
)
from extend_connector.engine._due import DueWaker
from extend_connector.engine._transient import TransientRetry, configure_transient_retry
from extend_connector.settings import Settings
from extend_connector.store.database import create_db_engine, normalise_url

log = logging.getLogger("extend_connector.engine")

APP_NAME = "extend-connector"
FAILED_STATUSES = ("ERROR", "MAX_RECOVERY_ATTEMPTS_EXCEEDED")
POLLER_STOP_SECONDS = 10.0  # for all queue pollers at shutdown (DBOS gives its threads as long)

Role = Literal["all", "web", "worker"]


class EngineError(Exception):
    """Root of the engine's errors."""


class EngineStateError(EngineError):
    """The call does not fit the engine's state or role (a programming or deployment error)."""


class UnknownWorkflowError(EngineError):
    """No workflow with that id exists."""


class WorkflowFailedError(EngineError):
    """The awaited workflow ended in ERROR / CANCELLED / MAX_RECOVERY_ATTEMPTS_EXCEEDED."""

    def __init__(self, info: WorkflowInfo) -> None:
        self.info = info
        super().__init__(
            f"workflow {info.workflow_id} ({info.name}) ended {info.status}: {info.error}"
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkflowInfo:
    """What an operator needs to know about one job."""

    workflow_id: str
    name: str
    status: str
    queue: str | None
    partition_key: str | None
    args: list[Any]
    kwargs: dict[str, Any]
    output: Any
    error: str | None
    error_type: str | None
    created_at: datetime | None
    updated_at: datetime | None
    completed_at: datetime | None
    executor_id: str | None
    application_version: str | None
    forked_from: str | None

    @property
    def failed(self) -> bool:
        return self.status in FAILED_STATUSES


@dataclass(frozen=True, kw_only=True, slots=True)
class StepRecord:
    step: int
    name: str
    output: Any
    error: str | None
    started_at: datetime | None
    completed_at: datetime | None


def _ms(value: int | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value / 1000, UTC)


def _info(status: WorkflowStatus) -> WorkflowInfo:
    inputs = status.input or {"args": (), "kwargs": {}}
    error = status.error
    error_type = None
    if error is not None:
        error_type = getattr(error, "name", None) or type(error).__name__
    return WorkflowInfo(
        workflow_id=status.workflow_id,
        name=status.name,
        status=str(status.status),
        queue=status.queue_name,
        partition_key=status.queue_partition_key,
        args=list(inputs.get("args", ())),
        kwargs=dict(inputs.get("kwargs", {})),
        output=status.output,
        error=None if error is None else str(error),
        error_type=error_type,
        created_at=_ms(status.created_at),
        updated_at=_ms(status.updated_at),
        completed_at=_ms(status.completed_at),
        executor_id=status.executor_id,
        application_version=status.app_version,
        forked_from=status.forked_from,
    )


class Engine:
    """Durable execution for the connector. Create one per process; use as a context manager.

    `connect()` opens the job tables (creating them if needed); `launch()` additionally
    starts executing queues, schedules and recovery when the role is `all` or `worker`.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        database_url: str | None = None,
        db_engine: sa.Engine | None = None,
        scheduler_poll_seconds: float = 30.0,
        log_level: str = "WARNING",
    ) -> None:
        self.settings = settings
        self.role: Role = settings.engine.role
        self.application_version = settings.engine.application_version
        self.executor_id = settings.engine.executor_id
        self.url = normalise_url(database_url or settings.store.url)
        self._db_engine = db_engine
        self._owns_db_engine = db_engine is None
        self._scheduler_poll_seconds = scheduler_poll_seconds
        self._log_level = log_level
        self._client: DBOSClient | None = None
        self._launched = False
        self._due_waker: DueWaker | None = None
        # The newest job of each debounce key this process saw (a new one arms its deadline).
        self._debounced: dict[str, str] = {}
        self._bells = Bells()
        self._pollers: list[threading.Thread] = []
        configure_transient_retry(
            TransientRetry(give_up_after_seconds=settings.engine.transient_db_retry_minutes * 60)
        )

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def db_engine(self) -> sa.Engine:
        """The SQLAlchemy engine shared by DBOS and the app tables (after `connect()`)."""
        if self._db_engine is None:
            store = self.settings.store
            self._db_engine = create_db_engine(
                self.url, pool_size=store.pool_size, max_overflow=store.max_overflow
            )
        return self._db_engine

    @property
    def running(self) -> bool:
        """Whether the engine is up for this role: launched (`all`, `worker`) or connected
        (`web`, which only enqueues)."""
        return self._client is not None if self.role == "web" else self._launched

    @property
    def executes(self) -> bool:
        """Whether this process runs jobs (role `all` or `worker`, once launched)."""
        return self._launched

    def connect(self) -> Engine:
        """Create/upgrade DBOS's tables and open a client; executes nothing."""
        if self._client is not None:
            return self
        DBOS.migrate(self.url)
        self._client = DBOSClient(
            system_database_engine=self.db_engine,
            serializer=DBOSPortableJSONSerializer(),
            application_name=APP_NAME,
        )
        if self.role == "web":
            # Queues live in the database; declaring them here lets the web role enqueue
            # before any worker has started.
            for spec in declared_queues().values():
                self._client.register_queue(spec.name, **self._queue_kwargs(spec))
        return self

    def launch(self) -> Engine:
        """`connect()`, then (roles `all`/`worker`) execute queues, schedules and recovery."""
        self.connect()
        if self.role == "web" or self._launched:
            return self
        # DBOS keeps process-wide state: at most one launched engine per process.
        from dbos import _dbos as dbos_module

        if dbos_module._dbos_global_instance is not None:
            raise EngineStateError(
                "a DBOS engine is already running in this process; shut it down first"
            )
        logging.getLogger("dbos").setLevel(self._log_level)
        config: DBOSConfig = {
            "name": APP_NAME,
            "system_database_url": self.url,
            "system_database_engine": self.db_engine,
            "application_version": self.application_version,
            "executor_id": self.executor_id,
            "serializer": DBOSPortableJSONSerializer(),
            "log_level": self._log_level,
            "scheduler_polling_interval_sec": self._scheduler_poll_seconds,
            "notification_listener_polling_interval_sec": 0.1,
        }
        DBOS(config=config)
        try:
            # The engine polls its queues itself, with waits it cuts short (_bells.py); DBOS
            # serves only its internal queues.
            DBOS.listen_queues([])
            bells = self._bells = Bells()
            on_job_released(bells.ring)
            DBOS.launch()
            for spec in declared_queues().values():
                DBOS.register_queue(
                    spec.name, on_conflict="always_update", **self._queue_kwargs(spec)
                )
                self._pollers.append(serve_queue(bells.add(spec.name), spec.name))
            self._apply_schedules()
        except BaseException:
            self._bells.stop()
            DBOS.destroy()
            raise
        self._launched = True
        self._run_on_launch()
        return self

    def _run_on_launch(self) -> None:
        for name, callback in declared_on_launch().items():
            try:
                callback(self)
            except Exception:  # start-up work is a shortcut the schedules cover; the launch goes on
                log.exception("on_launch callback %s failed", name)

    def shutdown(self, *, wait_seconds: int = 0) -> None:
        """Stop executing (waiting up to `wait_seconds` for running jobs) and close connections.

        Jobs still running are not lost: they are recovered at the next launch with the
        same executor id and application version.
        """
        if self._due_waker is not None:
            self._due_waker.stop()
            self._due_waker = None
        if self._launched:
            # The pollers end first, each after the poll it is in: DBOS's shutdown stops the
            # event loop before it joins them, and a job claimed then would never start here
            # (PENDING until this executor's next launch).
            self._bells.stop()
            deadline = time.monotonic() + POLLER_STOP_SECONDS  # they stop side by side
            for poller in self._pollers:
                poller.join(timeout=max(0.0, deadline - time.monotonic()))
            self._pollers.clear()
            DBOS.destroy(workflow_completion_timeout_sec=wait_seconds)
            self._launched = False
        if self._client is not None:
            self._client.destroy()
            self._client = None
        if self._owns_db_engine and self._db_engine is not None:
            self._db_engine.dispose()
            self._db_engine = None

    def __enter__(self) -> Engine:
        return self.launch()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    @property
    def client(self) -> DBOSClient:
        if self._client is None:
            raise EngineStateError("engine not connected: call connect() or launch() first")
        return self._client

    def _queue_kwargs(self, spec: QueueSpec) -> dict[str, Any]:
        worker = spec.worker_concurrency or self.settings.engine.worker_concurrency
        if spec.concurrency is not None:
            worker = min(worker, spec.concurrency)
        kwargs: dict[str, Any] = {
            "worker_concurrency": worker,
            "global_concurrency": spec.concurrency,
            "partition_concurrency": spec.partition_concurrency,
            "polling_interval_sec": self._poll_seconds(spec),
        }
        if spec.rate_limit is not None:
            kwargs["limiter"] = {
                "limit": spec.rate_limit.limit,
                "period": spec.rate_limit.period_seconds,
            }
        if spec.partition_concurrency is not None:
            kwargs["partition_worker_concurrency"] = min(spec.partition_concurrency, worker)
        return kwargs

    def _poll_seconds(self, spec: QueueSpec) -> float:
        """A queue's regular poll: what no bell of this process announces (_bells.py). A
        `worker` runs what the `web` process enqueues, at the declared pace; an `all` process
        enqueues its own work and rings for it."""
        if self.role == "all":
            return max(spec.poll_seconds, ALONE_POLL_SECONDS)
        return spec.poll_seconds

    def _apply_schedules(self) -> None:
        specs = declared_schedules()
        for existing in DBOS.list_schedules(application_name=APP_NAME):
            if existing["schedule_name"] not in specs:
                DBOS.delete_schedule(existing["schedule_name"])
        if specs:
            DBOS.apply_schedules(
                [
                    {
                        "schedule_name": spec.name,
                        "workflow_fn": dbos_function(spec.workflow),
                        "schedule": spec.cron,
                        "queue_name": spec.queue,
                    }
                    for spec in specs.values()
                ]
            )

    # --- enqueue --------------------------------------------------------------------------

    def _options(
        self,
        workflow: Callable[..., Any],
        queue: str,
        partition_key: str | None,
        workflow_id: str | None,
        delay_seconds: float | None,
    ) -> EnqueueOptions:
        spec = declared_queues().get(queue)
        if spec is None:
            raise EngineStateError(f"queue {queue!r} is not declared (engine.queue(...))")
        if spec.partitioned and partition_key is None:
            raise EngineStateError(f"queue {queue!r} is partitioned: pass partition_key=")
        if not spec.partitioned and partition_key is not None:
            raise EngineStateError(
                f"queue {queue!r} is not partitioned; partition_key is not allowed"
            )
        options: EnqueueOptions = {
            "workflow_name": workflow_name(workflow),
            "queue_name": queue,
            "app_version": self.application_version,
        }
        if partition_key is not None:
            options["queue_partition_key"] = partition_key
        if workflow_id is not None:
            options["workflow_id"] = workflow_id
        if delay_seconds is not None:
            options["delay_seconds"] = delay_seconds
        return options

    def enqueue(
        self,
        workflow: Callable[..., Any],
        *args: Any,
        queue: str,
        partition_key: str | None = None,
        workflow_id: str | None = None,
        delay_seconds: float | None = None,
    ) -> str:
        """Put a job on `queue`; returns its workflow id.

        Idempotent on `workflow_id`: enqueuing an id that exists (in any state) does nothing
        and returns the id. Called inside a workflow, the enqueue is checkpointed (a replay
        does not enqueue twice).
        """
        options = self._options(workflow, queue, partition_key, workflow_id, delay_seconds)
        json_args = to_json_value(list(args))
        if self._launched and DBOS.workflow_id is not None:
            job = DBOS.enqueue_workflow_with_options(options, *json_args).workflow_id
        else:
            job = self.client.enqueue(options, *json_args).workflow_id
        if delay_seconds:
            self._ring_when_due(queue, delay_seconds)
        else:
            self._bells.ring(queue)
        return job

    def enqueue_in_transaction(
        self,
        session_or_connection: Session | sa.Connection,
        workflow: Callable[..., Any],
        *args: Any,
        queue: str,
        partition_key: str | None = None,
        workflow_id: str | None = None,
        delay_seconds: float | None = None,
    ) -> str:
        """Enqueue inside the caller's open transaction (same database as the app tables).

        The job exists if and only if the caller commits. Idempotent on `workflow_id`
        like `enqueue` (an existing id is left as it is).
        """
        bind = (
            session_or_connection.engine
            if isinstance(session_or_connection, sa.Connection)
            else session_or_connection.get_bind().engine
        )
        if bind.url != self.db_engine.url:
            raise EngineStateError(
                "enqueue_in_transaction needs a session on the engine's own database"
            )
        options = self._options(workflow, queue, partition_key, workflow_id, delay_seconds)
        handle: WorkflowHandle[Any] = self.client.enqueue_in_transaction(
            session_or_connection, options, *to_json_value(list(args))
        )
        if delay_seconds:
            self._ring_when_due(queue, delay_seconds)
        else:
            self._bells.ring_after_commit(session_or_connection, queue)
        return handle.workflow_id

    def has_waiting_run(
        self, workflow: Callable[..., Any], *, queue: str, partition_key: str | None = None
    ) -> bool:
        """Whether a run of `workflow` waits to start on `queue`/`partition_key` (ENQUEUED) that
        this version's workers take (one of an older version may wait for workers that are
        gone): a caller that only needs the work done after now can leave it to that run.
        A plain read, no lock: DBOS dequeues queues with a concurrency limit `FOR UPDATE NOWAIT`,
        and a row locked here would be a contention error there."""
        return any(
            job.application_version == self.application_version
            and (partition_key is None or job.partition_key == partition_key)
            for job in self.list_workflows(
                name=workflow_name(workflow), status=("ENQUEUED",), queue=queue, limit=1000
            )
        )

    def start(
        self, workflow: Callable[..., Any], *args: Any, workflow_id: str | None = None
    ) -> str:
        """Run a workflow now in this process (not on a queue); returns its id.

        Idempotent on `workflow_id`. Needs a launched engine (role `all`/`worker`).
        """
        if not self._launched:
            raise EngineStateError(
                "start() runs work in this process; launch() with role all/worker first"
            )
        workflow_name(workflow)
        from dbos import SetWorkflowID

        json_args = to_json_value(list(args))
        if workflow_id is not None:
            with SetWorkflowID(workflow_id):
                return DBOS.start_workflow(dbos_function(workflow), *json_args).workflow_id
        return DBOS.start_workflow(dbos_function(workflow), *json_args).workflow_id

    def debounce(
        self,
        key: str,
        workflow: Callable[..., Any],
        *args: Any,
        queue: str,
        period_seconds: float,
        max_delay_seconds: float | None = None,
    ) -> str:
        """Run `workflow(*args)` once after `period_seconds` without another call for `key`.

        Each call within the period pushes the start back and replaces the arguments (the
        last call wins); `max_delay_seconds` bounds the wait during a steady stream. The
        queue must not be partitioned. Returns the id of the (pending) job.
        """
        options = self._options(workflow, queue, None, None, None)
        debouncer: DebouncerClient = DebouncerClient(
            self.client, options, debounce_timeout_sec=max_delay_seconds, queue=queue
        )
        handle: WorkflowHandle[Any] = debouncer.debounce(
            key, period_seconds, *to_json_value(list(args))
        )
        # Due in `period_seconds` unless another call pushes it back: moved onto its queue then,
        # not at DBOS's next once-a-second sweep (_due.py).
        self._ring_when_due(queue, period_seconds)
        if max_delay_seconds is not None and self._debounced.get(key) != handle.workflow_id:
            # A new job: due at the latest at its deadline, where no call's wake aims (_due.py).
            self._debounced[key] = handle.workflow_id
            self._ring_when_due(queue, max_delay_seconds, ring=True)
        return handle.workflow_id

    def _ring_when_due(self, queue: str, seconds: float, *, ring: bool = False) -> None:
        """Move due delayed jobs onto their queues in `seconds` and ring the queues the move
        gave a job (each ring is a poll: a wake whose job was pushed back rings nothing); with
        `ring`, ring `queue` then whatever the move found (DBOS's sweep may have moved it)."""
        if self._due_waker is None:
            client = self.client

            def move(ring: set[str]) -> None:
                for name in move_due_delayed(client) | ring:
                    self._bells.ring(name)

            self._due_waker = DueWaker(move)
        self._due_waker.arm(seconds, ring=queue if ring else "")

    # --- results and operations -----------------------------------------------------------

    def get_status(self, workflow_id: str) -> WorkflowInfo | None:
        found = self.client.list_workflows(workflow_ids=[workflow_id])
        return _info(found[0]) if found else None

    def wait(
        self, workflow_id: str, *, timeout_seconds: float = 60.0, poll_seconds: float = 0.05
    ) -> Any:
        """Block until the workflow finishes; return its output or raise `WorkflowFailedError`."""
        deadline = time.monotonic() + timeout_seconds
        while True:
            info = self.get_status(workflow_id)
            if info is None:
                raise UnknownWorkflowError(workflow_id)
            if info.status == "SUCCESS":
                return info.output
            if info.status in (*FAILED_STATUSES, "CANCELLED"):
                raise WorkflowFailedError(info)
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"workflow {workflow_id} still {info.status} after {timeout_seconds}s"
                )
            time.sleep(poll_seconds)

    def list_workflows(
        self,
        *,
        status: Sequence[str] | None = None,
        name: str | None = None,
        queue: str | None = None,
        limit: int = 100,
        newest_first: bool = True,
        id_prefix: str | None = None,
    ) -> list[WorkflowInfo]:
        rows = self.client.list_workflows(
            status=list(status) if status else None,
            name=name,
            queue_name=queue,
            limit=limit,
            sort_desc=newest_first,
            workflow_id_prefix=id_prefix,
        )
        return [_info(row) for row in rows]

    def prune_succeeded(self, *, completed_before: datetime, limit: int = 1000) -> int:
        """Delete up to `limit` jobs that finished successfully before `completed_before`, with
        their inputs, outputs and step checkpoints; returns how many.

        Only SUCCESS: a failed or cancelled job is evidence (the watchdog parks it, `failures
        retry` resumes it) and a queued or running one is work. A job id deleted here may be
        enqueued again later and then runs again; every flow guards its effects by its own
        records (an order by its Extend order number), never by an old job id alone.
        """
        if completed_before.tzinfo is None:
            raise ValueError("completed_before must be timezone-aware")
        rows = self.client.list_workflows(
            status="SUCCESS",
            completed_before=completed_before.isoformat(),
            limit=limit,
            load_input=False,
            load_output=False,
        )
        ids = [row.workflow_id for row in rows]
        if ids:
            self.client.delete_workflows(ids)
        return len(ids)

    def list_failed(self, *, name: str | None = None, limit: int = 100) -> list[WorkflowInfo]:
        """Jobs that stopped for good: ERROR, or crashed too often
        (MAX_RECOVERY_ATTEMPTS_EXCEEDED)."""
        return self.list_workflows(status=FAILED_STATUSES, name=name, limit=limit)

    def list_steps(self, workflow_id: str) -> list[StepRecord]:
        steps = self.client.list_workflow_steps(workflow_id)
        return [
            StepRecord(
                step=s["function_id"],
                name=s["function_name"],
                output=s["output"],
                error=None if s["error"] is None else str(s["error"]),
                started_at=_ms(s["started_at_epoch_ms"]),
                completed_at=_ms(s["completed_at_epoch_ms"]),
            )
            for s in steps
        ]

    def queue_depth(self) -> dict[str, int]:
        """Jobs waiting or running, per queue."""
        depth: dict[str, int] = {}
        for row in self.client.list_queued_workflows(load_input=False):
            depth[row.queue_name or ""] = depth.get(row.queue_name or "", 0) + 1
        return depth

    def _require(self, workflow_id: str) -> WorkflowInfo:
        info = self.get_status(workflow_id)
        if info is None:
            raise UnknownWorkflowError(workflow_id)
        return info

    def resume(self, workflow_id: str) -> None:
        """Continue a stopped job under its own id, on its own queue: completed steps are not
        run again, the step that failed runs again.

        DBOS checkpoints a step's final error like an output, so its plain "resume" would
        replay the error; a job that ended in ERROR is therefore rewound to its first
        failed step. Cancelled or crashed-too-often jobs continue where they stopped.
        """
        info = self._require(workflow_id)
        try:
            if info.status == "ERROR":
                failed = [s.step for s in self.list_steps(workflow_id) if s.error is not None]
                after = max((s.step for s in self.list_steps(workflow_id)), default=0) + 1
                self.client.rewind_workflow(
                    workflow_id, start_step=min(failed) if failed else after
                )
            else:
                self.client.resume_workflow(workflow_id)
        except DBOSNonExistentWorkflowError as exc:
            raise UnknownWorkflowError(workflow_id) from exc

    def replay(self, workflow_id: str, *, from_step: int = 1) -> str:
        """Run a job again as a new job (a fork) with the same arguments, reusing the
        checkpoints of steps before `from_step` (1 = rerun everything). Returns the new id."""
        info = self._require(workflow_id)
        try:
            handle = self.client.fork_workflow(
                workflow_id,
                from_step,
                application_version=self.application_version,
                queue_name=info.queue,
                queue_partition_key=info.partition_key,
            )
        except DBOSException as exc:
            raise EngineError(f"cannot replay {workflow_id}: {exc}") from exc
        return handle.workflow_id

    def cancel(self, workflow_id: str) -> None:
        """Stop a job (at its next step boundary); `resume` can continue it later."""
        self._require(workflow_id)
        self.client.cancel_workflow(workflow_id)

    def recover(self, executor_ids: Sequence[str], *, older_than_seconds: float = 0.0) -> int:
        """Hand the in-flight jobs of dead workers (by executor id) to the fleet, back on their
        own queues; returns how many. `older_than_seconds`: only jobs whose state last changed
        (claimed, started) at least that long ago. A worker restarted with its own executor id
        does this for itself at launch; `flows/executors.py` does it for one that never returns.
        """
        count = 0
        for executor in executor_ids:
            for row in self._pending(executor, older_than_seconds):
                if reenqueue_for_recovery(self.client, row.workflow_id, [executor]):
                    count += 1
        return count

    def _pending(self, executor: str | None, older_than_seconds: float) -> list[WorkflowStatus]:
        rows = self.client.list_workflows(
            status=["PENDING"], executor_id=executor, load_input=False, load_output=False
        )
        cutoff = (time.time() - older_than_seconds) * 1000
        return [row for row in rows if older_than_seconds <= 0 or (row.updated_at or 0) <= cutoff]

    def pending_executors(self, *, older_than_seconds: float = 0.0) -> dict[str, int]:
        """How many jobs each executor id holds as running (PENDING), counting those whose state
        last changed at least `older_than_seconds` ago."""
        counts: dict[str, int] = {}
        for row in self._pending(None, older_than_seconds):
            if row.executor_id:
                counts[row.executor_id] = counts.get(row.executor_id, 0) + 1
        return counts

    def adopt_orphans(self, *, older_than_seconds: float) -> list[str]:
        """Jobs this process's executor id holds as running that run nowhere in this process
        (claimed at least `older_than_seconds` ago): put back on their queues; returns their ids.

        DBOS marks a job PENDING under the claiming executor and then starts it; when the start
        fails (the database went away between the two, the claim's commit answer was lost), the
        job stays PENDING under a live executor, whose own recovery runs only at its next launch.
        A job still running is in this process's active set and is left alone; a late start of
        one put back runs alongside the new one only until its next checkpoint (DBOS's claim
        token), and every flow's effects are guarded by its own records anyway.
        """
        if not self._launched:
            return []
        running_before = active_workflow_ids()
        rows = self._pending(self.executor_id, older_than_seconds)
        running = running_before | active_workflow_ids()
        adopted = []
        for row in rows:
            if row.workflow_id in running:
                continue
            if reenqueue_for_recovery(self.client, row.workflow_id, [self.executor_id]):
                adopted.append(row.workflow_id)
        return adopted
