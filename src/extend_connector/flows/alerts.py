"""Alerts: tell an operator when something needs them, once per condition, and when it clears.

Every `alerts.check_seconds` (one run at a time across the fleet) `evaluate` reads the state
(flows/monitor.py) and the open parked failures and decides which conditions hold:

- `failure:<id>` (`parked_failure`): the parked failure `<id>` is open (one alert per failure);
- `stale:<data point>` (`stale_data`): Extend last confirmed the data point longer ago than
  `alerts.stale_minutes`, or than twice its sweep interval when that is longer;
- `extend_unreachable`: Extend has answered no process for `alerts.unreachable_minutes`;
- `outbox_backlog`: `alerts.outbox_pending` events wait for the shop, or the oldest has waited
  `alerts.outbox_age_minutes`;
- `executor_gone:<executor id>` (`executor_gone`): a process that ran jobs stopped beating without
  a clean stop and has not come back for `engine.executor_dead_seconds` (its running jobs went
  back to their queues: flows/executors.py); resolved when it beats again, or after a day.

A condition that starts holding opens one `alerts` row (a partial unique index keeps it to one
open row per condition); one that stops holding gets `resolved_at`. Then `deliver` sends what is
owed: an `alert.opened` notice for every row not yet announced, an `alert.resolved` notice for
every resolved row whose opening was announced. A send that fails is tried again at the next
run (the notice keeps its id, so a receiver can dedupe). With no channel configured alerts are
kept (and shown by `/metrics`) but not sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
import structlog

from extend_connector import engine, notify
from extend_connector.flows import monitor
from extend_connector.flows.balances import sweep_interval
from extend_connector.flows.context import FlowContext, current
from extend_connector.settings import Settings
from extend_connector.store.models import AlertRow, ParkedFailureRow

log = structlog.get_logger("extend_connector.alerts")

QUEUE = "alerts"
engine.queue(QUEUE, concurrency=1)

FAILURE_ALERTS_AT_MOST = 200  # open failures read per run (the oldest first)
SEND_AT_MOST = 100  # notices sent per run; the rest wait for the next


@dataclass(frozen=True, kw_only=True, slots=True)
class Condition:
    key: str
    kind: str
    summary: str
    detail: dict[str, Any] = field(default_factory=dict)


def stale_threshold_seconds(settings: Settings, point: str) -> float:
    """Seconds without a confirmation after which `point` is stale: `alerts.stale_minutes`, or
    twice the data point's own sweep interval when that is longer (a quiet, healthy data point is
    confirmed by its sweep only)."""
    sync = settings.sync
    interval_minutes = {
        "orders": sync.orders_sweep_minutes,
        "balances": sync.balances_sweep_minutes,
        "products": sync.products_sweep_minutes,
        "customers": sync.customers_sweep_minutes,
        "prices": sync.prices_full_refresh_minutes,
    }.get(point, 0.0)
    return max(settings.alerts.stale_minutes, 2 * interval_minutes) * 60


class _DownSince:
    """When this process first saw Extend unreachable without any success on record."""

    at: datetime | None = None


_down_since = _DownSince()


def conditions(
    settings: Settings, snap: monitor.Snapshot, open_failures: Sequence[ParkedFailureRow]
) -> list[Condition]:
    """Every condition that holds now."""
    alerts = settings.alerts
    found = [
        Condition(
            key=f"failure:{f.id}",
            kind="parked_failure",
            summary=f"{f.kind} {f.key} parked ({f.reason}): "
            + str((f.detail or {}).get("message") or "")[:300],
            detail={"failureId": f.id, "kind": f.kind, "key": f.key, "reason": f.reason},
        )
        for f in open_failures
    ]
    for point in snap.confirmed:
        age = snap.age_seconds(point)
        limit = stale_threshold_seconds(settings, point)
        if age is not None and age > limit:
            found.append(
                Condition(
                    key=f"stale:{point}",
                    kind="stale_data",
                    summary=f"{point} not confirmed by Extend for {age / 60:.1f} min "
                    f"(threshold {limit / 60:g} min)",
                    detail={
                        "dataPoint": point,
                        "confirmedAt": snap.confirmed[point],
                        "ageSeconds": round(age, 1),
                        "thresholdSeconds": limit,
                    },
                )
            )
    state = snap.reachability
    if state.reachable:
        _down_since.at = None
    else:
        since = state.last_success_at
        if since is None:
            _down_since.at = _down_since.at or snap.at
            since = _down_since.at
        down = (snap.at - since).total_seconds()
        if down >= alerts.unreachable_minutes * 60:
            found.append(
                Condition(
                    key="extend_unreachable",
                    kind="extend_unreachable",
                    summary=f"Extend unreachable for {down / 60:.1f} min: {state.last_error}",
                    detail={
                        "lastSuccessAt": state.last_success_at,
                        "lastFailureAt": state.last_failure_at,
                        "lastError": state.last_error,
                    },
                )
            )
    oldest = snap.outbox_oldest_seconds
    if snap.outbox_pending >= alerts.outbox_pending or (
        oldest is not None and oldest >= alerts.outbox_age_minutes * 60
    ):
        found.append(
            Condition(
                key="outbox_backlog",
                kind="outbox_backlog",
                summary=f"{snap.outbox_pending} events wait for the shop, the oldest for "
                f"{(oldest or 0) / 60:.1f} min",
                detail={"pending": snap.outbox_pending, "oldestSeconds": oldest},
            )
        )
    for gone in snap.executors_gone:
        silent = (snap.at - gone.seen_at).total_seconds()
        found.append(
            Condition(
                key=f"executor_gone:{gone.executor_id}",
                kind="executor_gone",
                summary=f"{gone.role} process {gone.executor_id} ({gone.process}) not heard of "
                f"for {silent / 60:.1f} min without a clean stop; its running jobs went back to "
                "their queues, the others run them (fewer workers until it is restarted)",
                detail={
                    "executorId": gone.executor_id,
                    "role": gone.role,
                    "process": gone.process,
                    "seenAt": gone.seen_at,
                },
            )
        )
    return found


def _jsonable(detail: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in detail.items()}


def evaluate(ctx: FlowContext) -> dict[str, int]:
    """Open a row for every condition that newly holds, resolve the rows whose condition
    cleared; returns the counts."""
    snap = monitor.read(ctx)
    now = snap.at
    with ctx.db.write() as session:
        failures = list(
            session.scalars(
                sa.select(ParkedFailureRow)
                .where(ParkedFailureRow.resolved_at.is_(None))
                .order_by(ParkedFailureRow.id)
                .limit(FAILURE_ALERTS_AT_MOST)
            )
        )
        holding = {c.key: c for c in conditions(ctx.settings, snap, failures)}
        open_rows = {
            row.condition: row
            for row in session.scalars(sa.select(AlertRow).where(AlertRow.resolved_at.is_(None)))
        }
        opened = resolved = 0
        for key, condition in holding.items():
            if key in open_rows:
                continue
            session.add(
                AlertRow(
                    condition=key,
                    kind=condition.kind,
                    summary=condition.summary[:1000],
                    detail=_jsonable(condition.detail),
                    opened_at=now,
                    attempts=0,
                )
            )
            opened += 1
            log.warning("alert_opened", condition=key, summary=condition.summary)
        for key, row in open_rows.items():
            # Failures beyond the read limit are not known to be resolved: leave them open.
            beyond = key.startswith("failure:") and len(failures) >= FAILURE_ALERTS_AT_MOST
            if key not in holding and not beyond:
                row.resolved_at = now
                resolved += 1
                log.warning("alert_resolved", condition=key, summary=row.summary)
    return {"opened": opened, "resolved": resolved, "open": len(holding)}


def _notice(row: AlertRow, event: str) -> notify.Notice:
    return notify.Notice(
        notice_id=f"alert-{row.id}-{event.removeprefix('alert.')}",
        event=event,
        alert_id=row.id,
        condition=row.condition,
        kind=row.kind,
        summary=row.summary,
        detail=dict(row.detail or {}),
        opened_at=row.opened_at,
        resolved_at=row.resolved_at,
    )


def deliver(ctx: FlowContext, notifiers: Sequence[notify.Notifier]) -> dict[str, int]:
    """Send every notice owed (oldest first); returns how many were sent and failed."""
    sent = failed = 0
    if not notifiers:
        return {"sent": 0, "failed": 0}
    with ctx.db.read() as session:
        owed = [
            (row.id, "alert.opened" if row.open_sent_at is None else "alert.resolved")
            for row in session.scalars(
                sa.select(AlertRow)
                .where(
                    sa.or_(
                        AlertRow.open_sent_at.is_(None),
                        sa.and_(
                            AlertRow.resolved_at.is_not(None), AlertRow.resolved_sent_at.is_(None)
                        ),
                    )
                )
                .order_by(AlertRow.id)
                .limit(SEND_AT_MOST)
            )
        ]
    for alert_id, event in owed:
        with ctx.db.read() as session:
            row = session.get(AlertRow, alert_id)
            if row is None:
                continue
            notice = _notice(row, event)
        error: str | None = None
        for notifier in notifiers:
            try:
                notifier.send(notice)
            except notify.NotifyError as exc:
                error = str(exc)[:500]
        with ctx.db.write() as session:
            row = session.get(AlertRow, alert_id)
            if row is None:
                continue
            if error is not None:
                row.attempts += 1
                row.last_error = error
                failed += 1
                log.warning("alert_not_sent", condition=row.condition, error=error)
                continue
            now = ctx.clock()
            row.last_error = None
            if event == "alert.opened":
                row.open_sent_at = now
            else:
                row.resolved_sent_at = now
            sent += 1
    if failed == 0:
        _settle_unannounced(ctx)
    return {"sent": sent, "failed": failed}


def _settle_unannounced(ctx: FlowContext) -> None:
    """Nothing else to do for a resolved alert that was never announced open: it opened and
    cleared between two sends (its opened notice went out in the same pass, or never will)."""
    with ctx.db.write() as session:
        session.execute(
            sa.update(AlertRow)
            .where(
                AlertRow.resolved_at.is_not(None),
                AlertRow.open_sent_at.is_(None),
                AlertRow.resolved_sent_at.is_(None),
            )
            .values(resolved_sent_at=ctx.clock())
        )


def run_once(
    ctx: FlowContext | None = None, notifiers: Sequence[notify.Notifier] | None = None
) -> dict[str, int]:
    """One evaluation and delivery pass (the scheduled job; tests call it directly)."""
    ctx = ctx or current()
    if notifiers is None:
        notifiers = notify.from_settings(ctx.settings.alerts)
    return {**evaluate(ctx), **deliver(ctx, notifiers)}


@engine.step(name="alerts.pass")
def _pass() -> dict[str, int]:
    try:
        current()
    except RuntimeError:
        return {}  # an engine launched without a Connector (a test, a script): nothing to watch
    return run_once()


@engine.workflow("alerts.run")
def scheduled_alerts(scheduled_at: Any = None, context: Any = None) -> dict[str, int]:
    result: dict[str, int] = _pass()
    return result


def declare_schedules(settings: Settings) -> None:
    engine.schedule(
        "alerts",
        scheduled_alerts,
        every=sweep_interval(settings.alerts.check_seconds / 60),
        queue=QUEUE,
    )


__all__ = [
    "Condition",
    "conditions",
    "declare_schedules",
    "deliver",
    "evaluate",
    "run_once",
    "stale_threshold_seconds",
]
