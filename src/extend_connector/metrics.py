"""The connector's Prometheus counters and histograms, incremented where each event happens.

A leaf module (prometheus_client only) so that `extend/` (calls), `flows/` (order outcomes, shop
deliveries) and `api/` can all count without importing each other. Gauges that describe the
database's state (queue depths, outbox backlog, parked failures, freshness) are not here: they
are read from the database when `/metrics` is scraped (`api/app.py`, `flows/monitor.py`).

Every process counts its own events: with `engine.role = web` + `worker` processes, scrape each
process (a worker serves them on `server.worker_port`; docs/operations.md, "Metrics").
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

PREFIX = "extend_connector_"

ORDERS = Counter(
    PREFIX + "orders",
    "Shop orders by outcome: received (accepted, queued for Extend), invalid (parked at intake), "
    "created / found (in Extend: posted, or found there after an ambiguous attempt), parked "
    "(refused by Extend or given up on).",
    ["outcome"],
)
ORDER_LOOKUPS = Counter(
    PREFIX + "order_lookups",
    "Orders looked up in Extend before a re-send (an earlier attempt's answer was lost), by how: "
    "window (answered by one order-list call for several orders) or one (a call of its own).",
    ["how"],
)
EXTEND_CALLS = Counter(
    PREFIX + "extend_calls",
    "HTTP requests sent to Extend (retries included) by rate-limit group, operation and status "
    "(the HTTP status code, or `timeout` / `no_answer` when none came).",
    ["group", "operation", "status"],
)
EXTEND_CALL_SECONDS = Histogram(
    PREFIX + "extend_call_seconds",
    "Latency of one HTTP request to Extend (one attempt, on the wire), by rate-limit group.",
    ["group"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
EXTEND_RATE_LIMIT_WAITS = Counter(
    PREFIX + "extend_rate_limit_waits",
    "Extend calls the rate budget held back before sending, by rate-limit group.",
    ["group"],
)
EXTEND_RATE_LIMIT_WAIT_SECONDS = Counter(
    PREFIX + "extend_rate_limit_wait_seconds",
    "Seconds Extend calls waited for the rate budget, by rate-limit group.",
    ["group"],
)
EXTEND_THROTTLED = Counter(
    PREFIX + "extend_throttled",
    "429 answers from Extend, by rate-limit group.",
    ["group"],
)
JOBS_PUT_BACK = Counter(
    PREFIX + "jobs_put_back",
    "Jobs held as running by a process that was not running them, put back on their queues "
    "(flows/executors.py), by why: not_started (claimed here, never started), executor_gone (its "
    "process not heard of for engine.executor_dead_seconds).",
    ["why"],
)
SHOP_DELIVERIES = Counter(
    PREFIX + "shop_deliveries",
    "Outbox events offered to the shop, by outcome: delivered, superseded, retrying, parked.",
    ["outcome"],
)
SHOP_API_CALLS = Counter(
    PREFIX + "shop_api_calls",
    "Calls a platform adapter made to the shop's API (Vendure: Admin API GraphQL requests), by "
    "adapter and operation (the GraphQL field called first).",
    ["adapter", "operation"],
)
SHOP_DELIVERY_SECONDS = Histogram(
    PREFIX + "shop_delivery_seconds",
    "Seconds from an event's creation in the outbox to its delivery to the shop.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0),
)

__all__ = [
    "EXTEND_CALLS",
    "EXTEND_CALL_SECONDS",
    "EXTEND_RATE_LIMIT_WAITS",
    "EXTEND_RATE_LIMIT_WAIT_SECONDS",
    "EXTEND_THROTTLED",
    "ORDERS",
    "SHOP_DELIVERIES",
    "SHOP_DELIVERY_SECONDS",
]
