"""The shop API's contract on a real connector (HTTP on loopback) and a real simulator, on SQLite
and PostgreSQL: no 500 for any input, idempotency conflicts are 409s, strings are bounded and
printable, dates keep their instant, unknown things say so, errors name what is wrong, event ids
are globally unique. (Issue #12, defects 5 and 8.)"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx2
import pytest
import sqlalchemy as sa

from extend_connector.extend.webhooks import sign
from extend_connector.service import Connector
from extend_connector.settings import Settings
from extend_connector.simulator import SimulatorConfig, WebhookRegistration, run_in_thread
from extend_connector.simulator.server import RunningSimulator
from extend_connector.store.models import (
    BalanceRow,
    CursorRow,
    CustomerRow,
    InboxRow,
    OrderRow,
    OutboxRow,
)
from extend_connector.webshop import RecordingWebshop, ShopEvent, ShopUnavailable
from support.processes import free_port, wait_for

TOKEN = {"authorization": "Bearer shop-token"}
SECRET = "sim-webhook-secret"


@dataclass
class Stack:
    sim: RunningSimulator
    url: str
    connector: Connector
    shop: RecordingWebshop
    http: httpx2.Client

    def post(self, path: str, body: Any) -> httpx2.Response:
        return self.http.post(f"{self.url}{path}", json=body, headers=TOKEN)

    def get(self, path: str, **params: Any) -> httpx2.Response:
        return self.http.get(f"{self.url}{path}", params=params, headers=TOKEN)

    def product(self) -> str:
        with self.sim.state.lock:
            return sorted(self.sim.state.products)[0]

    def hook(self, raw: bytes) -> httpx2.Response:
        return self.http.post(
            f"{self.url}/webhooks/extend",
            content=raw,
            headers={"content-type": "application/json", "ms-signature": sign(SECRET, raw)},
        )


class _FlakyShop(RecordingWebshop):
    """Refuses the first attempt of every event (the shop is briefly down), records every
    attempt."""

    def __init__(self) -> None:
        self.attempts: list[ShopEvent] = []
        super().__init__(fail_with=self._first_fails)

    def _first_fails(self, event: ShopEvent) -> ShopUnavailable | None:
        self.attempts.append(event)
        return ShopUnavailable("shop briefly down") if event.attempt == 1 else None


@pytest.fixture
def stack(db_url: str) -> Iterator[Stack]:
    port = free_port()
    cfg = SimulatorConfig(
        seed=7,
        products=10,
        customers=3,
        rate_limits_enabled=False,
        time_scale=0.01,
        webhooks=(WebhookRegistration(callback_url=f"http://127.0.0.1:{port}/webhooks/extend"),),
    )
    with run_in_thread(cfg) as sim:
        settings = Settings.model_validate(
            {
                "extend": {
                    "base_url": sim.base_url,
                    "api_token": sim.token,
                    "webhook_secret": SECRET,
                    "warehouses": ["MainWarehouse", "GreenWarehouse"],
                },
                "store": {"database_url": db_url},
                "server": {"port": port},
                "scope": {"customers": "to_extend", "products": "off", "prices": "off"},
                "sync": {"orders_sweep_minutes": 60},
            }
        )
        shop = _FlakyShop()
        connector = Connector(settings, webshop=shop, scheduler_poll_seconds=0.2)
        try:
            with connector.serve_in_thread(port=port) as url, httpx2.Client(timeout=60) as http:
                yield Stack(sim, url, connector, shop, http)
        finally:
            connector.close()


def _order(ref: str, product: str, **extra: Any) -> dict[str, Any]:
    return {"shopRef": ref, "lines": [{"productNumber": product, "quantity": 1}], **extra}


# --- defect 5: server errors from bad input -----------------------------------------------------


def test_one_new_order_posted_concurrently_is_accepted_every_time_and_stored_once(
    stack: Stack,
) -> None:
    body = _order("WEB-RACE-1", stack.product())
    barrier = threading.Barrier(8)

    def post() -> int:
        barrier.wait()
        return stack.post("/v1/orders", body).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = sorted(pool.map(lambda _: post(), range(8)))
    assert statuses.count(202) == 1 and statuses.count(200) == 7, statuses
    wait_for(
        lambda: stack.get("/v1/orders/WEB-RACE-1").json()["status"] == "Registered",
        30,
        what="order in Extend",
    )
    with stack.sim.state.lock:
        assert [o.order_number_external for o in stack.sim.state.orders.values()].count(
            "WEB-RACE-1"
        ) == 1


def test_one_new_order_posted_at_once_with_two_bodies_gives_one_409_naming_the_reference(
    stack: Stack,
) -> None:
    product = stack.product()
    barrier = threading.Barrier(2)

    def post(quantity: int) -> httpx2.Response:
        barrier.wait()
        return stack.post(
            "/v1/orders",
            {"shopRef": "WEB-RACE-2", "lines": [{"productNumber": product, "quantity": quantity}]},
        )

    with ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(post, [1, 2]))
    assert sorted(r.status_code for r in responses) == [202, 409], [r.text for r in responses]
    conflict = next(r for r in responses if r.status_code == 409).json()
    assert conflict["error"] == "order_conflict" and conflict["details"][0]["field"] == "shopRef"
    assert "WEB-RACE-2" in conflict["message"]


@pytest.mark.parametrize("where", ["body", "path", "query"])
def test_nul_and_control_characters_are_refused_naming_the_field(stack: Stack, where: str) -> None:
    product = stack.product()
    if where == "body":
        cases = [
            ("/v1/orders", _order("WEB-NUL", product, notes="a\x00b"), "notes"),
            ("/v1/orders", _order("WEB-NUL", f"{product}\x00"), "productNumber"),
            (
                "/v1/orders",
                _order(
                    "WEB-NUL",
                    product,
                    deliveryAddress={
                        "name": "A\x00",
                        "addressLine1": "x",
                        "zipCode": "1",
                        "city": "c",
                    },
                ),
                "name",
            ),
            ("/v1/customers", {"shopRef": "c-nul", "name": "N\x00"}, "name"),
            ("/v1/customers", {"shopRef": "c-nul", "name": "N", "lastName": "x\x07"}, "lastName"),
            ("/v1/orders/WEB-X/lines/cancel", {"lines": [1]}, None),
        ]
        for path, body, field in cases:
            response = stack.post(path, body)
            if field is None:
                assert response.status_code == 404, response.text
                continue
            assert response.status_code == 422, (path, body, response.text)
            assert any(d["field"].endswith(field) for d in response.json()["details"]), (
                response.text
            )
    elif where == "path":
        for path in (
            "/v1/orders/a%00b",
            "/v1/customer-registrations/a%00b",
            "/v1/products/a%00b",
            "/v1/customers/a%00b",
        ):
            response = stack.get(path)
            assert response.status_code == 400, (path, response.text)
            assert response.json()["details"][0]["field"] in (
                "shopRef",
                "productNumber",
                "customerNumber",
            )
        for path in ("/v1/orders/a%00b/cancel", "/v1/orders/a%00b/lines/cancel"):
            response = stack.http.post(f"{stack.url}{path}", json={"lines": [1]}, headers=TOKEN)
            assert response.status_code == 400, (path, response.text)
    else:
        for path, params in (
            ("/v1/stock", {"warehouse": "Main\x00"}),
            ("/v1/prices", {"customerNumber": "K\x00"}),
            ("/v1/stock", {"productNumbers": "A\x00,B"}),
        ):
            response = stack.get(path, **params)
            assert 400 <= response.status_code < 500 and response.status_code != 404, (
                path,
                response.text,
            )
            assert response.json()["details"], response.text


@pytest.mark.parametrize("since", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
def test_a_changed_since_outside_the_representable_range_is_a_422_naming_it(
    stack: Stack, since: str
) -> None:
    response = stack.get("/v1/products", changedSince=since)
    assert response.status_code == 422, response.text
    assert response.json()["details"][0]["field"] == "changedSince"


def test_hostile_webhooks_are_refused_with_400_and_nothing_is_stored(stack: Stack) -> None:
    deep = (
        b'{"Id": "deep", "Notifications": [{"Action": "ProductChanged", "Details": '
        + b"[" * 100_000
        + b"]" * 100_000
        + b"}]}"
    )
    cases = {
        "deep": deep,
        "long id": json.dumps(
            {
                "Id": "i" * 10_000,
                "Notifications": [{"Action": "ProductChanged", "Details": {"ProductNumber": "P1"}}],
            }
        ).encode(),
        "long product": json.dumps(
            {
                "Id": "long-product",
                "Notifications": [
                    {
                        "Action": "AvailableBalanceChanged",
                        "Details": {"ProductNumber": "P" * 5000, "Warehouse": "MainWarehouse"},
                    }
                ],
            }
        ).encode(),
        "long order": json.dumps(
            {
                "Id": "long-order",
                "Notifications": [
                    {"Action": "OrderReserved", "Details": {"OrderNumber": "9" * 200}}
                ],
            }
        ).encode(),
        "long notification id": json.dumps(
            {"Id": "long-nid", "Properties": {"NotificationId": "n" * 500}, "Notifications": []}
        ).encode(),
        "nul": json.dumps(
            {
                "Id": "nul",
                "Notifications": [
                    {"Action": "ProductChanged", "Details": {"ProductNumber": "P\u00001"}}
                ],
            }
        ).encode(),
        "nul in a detail": json.dumps(
            {
                "Id": "nul-detail",
                "Notifications": [
                    {
                        "Action": "ProductChanged",
                        "Details": {"ProductNumber": "P1", "Note": "a\u0000b"},
                    }
                ],
            }
        ).encode(),
    }
    for name, raw in cases.items():
        response = stack.hook(raw)
        assert response.status_code == 400, (name, response.status_code, response.text[:300])
        assert response.json()["error"] == "malformed"
    with stack.connector.db.read() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(InboxRow)) == 0


# --- defect 8: accepts what it should refuse, tells it wrong ------------------------------------


def test_a_customer_posted_again_with_a_different_body_is_a_409(stack: Stack) -> None:
    body = {"shopRef": "cust-409", "name": "Anna Berg", "email": "anna@example.com"}
    assert stack.post("/v1/customers", body).status_code == 202
    again = stack.post("/v1/customers", body)
    assert again.status_code == 200, again.text
    conflict = stack.post("/v1/customers", {**body, "name": "Someone Else"})
    assert conflict.status_code == 409, conflict.text
    assert (
        conflict.json()["error"] == "customer_conflict" and "cust-409" in conflict.json()["message"]
    )


def test_same_new_customer_with_two_bodies_at_once_gives_one_409(stack: Stack) -> None:
    barrier = threading.Barrier(2)

    def post(name: str) -> int:
        barrier.wait()
        return stack.post("/v1/customers", {"shopRef": "cust-race-2", "name": name}).status_code

    with ThreadPoolExecutor(2) as pool:
        statuses = sorted(pool.map(post, ["One", "Two"]))
    assert statuses == [202, 409]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        # Longer than the field allows, within the body limit (a 5 MB body is a 413 before it is
        # read: tests/integration/test_http_guard.py).
        ("/v1/customers", {"shopRef": "c-big", "name": "N", "lastName": "x" * 100_000}, "lastName"),
        ("/v1/customers", {"shopRef": "c\nx", "name": "N"}, "shopRef"),
        ("/v1/customers", {"shopRef": "../../x", "name": "N"}, "shopRef"),
        ("/v1/customers", {"shopRef": "a/../../x", "name": "N"}, "shopRef"),
        (
            "/v1/customers",
            {
                "shopRef": "c-1",
                "name": "N",
                "deliveryAddress": {
                    "name": "N",
                    "addressLine1": "x" * 1000,
                    "zipCode": "1",
                    "city": "c",
                },
            },
            "addressLine1",
        ),
        (
            "/v1/orders",
            {"shopRef": "a/../../x", "lines": [{"productNumber": "P", "quantity": 1}]},
            "shopRef",
        ),
        (
            "/v1/orders",
            {"shopRef": "W\n1", "lines": [{"productNumber": "P", "quantity": 1}]},
            "shopRef",
        ),
        (
            "/v1/orders",
            {"shopRef": "W-1", "lines": [{"productNumber": "P\n", "quantity": 1}]},
            "productNumber",
        ),
    ],
)
def test_oversized_and_unsafe_strings_are_refused_and_never_sent(
    stack: Stack, path: str, body: dict[str, Any], field: str
) -> None:
    response = stack.post(path, body)
    assert response.status_code == 422, response.text[:500]
    assert any(d["field"].endswith(field) for d in response.json()["details"]), response.text[:500]
    time.sleep(0.3)
    with stack.sim.state.lock:
        assert not [c for c in stack.sim.state.customers.values() if c.name == "N"]
    with stack.connector.db.read() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(OrderRow)) == 0


def test_extends_delivery_date_keeps_its_instant(stack: Stack) -> None:
    assert stack.post("/v1/orders", _order("WEB-DATE", stack.product())).status_code == 202
    number = wait_for(
        lambda: stack.get("/v1/orders/WEB-DATE").json()["orderNumber"], 30, what="order in Extend"
    )
    before = stack.get("/v1/orders/WEB-DATE").json()["expectedDeliveryDate"]
    stack.sim.state.set_expected_delivery_date(number, "2030-12-03T00:00:00+01:00")
    shown = wait_for(
        lambda: (
            (v := stack.get("/v1/orders/WEB-DATE").json()["expectedDeliveryDate"]) != before and v
        ),
        30,
        what="delivery date applied",
    )
    # 2030-12-03T00:00:00+01:00 is 2030-12-02T23:00:00Z: any offset may be shown, never another
    # instant.
    assert datetime.fromisoformat(shown) == datetime(2030, 12, 2, 23, 0, tzinfo=UTC), shown


def test_an_unknown_sku_says_so_on_stock(stack: Stack) -> None:
    # KNOWN is planted locally and Extend does not hold it: the start-up full sweep, had it read
    # Extend after `now`, would rightly set it to 0. Plant it once that sweep has finished.
    def first_sweep_done() -> bool:
        with stack.connector.db.read() as session:
            row = session.get(CursorRow, "balances")
            return row is not None and row.last_run_at is not None

    wait_for(first_sweep_done, 30, what="the start-up balance sweep")
    now = datetime.now(UTC)
    with stack.connector.db.write() as session:
        session.add(
            BalanceRow(
                product_number="KNOWN",
                warehouse="MainWarehouse",
                available=Decimal(3),
                confirmed_at=now,
                extend_changed_at=now,
            )
        )
    page = stack.get("/v1/stock", productNumbers="KNOWN,NOPE").json()
    known, unknown = page["items"]
    assert known["productNumber"] == "KNOWN" and known["known"] is True and known["available"] == 3
    assert unknown["productNumber"] == "NOPE" and unknown["known"] is False
    assert unknown["freshness"]["stale"] is True
    assert all(w["confirmed"] is False for w in unknown["warehouses"])


def test_customer_addresses_are_camel_case(stack: Stack) -> None:
    with stack.connector.db.write() as session:
        session.add(
            CustomerRow(
                customer_number="K9",
                name="Kund",
                document={},
                delivery_address={
                    "name": "Kund",
                    "address_line1": "Gatan 1",
                    "zip_code": "11122",
                    "city": "Sthlm",
                    "country_code": "SE",
                    "care_of": None,
                    "address_line2": None,
                    "phone": None,
                    "email": None,
                },
            )
        )
    body = stack.get("/v1/customers/K9").json()
    assert body["deliveryAddress"] == {
        "name": "Kund",
        "addressLine1": "Gatan 1",
        "zipCode": "11122",
        "city": "Sthlm",
        "countryCode": "SE",
        "careOf": None,
        "addressLine2": None,
        "phone": None,
        "email": None,
    }
    assert body["invoiceAddress"] is None


def test_an_order_extend_refuses_is_parked_naming_the_sku(stack: Stack) -> None:
    # products are not synced here, so only Extend can tell that the SKU does not exist.
    assert stack.post("/v1/orders", _order("WEB-SKU", "NO-SUCH-SKU")).status_code == 202
    order = wait_for(
        lambda: (o := stack.get("/v1/orders/WEB-SKU").json())["status"] == "Parked" and o,
        30,
        what="order parked",
    )
    assert "NO-SUCH-SKU" in order["lastError"], order["lastError"]
    events = wait_for(
        lambda: [
            e
            for e in stack.shop.events
            if e.key == "order:WEB-SKU" and e.data["status"] == "Parked"
        ],
        30,
        what="the shop told",
    )
    assert "NO-SUCH-SKU" in events[-1].data["lastError"]


def test_shop_event_ids_are_globally_unique_and_kept_across_redelivery(stack: Stack) -> None:
    assert stack.post("/v1/orders", _order("WEB-EVT", stack.product())).status_code == 202
    wait_for(lambda: len(stack.shop.events) >= 2, 30, what="events delivered")
    with stack.connector.db.read() as session:
        rows = session.scalars(sa.select(OutboxRow)).all()
        ids = {row.id for row in rows}
    delivered = [e.event_id for e in stack.shop.events]
    assert len(set(delivered)) == len(delivered)
    for event_id in delivered:
        # Not derived from the row id, which restarts at 1 on every new database.
        assert not re.fullmatch(r"evt_\d+", event_id), event_id
        assert all(str(i) != event_id.removeprefix("evt_") for i in ids)
    # The failed first attempt and the redelivery carried the same id.
    first_attempts = {e.event_id for e in stack.shop.attempts if e.attempt == 1}
    assert set(delivered) <= first_attempts
