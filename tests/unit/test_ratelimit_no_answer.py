"""The rate budget when Extend stops answering (issue #12, defect 1).

Extend dropping connections sends no status, no rate-limit headers and no Retry-After. Every
wait of the budget must then still end by time alone: a local count that only an answer could
refill would block the process for good (it did: 0 of 80 orders sent 300 s after an outage).
"""

from __future__ import annotations

import asyncio

import httpx2
import pytest
from fakes import FakeTime

from extend_connector.extend import RateBudget, RetryPolicy, TechnicalFailure
from extend_connector.extend.ratelimit import UNKNOWN_RESET_SECONDS
from support.mock_extend import mock_client

HEADERS = {
    "limit_header": "x-ratelimit-limit",
    "remaining_header": "x-ratelimit-remaining",
    "reset_header": "x-ratelimit-reset",
}
# No budget wait may be longer than this in these tests (the longest reset any answer gave).
BOUND = 10.0


def _observe(budget: RateBudget, group: str, **values: str) -> None:
    budget.observe(group, {f"x-ratelimit-{k}": v for k, v in values.items()}, **HEADERS)


class _Bounded(FakeTime):
    """Fake time that fails the test once the budget has slept far longer than any reset given
    (a wedged budget sleeps forever in a loop)."""

    async def sleep(self, seconds: float) -> None:
        await super().sleep(seconds)
        if self.now > 10_000:
            raise AssertionError(f"the budget slept {self.now:.0f} s for an answer that never came")


async def _acquire_all(budget: RateBudget, group: str, n: int) -> list[float]:
    return [await budget.acquire(group) for _ in range(n)]


def test_calls_without_answers_after_a_window_never_wedge_the_group() -> None:
    # An answer taught the group (limit 60, reset in 2 s); then Extend drops every connection:
    # more calls than the limit go out over a long time, none of them answered.
    time = _Bounded()
    budget = RateBudget(clock=time.clock, sleep=time.sleep)
    _observe(budget, "heavy", limit="60", remaining="59", reset="2")
    time.now += 3  # the window Extend announced has passed

    waits = asyncio.run(_acquire_all(budget, "heavy", 500))
    assert max(waits) <= BOUND
    assert time.now < 500 * BOUND


def test_a_count_learnt_without_a_reset_time_still_expires() -> None:
    # A dialect whose answers carry limit and remaining but no reset header.
    time = _Bounded()
    budget = RateBudget(clock=time.clock, sleep=time.sleep)
    _observe(budget, "standard", limit="10", remaining="0")
    waits = asyncio.run(_acquire_all(budget, "standard", 50))
    assert waits[0] == pytest.approx(UNKNOWN_RESET_SECONDS)
    assert max(waits) <= BOUND


def test_after_the_window_the_group_is_unknown_until_an_answer_teaches_it() -> None:
    time = FakeTime()
    budget = RateBudget(clock=time.clock, sleep=time.sleep)
    _observe(budget, "write", limit="120", remaining="0", reset="4")
    assert asyncio.run(budget.acquire("write")) == pytest.approx(4.0)
    [group] = budget.snapshot()
    assert group.remaining is None and group.reset_in is None and group.limit == 120
    # The next answer teaches the count again, and an empty group waits for its reset as before.
    _observe(budget, "write", limit="120", remaining="0", reset="7")
    assert asyncio.run(budget.acquire("write")) == pytest.approx(7.0)


def test_a_429_without_retry_after_blocks_only_briefly() -> None:
    time = _Bounded()
    budget = RateBudget(clock=time.clock, sleep=time.sleep)
    _observe(budget, "standard", limit="300", remaining="200", reset="30")
    budget.throttled("standard", None)
    waits = asyncio.run(_acquire_all(budget, "standard", 3))
    assert waits[0] == pytest.approx(UNKNOWN_RESET_SECONDS) and max(waits) <= BOUND


def test_paced_calls_never_start_after_the_reset_they_are_spread_over() -> None:
    # Below the low-water mark calls are spaced over the time left; many callers at the same
    # instant must still all fit before the reset (spacing from the previous slot, not from now).
    time = FakeTime()

    async def no_time_passes(seconds: float) -> None:  # every caller reserves at the same instant
        time.slept.append(seconds)

    budget = RateBudget(clock=time.clock, sleep=no_time_passes, low_water=0.5)
    _observe(budget, "heavy", limit="10", remaining="4", reset="10")

    async def together() -> list[float]:
        return list(await asyncio.gather(*(budget.acquire("heavy") for _ in range(4))))

    waits = asyncio.run(together())
    assert waits[0] == 0.0 and waits == sorted(waits)
    assert max(waits) < 10.0


def test_a_client_whose_calls_are_all_dropped_keeps_calling_extend() -> None:
    # The client end to end: one answered call teaches the group, then every connection drops.
    # Each later read must still reach the transport (and fail), never wait in the budget forever.
    time = _Bounded()
    sent: list[str] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        sent.append(request.url.path)
        if len(sent) == 1:
            return httpx2.Response(
                200,
                json={
                    "productNumber": "P1",
                    "productName": "x",
                    "changedDate": "2024-10-15T15:00:00Z",
                },
                headers={
                    "x-ratelimit-limit": "5",
                    "x-ratelimit-remaining": "4",
                    "x-ratelimit-reset": "1",
                },
            )
        raise httpx2.RemoteProtocolError(
            "Server disconnected without sending a response.", request=request
        )

    client = mock_client(
        handler,
        clock=time.clock,
        sleep=time.sleep,
        retry=RetryPolicy(random=lambda: 0.5, max_attempts=3),
    )

    async def run() -> int:
        failed = 0
        async with client:
            await client.get_product("P1")
            for _ in range(20):
                with pytest.raises(TechnicalFailure):
                    await client.get_product("P1")
                failed += 1
        return failed

    assert asyncio.run(run()) == 20
    assert len(sent) == 1 + 20 * 3  # every attempt went out
