"""Products, customers and prices against a real simulator and a real database.

Sizes are a small fraction of the issue's (the full 20,000-product run is
benchmarks/catalogue_sync.py): 300 products, 40 customers, prices for the B2B ones plus WEB.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from extend_connector.flows.customers import sweep_customers
from extend_connector.flows.prices import sweep_prices
from extend_connector.flows.products import sweep_products
from extend_connector.flows.sync import NullProgress, SweepResult
from extend_connector.service import Connector
from extend_connector.settings import Settings
from extend_connector.simulator import SimulatorConfig, run_in_thread
from extend_connector.simulator.server import RunningSimulator
from extend_connector.store.models import CustomerRow, OutboxRow, PriceRow, ProductRow, metadata

PRODUCTS = 300
CUSTOMERS = 40


def _settings(sim: RunningSimulator, db: str, **scope: Any) -> Settings:
    return Settings(
        extend={"base_url": sim.base_url, "api_token": sim.token, "dialect": {"page_size": 100}},
        store={"database_url": db},
        scope={"products": "sync", "customers": "from_extend", "prices": "sync", **scope},
    )


@pytest.fixture()
def sim() -> Iterator[RunningSimulator]:
    config = SimulatorConfig(
        seed=11,
        products=PRODUCTS,
        customers=CUSTOMERS,
        b2b_share=0.15,
        rate_limits_enabled=False,
        webhooks=(),
    )
    with run_in_thread(config) as running:
        yield running


@pytest.fixture()
def connector(sim: RunningSimulator, tmp_path: Path) -> Iterator[Connector]:
    c = Connector(_settings(sim, f"sqlite:///{tmp_path / 'c.db'}"))
    c.engine.connect()
    try:
        yield c
    finally:
        c.engine.shutdown()
        c.close()


def run(coro: Any) -> SweepResult:
    result: SweepResult = asyncio.run(coro)
    return result


def counters(sim: RunningSimulator) -> dict[str, int]:
    return dict(sim.state.calls)


def reset(sim: RunningSimulator) -> None:
    sim.state.calls.clear()


def sync_all(*, dry_run: bool = False) -> list[SweepResult]:
    async def go() -> list[SweepResult]:
        from extend_connector.flows.context import current

        try:
            return [
                await sweep_products(dry_run=dry_run),
                await sweep_customers(dry_run=dry_run),
                await sweep_prices(dry_run=dry_run),
            ]
        finally:
            await current().aclose()

    return asyncio.run(go())


def _local_products(c: Connector) -> dict[str, tuple[str, bool]]:
    with c.db.read() as s:
        return {r.product_number: (r.name, r.phase_out) for r in s.scalars(sa.select(ProductRow))}


def _sim_products(sim: RunningSimulator) -> dict[str, tuple[str, bool]]:
    with sim.state.lock:
        return {
            p.product_number: (p.product_name, bool(p.phase_out))
            for p in sim.state.products.values()
        }


def _local_prices(c: Connector, customer: str) -> dict[str, Decimal]:
    with c.db.read() as s:
        return {
            r.product_number: r.unit_price
            for r in s.scalars(sa.select(PriceRow).where(PriceRow.customer_number == customer))
        }


def _sim_prices(sim: RunningSimulator, customer: str) -> dict[str, Decimal]:
    with sim.state.lock:
        _ix, quotes, _changed = sim.state.price_index(customer)
        return {k: Decimal(str(q.unit_price)) for k, q in quotes.items()}


def _b2b(sim: RunningSimulator) -> list[str]:
    with sim.state.lock:
        return sorted(
            c.customer_number for c in sim.state.customers.values() if c.organization_number
        )


# Each process's reachability row is its heartbeat (written every few seconds whatever it does),
# not data a sync could change.
_HEARTBEATS = {"extend_reachability"}


def _snapshot(c: Connector) -> dict[str, list[tuple[Any, ...]]]:
    with c.db.read() as s:
        return {
            t.name: sorted(map(tuple, s.execute(sa.select(t)).all()), key=repr)
            for t in metadata.sorted_tables
            if t.name not in _HEARTBEATS
        }


def test_first_sync_exact_second_sync_lists_only_then_exactly_the_changes(
    sim: RunningSimulator, connector: Connector
) -> None:
    products, customers, prices = sync_all()
    assert _local_products(connector) == _sim_products(sim)
    assert products.outcomes.get("created") == PRODUCTS
    with connector.db.read() as s:
        local_customers = {
            r.customer_number: (r.name, r.organization_number, r.price_list, r.salesperson)
            for r in s.scalars(sa.select(CustomerRow))
        }
    with sim.state.lock:
        expected = {
            c.customer_number: (c.name, c.organization_number, c.price_list, c.salesperson)
            for c in sim.state.customers.values()
        }
    assert local_customers == expected
    kept = ["WEB", *_b2b(sim)]
    assert len(kept) >= 4
    for number in kept:
        assert _local_prices(connector, number) == _sim_prices(sim, number), number
    assert prices.outcomes.get("created") == len(kept) * PRODUCTS

    # Nothing changed: only list calls, no fetch.
    reset(sim)
    again = sync_all()
    calls = counters(sim)
    assert calls.get("GET /Products/{productNumber}", 0) == 0
    assert calls.get("GET /Customers/{customerNumber}", 0) == 0
    assert set(calls) <= {"GET /Products", "GET /Customers", "GET /ProductPrices"}, calls
    assert all(set(r.outcomes) <= {"unchanged"} for r in again), [r.outcomes for r in again]
    with connector.db.read() as s:
        outbox_before = int(s.scalar(sa.select(sa.func.max(OutboxRow.id))) or 0)

    # Change 50 products, 10 customers and one price-list entry.
    changed_products = sorted(sim.state.products)[100:150]
    for i, number in enumerate(changed_products):
        sim.state.update_product(number, {"productName": f"Renamed {i}"})
    changed_customers = sorted(sim.state.customers)[:10]
    for number in changed_customers:
        sim.state.update_customer(number, {"salesperson": "NEWSP"})
    with sim.state.lock:
        buyer = next(
            c for c in sim.state.customers.values() if c.organization_number and c.price_list
        )
        price_list = buyer.price_list
    assert price_list is not None
    target = sorted(sim.state.products)[7]
    before = _sim_prices(sim, buyer.customer_number)[target]
    # Lower than any other price the customer has, so it becomes the best (net) price.
    new_price = round(float(before) / 3, 2)
    sim.state.set_price_list_entry(price_list, target, new_price)
    reset(sim)
    products, customers, prices = sync_all()
    calls = counters(sim)
    assert calls.get("GET /Products/{productNumber}") == 50
    assert calls.get("GET /Customers/{customerNumber}") == 10
    assert products.outcomes.get("updated") == 50
    assert customers.outcomes.get("updated") == 10
    assert _local_products(connector) == _sim_products(sim)
    assert _local_prices(connector, buyer.customer_number)[target] == Decimal(str(new_price))
    for number in kept:
        assert _local_prices(connector, number) == _sim_prices(sim, number), number
    # Told to the shop: 50 products, 10 customers, and the changed prices only (batched per
    # customer).
    with connector.db.read() as s:
        events = [
            (r.event_type, r.payload)
            for r in s.scalars(sa.select(OutboxRow).where(OutboxRow.id > outbox_before))
        ]
    by_type = Counter(t for t, _ in events)
    assert by_type["product.changed"] == 50 and by_type["customer.changed"] == 10, by_type
    told_prices = sum(len(data["prices"]) for t, data in events if t == "price.changed")
    assert told_prices == prices.outcomes.get("updated", 0) + prices.outcomes.get("created", 0)
    assert prices.outcomes.get("updated", 0) >= 1


def _count(c: Connector, model: Any) -> int:
    with c.db.read() as s:
        return int(s.scalar(sa.select(sa.func.count()).select_from(model)) or 0)


class MutateOnFirstPage(NullProgress):
    """Changes records while the sweep is paging (on the first page it reads)."""

    def __init__(self, sim: RunningSimulator, numbers: list[str], name: str) -> None:
        self.sim, self.numbers, self.name, self.done = sim, numbers, name, False

    def page(self, *, pages: int, records: int, total: int | None) -> None:
        if not self.done:
            self.done = True
            # A new instant shared by all of them (the clock stays frozen): a tie of its own.
            self.sim.state.clock.advance(1.0)
            for number in self.numbers:
                self.sim.state.update_product(number, {"productName": self.name})


def test_changes_while_paging_with_ties_at_page_boundary_are_picked_up(
    sim: RunningSimulator, connector: Connector
) -> None:
    run(sweep_products())
    numbers = sorted(sim.state.products)
    # 150 products with one change timestamp: the tie spans a page boundary (page size 100).
    sim.state.clock.freeze()
    try:
        for number in numbers[50:200]:
            sim.state.update_product(number, {"productName": "Tied"})
        # While the next sweep pages, five more change at that same instant, some already
        # read (early numbers) and some not yet.
        during = [numbers[0], numbers[60], numbers[199], numbers[250], numbers[299]]
        run(sweep_products(progress=MutateOnFirstPage(sim, during, "Changed while paging")))
    finally:
        sim.state.clock.unfreeze()
    run(sweep_products())
    local = _local_products(connector)
    assert local == _sim_products(sim)
    assert all(local[n][0] == "Changed while paging" for n in during)


def test_dry_run_changes_nothing(sim: RunningSimulator, connector: Connector) -> None:
    sync_all()
    for number in sorted(sim.state.products)[:20]:
        sim.state.update_product(number, {"productName": "Dry"})
    for number in sorted(sim.state.customers)[:5]:
        sim.state.update_customer(number, {"salesperson": "DRY"})
    before = _snapshot(connector)
    products, customers, _prices = sync_all(dry_run=True)
    assert _snapshot(connector) == before
    assert products.outcomes.get("updated") == 20
    assert customers.outcomes.get("updated") == 5
    assert products.dry_run and products.cursor is None
