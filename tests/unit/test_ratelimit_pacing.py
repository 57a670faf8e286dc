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

import pytest
from fakes import FakeTime

from extend_connector.extend import RateBudget

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
