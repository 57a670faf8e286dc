"""The fleet-wide rate limit on a real database (SQLite, and PostgreSQL when configured).

The concurrency tests reserve from several threads (each with its own engine and connections,
as separate processes would) and from separate processes, then check the granted slots
exactly: in every window the slots never exceed what a token bucket of that capacity and
refill allows, and no reservation was lost. Nothing here asserts on elapsed time.
"""

from __future__ import annotations

import itertools
import multiprocessing
import threading
import time

import sqlalchemy as sa

from extend_connector.extend import budget_key, shared_budget
from extend_connector.service import Connector
from extend_connector.settings import Settings, StoreSettings
from extend_connector.store import Database, RateBuckets
from extend_connector.store.database import create_db_engine
from extend_connector.store.models import RateBucketRow
from extend_connector.store.ratebuckets import BULK_RESERVE

EPS = 1e-6


def assert_token_bucket(starts: list[float], capacity: float, period: float) -> None:
    """Every window [s_i, s_j] holds at most capacity + refill over its length (bucket starts
    full)."""
    s = sorted(starts)
    refill = capacity / period
    worst = max(
        (j - i + 1) - (capacity + (s[j] - s[i]) * refill)
        for i in range(len(s))
        for j in range(i, len(s))
    )
    assert worst <= EPS, f"a window holds {worst:.3f} calls more than the bucket allows"


def test_a_burst_gets_the_capacity_at_once_then_one_slot_per_interval(db: Database) -> None:
    buckets = RateBuckets(db.engine, "cred-a")
    slots = [buckets.reserve_slot("standard", 5, 10.0) for _ in range(12)]
    assert [s.wait for s in slots[:5]] == [0.0] * 5
    assert all(s.wait > 0 for s in slots[5:])
    starts = [s.start for s in slots]
    # After the first, the bucket is never idle again: slots are exactly one interval (2 s) apart.
    assert [round(b - a, 6) for a, b in itertools.pairwise(starts)] == [2.0] * 11
    assert_token_bucket(starts, 5, 10.0)
    # Another credential and another group have their own buckets.
    assert RateBuckets(db.engine, "cred-b").reserve("standard", 5, 10.0) == 0.0
    assert buckets.reserve("heavy", 5, 10.0) == 0.0


def _reserve_many(
    url: str,
    credential: str,
    count: int,
    capacity: float,
    period: float,
    start: threading.Event | None = None,
) -> list[float]:
    engine = create_db_engine(url, pool_size=1)
    try:
        buckets = RateBuckets(engine, credential)
        if start is not None:
            start.wait(10)
        return [buckets.reserve_slot("standard", capacity, period).start for _ in range(count)]
    finally:
        engine.dispose()


def _check_concurrent(starts: list[float], count: int, capacity: float, period: float) -> None:
    assert len(starts) == count
    assert len(set(starts)) == count, "two callers got the same slot (a lost update)"
    assert_token_bucket(starts, capacity, period)
    s = sorted(starts)
    # The run is far shorter than one interval, so once busy the bucket hands out slots exactly
    # one interval apart: a lost or double-counted reservation would leave a gap or a clash.
    assert all(abs((b - a) - period / capacity) < EPS for a, b in itertools.pairwise(s))


def test_threads_reserving_at_once_never_exceed_the_bucket(db: Database) -> None:
    capacity, period, threads, each = 10.0, 40.0, 8, 15
    start = threading.Event()
    results: list[list[float]] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(_reserve_many(db.url, "cred-t", each, capacity, period, start))
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    start.set()
    for w in workers:
        w.join(60)
    assert not errors
    _check_concurrent([s for r in results for s in r], threads * each, capacity, period)


def test_processes_reserving_at_once_never_exceed_the_bucket(db: Database) -> None:
    capacity, period, processes, each = 6.0, 60.0, 3, 20
    RateBuckets(db.engine, "cred-p").reserve(
        "other", 1, 1
    )  # table reachable before the children start
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        results = pool.starmap(
            _reserve_many, [(db.url, "cred-p", each, capacity, period)] * processes
        )
    _check_concurrent([s for r in results for s in r], processes * each, capacity, period)


def test_a_429_pushes_the_next_slot_past_retry_after_and_never_pulls_it_back(db: Database) -> None:
    buckets = RateBuckets(db.engine, "cred-c")
    assert buckets.reserve("write", 10, 10.0) == 0.0
    buckets.block("write", 5.0, 10, 10.0)
    wait = buckets.reserve("write", 10, 10.0)
    assert 4.0 < wait <= 5.0 + EPS  # the block's own instant is a moment before this reservation
    before = buckets.tat("write")
    buckets.block("write", 1.0, 10, 10.0)  # a shorter block leaves a later slot alone
    assert buckets.tat("write") == before


def test_a_row_that_went_away_is_created_again(db: Database) -> None:
    buckets = RateBuckets(db.engine, "cred-d")
    buckets.reserve("standard", 5, 10.0)
    with db.write() as session:
        session.execute(sa.delete(RateBucketRow))
    assert buckets.reserve("standard", 5, 10.0) == 0.0
    assert buckets.tat("standard") is not None


def test_the_clock_is_the_databases_on_postgres(db: Database, backend: str) -> None:
    # A process whose own clock is far off (here: 1000 s after the epoch).
    slot = RateBuckets(db.engine, "cred-e", clock=lambda: 1000.0).reserve_slot("standard", 5, 10.0)
    if backend == "postgres":
        assert abs(slot.now - time.time()) < 60  # the server's clock, not the process's
    else:
        assert slot.now == 1000.0  # SQLite: one machine, the process's clock


def test_the_connector_attaches_the_fleet_bucket_when_on_and_detaches_it_on_close(
    migrated_url: str,
) -> None:
    for mode, expected in (("on", True), ("off", False)):
        settings = Settings(
            store=StoreSettings(database_url=migrated_url), extend={"shared_rate_limit": mode}
        )
        connector = Connector(settings)
        try:
            budget = shared_budget(budget_key(settings))
            assert (budget.fleet is not None) is expected
        finally:
            connector.close()
        assert budget.fleet is None


def test_status_shows_the_fleet_reservations_and_the_marks_waiting(migrated_url: str) -> None:
    from datetime import UTC, datetime

    from extend_connector.flows import prices
    from extend_connector.flows.failures import status_snapshot

    settings = Settings(
        store=StoreSettings(database_url=migrated_url), extend={"shared_rate_limit": "on"}
    )
    connector = Connector(settings)
    try:
        assert status_snapshot()["rateLimits"] == {}
        buckets = RateBuckets(connector.db.engine, budget_key(settings))
        for _ in range(30):  # 30 slots of a 10-per-10-s bucket, one second each: full again in 30 s
            buckets.reserve("heavy", 10, 10.0)
        with connector.db.write() as session:
            prices.mark_products(session, ["P1", "P2", "P2"], now=datetime.now(UTC))
        snap = status_snapshot()
    finally:
        connector.close()
    assert 28.0 < snap["rateLimits"]["heavy"]["fullAgainInSeconds"] <= 30.0
    assert snap["marked"] == {"dirty_balances": 0, "dirty_price_products": 2, "dirty_records": 0}


def test_bulk_calls_leave_the_last_part_of_the_bucket_to_the_others(db: Database) -> None:
    """A sweep's fetches in a fleet: they spend the bucket down to `BULK_RESERVE` of it and then
    wait their turn, while an order's call still starts at once out of the part kept. Before,
    the bucket was one queue: the order's call waited behind every slot the sweep had taken."""
    buckets = RateBuckets(db.engine, "cred-bulk")
    free = round(10 * (1 - BULK_RESERVE))  # 8 of a bucket of 10
    bulk = [buckets.reserve_slot("standard", 10, 10.0, bulk=True) for _ in range(free + 1)]
    assert [s.wait for s in bulk[:free]] == [0.0] * free
    assert bulk[free].wait > 0  # the sweep's next fetch waits for the refill
    order_call = buckets.reserve_slot("standard", 10, 10.0)
    assert order_call.wait == 0.0 and order_call.start < bulk[free].start
    # Every slot still moves the bucket on: the group's rate holds for both kinds together.
    assert_token_bucket([s.start for s in [*bulk, order_call]], 10, 10.0)
