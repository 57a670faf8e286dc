"""RateBudget with a fleet-wide bucket attached: its waits are slept, a 429 blocks it, and a
bucket that fails or hangs never fails the Extend call (local pacing takes over, one warning
a minute)."""

from __future__ import annotations

import asyncio
import json

import httpx2
import pytest
from fakes import FakeTime
from structlog.testing import capture_logs

from extend_connector.extend import ExtendError, RateBudget, RetryPolicy, bulk_calls
from extend_connector.extend.ratelimit import FLEET_WARNING_INTERVAL_SECONDS
from support.mock_extend import mock_client

LIMITS = {"standard": (300, 60.0), "heavy": (60, 60.0), "write": (120, 60.0)}
HEADERS = {
    "limit_header": "x-ratelimit-limit",
    "remaining_header": "x-ratelimit-remaining",
    "reset_header": "x-ratelimit-reset",
}


class FakeFleet:
    """Hands out the waits it is given and records every call."""

    def __init__(
        self,
        waits: list[float] | None = None,
        *,
        error: Exception | None = None,
        hang: bool = False,
    ) -> None:
        self.waits = list(waits or [])
        self.error = error
        self.hang = hang
        self.reserved: list[tuple[str, float, float]] = []
        self.bulk: list[bool] = []
        self.blocked: list[tuple[str, float, float, float]] = []
        self.released: list[str] = []

    async def reserve(self, group: str, limit: float, period: float, bulk: bool = False) -> float:
        self.reserved.append((group, limit, period))
        self.bulk.append(bulk)
        if self.hang:
            await asyncio.Event().wait()
        if self.error is not None:
            raise self.error
        return self.waits.pop(0) if self.waits else 0.0

    async def block(self, group: str, seconds: float, limit: float, period: float) -> None:
        self.blocked.append((group, seconds, limit, period))
        if self.error is not None:
            raise self.error

    async def release(self, group: str, limit: float, period: float) -> None:
        self.released.append(group)
        if self.error is not None:
            raise self.error


def _budget(time: FakeTime, fleet: FakeFleet, **kwargs: float) -> RateBudget:
    budget = RateBudget(clock=time.clock, sleep=time.sleep)
    budget.attach_fleet(fleet, limits=LIMITS, **kwargs)
    return budget


def test_acquire_sleeps_the_fleet_slot_first() -> None:
    time = FakeTime()
    fleet = FakeFleet([0.0, 2.5, 0.25])
    budget = _budget(time, fleet)

    async def run() -> list[float]:
        return [await budget.acquire("standard") for _ in range(3)]

    assert asyncio.run(run()) == [0.0, 2.5, 0.25]
    assert time.slept == [2.5, 0.25]
    # Configured 300/60 with the default headroom 0.9: a bucket of 270 calls per 60 s.
    assert fleet.reserved == [("standard", pytest.approx(270.0), 60.0)] * 3


def test_fleet_wait_adds_to_local_header_pacing() -> None:
    time = FakeTime()
    fleet = FakeFleet([1.0])
    budget = _budget(time, fleet)
    budget.observe(
        "heavy",
        {"x-ratelimit-limit": "60", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "4"},
        **HEADERS,
    )
    waited = asyncio.run(budget.acquire("heavy"))
    # 1 s for the fleet slot, then this process still waits for the reset its headers announced.
    assert time.slept[0] == 1.0
    assert waited == pytest.approx(4.0) and time.now == pytest.approx(4.0)


def test_the_limit_extend_announces_replaces_the_configured_one() -> None:
    time = FakeTime()
    fleet = FakeFleet()
    budget = _budget(time, fleet, headroom=0.8)
    budget.observe("heavy", {"x-ratelimit-limit": "100", "x-ratelimit-remaining": "99"}, **HEADERS)
    asyncio.run(budget.acquire("heavy"))
    asyncio.run(budget.acquire("write"))
    assert fleet.reserved == [
        ("heavy", pytest.approx(80.0), 60.0),
        ("write", pytest.approx(96.0), 60.0),
    ]


def test_a_group_without_a_known_limit_is_not_reserved() -> None:
    time = FakeTime()
    fleet = FakeFleet([5.0])
    budget = _budget(time, fleet)
    assert asyncio.run(budget.acquire("bulk")) == 0.0
    assert fleet.reserved == []


def test_a_429_blocks_the_fleet_for_retry_after() -> None:
    time = FakeTime()
    fleet = FakeFleet()
    answers = [
        httpx2.Response(
            429,
            json={"errorType": "Technical", "code": "TooMany"},
            headers={"retry-after": "6", "x-ratelimit-limit": "300"},
        ),
        httpx2.Response(
            200,
            content=json.dumps(
                {"productNumber": "P1", "productName": "x", "changedDate": "2024-10-15T15:00:00Z"}
            ).encode(),
        ),
    ]
    budget = _budget(time, fleet)
    client = mock_client(
        lambda request: answers.pop(0), clock=time.clock, sleep=time.sleep, budget=budget
    )

    async def run() -> None:
        async with client:
            assert (await client.get_product("P1")).product_number == "P1"

    asyncio.run(run())
    assert fleet.blocked == [("standard", 6.0, pytest.approx(270.0), 60.0)]
    assert len(fleet.reserved) == 2  # the retry took a new slot
    assert sum(time.slept) == pytest.approx(6.0)  # and this process waited as told


def test_a_failing_fleet_falls_back_to_local_pacing_and_warns_once_a_minute() -> None:
    time = FakeTime()
    fleet = FakeFleet(error=ConnectionError("database is down"))
    budget = _budget(time, fleet)

    async def run() -> list[float]:
        waits = [await budget.acquire("standard") for _ in range(3)]
        await budget.report_throttled("standard", 2.0)  # must not raise either
        waits.append(await budget.acquire("standard"))
        return waits

    with capture_logs() as logs:
        waits = asyncio.run(run())
        time.now += FLEET_WARNING_INTERVAL_SECONDS
        asyncio.run(budget.acquire("standard"))
    # The local 429 still holds: this process waited for its Retry-After before the fourth call.
    assert waits == [0.0, 0.0, 0.0, pytest.approx(2.0)]
    assert budget.fleet_failures == 6
    warnings = [entry for entry in logs if entry["event"] == "fleet_rate_limit_unavailable"]
    assert len(warnings) == 2 and warnings[0]["log_level"] == "warning"
    assert "database is down" in warnings[0]["error"]


def test_a_hanging_fleet_is_given_up_after_its_timeout() -> None:
    time = FakeTime()
    fleet = FakeFleet(hang=True)
    budget = _budget(time, fleet, timeout=0.05)
    with capture_logs() as logs:
        assert asyncio.run(budget.acquire("standard")) == 0.0
    assert budget.fleet_failures == 1
    assert logs[0]["error"].startswith("TimeoutError")


def test_detach_only_removes_the_bucket_still_attached() -> None:
    time = FakeTime()
    first, second = FakeFleet(), FakeFleet()
    budget = _budget(time, first)
    budget.attach_fleet(second, limits=LIMITS)
    budget.detach_fleet(first)  # a connector closing after another took over
    assert budget.fleet is second
    budget.detach_fleet(second)
    assert budget.fleet is None
    asyncio.run(budget.acquire("standard"))
    assert first.reserved == second.reserved == []


@pytest.mark.parametrize(
    ("failure", "released"),
    [
        (
            httpx2.RemoteProtocolError("Server disconnected without sending a response."),
            True,
        ),  # dropped
        (httpx2.ConnectError("connection refused"), True),  # never sent
        (httpx2.ReadTimeout("timed out"), False),  # Extend may have counted (and be processing) it
    ],
)
def test_a_call_that_got_no_answer_gives_its_slot_back(failure: Exception, released: bool) -> None:
    time = FakeTime()
    fleet = FakeFleet()

    def handler(request: httpx2.Request) -> httpx2.Response:
        raise failure

    budget = _budget(time, fleet)
    budget.observe(
        "standard",
        {"x-ratelimit-limit": "300", "x-ratelimit-remaining": "10", "x-ratelimit-reset": "30"},
        **HEADERS,
    )
    client = mock_client(
        handler,
        clock=time.clock,
        sleep=time.sleep,
        budget=budget,
        retry=RetryPolicy(max_attempts=1),
    )

    async def run() -> None:
        async with client:
            with pytest.raises(ExtendError):
                await client.get_product("P1")

    asyncio.run(run())
    assert fleet.released == (["standard"] if released else [])
    assert budget.snapshot()[0].remaining == (10 if released else 9)


def test_a_bulk_call_asks_the_fleet_for_a_bulk_slot() -> None:
    time = FakeTime()
    fleet = FakeFleet()
    budget = _budget(time, fleet)

    async def run() -> None:
        await budget.acquire("standard")
        with bulk_calls():
            await budget.acquire("standard")
        await budget.acquire("standard")

    asyncio.run(run())
    assert fleet.bulk == [False, True, False]
