"""Syncs a person starts (the console's Sync page): durable, one at a time per data point, with
progress while they run and their result after (`sync_runs`, migration 0010).

`request()` writes the run (queued) and its job in one transaction; the job (`sync.run`, queue
`sync-runs`, partitioned by data point so two runs of one data point never overlap) runs the
same sweep `extend-connector sync` runs (`SWEEPS`), writes its progress about once a second,
and records the result or the error. A run whose process dies is run again from the start by
the engine's recovery: every sweep is idempotent (and a dry run writes nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
import structlog

from extend_connector import engine
from extend_connector.flows import balances, customers, orders, prices, products
from extend_connector.flows.context import current
from extend_connector.flows.sync import Progress, SweepResult, scope_off
from extend_connector.store.models import SyncRunRow

log = structlog.get_logger("extend_connector.runs")

QUEUE = "sync-runs"
engine.queue(QUEUE, partition_concurrency=1, worker_concurrency=4)
PROGRESS_EVERY_SECONDS = 1.0
HISTORY = 50

Sweep = Callable[[bool, bool, Progress | None], Coroutine[Any, Any, SweepResult]]
# The sweep of each data point a person (`extend-connector sync`, the console) can run now.
SWEEPS: dict[str, Sweep] = {
    "products": products.sweep_products,
    "customers": customers.sweep_customers,
    "prices": prices.sweep_prices,
    "balances": balances.sweep_balances,
    "orders": orders.sweep_orders,
}


class RunRefused(ValueError):
    """The run cannot start (unknown data point, scope off); the message says why."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Run:
    id: int
    data_point: str
    full: bool
    dry_run: bool
    status: str
    requested_by: str
    requested_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None


def _view(row: SyncRunRow) -> Run:
    return Run(
        id=row.id,
        data_point=row.data_point,
        full=row.full,
        dry_run=row.dry_run,
        status=row.status,
        requested_by=row.requested_by,
        requested_at=row.requested_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        progress=dict(row.progress or {}),
        result=None if row.result is None else dict(row.result),
        error=row.error,
    )


def available() -> dict[str, str | None]:
    """Each data point and why it cannot run here (None: it can)."""
    settings = current().settings
    return {name: scope_off(settings, name) for name in SWEEPS}


def request(data_point: str, *, full: bool = False, dry_run: bool = False, by: str) -> int:
    """Queue a run; returns its id. Refused for an unknown data point or one whose scope is off."""
    if data_point not in SWEEPS:
        raise RunRefused(f"unknown data point {data_point!r} (known: {', '.join(SWEEPS)})")
    off = scope_off(current().settings, data_point)
    if off is not None:
        raise RunRefused(f"{data_point} is not synced here: {off}")
    ctx = current()
    with ctx.db.write() as session:
        row = SyncRunRow(
            data_point=data_point,
            full=full,
            dry_run=dry_run,
            status="queued",
            requested_by=by[:64],
            requested_at=ctx.clock(),
            progress={},
        )
        session.add(row)
        session.flush()
        ctx.engine.enqueue_in_transaction(
            session,
            run_job,
            row.id,
            queue=QUEUE,
            partition_key=data_point,
            workflow_id=f"sync-run-{row.id}",
        )
        log.info("sync_run_requested", run=row.id, data_point=data_point, full=full, by=by)
        return row.id


def history(limit: int = HISTORY) -> list[Run]:
    with current().db.read() as session:
        return [
            _view(r)
            for r in session.scalars(
                sa.select(SyncRunRow).order_by(SyncRunRow.id.desc()).limit(limit)
            )
        ]


def get(run_id: int) -> Run | None:
    with current().db.read() as session:
        row = session.get(SyncRunRow, run_id)
        return None if row is None else _view(row)


class _Counters:
    """Progress as a run's row shows it: pages, records read, outcomes, Extend calls."""

    def __init__(self) -> None:
        self.state: dict[str, Any] = {"pages": 0, "records": 0, "total": None, "outcomes": {}}

    def begin(self, data_point: str, *, total: int | None = None) -> None:
        if total is not None:
            self.state["total"] = total

    def page(self, *, pages: int, records: int, total: int | None) -> None:
        self.state.update(pages=pages, records=records)
        if total is not None:
            self.state["total"] = total

    def record(self, outcome: str) -> None:
        outcomes = self.state["outcomes"]
        outcomes[outcome] = outcomes.get(outcome, 0) + 1

    def api(self, *, calls: int, rate_limit_waits: int, waited_seconds: float) -> None:
        self.state.update(api_calls=calls, rate_limit_waits=rate_limit_waits)


def _update(run_id: int, **values: Any) -> None:
    ctx = current()
    with ctx.db.write() as session:
        row = session.get(SyncRunRow, run_id)
        if row is not None:
            for name, value in values.items():
                setattr(row, name, value)


@engine.step(name="sync.run_step")
async def _run_step(run_id: int) -> dict[str, Any]:
    ctx = current()
    run = await asyncio.to_thread(get, run_id)
    if run is None or run.status in ("done", "failed"):
        return {"status": "gone" if run is None else run.status}
    await asyncio.to_thread(_update, run_id, status="running", started_at=ctx.clock(), error=None)
    counters = _Counters()

    async def report() -> None:
        while True:
            await asyncio.sleep(PROGRESS_EVERY_SECONDS)
            await asyncio.to_thread(_update, run_id, progress=dict(counters.state))

    reporter = asyncio.create_task(report())
    try:
        result = await SWEEPS[run.data_point](run.full, run.dry_run, counters)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"[:2000]
        log.error("sync_run_failed", run=run_id, data_point=run.data_point, error=error)
        await asyncio.to_thread(
            _update,
            run_id,
            status="failed",
            finished_at=ctx.clock(),
            error=error,
            progress=dict(counters.state),
        )
        return {"status": "failed", "error": error}
    finally:
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
    stats = result.as_stats()
    await asyncio.to_thread(
        _update,
        run_id,
        status="done",
        finished_at=ctx.clock(),
        progress=dict(counters.state),
        result=engine.to_json_value(stats),
    )
    log.info("sync_run_done", run=run_id, **stats)
    return {"status": "done"}


@engine.workflow("sync.run")
async def run_job(run_id: int) -> dict[str, Any]:
    result: dict[str, Any] = await _run_step(run_id)
    return result
