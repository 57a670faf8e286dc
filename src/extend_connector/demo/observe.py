"""What the demo shows and checks: one snapshot of the connector's database, the simulator and the
shop.

`NotificationTap` counts (and optionally timestamps) every notification the simulator raises,
by wrapping its webhook sink; benchmarks use it to know when a change left Extend.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from extend_connector.flows import outbox
from extend_connector.simulator import Notification, RunningSimulator
from extend_connector.store.database import Database
from extend_connector.store.models import (
    BalanceRow,
    CursorRow,
    CustomerRow,
    DirtyBalanceRow,
    InboxRow,
    OrderRow,
    ParkedFailureRow,
    PriceRow,
    ProductRow,
)

BALANCE_ACTIONS = ("AvailableBalanceChanged", "BalanceChanged")


class NotificationTap:
    """Counts every notification the simulator raises, at the moment its operation ends."""

    def __init__(
        self,
        sim: RunningSimulator,
        *,
        on_batch: Callable[[list[Notification], float], None] | None = None,
    ) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._on_batch = on_batch
        state = sim.state
        downstream = state.sink

        def sink(batch: list[Notification]) -> None:
            raised = time.monotonic()
            with self._lock:
                for n in batch:
                    self.counts[n.action] += 1
            if self._on_batch is not None:
                self._on_batch(batch, raised)
            if downstream is not None:
                downstream(batch)

        state.sink = sink

    def count(self, *actions: str) -> int:
        with self._lock:
            return sum(self.counts[a] for a in actions)


def _age(when: datetime | None, now: datetime) -> float | None:
    return None if when is None else max(0.0, (now - when).total_seconds())


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """Everything the view shows at one instant."""

    elapsed: float
    phase: str | None
    extend_down: bool
    orders_placed: int
    orders_unacknowledged: int
    orders_refused: int
    local_status: dict[str, int]
    local_in_extend: int
    sim_orders: int
    sim_shipped: int
    balance_notifications: int
    availability_calls: int
    local_balances: int
    dirty_balances: int
    freshness: dict[str, float | None]  # data point -> seconds since newest confirmation
    sweeps: dict[str, float | None]  # cursor -> seconds since its last run
    parked: int
    parked_reasons: dict[str, int]
    deliveries: dict[str, int]  # simulator's webhook outcomes
    inbox_rows: int
    outbox_pending: int
    shop_received: dict[str, int]
    shop_refused: int
    extend_calls: int
    extend_statuses: dict[str, int]
    stock_read: dict[str, Any] = field(default_factory=dict)
    driver: dict[str, int] = field(default_factory=dict)


def db_figures(db: Database, *, ref_prefix: str) -> dict[str, Any]:
    """Counts and ages from the connector's database (read-only)."""
    now = datetime.now(UTC)
    with db.read() as s:
        status = {
            str(k): int(v)
            for k, v in s.execute(
                sa.select(OrderRow.status, sa.func.count())
                .where(OrderRow.shop_ref.like(f"{ref_prefix}%"))
                .group_by(OrderRow.status)
            ).all()
        }
        in_extend = (
            s.scalar(
                sa.select(sa.func.count())
                .select_from(OrderRow)
                .where(OrderRow.shop_ref.like(f"{ref_prefix}%"), OrderRow.order_number.is_not(None))
            )
            or 0
        )
        balances = s.scalar(sa.select(sa.func.count()).select_from(BalanceRow)) or 0
        dirty = s.scalar(sa.select(sa.func.count()).select_from(DirtyBalanceRow)) or 0
        freshness = {
            "balances": _age(s.scalar(sa.select(sa.func.max(BalanceRow.confirmed_at))), now),
            "orders": _age(s.scalar(sa.select(sa.func.max(OrderRow.updated_at))), now),
            "products": _age(s.scalar(sa.select(sa.func.max(ProductRow.confirmed_at))), now),
            "customers": _age(s.scalar(sa.select(sa.func.max(CustomerRow.confirmed_at))), now),
            "prices": _age(s.scalar(sa.select(sa.func.max(PriceRow.confirmed_at))), now),
        }
        sweeps = {
            str(name): _age(at, now)
            for name, at in s.execute(sa.select(CursorRow.name, CursorRow.last_run_at))
        }
        parked = dict(
            s.execute(
                sa.select(ParkedFailureRow.reason, sa.func.count())
                .where(ParkedFailureRow.resolved_at.is_(None))
                .group_by(ParkedFailureRow.reason)
            ).all()
        )
        inbox = s.scalar(sa.select(sa.func.count()).select_from(InboxRow)) or 0
        outbox_pending, _ = outbox.owed_counts(s)
    return {
        "status": status,
        "in_extend": int(in_extend),
        "balances": int(balances),
        "dirty": int(dirty),
        "freshness": freshness,
        "sweeps": sweeps,
        "parked": {str(k): int(v) for k, v in parked.items()},
        "inbox": int(inbox),
        "outbox_pending": int(outbox_pending),
    }


def sim_orders(sim: RunningSimulator, ref_prefix: str) -> tuple[int, int]:
    """(orders of this demo in Extend, of which picked)."""
    state = sim.state
    with state.lock:
        mine = [
            o.status
            for o in state.orders.values()
            if (o.order_number_external or "").startswith(ref_prefix)
        ]
    return len(mine), sum(1 for s in mine if s in ("Picked", "PartiallyPicked"))


def sim_calls(sim: RunningSimulator) -> tuple[dict[str, int], dict[str, int]]:
    state = sim.state
    with state.lock:
        return dict(state.calls), {str(k): v for k, v in state.status_counts.items()}
