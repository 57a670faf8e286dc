"""Extend in process: the bundled simulator's ASGI app behind httpx2's ASGI transport (no socket,
no thread, no subprocess), with its state and fault controls at hand, for unit tests that run the
real Extend client; and `inline_context`, a FlowContext on a migrated SQLite file and an inline
engine, so workflow logic runs as plain calls."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2

from extend_connector import engine
from extend_connector.extend import CallObserver, ExtendClient
from extend_connector.extend.ratelimit import RateBudget
from extend_connector.extend.retry import RetryPolicy
from extend_connector.flows import context
from extend_connector.settings import Settings
from extend_connector.simulator import SimulatorConfig
from extend_connector.simulator.config import FaultConfig
from extend_connector.simulator.server import build_app
from extend_connector.simulator.state import SimState
from extend_connector.store.database import Database
from extend_connector.store.migrate import migrate
from extend_connector.store.models import CursorRow, ProductRow
from extend_connector.webshop import RecordingWebshop

BASE_URL = "http://127.0.0.1/api"  # loopback: the public simulator credentials are accepted
# One attempt per call: the workflow, not the client, decides about retries (and under the inline
# engine its waits are recorded, not slept).
ONE_ATTEMPT = RetryPolicy(max_attempts=1, max_total_seconds=1.0, floor_seconds=0, cap_seconds=0)


class _SimulatorTransport(httpx2.ASGITransport):
    """httpx2's ASGI transport, with the simulator's dropped connection (an outage in `drop`
    mode, a lost answer) surfacing as the transport error a real socket gives; every request is
    noted as (method, path) in `seen`."""

    def __init__(
        self,
        *,
        app: Any,
        seen: list[tuple[str, str]],
        slow: dict[tuple[str, str], float] | None = None,
    ) -> None:
        super().__init__(app=app)
        self.seen = seen
        self.slow = {} if slow is None else slow

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        self.seen.append((request.method, request.url.path))
        if len(self.seen) > 500:  # a workflow retrying without waiting fails instead of hanging
            raise AssertionError("more than 500 requests to the simulator: a runaway retry loop")
        for (method, suffix), seconds in self.slow.items():
            if request.method == method and request.url.path.endswith(suffix):
                await asyncio.sleep(seconds)
        try:
            return await super().handle_async_request(request)
        except ConnectionResetError as exc:
            raise httpx2.RemoteProtocolError(str(exc), request=request) from exc


@dataclass
class ExtendFake:
    """The simulator app in this process: `transport()` for a FlowContext, `state` to look at or
    drive, `set_faults(...)` for fault injection (FaultConfig's fields)."""

    app: Any  # simulator.app.Simulator
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path) as sent
    # (method, path suffix) -> seconds every such request waits before it is answered
    slow: dict[tuple[str, str], float] = field(default_factory=dict)

    @property
    def state(self) -> SimState:
        state: SimState = self.app.state
        return state

    def transport(self) -> httpx2.AsyncBaseTransport:
        return _SimulatorTransport(app=self.app, seen=self.requests, slow=self.slow)

    def set_faults(self, **changes: Any) -> FaultConfig:
        return self.state.set_faults(**changes)

    def posts(self, path_suffix: str) -> int:
        """How many POSTs were sent to a path ending in `path_suffix`."""
        return sum(1 for m, p in self.requests if m == "POST" and p.endswith(path_suffix))

    def orders_for(self, shop_ref: str) -> list[Any]:
        """The simulator's orders whose external number is `shop_ref`."""
        return [
            o
            for o in self.state.orders.values()
            if getattr(o, "order_number_external", None) == shop_ref
        ]


@contextlib.contextmanager
def extend_fake(config: SimulatorConfig | None = None) -> Iterator[ExtendFake]:
    app = build_app(
        config or SimulatorConfig(seed=3, products=20, customers=3, rate_limits_enabled=False)
    )
    try:
        yield ExtendFake(app=app)
    finally:
        app.close()


def run_flow(coro: Any) -> Any:
    """Run a flow's coroutine to its end on a fresh event loop, then close the installed
    context's clients (they belong to that loop)."""

    async def go() -> Any:
        try:
            return await coro
        finally:
            await context.current().aclose()

    return asyncio.run(go())


async def _no_wait(seconds: float) -> None:
    """The client's own waits (a rate budget, a Retry-After) are not slept in unit tests."""


@contextlib.contextmanager
def inline_context(
    tmp_path: Path,
    fake: ExtendFake,
    *,
    run_jobs: bool = False,
    settings: dict[str, Any] | None = None,
    clock: engine.FakeClock | None = None,
    observer: CallObserver | None = None,
) -> Iterator[tuple[context.FlowContext, engine.InlineRun]]:
    """A FlowContext (migrated SQLite in `tmp_path`, the fake Extend, an `InlineEngine`, the
    local product copy as a products sweep leaves it) installed inside `engine.inline()`; the
    context's clock is the run's fake clock. `observer` (e.g. `flows.freshness.reachability`)
    hears of every call, as the real context's clients report to reachability."""
    cfg = Settings.model_validate(
        {
            "extend": {
                "base_url": BASE_URL,
                "warehouses": ["MainWarehouse", "GreenWarehouse"],
            },
            "store": {"database_url": f"sqlite:///{tmp_path / 'c.db'}"},
            **(settings or {}),
        }
    )
    migrate(cfg.store.url)
    db = Database(cfg.store.url)
    clock = clock or engine.FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    with engine.inline(clock) as run:
        ctx = context.FlowContext(
            settings=cfg,
            db=db,
            engine=engine.InlineEngine(run_jobs=run_jobs),  # type: ignore[arg-type]
            webshop=RecordingWebshop(),  # type: ignore[arg-type]
            clock=clock,
            deliver_to_shop=False,
        )
        factory: Callable[[], ExtendClient] = lambda: ExtendClient.from_settings(  # noqa: E731
            cfg,
            retry=ONE_ATTEMPT,
            transport=fake.transport(),
            sleep=_no_wait,
            budget=RateBudget(sleep=_no_wait),
            observer=observer,
        )
        ctx.extend_factory = factory
        with db.write() as session:
            for number in list(fake.state.products)[:10]:
                session.add(ProductRow(product_number=number, name=number))
            session.add(CursorRow(name="products", high_water_mark=clock(), stats={}))
        context.install(ctx)
        try:
            yield ctx, run
        finally:
            context.install(None)
            db.dispose()
