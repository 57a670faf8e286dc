"""The fleet at volume (issue #13): one `web` + 2 `worker` processes on PostgreSQL, the simulator
as Extend in its own process, 1,000 orders posted by the shop and 10,000 balance notifications
(stock moved in the simulator, each move one `AvailableBalanceChanged` webhook), and one worker
killed with SIGKILL when about a third of the orders are in Extend while notifications are still
arriving, then restarted under the same executor id (so it recovers its own jobs).

Afterwards: every order is in Extend exactly once, every balance equals Extend's, nothing is
parked. The deadlines scale with the workload and are generous (a slow machine must not fail
this); the times it took are printed.

The simulator enforces its rate limits (the connector learns the groups from the headers), raised
above the defaults: at the default 120 writes a minute, 1,000 orders alone take 8.3 minutes.
"""

from __future__ import annotations

import collections
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.fleet import Stack, connector_env, simulator, web_and_workers
from support.postgres import throwaway_database
from support.processes import free_port, running, wait_for

# The deadlines below add up to about 20 minutes on a machine that needs all of them.
pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(1500)]

PRODUCTS = 200
ORDERS = 1_000
NOTIFICATIONS = 10_000
BURST = 250  # moves per /_sim/stock/bulk call
BURST_EVERY = 0.5  # seconds between bursts
RATE_LIMITS = ("--rate-write", "1800/60", "--rate-standard", "3000/60", "--rate-heavy", "600/60")
# Deadlines: a fixed allowance plus a share per item, several times what a 2-core machine needs.
BASE_SECONDS = 120.0
SECONDS_PER_ORDER = 0.3
SECONDS_PER_NOTIFICATION = 0.01


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with throwaway_database("ec_fleet", fleet=True) as url:
        yield url


def _posted_in_background(stack: Stack, refs: list[str]) -> tuple[threading.Thread, list[str]]:
    errors: list[str] = []

    def post() -> None:
        try:
            stack.post_orders(refs)
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(repr(exc))

    thread = threading.Thread(target=post, name="shop", daemon=True)
    thread.start()
    return thread, errors


def test_web_and_two_workers_1000_orders_10000_notifications_one_worker_sigkilled(
    tmp_path: Path, postgres_url: str
) -> None:
    from extend_connector.store import migrate

    migrate(postgres_url)  # once, before the processes start (they would race on an empty database)
    sim_port, port = free_port(), free_port()
    env = connector_env(tmp_path, sim_port, port)
    web, workers = web_and_workers(tmp_path, env, port, postgres_url)
    sim = simulator(tmp_path, port, sim_port, products=PRODUCTS, extra=RATE_LIMITS)
    with running(sim, web, *workers):
        stack = Stack(
            f"http://127.0.0.1:{sim_port}",
            f"http://127.0.0.1:{port}",
            postgres_url.replace("postgresql://", "postgresql+psycopg://", 1),
        )
        wait_for(lambda: not stack.mismatches(), 180, interval=1, what="the initial balances")
        stack.sim("POST", "/counters/reset")
        refs = [f"F-{uuid.uuid4().hex[:6]}-{i:04d}" for i in range(ORDERS)]
        bursts = NOTIFICATIONS // BURST
        started = time.monotonic()
        shop, shop_errors = _posted_in_background(stack, refs)
        killed_at: float | None = None
        in_extend_at_kill = fired_at_kill = 0
        fired = 0
        # Half the notifications go out freely; the rest wait for the kill, so some of them
        # always arrive after it, however fast or slow the orders go.
        while fired < bursts or killed_at is None:
            if killed_at is None:
                counts = stack.in_extend()
                in_extend = sum(counts[r] for r in refs)
                if in_extend >= ORDERS // 3:
                    workers[0].kill()
                    killed_at = time.monotonic() - started
                    in_extend_at_kill, fired_at_kill = in_extend, fired * BURST
                    time.sleep(1.0)  # down for a moment, its jobs abandoned mid-step
                    workers[0].start()
            if fired < bursts and (killed_at is not None or fired < bursts // 2):
                stack.move_stock(BURST, seed=fired)
                fired += 1
            time.sleep(BURST_EVERY)
            assert time.monotonic() - started < BASE_SECONDS + SECONDS_PER_ORDER * ORDERS, (
                f"a third of the orders never reached Extend: {stack.mapped(refs)} mapped"
            )
        notified = time.monotonic() - started
        shop.join(BASE_SECONDS + SECONDS_PER_ORDER * ORDERS)
        assert not shop.is_alive() and not shop_errors, shop_errors
        posted = time.monotonic() - started
        assert killed_at is not None and fired_at_kill < NOTIFICATIONS

        orders_deadline = BASE_SECONDS + SECONDS_PER_ORDER * ORDERS
        try:

            def all_mapped() -> bool:
                assert stack.failures() == [], "parked while waiting for the orders"
                return stack.mapped(refs) == ORDERS

            wait_for(
                all_mapped,
                max(1.0, orders_deadline - (time.monotonic() - started)),
                interval=1,
                what=f"all {ORDERS} orders in Extend",
            )
            orders_done = time.monotonic() - started
            wait_for(
                lambda: not stack.mismatches(),
                BASE_SECONDS + SECONDS_PER_NOTIFICATION * NOTIFICATIONS,
                interval=1,
                what="every balance equal to Extend's",
            )
        except AssertionError as exc:
            counts = stack.in_extend()
            raise AssertionError(
                f"{exc}; {stack.mapped(refs)} of {ORDERS} orders mapped, "
                f"{sum(counts[r] for r in refs)} in Extend, {len(stack.mismatches())} balances "
                f"differ, parked: {stack.failures()[:10]}, Extend calls: "
                f"{stack.counters()['endpoints']}"
            ) from None
        converged = time.monotonic() - started

        # Nothing more is written to Extend (a late duplicate would be): the count of order
        # POSTs stays the same over three polls.
        def writes() -> int:
            return int(stack.counters()["groups"].get("write", 0))

        seen: list[int] = []

        def quiet() -> bool:
            seen.append(writes())
            return len(seen) >= 3 and len(set(seen[-3:])) == 1

        wait_for(
            quiet,
            60,
            interval=2,
            what="no more writes to Extend",
        )
        counts = stack.in_extend()
        assert {r: counts[r] for r in refs if counts[r] != 1} == {}
        assert sum(counts[r] for r in refs) == ORDERS
        assert stack.mapped(refs) == ORDERS
        assert stack.mismatches() == {}
        assert stack.failures() == []
        calls = stack.counters()
        failed = stack.sim("GET", "/deliveries?outcome=failed")["deliveries"]
        errors = collections.Counter(f"{d['status']} {d['error']}" for d in failed)

    print(
        f"\nweb + 2 workers on PostgreSQL, {ORDERS} orders and {NOTIFICATIONS} notifications: "
        f"worker-1 SIGKILLed at {killed_at:.1f}s ({in_extend_at_kill} orders in Extend, "
        f"{fired_at_kill} notifications fired), all posted at {posted:.1f}s, notifications fired "
        f"by {notified:.1f}s, orders all in Extend at {orders_done:.1f}s "
        f"({ORDERS / orders_done:.1f} orders/s), converged at {converged:.1f}s; "
        f"Extend calls {calls['total']} {calls['endpoints']}, statuses {calls['statuses']}, "
        f"webhook deliveries {calls['webhooks']}, failed attempts (retried) {dict(errors)}"
    )
    sys.stdout.flush()
