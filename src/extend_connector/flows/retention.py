"""Retention: what the connector has finished with is deleted after a while, nothing else.

Without it the database only grows: an outbox row per change told to the shop (a balance burst
is thousands), an inbox row per Extend webhook delivery, a job with its checkpoints per order,
drain and delivery. Queue polls and the drainer's scans slow down with the tables, and a SQLite
file fills the disk. The watchdog calls `prune` on every run; each call deletes at most `BATCH`
rows per kind, oldest first, in short transactions, so a backlog of months is worked off over
a few runs without holding locks that webhooks or orders wait on.

What goes, after its setting's days (`store.*_retention_days`,
`engine.finished_job_retention_days`):
- outbox events the shop received (`delivered_at`), and events that were never for delivery
  (written while no shop webhook was configured: never attempted, no `next_attempt_at`).
  An event still owed to the shop, or parked after the shop refused it, is never deleted;
- Extend webhook deliveries (kept far longer than Extend's 5 minutes of retries, so a late
  retry is still answered as a duplicate);
- parked failures resolved or dismissed (open ones stay until a person acts), and alerts
  resolved as long ago (flows/alerts.py; open ones stay);
- syncs a person started that finished (done or failed) that long ago (queued and running ones
  stay);
- jobs that finished successfully, with their checkpoints (failed, cancelled, queued and
  running jobs stay: they are evidence or work).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
import structlog

from extend_connector.flows.context import current
from extend_connector.store.models import (
    AlertRow,
    InboxRow,
    OutboxRow,
    ParkedFailureRow,
    SyncRunRow,
)

log = structlog.get_logger("extend_connector.retention")

BATCH = 5_000  # rows per kind and call

_OUTBOX = cast(sa.Table, OutboxRow.__table__)
_INBOX = cast(sa.Table, InboxRow.__table__)
_FAILURES = cast(sa.Table, ParkedFailureRow.__table__)
_ALERTS = cast(sa.Table, AlertRow.__table__)
_RUNS = cast(sa.Table, SyncRunRow.__table__)


@dataclass(frozen=True, kw_only=True, slots=True)
class Pruned:
    """Rows deleted by one `prune` call, per kind."""

    outbox: int = 0
    inbox: int = 0
    failures: int = 0
    alerts: int = 0
    sync_runs: int = 0
    jobs: int = 0

    @property
    def total(self) -> int:
        return self.outbox + self.inbox + self.failures + self.alerts + self.sync_runs + self.jobs

    def as_json(self) -> dict[str, Any]:
        return {
            "outbox": self.outbox,
            "inbox": self.inbox,
            "failures": self.failures,
            "alerts": self.alerts,
            "sync_runs": self.sync_runs,
            "jobs": self.jobs,
        }


def _delete_batch(table: sa.Table, key: sa.Column[Any], where: sa.ColumnElement[bool]) -> int:
    """Delete up to BATCH rows matching `where`, oldest keys first, in one short transaction."""
    ctx = current()
    with ctx.db.write() as session:
        chosen = sa.select(key).where(where).order_by(key).limit(BATCH).scalar_subquery()
        result = session.execute(sa.delete(table).where(key.in_(chosen)))
        return int(cast(sa.CursorResult[Any], result).rowcount or 0)


def prune(now: datetime | None = None) -> Pruned:
    """Delete one batch of each kind that is past its retention (see the module docs)."""
    ctx = current()
    now = now or ctx.clock()
    store = ctx.settings.store

    def before(days: float) -> datetime:
        return now - timedelta(days=days)

    outbox_cutoff = before(store.outbox_retention_days)
    o = _OUTBOX.c
    outbox = _delete_batch(
        _OUTBOX,
        o.id,
        sa.or_(
            o.delivered_at < outbox_cutoff,
            sa.and_(
                o.delivered_at.is_(None),
                o.next_attempt_at.is_(None),
                o.attempts == 0,
                o.created_at < outbox_cutoff,
            ),
        ),
    )
    inbox = _delete_batch(
        _INBOX, _INBOX.c.delivery_id, _INBOX.c.received_at < before(store.inbox_retention_days)
    )
    closed_before = before(store.resolved_failure_retention_days)
    failures = _delete_batch(_FAILURES, _FAILURES.c.id, _FAILURES.c.resolved_at < closed_before)
    alerts = _delete_batch(_ALERTS, _ALERTS.c.id, _ALERTS.c.resolved_at < closed_before)
    r = _RUNS.c
    sync_runs = _delete_batch(
        _RUNS,
        r.id,
        sa.and_(
            r.status.in_(("done", "failed")),
            r.finished_at < before(store.sync_run_retention_days),
        ),
    )
    jobs = ctx.engine.prune_succeeded(
        completed_before=before(ctx.settings.engine.finished_job_retention_days), limit=BATCH
    )
    pruned = Pruned(
        outbox=outbox,
        inbox=inbox,
        failures=failures,
        alerts=alerts,
        sync_runs=sync_runs,
        jobs=jobs,
    )
    if pruned.total:
        log.info(
            "retention_pruned", **pruned.as_json(), more=max(pruned.as_json().values()) >= BATCH
        )
    return pruned
