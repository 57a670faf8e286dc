"""The simulator's Extend behaviour, driven directly on its state (no HTTP): orders, stock, prices,
events."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from extend_connector.simulator import (
    BusinessConflict,
    Notification,
    SimState,
    SimulatorConfig,
    ValidationFailed,
)

START = "2024-10-15T10:00:00+02:00"

# Extend's "Minimum order using existing customer and prices from Extend Commerce" (S4), as
# documented.
MINIMUM_ORDER: dict[str, Any] = {
    "orderHeader": {
        "orderType": "Normal",
        "orderNumberExternal": "YourOwnOrderNumber-20191223",
        "customerNumber": "WEB",
        "askedDeliveryDate": "2019-12-25T00:00:00+02:00",
        "partialDelivery": False,
        "freightFree": True,
    },
    "orderRows": [
        {
            "product": {"productNumber": "P000001"},
            "salesData": {"quantity": 2, "unit": "Stk"},
            "warehouse": "MainWarehouse",
        },
    ],
}


@pytest.fixture
def sim() -> tuple[SimState, list[list[Notification]]]:
    state = SimState(
        SimulatorConfig(seed=3, products=40, customers=12, start_time=START, frozen_clock=True)
    )
    batches: list[list[Notification]] = []
    state.sink = batches.append
    return state, batches


def _order(
    state: SimState, external: str, rows: list[dict[str, Any]], customer: str = "WEB"
) -> dict[str, Any]:
    return state.create_order(
        {
            "orderHeader": {"orderNumberExternal": external, "customerNumber": customer},
            "orderRows": rows,
        }
    )


def _row(
    product: str = "P000001",
    quantity: float = 1,
    warehouse: str | None = "MainWarehouse",
    **sales: Any,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "product": {"productNumber": product},
        "salesData": {"quantity": quantity, **sales},
    }
    if warehouse is not None:
        row["warehouse"] = warehouse
    return row


def _actions(batches: list[list[Notification]]) -> list[str]:
    return [n.action for batch in batches for n in batch]


def test_documented_minimum_order_is_accepted_as_is_and_priced_by_extend(sim: Any) -> None:
    state, batches = sim
    order = state.create_order(MINIMUM_ORDER)
    assert order["status"] == "Registered" and order["orderNumber"]
    row = order["orderRows"][0]
    assert row["position"] == 10
    assert row["salesData"]["quantity"] == 2 and row["salesData"]["unit"] == "Stk"
    customer, product = state.customers["WEB"], state.products["P000001"]
    expected = state.quote(customer, product, state.clock.now_ms())[0].unit_price
    assert row["salesData"]["unitPrice"] == expected
    assert row["deliveryData"]["quantity"] == 0
    assert order["orderHeader"]["deliveryAddress"][
        "city"
    ]  # the existing customer's address is used
    assert order["expectedDeliveryDate"] >= "2024-10-17"
    assert _actions(batches) == ["OrderCreated"]
    assert batches[0][0].details == {
        "OrderNumber": order["orderNumber"],
        "OrderNumberExternal": "YourOwnOrderNumber-20191223",
        "Warehouse": "MainWarehouse",
    }


def test_extend_assigns_the_order_number_and_keeps_one_everywhere(sim: Any) -> None:
    # A client that sends its own `orderNumber` (or other figures Extend keeps) in the header gets
    # Extend's number back, the same at the top level and inside `orderHeader`, also after a
    # change; Extend assigns numbers (issue #16).
    state, _ = sim
    body = {
        "orderHeader": {
            "orderNumber": "999999",
            "status": "Delivered",
            "orderNumberExternal": "S-own-number",
            "customerNumber": "WEB",
        },
        "orderRows": [_row()],
    }
    order = state.create_order(body)
    number = order["orderNumber"]
    assert number != "999999"
    assert order["orderHeader"]["orderNumber"] == number
    assert order["status"] == order["orderHeader"]["status"] == "Registered"
    changed = state.update_order(
        number, {"orderHeader": {"orderNumber": "123", "yourReference": "Eva"}}
    )
    assert changed["orderNumber"] == changed["orderHeader"]["orderNumber"] == number
    assert changed["orderHeader"]["yourReference"] == "Eva"
    assert state.order_json(state.order(number))["orderHeader"]["orderNumber"] == number


def test_prices_sent_by_the_shop_are_kept_exactly(sim: Any) -> None:
    state, _ = sim
    order = _order(
        state,
        "K-1",
        [_row(unitPrice=10.6778, vatPercent=12.0), _row("P000002", 3), _row("P000003")],
    )
    assert order["orderRows"][0]["salesData"]["unitPrice"] == 10.6778
    assert order["orderRows"][0]["salesData"]["vatPercent"] == 12.0
    assert [r["position"] for r in order["orderRows"]] == [10, 20, 30]


def test_invalid_orders_are_validation_errors_naming_the_field(sim: Any) -> None:
    state, batches = sim
    with pytest.raises(ValidationFailed) as unknown:
        _order(state, "V-1", [_row("NOPE")], customer="NOBODY")
    assert unknown.value.status == 422 and unknown.value.error_type == "Validation"
    fields = {d["field"] for d in unknown.value.details}
    assert fields == {"orderHeader.customerNumber", "orderRows[0].product.productNumber"}
    with pytest.raises(ValidationFailed) as no_warehouse:
        _order(state, "V-2", [_row(warehouse=None)])
    assert no_warehouse.value.details[0]["field"] == "orderRows[0].warehouse"
    with pytest.raises(ValidationFailed) as malformed:
        state.create_order(
            {"orderHeader": {"customerNumber": "WEB"}, "orderRows": [_row(quantity=0)]}
        )
    assert malformed.value.status == 400
    assert state.orders == {} and batches == []


def test_reused_order_number_external_is_a_business_conflict(sim: Any) -> None:
    state, _ = sim
    first = _order(state, "DUP-1", [_row()])
    with pytest.raises(BusinessConflict) as conflict:
        _order(state, "DUP-1", [_row("P000002")])
    assert conflict.value.status == 409 and first["orderNumber"] in conflict.value.message
    assert len(state.orders) == 1


def test_row_cancel_with_warehouse_and_the_documented_quirk_without(sim: Any) -> None:
    state, _ = sim
    order = _order(state, "R-1", [_row(), _row("P000002")])
    number = order["orderNumber"]
    changed = state.update_order(
        number,
        {"orderRows": [{"position": 10, "rowOperation": "Inactive", "warehouse": "MainWarehouse"}]},
    )
    assert [(r["position"], r["rowOperation"]) for r in changed["orderRows"]] == [
        (10, "Inactive"),
        (20, None),
    ]
    quirk = state.update_order(
        number,
        {
            "orderRows": [
                {
                    "position": 20,
                    "rowOperation": "Inactive",
                    "product": {"productNumber": "P000002"},
                }
            ]
        },
    )
    rows = [
        (r["position"], r["rowOperation"], r["product"]["productNumber"])
        for r in quirk["orderRows"]
    ]
    # Without the warehouse the row stays active and a new, cancelled row is appended (S4).
    assert rows == [(10, "Inactive", "P000001"), (20, None, "P000002"), (30, "Inactive", "P000002")]
    assert quirk["status"] == "Registered"


def test_no_change_after_reserved(sim: Any) -> None:
    state, _ = sim
    number = _order(state, "L-1", [_row()])["orderNumber"]
    state.reserve_order(number)
    with pytest.raises(BusinessConflict):
        state.update_order(
            number,
            {
                "orderRows": [
                    {"position": 10, "rowOperation": "Inactive", "warehouse": "MainWarehouse"}
                ]
            },
        )
    with pytest.raises(BusinessConflict):
        state.withdraw_order(number)


def test_reserve_lowers_available_and_pick_lowers_physical(sim: Any) -> None:
    state, batches = sim
    balance = state.balances["P000001\x00MainWarehouse"]
    state.move_stock([{"productNumber": "P000001", "warehouse": "MainWarehouse", "physical": 100}])
    number = _order(state, "S-1", [_row(quantity=5)])["orderNumber"]
    batches.clear()
    state.reserve_order(number)
    assert (balance.physical, balance.reserved, balance.available) == (100, 5, 95)
    assert _actions(batches) == ["AvailableBalanceChanged", "OrderReserved"]
    assert batches[0][0].details["AvailableBalance"] == "95"
    batches.clear()
    order = state.pick_order(
        number, [{"position": 10, "quantity": 2}], carrier="PostNord", tracking_number="SE123"
    )
    assert order["status"] == "PartiallyPicked"
    assert (balance.physical, balance.reserved, balance.available) == (98, 3, 95)
    assert _actions(batches) == ["BalanceChanged", "OrderPicked"]  # available did not move
    shipment = order["shipments"][0]
    assert shipment["carrier"] == "PostNord" and shipment["trackingNumber"] == "SE123"
    assert shipment["rows"] == [{"position": 10, "productNumber": "P000001", "quantity": 2}]
    assert order["orderRows"][0]["deliveryData"]["quantity"] == 2
    batches.clear()
    order = state.pick_order(number)
    assert order["status"] == "Picked" and len(order["shipments"]) == 2
    assert _actions(batches) == ["BalanceChanged", "OrderPicked", "CustomerInvoiceCreated"]
    with pytest.raises(BusinessConflict):
        state.cancel_order(number)


def test_cancel_after_reserve_releases_the_reservation(sim: Any) -> None:
    state, batches = sim
    balance = state.balances["P000001\x00MainWarehouse"]
    before = balance.available
    number = _order(state, "C-1", [_row(quantity=4)])["orderNumber"]
    state.reserve_order(number)
    batches.clear()
    assert state.cancel_order(number)["status"] == "Cancelled"
    assert balance.available == before
    assert _actions(batches) == ["AvailableBalanceChanged", "OrderCancelled"]


def test_expected_delivery_date_change_fires_order_delivery_data_changed(sim: Any) -> None:
    state, batches = sim
    number = _order(state, "D-1", [_row()])["orderNumber"]
    batches.clear()
    order = state.set_expected_delivery_date(number, "2024-11-01T00:00:00+01:00")
    assert order["expectedDeliveryDate"] == "2024-11-01T00:00:00+01:00"
    assert order["orderRows"][0]["expectedDeliveryDate"] == "2024-11-01T00:00:00+01:00"
    assert _actions(batches) == ["OrderDeliveryDataChanged"]


def test_swedish_number_formatting_in_details() -> None:
    state = SimState(SimulatorConfig(products=3, customers=1, swedish_numbers=True))
    assert state.fmt_value(5324) == "5 324"
    assert state.fmt_value(12.5) == "12,5"
    assert state.fmt_value(-1234567.25) == "-1 234 567,25"
    plain = SimState(SimulatorConfig(products=3, customers=1))
    assert (plain.fmt_value(5324.0), plain.fmt_value(12.5)) == ("5324", "12.5")


def test_every_documented_event_can_fire(sim: Any) -> None:
    from extend_connector.simulator import EVENTS

    state, batches = sim
    state.move_stock([{"productNumber": "P000001", "warehouse": "MainWarehouse", "delta": 10}])
    number = _order(state, "E-1", [_row()])["orderNumber"]
    state.set_expected_delivery_date(number, "2024-12-01T00:00:00+01:00")
    state.reserve_order(number)
    state.pick_order(number)
    other = _order(state, "E-2", [_row()])["orderNumber"]
    state.cancel_order(other)
    state.create_product({"productNumber": "NEW-1", "productName": "Ny produkt"})
    state.update_product("NEW-1", {"productName": "Ändrad"})
    customer = state.create_customer({"name": "Ny Kund AB", "organizationNumber": "556036-0793"})
    state.update_customer(customer.customer_number, {"phone": "+46 8 123 45 67"})
    offer = state.new_offer(customer.customer_number)
    state.fire("OfferChanged", {"OfferNumber": offer})
    state.fire("CustomerInvoiceChanged", {"InvoiceNumber": "500001", "OrderNumber": number})
    state.deliver_purchase(
        "RP-15", "MainWarehouse", [{"productNumber": "P000002", "quantity": 5324}], complete=False
    )
    state.deliver_purchase(
        "RP-15", "MainWarehouse", [{"productNumber": "P000002", "quantity": 1}], complete=True
    )
    state.fire(
        "PurchaseCancelled", {"OrderNumber": "RP-16", "Warehouse": "MainWarehouse"}, "MainWarehouse"
    )
    assert set(_actions(batches)) == set(EVENTS)
    purchase = next(n for b in batches for n in b if n.action == "PurchasePartiallyDelivered")
    assert purchase.details == {
        "OrderNumber": "RP-15",
        "ProductNumber": "P000002",
        "Warehouse": "MainWarehouse",
        "Quantity": "5324",
        "Position": "10",
        "Unit": state.products["P000002"].unit,
    }


def test_customer_creation_assigns_a_number_and_refuses_duplicates(sim: Any) -> None:
    state, _ = sim
    created = state.create_customer(
        {"name": "Ny Kund AB", "organizationNumber": "556036-0793", "email": "a@example.se"}
    )
    assert created.customer_number not in ("", None) and created.customer_type == "B2B"
    with pytest.raises(BusinessConflict):
        state.create_customer({"name": "Same AB", "organizationNumber": "5560360793"})
    person = state.create_customer(
        {"name": "Eva", "lastName": "Holm", "email": "Eva.Holm@example.se"}
    )
    assert person.customer_type == "B2C"
    with pytest.raises(BusinessConflict):
        state.create_customer({"name": "Eva", "email": "eva.holm@EXAMPLE.se"})
    with pytest.raises(ValidationFailed):
        state.create_customer({"name": " "})


def test_price_change_dates_follow_their_sources(sim: Any) -> None:
    state, _ = sim
    customer = state.customers["WEB"]
    product = state.products["P000005"]
    state.clock.advance(60)
    state.update_product("P000005", {"listPrice": 1000.0})
    now = state.clock.now_ms()
    quote, changed = state.quote(customer, product, now)
    assert quote.unit_price == 1000.0 and changed == now
    start = datetime.fromisoformat(START) + timedelta(days=1)
    state.set_campaign(
        code="HÖST",
        prices={"P000005": 700.0},
        valid_from=start.isoformat(),
        valid_to=(start + timedelta(days=2)).isoformat(),
    )
    assert (
        state.quote(customer, product, state.clock.now_ms())[0].unit_price == 1000.0
    )  # not running yet
    state.clock.set(start + timedelta(hours=1))
    quote, changed = state.quote(customer, product, state.clock.now_ms())
    assert (quote.unit_price, quote.source) == (700.0, "Campaign")
    assert changed == int(start.timestamp() * 1000)  # the price changed when the campaign began
