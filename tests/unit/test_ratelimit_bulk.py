"""Bulk calls and the others (issue #13, catalogue sync at real limits).

Every call used to start pacing when 20% of a group's limit was left, and the paced calls shared
one schedule. A catalogue sweep therefore left a fifth of Extend's bucket unused for its whole
length (12 s at 5 calls a second: efficiency 0.63 against the floor at 400 products,
`benchmarks/catalogue_limits.py`), and an order's call arriving during the sweep was paced
behind every fetch the sweep had already scheduled. Bulk calls (`bulk_calls`) now spend the
bucket down to `BULK_LOW_WATER`, are paced on a schedule of their own below it, and give way
to any other paced call.
"""

from __future__ import annotations

import asyncio

import pytest
from fakes import FakeTime, FrozenTime, budget_with
from test_ratelimit_pacing import bucket_client, fetch_products

from extend_connector.extend import bulk_calls


def test_bulk_calls_spend_the_bucket_down_to_the_bulk_reserve_before_pacing() -> None:
    time = FakeTime()
    budget = budget_with(time, remaining=50)  # below the 20% mark (60)

    async def go() -> list[float]:
        waits = []
        with bulk_calls():
            for _ in range(45):
                waits.append(await budget.acquire("standard"))
        return waits

    waits = asyncio.run(go())
    # 3% of 300 = 9 kept: the first 41 calls go at once, the rest at the refill rate.
    assert waits[:41] == [0.0] * 41
    assert waits[42:] == [pytest.approx(0.2)] * 3


def test_other_calls_still_pace_below_the_low_water_mark() -> None:
    time = FakeTime()
    budget = budget_with(time, remaining=50)

    async def go() -> list[float]:
        return [await budget.acquire("standard") for _ in range(3)]

    assert asyncio.run(go())[1:] == [pytest.approx(0.2)] * 2


def test_an_order_call_does_not_wait_behind_the_fetches_a_sweep_scheduled() -> None:
    time = FrozenTime()
    # A sweep has drained the bucket below its bulk reserve (3% of 1,000: 30); the refill
    # interval is 60 s / 1,000 = 0.06 s.
    budget = budget_with(time, remaining=20, limit=1000)

    async def bulk() -> float:
        with bulk_calls():
            return await budget.acquire("standard")

    async def go() -> tuple[list[float], float, float]:
        scheduled = [await bulk() for _ in range(8)]  # eight fetches waiting for their slots
        order = await budget.acquire("standard")
        after = await bulk()
        return scheduled, order, after

    scheduled, order, after = asyncio.run(go())
    assert scheduled == [pytest.approx(0.06 * i) for i in range(8)]
    assert order == 0.0  # was 0.48 s: behind all eight
    assert after == pytest.approx(0.06 * 9)  # the sweep's next slot moved back one interval


def test_a_bulk_sweep_against_a_refilling_bucket_wastes_almost_none_of_it() -> None:
    time = FakeTime()
    client, bucket = bucket_client(time)
    asyncio.run(fetch_products(client, 400, workers=8, bulk=True))
    assert bucket["calls"] == 400 and bucket["refused"] == 0
    # The floor is (400 - 300) / 5 = 20 s; the bulk reserve (9 calls) costs 1.8 s more. Paced
    # from the 20% mark, the 60 calls kept made it 32 s.
    assert time.now == pytest.approx((100 + 9) / 5, abs=1.0)
