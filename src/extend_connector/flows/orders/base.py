"""What every part of the orders flow shares: its queues (declared here, once), failure kinds,
status sets, the errors the shop-facing operations raise, and the small result values."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import structlog

from extend_connector import engine
from extend_connector.domain import OrderStatus
from extend_connector.flows import retry

log = structlog.get_logger("extend_connector.orders")

SUBMIT_QUEUE = "orders-submit"
PROGRESS_QUEUE = "orders-progress"
SWEEP_QUEUE = "orders-sweep"
# Most of a submit job's life during an outage is a durable sleep; a wide queue keeps those sleepers
# from holding back fresh orders (calls to Extend are bounded by the client's max_in_flight).
# Without faults a job still lives ~0.6 s, mostly waiting for the write lock and the threads that
# write: 32 at once capped one process at ~50 orders/s, 64 reach ~60/s (benchmarks/orders.py,
# docs/benchmarks.md "Seventh session"); 96 let one order of 500 miss the 20%-faults window.
engine.queue(SUBMIT_QUEUE, worker_concurrency=64, poll_seconds=0.2)
# Progress hooks go to the order drain (flows/records.py); this queue keeps the shop's changes
# (`orders.apply_change`) and jobs of the previous version: polled less often.
engine.queue(PROGRESS_QUEUE, partition_concurrency=1, worker_concurrency=32, poll_seconds=0.5)
engine.queue(SWEEP_QUEUE, concurrency=1)

CURSOR = "orders"
FAILURE_KIND = "order"
CANCEL_FAILURE_KIND = "order_cancel"

TERMINAL = frozenset({OrderStatus.PICKED.value, OrderStatus.CANCELLED.value})
# Acknowledged to the shop and not in Extend yet: a submit job must be carrying these.
UNSENT = frozenset({OrderStatus.RECEIVED.value, OrderStatus.WAITING_FOR_EXTEND.value})


class OrderError(Exception):
    """Root of what the shop-facing order operations refuse."""


class OrderConflict(OrderError):
    """The same shop reference was posted with different content."""


class UnknownOrder(OrderError):
    """No order with this shop reference."""


class ChangeRefused(OrderError):
    """The order can no longer be changed (Extend refuses every change once it is reserved)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Problem:
    """Why an order cannot be sent, phrased for the person who fixes it."""

    field: str
    message: str

    def as_json(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


@dataclass(frozen=True, kw_only=True, slots=True)
class Intake:
    shop_ref: str
    status: str
    created: bool  # False: the same order had been posted before
    problems: tuple[Problem, ...] = ()
    failure_id: int | None = None


def backoff_seconds(failures_in_a_row: int, retry_after: float | None = None) -> float:
    """The orders' backoff (`flows.retry` policy `orders`); a longer Retry-After wins."""
    return retry.policy(retry.ORDERS).delay(failures_in_a_row, retry_after)


def canonical(payload: dict[str, Any]) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
