"""Declarations made at import time: workflows, steps, queues, schedules.

Flows decorate their functions here; nothing in this module talks to a database. The
`Engine` reads these registries when it launches, so declaring works before (and across)
any number of engine lifetimes in one process.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar, cast

from dbos import DBOS, DBOSPortableJSONSerializer

from extend_connector.engine._inline import ACTIVE, StepPolicy
from extend_connector.engine._transient import run_with_retry, run_with_retry_async

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

_PORTABLE = DBOSPortableJSONSerializer()

DEFAULT_MAX_RECOVERY_ATTEMPTS = 50


class DeclarationError(ValueError):
    """A workflow, queue or schedule was declared inconsistently (a programming error)."""


def to_json_value(value: Any) -> Any:
    """The value as it comes back from the job database: plain JSON (Decimal, datetime → str).

    Steps return this on their first run too, so a workflow sees the same values whether a
    step ran now or is replayed from its checkpoint after a crash.
    """
    # The C encoder walks the value; DBOS's portable form is asked only for the leaves plain JSON
    # lacks (Decimal, datetime, date, set), so the result is the same as serialising the whole
    # value through DBOS, at a fraction of the cost for large plain payloads (a price batch).
    return json.loads(json.dumps(value, default=_portable_leaf, ensure_ascii=False))


def _portable_leaf(value: Any) -> Any:
    return json.loads(_PORTABLE.serialize(value))


# --- workflows and steps ------------------------------------------------------------------

_WORKFLOW_NAMES: dict[Callable[..., Any], str] = {}
# The declared wrapper -> the DBOS-registered function it calls outside `inline()`.
_DBOS_FUNCTIONS: dict[Callable[..., Any], Callable[..., Any]] = {}


def workflow(
    name: str, *, max_recovery_attempts: int = DEFAULT_MAX_RECOVERY_ATTEMPTS
) -> Callable[[F], F]:
    """Declare a durable workflow (sync or async). Its arguments must be JSON values.

    `name` is its durable identity: rows in the job tables refer to it, so never rename a
    workflow that may have work in flight. After `max_recovery_attempts` crashes while
    running it, it stops as MAX_RECOVERY_ATTEMPTS_EXCEEDED and shows in `list_failed()`.
    """
    if not name or name in _WORKFLOW_NAMES.values():
        raise DeclarationError(f"workflow name {name!r} is empty or already declared")

    def decorate(fn: F) -> F:
        registered = DBOS.workflow(name=name, max_recovery_attempts=max_recovery_attempts)(fn)

        @functools.wraps(registered)
        def call(*args: Any, **kwargs: Any) -> Any:
            # Outside `inline()` (always, in production) this one check is the whole overhead.
            if ACTIVE.run is None:
                return registered(*args, **kwargs)
            return fn(*args, **kwargs)  # inline: the body itself (an async one's coroutine)

        _WORKFLOW_NAMES[call] = name
        _WORKFLOW_NAMES[registered] = name
        _DBOS_FUNCTIONS[call] = registered
        return cast(F, call)

    return decorate


def declared_workflows() -> dict[str, str]:
    """Every declared workflow's durable name -> the module that declares it."""
    return {name: fn.__module__ for fn, name in _WORKFLOW_NAMES.items()}


def dbos_function(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The DBOS-registered function behind a declared workflow (what DBOS APIs must be given)."""
    workflow_name(fn)
    return _DBOS_FUNCTIONS.get(fn, fn)


def workflow_name(fn: Callable[..., Any]) -> str:
    """The durable name of a function declared with `@workflow`."""
    try:
        return _WORKFLOW_NAMES[fn]
    except (KeyError, TypeError):
        raise DeclarationError(f"{fn!r} is not declared with @engine.workflow") from None


_STEP_NAMES: dict[str, str] = {}


def declared_steps() -> dict[str, str]:
    """Every declared step's durable name -> the module that declares it (a test pins them: a
    step's name is in every checkpoint, so moving a function must not rename it)."""
    return dict(_STEP_NAMES)


def step(
    *,
    name: str | None = None,
    retries: int = 0,
    backoff_seconds: float = 1.0,
    backoff_rate: float = 2.0,
    retry_on: Callable[[BaseException], bool] | None = None,
    timeout_seconds: float | None = None,
) -> Callable[[F], F]:
    """Declare a step: its result is checkpointed, so after a crash it is not run again.

    A step that raises is retried up to `retries` times (waiting `backoff_seconds`, times
    `backoff_rate` after each attempt) when `retry_on(error)` is true (default: always).
    Independently of that, a transient database error (connection lost or refused, server
    restarting, SQLite locked) runs the body again after a capped backoff, for as long as
    `engine.transient_db_retry_minutes` allows: a database restart pauses the step instead of
    ending its workflow in ERROR. The body must survive a re-run, as after a crash.
    The result must be JSON-serialisable; the workflow receives it as plain JSON.
    `timeout_seconds` applies to async steps only.
    """
    if retries < 0:
        raise DeclarationError("retries must be >= 0")

    def decorate(fn: F) -> F:
        step_name = name or f"{fn.__module__.rsplit('.', 1)[-1]}.{fn.__qualname__}"
        _STEP_NAMES[step_name] = fn.__module__
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                return to_json_value(
                    await run_with_retry_async(step_name, lambda: fn(*args, **kwargs))
                )

            inner: Callable[..., Any] = run_async
        else:
            if timeout_seconds is not None:
                raise DeclarationError("timeout_seconds needs an async step")

            @functools.wraps(fn)
            def run_sync(*args: Any, **kwargs: Any) -> Any:
                return to_json_value(run_with_retry(step_name, lambda: fn(*args, **kwargs)))

            inner = run_sync
        decorated = DBOS.step(
            # DBOS names a step by its bare function name; two flows' `_sweep_step` would clash.
            name=step_name,
            retries_allowed=retries > 0,
            max_attempts=retries + 1,
            interval_seconds=backoff_seconds,
            backoff_rate=backoff_rate,
            should_retry=retry_on,
            timeout_seconds=timeout_seconds,
        )(inner)
        policy = StepPolicy(
            retries=retries,
            backoff_seconds=backoff_seconds,
            backoff_rate=backoff_rate,
            retry_on=retry_on,
        )
        call: Callable[..., Any]
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(decorated)
            async def call_async(*args: Any, **kwargs: Any) -> Any:
                run = ACTIVE.run
                if run is None:
                    return await decorated(*args, **kwargs)
                return await run.run_step_async(step_name, policy, inner, *args, **kwargs)

            call = call_async
        else:

            @functools.wraps(decorated)
            def call_sync(*args: Any, **kwargs: Any) -> Any:
                run = ACTIVE.run
                if run is None:
                    return decorated(*args, **kwargs)
                return run.run_step(step_name, policy, inner, *args, **kwargs)

            call = call_sync
        return cast(F, call)

    return decorate


async def offload(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call a sync step (or any blocking function) from an async workflow without blocking the loop.

    DBOS runs a sync step called directly from an async workflow on the event loop itself, so its
    database work (and a wait for SQLite's write lock) would stall every other async workflow of
    the process. Here it runs in a worker thread with the workflow's context, exactly as
    `DBOS.run_step_async` does with a sync step, so checkpoints and replay are unchanged.
    """
    return await asyncio.to_thread(fn, *args, **kwargs)


def sleep(seconds: float) -> None:
    """Durable sleep inside a sync workflow: after a restart only the remainder is slept.

    Under `inline()` it advances the fake clock and is recorded instead."""
    run = ACTIVE.run
    if run is not None:
        run.sleep(seconds)
        return
    DBOS.sleep(seconds)


async def sleep_async(seconds: float) -> None:
    """Durable sleep inside an async workflow (under `inline()`: recorded, no wait)."""
    run = ACTIVE.run
    if run is not None:
        run.sleep(seconds)
        return
    await DBOS.sleep_async(seconds)


def workflow_id() -> str | None:
    """The id of the workflow this code runs in (None outside a workflow; a made-up one
    under `inline()`)."""
    run = ACTIVE.run
    if run is not None:
        return run.workflow_id
    return DBOS.workflow_id


# --- queues -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class RateLimit:
    """At most `limit` jobs of the queue start in any window of `period_seconds` (fleet-wide)."""

    limit: int
    period_seconds: float

    def __post_init__(self) -> None:
        if self.limit < 1 or self.period_seconds <= 0:
            raise DeclarationError("a rate limit needs limit >= 1 and period_seconds > 0")


@dataclass(frozen=True, kw_only=True, slots=True)
class QueueSpec:
    """A named queue. All limits hold across every worker process sharing the database.

    - `concurrency`: jobs running at once in the whole fleet (None: unbounded).
    - `worker_concurrency`: jobs running at once in one process (None: `engine.worker_concurrency`).
    - `partition_concurrency`: jobs of one partition key running at once in the fleet;
      `1` serialises per key (`order:<no>`, `sku:<no>`). A partitioned queue needs a
      `partition_key` on every enqueue and cannot be debounced.
    - `rate_limit`: jobs started per period, e.g. one of Extend's rate-limit groups.
    - `poll_seconds`: how often a `worker` looks for jobs enqueued by other processes (an `all`
      process: at least every `_bells.ALONE_POLL_SECONDS`); jobs this process enqueues start
      at once either way (`_bells.py`).
    """

    name: str
    concurrency: int | None = None
    worker_concurrency: int | None = None
    partition_concurrency: int | None = None
    rate_limit: RateLimit | None = None
    poll_seconds: float = 1.0

    @property
    def partitioned(self) -> bool:
        return self.partition_concurrency is not None


_QUEUES: dict[str, QueueSpec] = {}


def queue(
    name: str,
    *,
    concurrency: int | None = None,
    worker_concurrency: int | None = None,
    partition_concurrency: int | None = None,
    rate_limit: RateLimit | None = None,
    poll_seconds: float = 1.0,
) -> QueueSpec:
    """Declare a queue (idempotent for an identical declaration) and return its spec."""
    spec = QueueSpec(
        name=name,
        concurrency=concurrency,
        worker_concurrency=worker_concurrency,
        partition_concurrency=partition_concurrency,
        rate_limit=rate_limit,
        poll_seconds=poll_seconds,
    )
    if name.startswith("_dbos_") or not name:
        raise DeclarationError(f"queue name {name!r} is reserved or empty")
    existing = _QUEUES.get(name)
    if existing is not None and existing != spec:
        raise DeclarationError(
            f"queue {name!r} declared twice with different limits: {existing} vs {spec}"
        )
    _QUEUES[name] = spec
    return spec


def declared_queues() -> dict[str, QueueSpec]:
    return dict(_QUEUES)


# --- schedules ----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class ScheduleSpec:
    name: str
    workflow: Callable[..., Any]
    cron: str
    queue: str | None


_SCHEDULES: dict[str, ScheduleSpec] = {}


def interval_to_cron(every: timedelta) -> str:
    """A six-field (seconds first) cron expression that fires every `every`.

    Only intervals that divide the next unit evenly are exact in cron (e.g. 5 s, 10 min,
    6 h); anything else is refused rather than silently drifting.
    """
    seconds = every.total_seconds()
    if seconds != int(seconds) or seconds <= 0:
        raise DeclarationError(f"schedule interval must be a whole number of seconds, got {every}")
    s = int(seconds)
    if s < 60 and 60 % s == 0:
        return f"*/{s} * * * * *"
    if s % 60 == 0 and s < 3600 and 60 % (s // 60) == 0:
        return f"0 */{s // 60} * * * *"
    if s % 3600 == 0 and s < 86400 and 24 % (s // 3600) == 0:
        return f"0 0 */{s // 3600} * * *"
    if s == 86400:
        return "0 0 0 * * *"
    raise DeclarationError(
        f"schedule interval {every} does not divide a minute, an hour or a day evenly; "
        "use a divisor (e.g. 5 s, 10 min, 15 min, 6 h) or pass cron="
    )


def schedule(
    name: str,
    workflow_fn: Callable[..., Any],
    *,
    every: timedelta | None = None,
    cron: str | None = None,
    queue: str | None = None,
) -> ScheduleSpec:
    """Run `workflow_fn(scheduled_at: datetime, context: Any)` on a schedule, once per tick
    across the whole fleet (the tick's workflow id is derived from its time).

    Give `every` (an interval dividing a minute/hour/day) or a six-field `cron`.
    """
    if (every is None) == (cron is None):
        raise DeclarationError("give exactly one of every= or cron=")
    workflow_name(workflow_fn)  # must be a declared workflow
    expression = cron if cron is not None else interval_to_cron(every)  # type: ignore[arg-type]
    spec = ScheduleSpec(name=name, workflow=workflow_fn, cron=expression, queue=queue)
    existing = _SCHEDULES.get(name)
    if existing is not None and existing.workflow is not workflow_fn:
        raise DeclarationError(f"schedule {name!r} already runs another workflow")
    # Same workflow, other timing: the interval comes from settings, and the latest
    # configuration of this process wins (a Connector rebuilt with other settings).
    _SCHEDULES[name] = spec
    return spec


def declared_schedules() -> dict[str, ScheduleSpec]:
    return dict(_SCHEDULES)


# --- on launch ----------------------------------------------------------------------------

_ON_LAUNCH: dict[str, Callable[[Any], None]] = {}


def on_launch(name: str, callback: Callable[[Any], None]) -> None:
    """Run `callback(engine)` once an `Engine` has launched in a role that executes work
    (`all`, `worker`), every time one launches; never in the `web` role or after `connect()`.

    Replaces polling for "is the engine up yet": start-up work (a first load, a flush of
    what a crash left behind) can enqueue as soon as queues run. Keyed by `name`, so a flow
    that declares again (a Connector rebuilt with other settings) replaces its callback. A
    callback that raises is logged and the launch goes on: start-up work is a shortcut that
    the schedules cover anyway.
    """
    _ON_LAUNCH[name] = callback


def declared_on_launch() -> dict[str, Callable[[Any], None]]:
    return dict(_ON_LAUNCH)


def forget_on_launch(name: str) -> None:
    """Drop an on-launch callback (tests)."""
    _ON_LAUNCH.pop(name, None)


def forget_schedule(name: str) -> None:
    """Drop a schedule declaration (tests; a removed schedule is deleted at next launch)."""
    _SCHEDULES.pop(name, None)
