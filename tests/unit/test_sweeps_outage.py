"""A scheduled sweep that meets an Extend outage ends quietly; one that meets an error no retry
can fix still stops its job (parked for a person by the watchdog).

`demo --chaos`, 3 runs of 15: the orders sweep fired during the "Extend DOWN" phase, its
`GET CustomerOrders` got 503, the job stopped in ERROR and the watchdog parked it as a `job`
failure an operator had to clear, although the next scheduled sweep covers the same ground from
the same cursor. Only the balances sweep handled it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import pytest
from fakes import installed_flow

from extend_connector.extend import ExtendClient
from extend_connector.extend.errors import ValidationFailed
from extend_connector.extend.retry import RetryPolicy
from extend_connector.flows import balances, context, customers, prices, products
from extend_connector.flows.orders import sweep as orders_sweep
from extend_connector.settings import (
    ExtendSettings,
    ScopeSettings,
    Settings,
    StoreSettings,
)
from extend_connector.simulator import SimulatorConfig, run_in_thread
from extend_connector.store.models import CursorRow
from support.extend_fake import run_flow

QUICK_RETRY = RetryPolicy(
    max_attempts=2, max_total_seconds=0.5, floor_seconds=0.01, cap_seconds=0.05
)

# The step each scheduled sweep job runs.
STEPS: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {
    "orders": orders_sweep._sweep_step,
    "balances": balances._sweep_step,
    "products": products._products_sweep_step,
    "customers": customers._customers_sweep_step,
    "prices_full": prices._prices_full_step,
    "prices_active": prices._prices_active_step,
}


@pytest.fixture(scope="module")
def sim() -> Iterator[Any]:
    with run_in_thread(
        SimulatorConfig(seed=11, products=10, customers=3, rate_limits_enabled=False)
    ) as running:
        yield running


@pytest.fixture
def ctx(sim: Any, tmp_path: Path) -> Iterator[context.FlowContext]:
    settings = Settings(
        store=StoreSettings(database_url=f"sqlite:///{tmp_path / 'c.db'}"),
        extend=ExtendSettings(
            base_url=sim.base_url, warehouses=["MainWarehouse", "GreenWarehouse"]
        ),
        scope=ScopeSettings(products="sync", customers="from_extend", prices="sync"),
    )
    with installed_flow(settings, retry=QUICK_RETRY) as flow:
        with flow.db.write() as session:
            session.add(
                CursorRow(
                    name=orders_sweep.CURSOR,
                    high_water_mark=datetime.now(UTC) - timedelta(hours=1),
                )
            )
        yield flow


def _run(step: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    result: dict[str, Any] = run_flow(step())
    return result


# A sweep that calls Extend on an empty store (the active customers' prices refresh has no
# customer to ask for yet); the orders sweep is given a cursor to read from.
CALLING = sorted(set(STEPS) - {"prices_active"})


@pytest.mark.parametrize("name", CALLING)
def test_a_sweep_during_an_outage_ends_quietly_for_the_next_run(
    name: str, sim: Any, ctx: context.FlowContext
) -> None:
    sim.state.start_outage(None)
    try:
        result = _run(STEPS[name])
    finally:
        sim.state.set_faults(outage=False)
    assert result["outcome"] == "extend_unreachable", result
    assert "503" in result["error"]


def _refuse(request: httpx2.Request) -> httpx2.Response:
    return httpx2.Response(
        400,
        json={"errorType": "Validation", "code": "InvalidQuery", "message": "not like this"},
    )


@pytest.mark.parametrize("name", CALLING)
def test_a_sweep_extend_refuses_still_stops_its_job(name: str, ctx: context.FlowContext) -> None:
    settings = ctx.settings
    ctx.extend_factory = lambda: ExtendClient.from_settings(
        settings, retry=QUICK_RETRY, transport=httpx2.MockTransport(_refuse)
    )
    with pytest.raises(ValidationFailed, match="InvalidQuery"):
        _run(STEPS[name])


@pytest.mark.parametrize("name", sorted(STEPS))
def test_a_sweep_that_runs_says_done(name: str, ctx: context.FlowContext) -> None:
    assert _run(STEPS[name])["outcome"] == "done"
