"""The sweep: orders changed in Extend since the cursor, fetched and applied when newer than our
copy (it repairs lost webhooks); scheduled as the `orders.sweep` job."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from extend_connector import engine
from extend_connector.domain import OrderState
from extend_connector.extend import NotFound, TechnicalFailure, Throttled
from extend_connector.flows import cursors
from extend_connector.flows.context import current
from extend_connector.flows.orders.base import CURSOR, SWEEP_QUEUE, TERMINAL, log
from extend_connector.flows.orders.progress import apply_state, find_local
from extend_connector.flows.orders.view import iso
from extend_connector.flows.sync import Progress, SweepResult, Tally, scheduled
from extend_connector.settings import Settings
from extend_connector.store.models import OrderRow


def _open_since(session: Session, overlap: timedelta) -> datetime | None:
    """Without a cursor: from the oldest open order of ours (older changes cannot concern us)."""
    oldest = session.execute(
        sa.select(sa.func.min(OrderRow.created_at)).where(
            OrderRow.order_number.is_not(None), OrderRow.status.not_in(TERMINAL)
        )
    ).scalar()
    return None if oldest is None else oldest - overlap


async def sweep_orders(
    full: bool = False, dry_run: bool = False, progress: Progress | None = None
) -> SweepResult:
    """List orders changed since the cursor; fetch and apply each of ours that is newer than our
    copy. `full` reads from the oldest open order instead of the cursor; `dry_run` fetches and
    counts but writes nothing (the cursor does not move).

    Outcomes: `updated` (the shop was told), `unchanged` (fetched, nothing the shop shows
    changed), `skipped` (not ours, or our copy is as new), `failed` (fetch failed; the cursor
    stays at its change date so the next sweep reads it again).
    """
    ctx = current()
    now = ctx.clock()
    overlap = timedelta(seconds=ctx.settings.sync.overlap_seconds)
    extend = ctx.extend()
    tally = Tally("orders", progress, full=full, dry_run=dry_run, stats=extend.stats)

    def begin() -> datetime | None:
        with ctx.db.read() if dry_run else ctx.db.write() as session:
            since = (
                None
                if dry_run
                else cursors.start(session, CURSOR, now=now, overlap=overlap, full=full)
            )
            if dry_run and not full:
                peek = cursors.peek(session, CURSOR)
                since = peek.high_water_mark - overlap if peek and peek.high_water_mark else None
            return since if since is not None else _open_since(session, overlap)

    since = await asyncio.to_thread(begin)
    latest: datetime | None = None
    first_failed: datetime | None = None
    if since is not None:
        async for change in extend.orders_changed_since(since, progress=tally.page):
            latest = change.changed_at if latest is None else max(latest, change.changed_at)

            def local(c: Any = change) -> tuple[bool, datetime | None]:
                with ctx.db.read() as session:
                    row = find_local(session, c.order_number, c.order_number_external)
                    return (row is not None, None if row is None else row.extend_changed_at)

            ours, known_at = await asyncio.to_thread(local)
            if not ours or (known_at is not None and known_at >= change.changed_at):
                tally.record("skipped")
                continue
            try:
                state = await extend.get_order(change.order_number)
            except (TechnicalFailure, Throttled, NotFound) as exc:
                tally.record("failed")
                log.warning(
                    "order_sweep_fetch_failed", order_number=change.order_number, error=str(exc)
                )
                first_failed = (
                    change.changed_at
                    if first_failed is None
                    else min(first_failed, change.changed_at)
                )
                continue
            if dry_run:
                tally.record(
                    "updated" if known_at is None or state.changed_at > known_at else "unchanged"
                )
                continue

            def write(st: OrderState = state) -> str:
                with ctx.db.write() as session:
                    return apply_state(session, st, now=ctx.clock())

            applied = await asyncio.to_thread(write)
            tally.record({"applied": "updated", "unchanged": "unchanged"}.get(applied, "skipped"))
    mark: datetime | None = None
    if not dry_run:
        # A failed fetch holds the mark at its change date, so the next sweep reads it again.
        seen = latest if first_failed is None else first_failed
        summary = tally.result().as_stats()

        def finish() -> datetime | None:
            with ctx.db.write() as session:
                return cursors.finish(
                    session,
                    CURSOR,
                    latest_seen=seen if seen is not None else now,
                    stats=summary,
                    now=ctx.clock(),
                )

        mark = await asyncio.to_thread(finish)
    result = tally.result(cursor=mark)
    log.info("orders_swept", since=iso(since), **result.as_stats())
    return result


@engine.step(name="orders.sweep_step")
async def _sweep_step() -> dict[str, Any]:
    return await scheduled("orders", sweep_orders)


@engine.workflow("orders.sweep")
async def scheduled_sweep(scheduled_at: Any = None, context: Any = None) -> dict[str, Any]:
    """The scheduled reconciliation (one at a time: its queue has concurrency 1)."""
    result: dict[str, Any] = await _sweep_step()
    return result


def declare_schedules(settings: Settings) -> None:
    every = timedelta(minutes=settings.sync.orders_sweep_minutes)
    engine.schedule(
        "orders.sweep",
        scheduled_sweep,
        every=timedelta(seconds=round(every.total_seconds())),
        queue=SWEEP_QUEUE,
    )
