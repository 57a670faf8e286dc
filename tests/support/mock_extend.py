"""An Extend client answered by a function of the test's (httpx2.MockTransport), on the test's
clock: for tests of the client's own rules (errors, retries, rate budget, paging) where the
simulator would be more than the test needs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx2

from extend_connector.extend import CallObserver, Dialect, ExtendClient, RateBudget, RetryPolicy
from extend_connector.extend.ratelimit import Sleep
from extend_connector.settings import Settings

BASE_URL = "http://extend.localhost/api"


def mock_client(
    handler: Callable[[httpx2.Request], httpx2.Response] | httpx2.MockTransport,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Sleep = asyncio.sleep,
    budget: RateBudget | None = None,
    retry: RetryPolicy | None = None,
    observer: CallObserver | None = None,
    **dialect: Any,
) -> ExtendClient:
    """A client of the house-contract dialect (`dialect` overrides settings of
    `[extend.dialect]`) whose every request `handler` answers; waits go to `sleep`, time is read
    from `clock` (a budget of its own on the same clock unless `budget` is given)."""
    settings = Settings(extend={"base_url": BASE_URL, "dialect": dialect})
    transport = (
        handler if isinstance(handler, httpx2.MockTransport) else httpx2.MockTransport(handler)
    )
    return ExtendClient(
        dialect=Dialect.from_settings(settings.extend),
        default_warehouse="MainWarehouse",
        default_customer_number="WEB",
        transport=transport,
        budget=budget or RateBudget(clock=clock, sleep=sleep),
        retry=retry or RetryPolicy(random=lambda: 0.5),
        sleep=sleep,
        clock=clock,
        observer=observer,
    )
