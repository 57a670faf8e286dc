"""Contract tests: the Extend client against the in-process simulator (house contract, real HTTP).

Every client method, paging across many pages, every error class, 429 with recovery, a write
whose answer is lost, and a non-default dialect served by a simulator configured the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx2
import pytest

from extend_connector.domain import Customer, Order, OrderLine, OrderStatus
from extend_connector.extend import (
    AccessDenied,
    BusinessConflict,
    ExtendClient,
    NotFound,
    OutcomeUnknown,
    RateBudget,
    RetryPolicy,
    TechnicalFailure,
    Throttled,
    UnexpectedResponse,
    ValidationFailed,
)
from extend_connector.extend.wire import DriftRegistry
from extend_connector.settings import Settings
from extend_connector.simulator import RateLimit, RunningSimulator, SimulatorConfig, run_in_thread
from extend_connector.simulator.webhooks import EXTRA_FIELD

FAST_RETRY = RetryPolicy(floor_seconds=0.01, cap_seconds=0.05, max_attempts=4, max_total_seconds=20)
WAREHOUSES = ("MainWarehouse", "GreenWarehouse", "TEST")
PAST = datetime(2000, 1, 1, tzinfo=UTC)


def _client(
    sim: RunningSimulator,
    *,
    retry: RetryPolicy = FAST_RETRY,
    token: str | None = None,
    **dialect: Any,
) -> ExtendClient:
    settings = Settings(
        extend={
            "base_url": sim.base_url,
            "api_token": token or sim.token,
            "warehouses": list(WAREHOUSES),
            "dialect": dialect,
        }
    )
    return ExtendClient.from_settings(
        settings, retry=retry, budget=RateBudget(), drift=DriftRegistry()
    )


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def sim() -> Iterator[RunningSimulator]:
    with run_in_thread(
        SimulatorConfig(seed=7, products=50, customers=10, rate_limits_enabled=False)
    ) as running:
        yield running


@pytest.fixture()
def fresh_sim() -> Iterator[RunningSimulator]:
    with run_in_thread(
        SimulatorConfig(seed=3, products=12, customers=3, rate_limits_enabled=False)
    ) as running:
        yield running


def _order(sim: RunningSimulator, ref: str, *, products: list[str] | None = None) -> Order:
    numbers = products or sorted(p for p, v in sim.state.products.items() if not v.phase_out)[:2]
    return Order(
        shop_ref=ref,
        placed_at=datetime.now(UTC),
        customer_number="WEB",
        lines=(
            OrderLine(
                product_number=numbers[0],
                quantity=Decimal(2),
                unit_price=Decimal("199.90"),
                vat_percent=Decimal(25),
            ),
            OrderLine(product_number=numbers[1], quantity=Decimal(1), warehouse="GreenWarehouse"),
        ),
    )


# --- every method ---------------------------------------------------------------------------------


def test_orders_round_trip(sim: RunningSimulator) -> None:
    async def scenario() -> None:
        since = datetime.now(UTC) - timedelta(seconds=5)
        async with _client(sim) as extend:
            order = _order(sim, "W-1001")
            created = await extend.create_order(order)
            assert created.status is OrderStatus.REGISTERED
            assert created.order_number_external == "W-1001"
            assert [line.position for line in created.lines] == [10, 20]
            # The shop's price is kept exactly; the unpriced line is priced by Extend.
            assert created.lines[0].unit_price == Decimal("199.90")
            assert created.lines[1].unit_price is not None and created.lines[1].unit_price > 0
            assert (
                created.lines[0].warehouse == "MainWarehouse"
                and created.lines[1].warehouse == "GreenWarehouse"
            )
            assert created.expected_delivery_date is not None

            fetched = await extend.get_order(created.order_number)
            assert fetched.order_number == created.order_number and fetched.lines == created.lines

            found = await extend.find_order("W-1001")
            assert found is not None and found.order_number == created.order_number
            assert await extend.find_order("W-nope") is None

            changed = await extend.update_order_rows(
                created.order_number,
                [
                    OrderLine(
                        product_number=order.lines[0].product_number,
                        quantity=Decimal(5),
                        position=10,
                        warehouse="MainWarehouse",
                    )
                ],
            )
            assert changed.lines[0].quantity == Decimal(5)
            cancelled = await extend.cancel_order_rows(created.order_number, [created.lines[1]])
            assert [line.cancelled for line in cancelled.lines] == [False, True]
            assert len(cancelled.lines) == 2  # the warehouse was sent: no extra cancelled row

            sim.state.reserve_order(created.order_number)
            sim.state.pick_order(created.order_number, carrier="PostNord")
            picked = await extend.get_order(created.order_number)
            assert picked.status is OrderStatus.PICKED
            (shipment,) = picked.shipments
            assert shipment.carrier == "PostNord" and shipment.lines[0].position == 10
            assert shipment.lines[0].quantity == Decimal(5)
            with pytest.raises(BusinessConflict) as conflict:
                await extend.cancel_order(created.order_number)
            assert conflict.value.status == 409 and conflict.value.request_id

            other = await extend.create_order(_order(sim, "W-1002"))
            withdrawn = await extend.cancel_order(other.order_number)
            assert withdrawn.status is OrderStatus.CANCELLED

            changes = [c async for c in extend.orders_changed_since(since)]
            assert {c.order_number for c in changes} >= {created.order_number, other.order_number}
            assert all(c.changed_at >= since for c in changes)
            stats = extend.stats()
            assert stats.groups["write"].calls == 6 and stats.operations["get_order"] == 2

    _run(scenario())


def test_availability_products_customers_prices(sim: RunningSimulator) -> None:
    async def scenario() -> None:
        async with _client(sim, max_url_length=300) as extend:
            balances = [b async for b in extend.availability_for_warehouses(["MainWarehouse"])]
            assert len(balances) == _count(sim, "MainWarehouse") and {
                b.warehouse for b in balances
            } == {"MainWarehouse"}
            assert all(b.available == (b.physical or 0) - (b.reserved or 0) for b in balances)

            numbers = sorted(sim.state.products)
            sent: list[str] = []
            extend._http.event_hooks["request"].append(_record_url(sent))
            by_product = [b async for b in extend.availability_for_products(numbers)]
            assert {b.product_number for b in by_product} == set(numbers)
            assert len(by_product) == len(sim.state.balances)
            assert len(sent) > 1 and all(
                len(url) <= 300 for url in sent
            )  # chunked to the URL limit

            recent = [b async for b in extend.availability_changed_since(PAST, warehouses=["TEST"])]
            assert len(recent) == _count(sim, "TEST") and {b.warehouse for b in recent} == {"TEST"}

            products = [p async for p in extend.products_changed_since()]
            assert len(products) == 50
            one = await extend.get_product(products[3].product_number)
            assert one == products[3]
            assert [
                p.product_number
                async for p in extend.products_changed_since(products[-1].changed_at)
            ] == [p.product_number for p in products if p.changed_at >= products[-1].changed_at]

            customers = [c async for c in extend.customers_changed_since(PAST)]
            assert len(customers) == len(sim.state.customers)
            b2b = next(c for c in customers if c.is_b2b)
            assert await extend.get_customer(b2b.customer_number) == b2b

            new = await extend.create_customer(
                Customer(
                    customer_number="",
                    name="Ny Kund AB",
                    organization_number="556677-8899",
                    email="inkop@nykund.se",
                    shop_ref="shop-77",
                )
            )
            assert new.customer_number and new.shop_ref == "shop-77" and new.name == "Ny Kund AB"
            with pytest.raises(BusinessConflict):
                await extend.create_customer(
                    Customer(customer_number="", name="Again", organization_number="5566778899")
                )

            prices = [p async for p in extend.prices_for_customer(b2b.customer_number)]
            assert len(prices) == 50 and all(
                p.customer_number == b2b.customer_number for p in prices
            )
            some = [p async for p in extend.prices_for_customer(b2b.customer_number, numbers[:30])]
            assert {p.product_number for p in some} == set(numbers[:30])
            by_number = {p.product_number: p for p in prices}
            assert all(by_number[p.product_number].unit_price == p.unit_price for p in some)
            assert extend.drift.snapshot() == []  # everything the contract sends is known

    _run(scenario())


def _count(sim: RunningSimulator, warehouse: str) -> int:
    return sum(1 for b in sim.state.balances.values() if b.warehouse == warehouse)


def _record_url(sent: list[str]) -> Any:
    async def hook(request: httpx2.Request) -> None:
        sent.append(str(request.url))

    return hook


def test_paging_across_many_pages_in_both_walks(sim: RunningSimulator) -> None:
    async def scenario() -> None:
        async with _client(sim, page_size=7) as extend:
            seen: list[tuple[int, int | None]] = []
            balances = [
                b
                async for b in extend.availability_changed_since(
                    PAST, progress=lambda n, total: seen.append((n, total))
                )
            ]
            keys = [(b.product_number, b.warehouse) for b in balances]
            total = len(sim.state.balances)
            assert len(set(keys)) == total > 100
            assert seen[-1][1] == total and len(seen) >= total // 7
            full = [b async for b in extend.availability_for_warehouses(WAREHOUSES)]
            assert len(full) == total
            assert extend.stats().operations["list_availability"] >= 2 * (total // 7)

    _run(scenario())


def test_unknown_fields_are_kept_and_reported(fresh_sim: RunningSimulator) -> None:
    fresh_sim.state.set_faults(extra_fields=True)

    async def scenario() -> None:
        async with _client(fresh_sim) as extend:
            products = [p async for p in extend.products_changed_since()]
            assert len(products) == 12 and all(EXTRA_FIELD in p.extra for p in products)
            await extend.get_order(
                (await extend.create_order(_order(fresh_sim, "W-drift"))).order_number
            )
            drift = {(r.model, r.field) for r in extend.drift.snapshot()}
            assert ("WireProduct", EXTRA_FIELD) in drift
            assert {m for m, _ in drift} >= {
                "WireProduct",
                "WireOrder",
                "WireOrderRow",
                "WireSalesData",
            }
            assert extend.drift.drain_new() and extend.drift.drain_new() == []

    _run(scenario())


# --- every error class ----------------------------------------------------------------------------


def test_validation_not_found_business(sim: RunningSimulator) -> None:
    async def scenario() -> None:
        async with _client(sim) as extend:
            with pytest.raises(ValidationFailed) as invalid:
                await extend.create_order(_order(sim, "W-bad", products=["NO-SUCH", "NOPE"]))
            assert invalid.value.status == 422 and not isinstance(invalid.value, NotFound)
            assert invalid.value.error.error_type == "Validation"
            assert any("productNumber" in (d.field or "") for d in invalid.value.details)
            assert invalid.value.operation == "create_order" and invalid.value.request_id
            with pytest.raises(NotFound):
                await extend.get_order("999999999")
            await extend.create_order(_order(sim, "W-dup"))
            with pytest.raises(BusinessConflict) as dup:
                await extend.create_order(_order(sim, "W-dup"))
            assert dup.value.code == "DuplicateOrderNumberExternal"
            assert extend.stats().groups["write"].retries == 0  # none of these is ever retried

    _run(scenario())


def test_technical_failures_retry_reads_but_never_writes(fresh_sim: RunningSimulator) -> None:
    fresh_sim.state.set_faults(error_rate=1.0, error_statuses=(503,))

    async def scenario() -> None:
        async with _client(fresh_sim) as extend:
            with pytest.raises(TechnicalFailure) as read:
                await extend.get_product(next(iter(fresh_sim.state.products)))
            assert read.value.status == 503
            assert extend.stats().groups["standard"].calls == FAST_RETRY.max_attempts
            with pytest.raises(TechnicalFailure) as write:
                await extend.create_order(_order(fresh_sim, "W-5xx"))
            assert not isinstance(write.value, OutcomeUnknown)
            assert extend.stats().groups["write"].calls == 1
            fresh_sim.state.set_faults(error_rate=0.0)
            assert await extend.find_order("W-5xx") is None  # the simulator did not act

    _run(scenario())


def test_flaky_reads_recover(fresh_sim: RunningSimulator) -> None:
    fresh_sim.state.set_faults(error_rate=0.5)

    async def scenario() -> None:
        async with _client(
            fresh_sim,
            page_size=2,
            retry=RetryPolicy(floor_seconds=0.0, cap_seconds=0.01, max_attempts=30),
        ) as extend:
            products = [p async for p in extend.products_changed_since()]
            assert len(products) == 12
            assert extend.stats().groups["heavy"].retries > 0

    _run(scenario())


def test_access_denied_is_not_retried(sim: RunningSimulator) -> None:
    async def scenario() -> None:
        async with _client(sim, token="wrong") as extend:
            with pytest.raises(AccessDenied) as denied:
                await extend.get_product("x")
            assert denied.value.status == 401 and isinstance(denied.value, TechnicalFailure)
            assert extend.stats().calls == 1

    _run(scenario())


def test_lost_write_answer_is_outcome_unknown_and_lookup_finds_it(
    fresh_sim: RunningSimulator,
) -> None:
    fresh_sim.state.set_faults(lost_response_rate=1.0)

    async def scenario() -> None:
        async with _client(fresh_sim) as extend:
            with pytest.raises(OutcomeUnknown) as lost:
                await extend.create_order(_order(fresh_sim, "W-lost"))
            assert lost.value.operation == "create_order" and lost.value.status is None
            assert extend.stats().groups["write"].calls == 1  # never re-sent blindly
            found = await extend.find_order("W-lost")  # reads are answered normally
            assert found is not None and found.status is OrderStatus.REGISTERED
            with pytest.raises(OutcomeUnknown):
                await extend.create_customer(
                    Customer(customer_number="", name="Lost Kund", email="x@y.se")
                )

    _run(scenario())


def test_throttle_storm_raises_throttled_when_attempts_run_out(fresh_sim: RunningSimulator) -> None:
    fresh_sim.state.set_faults(throttle_storm=1.0)

    async def scenario() -> None:
        async with _client(
            fresh_sim, retry=RetryPolicy(max_attempts=2, floor_seconds=0.0, cap_seconds=0.01)
        ) as extend:
            extend.budget = RateBudget(
                sleep=_no_sleep
            )  # the storm's Retry-After is honoured instantly
            with pytest.raises(Throttled) as throttled:
                await extend.get_product(next(iter(fresh_sim.state.products)))
            assert throttled.value.status == 429 and throttled.value.retry_after is not None
            assert extend.stats().groups["standard"].throttled == 2

    _run(scenario())


async def _no_sleep(seconds: float) -> None:
    return None


def test_429_then_recovery() -> None:
    config = SimulatorConfig(
        seed=5, products=8, customers=1, rate_limit_standard=RateLimit(limit=2, period_seconds=1.0)
    )
    with run_in_thread(config) as sim:

        async def scenario() -> None:
            # Enough attempts that a second 429 under a loaded machine cannot end the test early.
            async with _client(
                sim,
                retry=RetryPolicy(
                    max_attempts=12, max_total_seconds=30, floor_seconds=0.01, cap_seconds=0.05
                ),
            ) as extend:
                numbers = sorted(sim.state.products)[:6]
                # Six at once before the budget has seen a single header: some must get 429.
                products = await asyncio.gather(*(extend.get_product(n) for n in numbers))
                assert [p.product_number for p in products] == numbers
                stats = extend.stats().groups["standard"]
                assert stats.throttled >= 1 and stats.failures == 0
                assert sim.state.status_counts[429] == stats.throttled

        _run(scenario())


def test_budget_slows_down_before_429() -> None:
    config = SimulatorConfig(
        seed=5, products=12, customers=1, rate_limit_heavy=RateLimit(limit=3, period_seconds=0.6)
    )
    with run_in_thread(config) as sim:

        async def scenario() -> None:
            async with _client(sim, page_size=3) as extend:
                products = [p async for p in extend.products_changed_since()]
                assert len(products) == 12
                heavy = extend.stats().groups["heavy"]
                # The listing re-asks from the last change date seen, which it reads again: 3 new
                # records, then 2 per page (1 + 5 requests).
                assert heavy.calls == 6 and heavy.waits >= 1
                assert heavy.throttled == 0 and sim.state.status_counts[429] == 0

        _run(scenario())


# --- a non-default dialect ------------------------------------------------------------------------

OTHER_DIALECT = {
    "auth_header": "X-Api-Key",
    "auth_scheme": "",
    "page_param": "pageNo",
    "page_size_param": "take",
    "envelope": "headers",
    "changed_since_param": "modifiedSince",
    "product_numbers_param": "items",
    "warehouse_param": "stock",
    "changed_since_format": "utc",
}


def test_non_default_dialect_against_a_simulator_configured_the_same() -> None:
    config = SimulatorConfig(
        seed=11,
        products=30,
        customers=4,
        rate_limits_enabled=False,
        token="k-123",
        auth_header="X-Api-Key",
        auth_scheme="",
        page_param="pageNo",
        page_size_param="take",
        envelope="headers",
        changed_since_param="modifiedSince",
        product_numbers_param="items",
        warehouse_param="stock",
    )
    with run_in_thread(config) as sim:

        async def scenario() -> None:
            async with _client(sim, page_size=4, **OTHER_DIALECT) as extend:
                products = [p async for p in extend.products_changed_since(PAST)]
                assert len(products) == 30
                balances = [
                    b
                    async for b in extend.availability_for_products(
                        [p.product_number for p in products[:5]], warehouses=["TEST"]
                    )
                ]
                assert {(b.product_number, b.warehouse) for b in balances} == {
                    (b.product_number, b.warehouse)
                    for b in sim.state.balances.values()
                    if b.warehouse == "TEST"
                    and b.product_number in {p.product_number for p in products[:5]}
                }
                changed = [
                    b
                    async for b in extend.availability_changed_since(
                        PAST, warehouses=["MainWarehouse"]
                    )
                ]
                assert len(changed) == _count(sim, "MainWarehouse")
                created = await extend.create_order(_order(sim, "W-dialect"))
                assert (await extend.find_order("W-dialect")) is not None
                assert (
                    await extend.get_order(created.order_number)
                ).order_number == created.order_number
                assert extend.stats().operations["list_products"] >= 30 // 4

            # The default dialect does not speak to this simulator: the surface really is
            # configuration.
            async with _client(sim) as default:
                with pytest.raises(AccessDenied):
                    await default.get_product("x")

        _run(scenario())


RENAMED = {
    "Product": {"productNumber": "itemNumber", "productName": "title"},
    "ProductRef": {"productNumber": "itemNumber"},
    "Availability": {"productNumber": "itemNumber", "availableBalance": "available"},
    "OrderLight": {"changedDate": "modified"},
    "Order": {"orderRows": "lines", "changedDate": "modified"},
    "Customer": {"customerNumber": "customerNo"},
}


def test_renamed_response_fields_and_null_lists_with_a_simulator_configured_the_same() -> None:
    config = SimulatorConfig(
        seed=12,
        products=12,
        customers=3,
        rate_limits_enabled=False,
        field_renames=tuple(
            (model, house, sent)
            for model, names in RENAMED.items()
            for house, sent in names.items()
        ),
        null_empty_lists=True,
    )
    with run_in_thread(config) as sim:

        async def scenario() -> None:
            async with _client(sim, page_size=5, fields=RENAMED) as extend:
                products = [p async for p in extend.products_changed_since(PAST)]
                assert len(products) == 12 and all(p.name for p in products)
                one = await extend.get_product(products[0].product_number)
                assert one.product_number == products[0].product_number
                balances = [
                    b
                    async for b in extend.availability_for_products(
                        [products[0].product_number], warehouses=["TEST"]
                    )
                ]
                truth = [
                    b.physical - b.reserved
                    for b in sim.state.balances_by_product[products[0].product_number]
                    if b.warehouse == "TEST"
                ]
                assert [b.available for b in balances] == truth
                customers = [c async for c in extend.customers_changed_since(PAST)]
                assert len(customers) == len(sim.state.customers)
                created = await extend.create_order(_order(sim, "W-renamed"))
                assert created.lines and created.shipments == ()
                found = await extend.find_order("W-renamed")
                assert found is not None and found.order_number == created.order_number
                seen = {(r.model, r.field) for r in extend.drift.snapshot()}
                assert ("WireOrder", "shipments: null") in seen
                assert not any(f in {"itemNumber", "title", "modified"} for _, f in seen)

            # Without the renames the answers are unreadable, and the error says which field.
            async with _client(sim) as default:
                with pytest.raises(UnexpectedResponse, match="productNumber"):
                    await default.get_product("P000001")

        _run(scenario())


# --- full listings while records change (issue 12, defect 3) --------------------------------------


class TouchHeadAfterFirstPage(httpx2.AsyncHTTPTransport):
    """Right after the simulator answered page 1 of the first list request for `path`, the first
    record on that page changes in Extend: it moves to the end of the change-date order, and the
    record behind the page boundary slides onto page 1, already read."""

    def __init__(self, path: str, touch: Any) -> None:
        super().__init__()
        self.path, self.touch = path, touch
        self.touched: dict[str, Any] | None = None

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await super().handle_async_request(request)
        if (
            self.touched is None
            and request.url.path.lower().endswith(self.path)
            and request.url.params.get("page") == "1"
            and response.status_code == 200
        ):
            await response.aread()
            self.touched = response.json()["items"][0]
            self.touch(self.touched)
        return response


def _full_listing(sim: RunningSimulator, kind: str) -> tuple[str, Any, set[Any]]:
    """(path, touch(item), keys Extend holds now) for one full listing."""
    state = sim.state
    with state.lock:
        keys = {
            "products": set(state.products),
            "prices": set(state.products),
            "customers": set(state.customers),
            "balances": {(b.product_number, b.warehouse) for b in state.balances.values()},
        }[kind]
    if kind == "products":
        return (
            "/products",
            lambda item: state.update_product(item["productNumber"], {"productName": "moved"}),
            keys,
        )
    if kind == "customers":
        return (
            "/customers",
            lambda item: state.update_customer(item["customerNumber"], {"name": "Moved AB"}),
            keys,
        )
    if kind == "prices":
        return (
            "/productprices",
            lambda item: state.update_product(item["productNumber"], {"listPrice": 1234.5}),
            keys,
        )
    return (
        "/productavailability",
        lambda item: state.move_stock(
            [{"productNumber": item["productNumber"], "warehouse": item["warehouse"], "delta": 1}]
        ),
        keys,
    )


async def _list_everything(extend: ExtendClient, kind: str, customer: str) -> list[Any]:
    if kind == "products":
        return [p.product_number async for p in extend.products_changed_since(None)]
    if kind == "customers":
        return [c.customer_number async for c in extend.customers_changed_since(None)]
    if kind == "prices":
        return [p.product_number async for p in extend.prices_for_customer(customer)]
    return [
        (b.product_number, b.warehouse)
        async for b in extend.availability_for_warehouses(WAREHOUSES)
    ]


@pytest.mark.parametrize("kind", ["products", "customers", "prices", "balances"])
def test_a_full_listing_loses_nothing_when_a_record_changes_between_pages(kind: str) -> None:
    # Plain page numbers lost the record behind the first page boundary (the demo's balance
    # `missing locally`); every full listing re-anchors on the last change date seen instead.
    with run_in_thread(
        SimulatorConfig(seed=11, products=30, customers=12, rate_limits_enabled=False)
    ) as sim:
        path, touch, expected = _full_listing(sim, kind)
        hook = TouchHeadAfterFirstPage(path, touch)
        settings = Settings(
            extend={
                "base_url": sim.base_url,
                "api_token": sim.token,
                "warehouses": list(WAREHOUSES),
                "dialect": {"page_size": 4},
            }
        )

        async def scenario() -> list[Any]:
            async with ExtendClient.from_settings(
                settings,
                retry=FAST_RETRY,
                budget=RateBudget(),
                drift=DriftRegistry(),
                transport=hook,
            ) as extend:
                return await _list_everything(extend, kind, sorted(sim.state.customers)[0])

        keys = _run(scenario())
        assert hook.touched is not None
        assert set(keys) == expected
