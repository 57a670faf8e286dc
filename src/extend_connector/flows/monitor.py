"""What an operator watches, read from the database in a few cheap queries: the gauges of
`/metrics` and the conditions the alerts evaluate (flows/alerts.py) come from one `Snapshot`.

Freshness of a data point: when Extend last confirmed it, i.e. the newer of its newest row's
`confirmed_at` and its change-date sweep's last successful finish (a sweep that found nothing
changed confirms everything kept). Only the data points in `scope` are listed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from extend_connector.flows import executors, failures, outbox
from extend_connector.flows.context import FlowContext
from extend_connector.flows.freshness import ReachabilityState, fleet_reachability
from extend_connector.settings import (
    CustomersScope,
    PricesScope,
    ProductsScope,
    Settings,
)
from extend_connector.store.models import (
    AlertRow,
    BalanceRow,
    CursorRow,
    CustomerRow,
    PriceRow,
    ProductRow,
)

# data point -> (table with `confirmed_at`, or None; its sweep's cursor, or None)
_SOURCES: dict[str, tuple[Any, str | None]] = {
    "orders": (None, "orders"),
    "balances": (BalanceRow.confirmed_at, "balances"),
    "products": (ProductRow.confirmed_at, "products"),
    "customers": (CustomerRow.confirmed_at, "customers"),
    "prices": (PriceRow.confirmed_at, None),
}


def data_points(settings: Settings) -> list[str]:
    """The data points kept from Extend under this scope."""
    points = ["orders", "balances"]
    if settings.scope.products == ProductsScope.SYNC:
        points.append("products")
    if settings.scope.customers == CustomersScope.FROM_EXTEND:
        points.append("customers")
    if settings.scope.prices == PricesScope.SYNC:
        points.append("prices")
    return points


@dataclass(frozen=True, kw_only=True, slots=True)
class Snapshot:
    at: datetime
    queues: dict[str, int] | None  # None: the job tables could not be read
    outbox_pending: int
    outbox_oldest: datetime | None
    failures: dict[str, int]  # open parked failures per kind
    confirmed: dict[str, datetime | None]  # data point -> when Extend last confirmed it
    alerts: dict[str, int]  # open alerts per kind (flows/alerts.py)
    reachability: ReachabilityState
    # Per rate-limit group called so far (Extend may answer one group and not another).
    reachability_groups: dict[str, ReachabilityState] = field(default_factory=dict)
    # Processes that ran jobs and stopped beating without a clean stop (flows/executors.py).
    executors_gone: tuple[executors.Gone, ...] = ()

    def age_seconds(self, point: str) -> float | None:
        at = self.confirmed.get(point)
        return None if at is None else max(0.0, (self.at - at).total_seconds())

    @property
    def outbox_oldest_seconds(self) -> float | None:
        if self.outbox_oldest is None:
            return None
        return max(0.0, (self.at - self.outbox_oldest).total_seconds())


def _newest(*values: datetime | None) -> datetime | None:
    present = [v for v in values if isinstance(v, datetime)]
    return max(present, default=None)


def confirmations(session: Session, points: list[str]) -> dict[str, datetime | None]:
    out: dict[str, datetime | None] = {}
    for point in points:
        column, cursor = _SOURCES[point]
        newest_row = session.scalar(sa.select(sa.func.max(column))) if column is not None else None
        swept = (
            session.scalar(sa.select(CursorRow.last_run_at).where(CursorRow.name == cursor))
            if cursor is not None
            else None
        )
        out[point] = _newest(newest_row, swept)
    return out


def read(ctx: FlowContext) -> Snapshot:
    """One snapshot (blocking: call it off the event loop)."""
    now = ctx.clock()
    with ctx.db.read() as session:
        pending, oldest = outbox.owed_counts(session)
        open_failures = failures.open_counts(session)
        confirmed = confirmations(session, data_points(ctx.settings))
        open_alerts = {
            kind: int(n)
            for kind, n in session.execute(
                sa.select(AlertRow.kind, sa.func.count())
                .where(AlertRow.resolved_at.is_(None))
                .group_by(AlertRow.kind)
            )
        }
        gone = executors.gone_executors(
            session,
            now=now,
            dead_after=timedelta(seconds=ctx.settings.engine.executor_dead_seconds),
        )
    fleet = fleet_reachability(ctx.db.engine)
    try:
        queues: dict[str, int] | None = ctx.engine.queue_depth()
    except Exception:  # the job tables may not exist yet, or the engine is not connected
        queues = None
    return Snapshot(
        at=now,
        queues=queues,
        outbox_pending=int(pending),
        outbox_oldest=oldest if isinstance(oldest, datetime) else None,
        failures=open_failures,
        confirmed=confirmed,
        alerts=open_alerts,
        reachability=fleet.state(),
        reachability_groups=fleet.group_states(),
        executors_gone=tuple(gone),
    )


__all__ = ["Snapshot", "confirmations", "data_points", "read"]
