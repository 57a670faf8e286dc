"""The inline engine: declared workflows and steps run as plain calls, for unit tests.

Under `inline()` a workflow's body runs directly in the caller, a step runs its body through
the same transient-retry and `to_json_value` path as under DBOS (so the workflow sees exactly
the JSON a checkpoint would give it) and with its declared retries, durable sleeps advance a
fake clock instead of waiting, and jobs the code enqueues or starts are recorded on an
`InlineEngine` (and run inline when a test asks). No database is touched by the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from extend_connector.engine._transient import is_transient_db_error


class FakeClock:
    """A clock that only moves when something sleeps on it (or a test calls `advance`)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)


@dataclass(frozen=True, slots=True)
class Job:
    """A job the code under test enqueued, started or debounced."""

    kind: str  # "enqueue", "start" or "debounce"
    workflow: str  # its durable name
    args: tuple[Any, ...]  # as JSON, exactly as the job database would hold them
    queue: str | None = None
    partition_key: str | None = None
    workflow_id: str | None = None
    delay_seconds: float | None = None


@dataclass(slots=True)
class StepPolicy:
    """What `@engine.step` declared about retries (DBOS applies it outside inline runs)."""

    retries: int
    backoff_seconds: float
    backoff_rate: float
    retry_on: Callable[[BaseException], bool] | None


@dataclass(eq=False)
class InlineRun:
    """The state of one `inline()` block: the clock, the sleeps and the recorded jobs."""

    clock: FakeClock
    sleeps: list[float] = field(default_factory=list)
    jobs: list[Job] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)  # names of the steps run, in order
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    workflow_id: str = "inline-1"

    def new_id(self) -> str:
        return f"inline-{next(self._ids)}"

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.clock.advance(max(seconds, 0.0))

    def _retry(self, policy: StepPolicy, attempt: int, exc: BaseException) -> bool:
        if attempt > policy.retries or is_transient_db_error(exc):
            return False
        if policy.retry_on is not None and not policy.retry_on(exc):
            return False
        self.sleep(policy.backoff_seconds * policy.backoff_rate ** (attempt - 1))
        return True

    def run_step(
        self, name: str, policy: StepPolicy, body: Callable[..., Any], *args: Any, **kw: Any
    ) -> Any:
        self.steps.append(name)
        for attempt in itertools.count(1):
            try:
                return body(*args, **kw)
            except Exception as exc:
                if not self._retry(policy, attempt, exc):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def run_step_async(
        self, name: str, policy: StepPolicy, body: Callable[..., Any], *args: Any, **kw: Any
    ) -> Any:
        self.steps.append(name)
        for attempt in itertools.count(1):
            try:
                return await body(*args, **kw)
            except Exception as exc:
                if not self._retry(policy, attempt, exc):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover


class _Active:
    """The one attribute a declared workflow or step checks per call."""

    run: InlineRun | None = None


ACTIVE = _Active()


@contextlib.contextmanager
def inline(clock: FakeClock | None = None) -> Iterator[InlineRun]:
    """Run declared workflows and steps as plain calls in this block (tests only).

    Not re-entrant and process-wide: every thread sees the inline mode while the block runs.
    """
    if ACTIVE.run is not None:
        raise RuntimeError("engine.inline() is already active")
    run = InlineRun(clock=clock or FakeClock())
    ACTIVE.run = run
    try:
        yield run
    finally:
        ACTIVE.run = None


class InlineEngine:
    """A stand-in for `Engine` in a `FlowContext`: records the jobs flows enqueue or start.

    With `run_jobs=True` an enqueued or started job runs at once, inline (its result is
    dropped, an error propagates to the caller). Needs an active `inline()` block.
    """

    executes = True

    def __init__(self, *, run_jobs: bool = False) -> None:
        self.run_jobs = run_jobs

    @staticmethod
    def _run() -> InlineRun:
        run = ACTIVE.run
        if run is None:
            raise RuntimeError("InlineEngine needs an active engine.inline() block")
        return run

    def _record(
        self,
        kind: str,
        workflow: Callable[..., Any],
        args: tuple[Any, ...],
        *,
        after_commit_of: Any = None,
        **kw: Any,
    ) -> str:
        from extend_connector.engine._declare import to_json_value, workflow_name

        run = self._run()
        json_args = tuple(to_json_value(list(args)))
        job_id = kw.get("workflow_id") or run.new_id()
        kw["workflow_id"] = job_id
        run.jobs.append(Job(kind=kind, workflow=workflow_name(workflow), args=json_args, **kw))
        if self.run_jobs:

            def go(*_: Any) -> None:
                result = workflow(*json_args)
                if inspect.isawaitable(result):
                    _run_coroutine(result)

            if isinstance(after_commit_of, Session):
                # As with the real engine, the job exists (and runs) only once the caller commits.
                sa.event.listen(after_commit_of, "after_commit", go, once=True)
            else:
                go()
        return str(job_id)

    def enqueue(
        self,
        workflow: Callable[..., Any],
        *args: Any,
        queue: str,
        partition_key: str | None = None,
        workflow_id: str | None = None,
        delay_seconds: float | None = None,
    ) -> str:
        return self._record(
            "enqueue",
            workflow,
            args,
            queue=queue,
            partition_key=partition_key,
            workflow_id=workflow_id,
            delay_seconds=delay_seconds,
        )

    def enqueue_in_transaction(
        self,
        session_or_connection: Any,
        workflow: Callable[..., Any],
        *args: Any,
        queue: str,
        partition_key: str | None = None,
        workflow_id: str | None = None,
        delay_seconds: float | None = None,
    ) -> str:
        return self._record(
            "enqueue",
            workflow,
            args,
            after_commit_of=session_or_connection,
            queue=queue,
            partition_key=partition_key,
            workflow_id=workflow_id,
            delay_seconds=delay_seconds,
        )

    def has_waiting_run(
        self, workflow: Callable[..., Any], *, queue: str, partition_key: str | None = None
    ) -> bool:
        return False  # inline jobs never wait to start

    def start(
        self, workflow: Callable[..., Any], *args: Any, workflow_id: str | None = None
    ) -> str:
        return self._record("start", workflow, args, workflow_id=workflow_id)

    def debounce(
        self,
        key: str,
        workflow: Callable[..., Any],
        *args: Any,
        queue: str,
        period_seconds: float,
        max_delay_seconds: float | None = None,
    ) -> str:
        return self._record("debounce", workflow, args, queue=queue, delay_seconds=period_seconds)


def _run_coroutine(awaitable: Any) -> None:
    """Run a started async workflow to its end from sync code (a fresh loop in a thread when
    the caller is itself on a running loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(_wrap(awaitable))
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _wrap(awaitable)).result()


async def _wrap(awaitable: Any) -> Any:
    return await awaitable


__all__ = ["ACTIVE", "FakeClock", "InlineEngine", "InlineRun", "Job", "StepPolicy", "inline"]
