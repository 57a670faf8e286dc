"""ProductChanged notifications refresh prices in coalesced batches, not one listing per product.

Real connector (HTTP inbox + engine in a thread) and a real simulator that sends its webhooks to
it, SQLite. 30 products change (name and list price) in one burst; every kept customer's prices
for them must end equal to Extend's, with a handful of `ProductPrices` calls per kept customer
(one listing per customer and product would be 30 per customer).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx2
import sqlalchemy as sa

from extend_connector.flows import prices
from extend_connector.flows.context import current
from extend_connector.flows.customers import sweep_customers
from extend_connector.flows.prices import sweep_prices
from extend_connector.flows.products import sweep_products
from extend_connector.service import Connector
from extend_connector.settings import Settings
from extend_connector.simulator import SimulatorConfig, WebhookRegistration, run_in_thread
from extend_connector.simulator.server import RunningSimulator
from extend_connector.store.models import DirtyPriceProductRow, PriceRow
from support.processes import free_port, wait_for

CHANGED = 30


def _sim_prices(sim: RunningSimulator, customer: str, numbers: list[str]) -> dict[str, Decimal]:
    with sim.state.lock:
        _ix, quotes, _changed = sim.state.price_index(customer)
        return {n: Decimal(str(quotes[n].unit_price)) for n in numbers}


def _local_prices(connector: Connector, customer: str, numbers: list[str]) -> dict[str, Decimal]:
    with connector.db.read() as s:
        return {
            r.product_number: r.unit_price
            for r in s.scalars(
                sa.select(PriceRow).where(
                    PriceRow.customer_number == customer, PriceRow.product_number.in_(numbers)
                )
            )
        }


def test_product_changes_refresh_prices_once_per_customer_not_once_per_product(
    tmp_path: Path,
) -> None:
    port = free_port()
    inbox = f"http://127.0.0.1:{port}/webhooks/extend"
    config = SimulatorConfig(
        seed=21,
        products=200,
        customers=30,
        b2b_share=0.2,
        rate_limits_enabled=False,
        time_scale=0.01,
        webhooks=(WebhookRegistration(callback_url=inbox, events=("ProductChanged",)),),
    )
    with run_in_thread(config) as sim:
        settings = Settings(
            extend={
                "base_url": sim.base_url,
                "api_token": sim.token,
                "dialect": {"page_size": 100},
            },
            store={"database_url": f"sqlite:///{tmp_path / 'c.db'}"},
            server={"port": port},
            scope={"products": "sync", "customers": "from_extend", "prices": "sync"},
        )
        connector = Connector(settings, scheduler_poll_seconds=0.2)
        try:
            connector.engine.connect()

            async def load() -> list[str]:
                try:
                    await sweep_products()
                    await sweep_customers()
                    await sweep_prices()
                    with current().db.read() as s:
                        from extend_connector.flows.prices import kept_customer_numbers

                        return kept_customer_numbers(s, current().settings)
                finally:
                    await current().aclose()

            kept = asyncio.run(load())
            connector.engine.shutdown()
            assert len(kept) >= 4, kept
            with connector.serve_in_thread(port=port):
                with sim.state.lock:
                    numbers = sorted(sim.state.products)[10 : 10 + CHANGED]
                sim.state.calls.clear()
                for i, number in enumerate(numbers):
                    with sim.state.lock:
                        price = sim.state.products[number].list_price
                    response = httpx2.patch(
                        f"{sim.admin_url}/products/{number}",
                        json={"productName": f"Changed {i}", "listPrice": round(price * 1.5, 2)},
                    )
                    assert response.status_code == 200, response.text
                wait_for(
                    lambda: sim.state.calls.get("GET /Products/{productNumber}", 0) >= CHANGED,
                    timeout=60,
                    what="every changed product fetched",
                )

                def settled() -> bool:
                    with connector.db.read() as s:
                        dirty = s.scalar(
                            sa.select(sa.func.count()).select_from(DirtyPriceProductRow)
                        )
                    return dirty == 0 and all(
                        _local_prices(connector, c, numbers) == _sim_prices(sim, c, numbers)
                        for c in kept
                    )

                wait_for(
                    settled,
                    timeout=60,
                    what="every kept customer's prices of the changed products equal to Extend's",
                )
                listings = sim.state.calls.get("GET /ProductPrices", 0)

                # A mark whose flush was never asked for (the process died between storing the
                # product and asking): the scheduled active-customer refresh asks for it.
                target = numbers[:1]
                with sim.state.lock:
                    price = sim.state.products[target[0]].list_price
                # Only the list price: the simulator sends no ProductChanged for that.
                httpx2.patch(
                    f"{sim.admin_url}/products/{target[0]}", json={"listPrice": round(price * 2, 2)}
                )
                with connector.db.write() as s:
                    prices.mark_products(s, target, now=datetime.now(UTC))
                connector.engine.start(prices.scheduled_active_refresh)
                wait_for(
                    lambda: all(
                        _local_prices(connector, c, target) == _sim_prices(sim, c, target)
                        for c in kept
                    ),
                    timeout=60,
                    what="the orphaned mark's prices refreshed",
                )
        finally:
            connector.close()
    # Coalesced: at most a few passes (the debounce may split a burst), each one call per customer.
    assert len(kept) <= listings <= 3 * len(kept), (listings, len(kept))
    assert listings < CHANGED * len(kept)
