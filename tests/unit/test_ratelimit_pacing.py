"""Pacing below the low-water mark (issue #13, catalogue sync at real limits).

Extend's group is a token bucket that refills `limit / period` a second, and the simulator's
`x-ratelimit-reset` is the time until the bucket is full again. Spreading the calls left over
that time paced a sync at a fraction of the refill rate (about 60 tokens, 12 s at the heavy
group's 5 a second, stayed unused for a whole sync: efficiency 0.55-0.65 against the floor,
benchmarks/catalogue_limits.py). With the group's period known (the dialect's `rate_limits`),
calls below the mark go at the refill rate, or faster when the spread over the reset is faster
(a window that ends soon); a group whose period is unknown keeps the spread.
"""

from __future__ import annotations

import asyncio
from contextlib import nullcontext
from typing import Any

import pytest
from fakes import FakeTime

from extend_connector.extend import RateBudget, bulk_calls

HEADERS = {
    "limit_header": "x-ratelimit-limit",
    "remaining_header": "x-ratelimit-remaining",
    "reset_header": "x-ratelimit-reset",
}


def _waits(budget: RateBudget, time: FakeTime, n: int) -> list[float]:
    async def go() -> list[float]:
        out = []
        for _ in range(n):
            before = time.now
            await budget.acquire("standard")
            out.append(time.now - before)
        return out

    return asyncio.run(go())


def test_below_the_low_water_mark_calls_go_at_the_refill_rate() -> None:
    time = FakeTime()
    budget = RateBudget(clock=time.clock, sleep=time.sleep)
    budget.set_periods({"standard": (300, 60.0)})
    # 250 of 300 used: 50 left, and the bucket is full again in 50 s (at 5 a second).
    budget.observe(
        "standard",
        {"x-ratelimit-limit": "300", "x-ratelimit-remaining": "50", "x-ratelimit-reset": "50"},
        **HEADERS,
    )
    waits = _waits(budget, time, 20)
    assert waits[-1] == pytest.approx(0.2)  # 60 s / 300: the refill rate
    assert time.now == pytest.approx(0.2 * 19, abs=0.01)


def test_without_a_known_period_the_calls_left_are_spread_over_the_reset() -> None:
    time = FakeTime()
    budget = RateBudget(clock=time.clock, sleep=time.sleep)
    budget.observe(
        "standard",
        {"x-ratelimit-limit": "300", "x-ratelimit-remaining": "50", "x-ratelimit-reset": "50"},
        **HEADERS,
    )
    waits = _waits(budget, time, 3)
    assert waits[-1] == pytest.approx(50 / 50, rel=0.05)  # about 1 s each, as before


def test_a_window_that_ends_soon_is_spread_faster_than_the_refill_rate() -> None:
    time = FakeTime()
    budget = RateBudget(clock=time.clock, sleep=time.sleep)
    budget.set_periods({"standard": (300, 60.0)})
    budget.observe(
        "standard",
        {"x-ratelimit-limit": "300", "x-ratelimit-remaining": "50", "x-ratelimit-reset": "2"},
        **HEADERS,
    )
    waits = _waits(budget, time, 3)
    assert waits[-1] < 0.2


def bucket_client(time: FakeTime) -> tuple[Any, dict[str, float]]:
    """A client against the simulator's token bucket (300 calls, 5 a second), on `time`; the
    dict counts calls answered and refused."""
    import httpx2

    from support.mock_extend import mock_client

    capacity, rate = 300.0, 5.0
    bucket = {"tokens": capacity, "at": 0.0, "refused": 0, "calls": 0}

    def handler(request: httpx2.Request) -> httpx2.Response:
        # The simulator's token bucket: remaining = whole tokens left, reset = seconds until
        # full (rounded up), 429 when empty.
        now = time.now
        tokens = min(capacity, bucket["tokens"] + (now - bucket["at"]) * rate)
        bucket["at"] = now
        status = 200
        if tokens < 1:
            status = 429
            bucket["refused"] += 1
        else:
            tokens -= 1
            bucket["calls"] += 1
        bucket["tokens"] = tokens
        reset = 0 if tokens >= capacity else -(-(capacity - tokens) // rate)
        headers = {
            "x-ratelimit-limit": str(int(capacity)),
            "x-ratelimit-remaining": str(int(tokens)),
            "x-ratelimit-reset": str(int(reset)),
        }
        if status == 429:
            headers["retry-after"] = "1"
        body = {"productNumber": request.url.path.rsplit("/", 1)[-1], "productName": "x"}
        return httpx2.Response(status, json=body, headers=headers)

    budget = RateBudget(clock=time.clock, sleep=time.sleep)
    budget.set_periods({"standard": (300, 60.0)})
    return mock_client(handler, clock=time.clock, sleep=time.sleep, budget=budget), bucket


async def fetch_products(client: Any, n: int, *, workers: int, bulk: bool = False) -> None:
    """`n` product fetches by `workers` tasks (a sweep's shape); `bulk`: as bulk calls."""
    numbers = iter(range(n))

    async def worker() -> None:
        for i in numbers:
            await client.get_product(f"P{i:05d}")

    async with client:
        with bulk_calls() if bulk else nullcontext():
            await asyncio.gather(*(worker() for _ in range(workers)))


def test_a_client_keeps_pace_with_a_refilling_bucket_without_stalling_for_its_reset() -> None:
    """Extend's bucket refills between answers, so a later answer may show more left than an
    earlier one. Keeping the lowest figure of a window (right only for a window that never
    refills) ran the count down to zero while Extend still had 50 calls, and the sync stalled
    for the ~50 s reset (`benchmarks/catalogue_limits.py`: 1.9 calls/s after the first 300
    instead of the refill rate's 5, efficiency 0.32)."""
    time = FakeTime()
    client, bucket = bucket_client(time)
    rate = 5.0
    asyncio.run(fetch_products(client, 400, workers=8))
    assert bucket["calls"] == 400 and bucket["refused"] == 0
    # Below the low-water mark (60 of 300 left, after 240 calls) the 160 calls left go at the
    # refill rate: 32 s. The stall made it 60 s and more.
    assert time.now == pytest.approx(160 / rate, abs=2.0)
