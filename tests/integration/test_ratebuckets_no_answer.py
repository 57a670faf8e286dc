"""The fleet bucket when Extend answers nothing (issue #12, defect 1): every call that goes out
and is dropped still takes one slot, and the next slot is always one interval further, never a
wait for an answer. SQLite only: its bucket runs on a clock the test can move (PostgreSQL's is
the server's `now()`)."""

from __future__ import annotations

import asyncio
import itertools

import httpx2
import pytest

from extend_connector.extend import (
    Dialect,
    ExtendClient,
    RateBudget,
    RetryPolicy,
    TechnicalFailure,
    ThreadedFleetBucket,
)
from extend_connector.settings import Settings
from extend_connector.store import Database, RateBuckets


class _Time:
    """Wall and monotonic clock in one, moved only by sleeps (the budget's and the client's)."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        if self.now > 1_000_000.0 + 100_000:
            raise AssertionError("slept for an answer that never came")


def test_dropped_calls_take_one_fleet_slot_each_and_never_wait_longer(db: Database, backend: str) -> None:
    if backend != "sqlite":
        pytest.skip("the bucket's clock is the server's on PostgreSQL")
    time = _Time()
    sent: list[float] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        sent.append(time.now)
        raise httpx2.RemoteProtocolError("Server disconnected without sending a response.", request=request)

    budget = RateBudget(clock=time.clock, sleep=time.sleep)
    # heavy: 6 calls per 60 s, headroom 1: a burst of 6, then one slot every 10 s.
    budget.attach_fleet(ThreadedFleetBucket(RateBuckets(db.engine, "cred", clock=time.clock)),
                        limits={"heavy": (6, 60.0)}, headroom=1.0)
    settings = Settings(extend={"base_url": "http://extend.test/api"})
    client = ExtendClient(dialect=Dialect.from_settings(settings.extend), default_warehouse="MainWarehouse",
                          default_customer_number="WEB", transport=httpx2.MockTransport(handler),
                          budget=budget, retry=RetryPolicy(random=lambda: 0.0, floor_seconds=0.0, max_attempts=2),
                          sleep=time.sleep, clock=time.clock)

    async def run() -> None:
        async with client:
            for _ in range(15):
                with pytest.raises(TechnicalFailure):
                    async for _balance in client.availability_for_warehouses(["MainWarehouse"]):
                        pass

    asyncio.run(run())
    assert len(sent) == 30  # every attempt of every call went out
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(sent)]
    assert gaps[:5] == [0.0] * 5  # the burst
    assert gaps[5:] == [10.0] * 24  # then exactly one interval apart: never more
