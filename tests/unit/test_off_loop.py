"""The flows' rule, checked path by path: async code keeps database work off the event loop.

Each test runs one async path against the simulator (in a thread) with a `LoopGuardDatabase`,
which notes every session opened on a thread that runs an event loop. Before the fix each of
these paths opened sessions on the loop (cursor reads and writes, batch writes, the replay
bookkeeping, a route's lookup), stalling every other async job of the process meanwhile.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import installed_flow
from fastapi.testclient import TestClient
from loop_guard import LoopGuardDatabase

from extend_connector.api import customers as customers_api
from extend_connector.api.app import create_app
from extend_connector.flows import balances, context, failures, prices, products
from extend_connector.settings import ExtendSettings, Settings, StoreSettings
from extend_connector.simulator import SimulatorConfig, run_in_thread
from support.extend_fake import run_flow

AUTH = {"authorization": "Bearer shop-token"}


@pytest.fixture(scope="module")
def sim() -> Iterator[Any]:
    with run_in_thread(
        SimulatorConfig(seed=5, products=30, customers=3, rate_limits_enabled=False)
    ) as running:
        yield running


@pytest.fixture
def ctx(sim: Any, tmp_path: Path) -> Iterator[context.FlowContext]:
    settings = Settings(
        store=StoreSettings(database_url=f"sqlite:///{tmp_path / 'c.db'}"),
        extend=ExtendSettings(
            base_url=sim.base_url, warehouses=["MainWarehouse", "GreenWarehouse"]
        ),
    )
    with installed_flow(settings, database=LoopGuardDatabase) as flow:
        yield flow


def on_loop(ctx: context.FlowContext) -> list[str]:
    assert isinstance(ctx.db, LoopGuardDatabase)
    return ctx.db.on_loop


def run(ctx: context.FlowContext, coro: Any) -> Any:
    assert context.current() is ctx
    return run_flow(coro)


def test_the_balance_sweep_keeps_database_work_off_the_loop(ctx: context.FlowContext) -> None:
    first = run(
        ctx, balances.sweep_balances()
    )  # a full load: cursor, batches, vanished rows, cursor
    assert first.outcomes.get("created", 0) > 0
    run(ctx, balances.sweep_balances(dry_run=True))
    run(ctx, balances.sweep_balances())
    assert on_loop(ctx) == []


def test_a_list_then_fetch_sweep_keeps_database_work_off_the_loop(ctx: context.FlowContext) -> None:
    result = run(
        ctx, products.sweep_products()
    )  # sync.sweep_changed: cursor start, batches, cursor finish
    assert result.outcomes.get("created", 0) > 0
    run(ctx, products.sweep_products(dry_run=True))
    assert on_loop(ctx) == []


def test_the_price_sweep_keeps_database_work_off_the_loop(ctx: context.FlowContext) -> None:
    result = run(ctx, prices.sweep_prices())  # reads the kept customers first
    assert result.outcomes.get("created", 0) > 0
    assert on_loop(ctx) == []


def test_the_active_customers_price_refresh_keeps_database_work_off_the_loop(
    ctx: context.FlowContext,
) -> None:
    run(ctx, prices.refresh_active())  # the body of the scheduled step `_prices_active_step`
    assert on_loop(ctx) == []


def test_replaying_a_failure_keeps_database_work_off_the_loop(ctx: context.FlowContext) -> None:
    def sync_replay(failure: failures.Failure) -> str:
        with ctx.db.read():  # a sync replay does its own database work
            return f"replayed {failure.key}"

    async def refusing_replay(failure: failures.Failure) -> str:
        raise failures.StillFailing("still wrong")

    failures.register_replay("test.off_loop_ok", sync_replay)
    failures.register_replay("test.off_loop_refused", refusing_replay)
    with ctx.db.write() as session:
        ok = failures.park(session, kind="test.off_loop_ok", key="k1", reason="r", message="m")
        refused = failures.park(
            session, kind="test.off_loop_refused", key="k2", reason="r", message="m"
        )
    assert run(ctx, failures.retry(ok)) == "replayed k1"
    with pytest.raises(failures.StillFailing):
        run(ctx, failures.retry(refused))
    assert failures.get(ok).resolved_at is not None
    assert failures.get(refused).retry_count == 1
    assert on_loop(ctx) == []


def test_the_customer_registration_lookup_keeps_database_work_off_the_loop(
    ctx: context.FlowContext,
) -> None:
    app = create_app(routers=[customers_api.router], state={"flow_context": ctx})
    with TestClient(app) as client:
        response = client.get("/v1/customer-registrations/shop-1", headers=AUTH)
    assert response.status_code == 200 and response.json()["status"] == "pending"
    assert on_loop(ctx) == []
