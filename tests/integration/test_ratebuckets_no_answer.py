"""The fleet bucket when Extend answers nothing (issue #12, defect 1): no slot waits for an
answer, and a call whose connection was dropped gives its slot back, so when Extend answers
again the bucket is as full as Extend's own (which never counted those calls). SQLite only: its
bucket runs on a clock the test can move (PostgreSQL's is the server's `now()`)."""

from __future__ import annotations

import asyncio

import httpx2
import pytest

from extend_connector.extend import (
    RateBudget,
    RetryPolicy,
    TechnicalFailure,
    ThreadedFleetBucket,
)
from extend_connector.store import Database, RateBuckets
from support.mock_extend import mock_client


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


def test_dropped_calls_leave_the_fleet_bucket_full(db: Database, backend: str) -> None:
    if backend != "sqlite":
        pytest.skip("the bucket's clock is the server's on PostgreSQL")
    time = _Time()
    sent: list[float] = []
    dropping = [True]

    def handler(request: httpx2.Request) -> httpx2.Response:
        sent.append(time.now)
        if dropping[0]:
            raise httpx2.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            )
        return httpx2.Response(200, json={"items": [], "totalCount": 0})

    buckets = RateBuckets(db.engine, "cred", clock=time.clock)
    budget = RateBudget(clock=time.clock, sleep=time.sleep)
    # heavy: 6 calls per 60 s, headroom 1: a burst of 6, then one slot every 10 s.
    budget.attach_fleet(ThreadedFleetBucket(buckets), limits={"heavy": (6, 60.0)}, headroom=1.0)
    client = mock_client(
        handler,
        clock=time.clock,
        sleep=time.sleep,
        budget=budget,
        retry=RetryPolicy(random=lambda: 0.0, floor_seconds=0.0, max_attempts=2),
    )

    async def listing() -> None:
        async for _balance in client.availability_for_warehouses(["MainWarehouse"]):
            pass

    async def run() -> None:
        async with client:
            for _ in range(15):  # the outage: 30 attempts, every one dropped
                with pytest.raises(TechnicalFailure):
                    await listing()
            dropping[0] = False
            for _ in range(6):  # Extend is back: its full burst is ours
                await listing()

    asyncio.run(run())
    assert len(sent) == 36  # every attempt went out
    assert set(sent) == {sent[0]}  # and none of them waited: no slot was used up by a dropped call
    # The bucket now holds exactly the 6 answered calls: the next slot is one interval away.
    assert buckets.reserve("heavy", 6, 60.0) == pytest.approx(10.0)


def test_a_released_slot_never_makes_the_bucket_fuller_than_full(db: Database) -> None:
    time = _Time()
    buckets = RateBuckets(db.engine, "cred", clock=time.clock)
    interval = pytest.approx(10.0, abs=0.5)  # PostgreSQL's clock moves on between the statements
    for _ in range(3):
        buckets.release("heavy", 6, 60.0)  # nothing reserved: still just full
    assert [buckets.reserve("heavy", 6, 60.0) for _ in range(7)] == [0.0] * 6 + [interval]
    buckets.release("heavy", 6, 60.0)
    assert buckets.reserve("heavy", 6, 60.0) == interval  # the released slot, taken again
