"""The Vendure adapter against a fake Admin API (httpx mock transport): batching, errors per
event, the order mapping. The real Vendure runs in tests/acceptance/test_vendure.py."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import pytest

from extend_connector.webshop import DeliveryRefused, EventType, ShopEvent, ShopUnavailable
from extend_connector.webshop.vendure import VendureWebshop
from extend_connector.webshop.vendure.admin import _operation
from extend_connector.webshop.vendure.orders import cancelled_lines, order_payload

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _logged_in() -> httpx2.Response:
    return httpx2.Response(
        200,
        json={"data": {"login": {"__typename": "CurrentUser", "id": "1"}}},
        headers={"vendure-auth-token": "t"},
    )


class FakeAdmin:
    """Answers the few Admin API fields the stock path uses; records every request."""

    def __init__(self, *, fail_mutation: int | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail_mutation = fail_mutation
        self.updated: list[dict[str, Any]] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        self.requests.append(body)
        query, variables = body["query"], body["variables"]
        if "login(" in query:
            return _logged_in()
        if "stockLocations" in query:
            items = [{"id": "1", "name": "Main"}, {"id": "2", "name": "Green"}]
            return httpx2.Response(200, json={"data": {"stockLocations": {"items": items}}})
        if "productVariants(" in query:
            items = [
                {
                    "id": f"v-{sku}",
                    "sku": sku,
                    "price": 100,
                    "enabled": True,
                    "productId": "p",
                    "customFields": {"extendPhaseOut": False},
                    "stockLevels": [
                        {"stockLocationId": "1", "stockOnHand": 9, "stockAllocated": 2}
                    ],
                }
                for sku in variables["skus"]
                if not sku.startswith("UNSOLD")
            ]
            return httpx2.Response(200, json={"data": {"productVariants": {"items": items}}})
        if "orders(" in query:
            items = [
                {
                    "id": f"o-{code}",
                    "code": code,
                    "state": "PaymentSettled",
                    "customFields": {"extendStatus": "Registered", "extendOrderNumber": "1"},
                    "lines": [],
                    "fulfillments": [],
                }
                for code in variables["codes"]
                if not code.startswith("NOSUCH")
            ]
            return httpx2.Response(200, json={"data": {"orders": {"items": items}}})
        if "updateProductVariants" in query:
            if self.fail_mutation is not None:
                return httpx2.Response(self.fail_mutation, text="down")
            self.updated.extend(variables["input"])
            return httpx2.Response(200, json={"data": {"updateProductVariants": []}})
        return httpx2.Response(200, json={"errors": [{"message": f"unexpected: {query[:40]}"}]})


def _shop(fake: FakeAdmin) -> VendureWebshop:
    return VendureWebshop(
        admin_api_url="http://vendure.test/admin-api",
        username="u",
        password="p",
        stock_locations={"MainWarehouse": "Main", "GreenWarehouse": "Green"},
        transport=httpx2.MockTransport(fake),
    )


def _stock(sku: str, main: float, green: float) -> ShopEvent:
    return ShopEvent(
        event_id=f"e-{sku}",
        type=EventType.STOCK_CHANGED,
        key=f"sku:{sku}",
        data={
            "productNumber": sku,
            "warehouses": [
                {"warehouse": "MainWarehouse", "available": main},
                {"warehouse": "GreenWarehouse", "available": green},
            ],
        },
        occurred_at=NOW,
    )


def _run(shop: VendureWebshop, events: list[ShopEvent]) -> list[Any]:
    async def go() -> list[Any]:
        try:
            return await shop.deliver_batch(events)
        finally:
            await shop.aclose()

    return asyncio.run(go())


def test_250_stock_events_are_three_lookups_and_three_mutations() -> None:
    fake = FakeAdmin()
    events = [_stock(f"P{i:04d}", i, 1.5) for i in range(250)]
    assert _run(_shop(fake), events) == [None] * 250
    fields = [_operation(r["query"]) for r in fake.requests]
    assert fields.count("productVariants") == 3 and fields.count("updateProductVariants") == 3
    assert len(fake.requests) == 2 + 6  # login, locations, 3 look-ups, 3 mutations
    first = fake.updated[3]
    # Vendure sells on hand minus allocated: on hand = Extend's available + allocated there;
    # fractions are rounded down, never up.
    assert first["stockLevels"] == [
        {"stockLocationId": "1", "stockOnHand": 3 + 2},
        {"stockLocationId": "2", "stockOnHand": 1},
    ]


def test_each_event_gets_its_own_outcome() -> None:
    fake = FakeAdmin()
    broken = ShopEvent(
        event_id="e-x",
        type=EventType.STOCK_CHANGED,
        key="sku:BROKEN",
        data={"productNumber": "BROKEN", "warehouses": [{"available": 1}]},  # no warehouse
        occurred_at=NOW,
    )
    odd_order = ShopEvent(
        event_id="e-o", type=EventType.ORDER_UPDATED, key="order:X", data={}, occurred_at=NOW
    )
    out = _run(_shop(fake), [_stock("P1", 1, 1), _stock("UNSOLD-1", 5, 5), broken, odd_order])
    assert out[0] is None and out[1] is None  # a SKU the shop does not sell: nothing to do
    assert isinstance(out[2], DeliveryRefused) and "BROKEN" in str(out[2])
    assert isinstance(out[3], DeliveryRefused) and "order.updated" in str(out[3])


def test_vendure_down_is_retried_not_parked() -> None:
    out = _run(_shop(FakeAdmin(fail_mutation=503)), [_stock("P1", 1, 1), _stock("P2", 2, 2)])
    assert all(isinstance(e, ShopUnavailable) and e.status == 503 for e in out)


def test_an_order_reads_the_same_after_a_line_is_cancelled_in_vendure() -> None:
    order = {
        "code": "ABC123",
        "currencyCode": "SEK",
        "orderPlacedAt": "2026-01-01T10:00:00.000Z",
        "customer": {"id": "7", "emailAddress": "a@b.se", "customFields": {}},
        "shippingAddress": {
            "fullName": "Bo",
            "streetLine1": "Gatan 1",
            "city": "Lund",
            "postalCode": "22100",
            "countryCode": "se",
        },
        "lines": [
            {
                "quantity": 2,
                "orderPlacedQuantity": 2,
                "unitPrice": 1250,
                "taxRate": 25,
                "productVariant": {"sku": "P1"},
            },
            {
                "quantity": 1,
                "orderPlacedQuantity": 1,
                "unitPrice": 990,
                "taxRate": 25,
                "productVariant": {"sku": "P2"},
            },
        ],
    }
    placed = order_payload(order, customers_to_extend=True)
    assert placed["lines"][0] == {
        "productNumber": "P1",
        "quantity": "2",
        "unitPrice": "12.50",
        "vatPercent": "25",
    }
    assert placed["shopCustomerRef"] == "vendure:7"
    assert placed["deliveryAddress"]["countryCode"] == "SE"
    order["lines"][1]["quantity"] = 0  # cancelled in Vendure
    assert order_payload(order, customers_to_extend=True) == placed
    assert cancelled_lines(order) == (2,)
    assert "shopCustomerRef" not in order_payload(order, customers_to_extend=False)


def test_the_installer_refuses_a_node_older_than_20_naming_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import subprocess

    from extend_connector.webshop.vendure import install

    assert install.node_major("v20.20.2") == 20 and install.node_major("junk") is None
    monkeypatch.setattr(install.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    monkeypatch.setattr(
        install.subprocess,
        "run",
        lambda *a, **k: subprocess.CompletedProcess(a, 0, stdout="v18.20.4\n", stderr=""),
    )
    with pytest.raises(install.NodeMissing, match=r"node v18\.20\.4 is too old.*20\+"):
        install.check_node()
    with pytest.raises(install.NodeMissing):
        install.install(Path("/nonexistent/never-created"))
    monkeypatch.setattr(install.shutil, "which", lambda tool: None)
    with pytest.raises(install.NodeMissing, match="node and npm not found"):
        install.check_node()


def _order_event(code: str) -> ShopEvent:
    return ShopEvent(
        event_id=f"evt_{code}",
        type=EventType.ORDER_UPDATED,
        key=f"order:{code}",
        data={"shopRef": code, "orderNumber": "1", "status": "Registered", "lines": []},
        occurred_at=NOW,
    )


def test_the_orders_of_a_pass_are_looked_up_per_hundred_not_one_each() -> None:
    fake = FakeAdmin()
    shop = _shop(fake)
    codes = [f"C{n:03d}" for n in range(150)] + ["NOSUCH-1"]
    results = _run(shop, [_order_event(code) for code in codes])
    lookups = [r for r in fake.requests if "orders(" in r["query"]]
    assert [len(r["variables"]["codes"]) for r in lookups] == [100, 51]
    # What Vendure shows already is not written again; an order Vendure lacks is refused alone.
    assert [
        r for r in fake.requests if "mutation" in r["query"] and "login(" not in r["query"]
    ] == []
    assert results[:150] == [None] * 150
    assert isinstance(results[150], DeliveryRefused) and "NOSUCH-1" in str(results[150])


class ShiftingOrders:
    """Vendure's order list (sorted by `updatedAt`, paged by skip/take) while the connector
    reads it: after each page is answered, the orders on it are updated (the connector applies
    Extend's answer to the orders it has just taken: `setOrderCustomFields`), so they move to the
    end of the list and the orders behind the page boundary slide onto pages already read."""

    def __init__(self, count: int) -> None:
        self.clock = 1_000_000
        self.orders = {f"O{n:04d}": self._tick() for n in range(count)}
        self.touched: set[str] = set()
        self.pages = 0

    def _tick(self) -> int:
        self.clock += 1
        return self.clock

    def _iso(self, ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        query, variables = body["query"], body["variables"]
        if "login(" in query:
            return _logged_in()
        after = variables.get("after")
        floor = -1 if after is None else datetime.fromisoformat(after).timestamp() * 1000
        listed = sorted(
            ((ms, code) for code, ms in self.orders.items() if ms > floor), key=lambda x: x
        )
        page = listed[variables["skip"] : variables["skip"] + variables["take"]]
        items = [_vendure_order(code, self._iso(ms)) for ms, code in page]
        self.pages += 1
        for _, code in page:
            if code not in self.touched:  # the connector applies its answer once per order
                self.touched.add(code)
                self.orders[code] = self._tick()
        return httpx2.Response(
            200, json={"data": {"orders": {"totalItems": len(listed), "items": items}}}
        )


def _vendure_order(code: str, updated_at: str) -> dict[str, Any]:
    return {
        "id": code,
        "code": code,
        "state": "PaymentSettled",
        "updatedAt": updated_at,
        "orderPlacedAt": updated_at,
        "currencyCode": "SEK",
        "customFields": {},
        "customer": {"id": "7", "emailAddress": "a@b.se", "customFields": {}},
        "shippingAddress": {
            "fullName": "Bo",
            "streetLine1": "G 1",
            "city": "L",
            "countryCode": "se",
        },
        "billingAddress": None,
        "lines": [
            {
                "id": "1",
                "quantity": 1,
                "orderPlacedQuantity": 1,
                "unitPrice": 1000,
                "taxRate": 25,
                "productVariant": {"sku": "P1"},
            }
        ],
        "fulfillments": [],
    }


def _read_orders(fake: ShiftingOrders) -> list[str]:
    """The codes `orders_changed_since(None)` yields from `fake`."""
    shop = VendureWebshop(
        admin_api_url="http://vendure.test/admin-api",
        username="u",
        password="p",
        transport=httpx2.MockTransport(fake),
    )

    async def read() -> list[str]:
        try:
            return [c.shop_ref async for c in shop.orders_changed_since(None)]
        finally:
            await shop.aclose()

    return asyncio.run(read())


def test_a_catch_up_read_misses_no_order_while_the_orders_it_took_are_updated() -> None:
    """A connector back after downtime reads 250 paid orders in pages of 100 while applying
    Extend's answers to the ones it took: with skip/take paging, each update moved an order from
    a page already read to the end and slid one from the next page onto the read one, never
    seen; its change date is older than the cursor's overlap, so no later read finds it either:
    an order paid in the shop that never reaches Extend."""
    fake = ShiftingOrders(250)
    seen = _read_orders(fake)
    assert set(seen) == {f"O{n:04d}" for n in range(250)}


def test_a_tie_longer_than_a_page_is_read_to_its_end_once() -> None:
    fake = ShiftingOrders(250)
    for code in fake.orders:  # one bulk update: 250 orders with one change instant
        fake.orders[code] = 5_000_000
    fake.touched = set(fake.orders)
    seen = _read_orders(fake)
    assert sorted(seen) == sorted(fake.orders)
    # The first page, the same page again from its instant (all read already), then by offset.
    assert fake.pages == 4
