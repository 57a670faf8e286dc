"""Fakes shared by unit tests (the unit folder is on sys.path: `from fakes import ...`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx2

from extend_connector.extend import ExtendClient, RateBudget, RetryPolicy
from extend_connector.flows import context
from extend_connector.settings import Settings
from extend_connector.store.database import Database
from extend_connector.store.migrate import migrate
from extend_connector.webshop import RecordingWebshop


class NoEngine:
    """The job engine of a flow run directly in a unit test: it executes nothing, and a flow
    that tries to start a job fails the test."""

    executes = False

    def debounce(self, *args: Any, **kwargs: Any) -> str:
        raise AssertionError("no job is started in these tests")


@contextmanager
def installed_flow(
    settings: Settings,
    *,
    database: Callable[[str], Database] = Database,
    retry: RetryPolicy | None = None,
    transport: httpx2.AsyncBaseTransport | None = None,
) -> Iterator[context.FlowContext]:
    """A migrated database and a FlowContext on it for flows run directly (`NoEngine`, a
    recording shop that is told nothing), installed until exit; `retry`/`transport` shape the
    Extend client when given."""
    migrate(settings.store.url)
    db = database(settings.store.url)
    flow = context.FlowContext(
        settings=settings,
        db=db,
        engine=NoEngine(),  # type: ignore[arg-type]
        webshop=RecordingWebshop(),  # type: ignore[arg-type]
        deliver_to_shop=False,
    )
    if retry is not None or transport is not None:
        flow.extend_factory = lambda: ExtendClient.from_settings(
            settings, retry=retry, transport=transport
        )
    context.install(flow)
    try:
        yield flow
    finally:
        context.install(None)
        db.dispose()


class FakeTime:
    """A clock that only moves when somebody sleeps: no test here waits for real."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class FrozenTime(FakeTime):
    """Callers that all reserve at one instant (as concurrent tasks do): sleeps are recorded,
    the clock does not move."""

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def budget_with(time: FakeTime, *, remaining: int, limit: int = 300) -> RateBudget:
    """A rate budget on `time` that has learnt the standard group: `remaining` of `limit` left,
    a 60 s refill period, full again in 60 s."""
    budget = RateBudget(clock=time.clock, sleep=time.sleep)
    budget.set_periods({"standard": (limit, 60.0)})
    budget.observe(
        "standard",
        {
            "x-ratelimit-limit": str(limit),
            "x-ratelimit-remaining": str(remaining),
            "x-ratelimit-reset": "60",
        },
        limit_header="x-ratelimit-limit",
        remaining_header="x-ratelimit-remaining",
        reset_header="x-ratelimit-reset",
    )
    return budget
