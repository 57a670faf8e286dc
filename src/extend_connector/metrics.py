"""The connector's Prometheus counters and histograms, incremented where each event happens.

A leaf module (prometheus_client only) so that `extend/` (calls), `flows/` (order outcomes, shop
deliveries) and `api/` can all count without importing each other. Gauges that describe the
database's state (queue depths, outbox backlog, parked failures, freshness) are not here: they
are read from the database when `/metrics` is scraped (`api/app.py`, `flows/monitor.py`).

Every process counts its own events: with `engine.role = web` + `worker` processes, scrape each
process (a worker serves them on `server.worker_port`; docs/operations.md, "Metrics"). The `web`
processes of one `server.processes` service are the exception: they share a port, so they count
in prometheus_client's multi-process mode (files in the directory `MULTIPROCESS_DIR_ENV` names,
which their supervisor makes) and every scrape shows the sum of all of them (`exposition`).
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

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

WEB_PROCESS_START = Gauge(
    PREFIX + "web_process_start_time_seconds",
    "Start time (Unix seconds) of each live web process of a server.processes service, by its "
    "index (and pid, added by the multi-process mode); a restarted process shows its new start.",
    ["index"],
    multiprocess_mode="liveall",
)

# prometheus_client reads it when it is imported: a process counts into files in this directory
# (one per process and kind), which a scrape sums, instead of into its own memory.
MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def exposition() -> bytes:
    """The counters and histograms in Prometheus text format: this process's, or, in
    multi-process mode (the web processes of one port), the sum over every process that counted
    into the directory, a process that has ended included (a counter never goes back). The
    multi-process form leaves out the `process_*` and `python_*` families: they describe one
    process, and a scrape of a shared port cannot say which."""
    directory = os.environ.get(MULTIPROCESS_DIR_ENV)
    if not directory:
        return generate_latest()
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


__all__ = [
    "EXTEND_CALLS",
    "EXTEND_CALL_SECONDS",
    "EXTEND_RATE_LIMIT_WAITS",
    "EXTEND_RATE_LIMIT_WAIT_SECONDS",
    "EXTEND_THROTTLED",
    "MULTIPROCESS_DIR_ENV",
    "ORDERS",
    "SHOP_DELIVERIES",
    "SHOP_DELIVERY_SECONDS",
    "WEB_PROCESS_START",
    "exposition",
]
