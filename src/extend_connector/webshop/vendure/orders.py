"""A Vendure order as the connector's order intake takes it (the body of `POST /v1/orders`).

The shop's order code is the order's identity (`shopRef`): reading the same order twice gives the
same payload, so the intake's idempotency holds for the event and the polling path alike. Only
what was true when the order was placed goes in (lines, addresses, customer), never its state.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any


def _amount(minor: Any) -> str:
    return str((Decimal(int(minor)) / 100).quantize(Decimal("0.01")))


def _address(address: dict[str, Any] | None, email: str | None) -> dict[str, Any] | None:
    if not address or not address.get("streetLine1"):
        return None
    out: dict[str, Any] = {
        "name": address.get("company") or address.get("fullName") or "-",
        "addressLine1": address["streetLine1"],
        "zipCode": address.get("postalCode") or "-",
        "city": address.get("city") or "-",
        "countryCode": (address.get("countryCode") or "SE").upper(),
    }
    if address.get("company") and address.get("fullName"):
        out["careOf"] = address["fullName"]
    if address.get("streetLine2"):
        out["addressLine2"] = address["streetLine2"]
    if address.get("phoneNumber"):
        out["phone"] = address["phoneNumber"]
    if email:
        out["email"] = email
    return out


def placed(line: dict[str, Any]) -> int:
    """How many of the line the customer ordered (Vendure lowers `quantity` on cancellation)."""
    return int(line.get("orderPlacedQuantity") or line["quantity"])


def placed_lines(order: dict[str, Any]) -> list[dict[str, Any]]:
    """The order's lines as placed, in order: payload line n is `placed_lines(order)[n - 1]`."""
    return [line for line in order["lines"] if placed(line) > 0]


def cancelled_lines(order: dict[str, Any]) -> tuple[int, ...]:
    """1-based numbers of the payload lines cancelled entirely in Vendure."""
    return tuple(
        n for n, line in enumerate(placed_lines(order), start=1) if int(line["quantity"]) == 0
    )


def order_payload(order: dict[str, Any], *, customers_to_extend: bool) -> dict[str, Any]:
    """The intake payload of a Vendure order (Admin API shape, see adapter._ORDER_FIELDS).

    The customer: the Vendure customer's `extendCustomerNumber` when it has one (customers from
    Extend); else, with scope `to_extend`, the Vendure customer as `shopCustomerRef`
    (`vendure:<id>`); else (a guest, or a shop customer Extend does not know) the intake's
    `scope.default_customer_number`.
    """
    customer = order.get("customer") or {}
    email = customer.get("emailAddress")
    number = (customer.get("customFields") or {}).get("extendCustomerNumber")
    payload: dict[str, Any] = {
        "shopRef": order["code"],
        "currency": order.get("currencyCode") or "SEK",
        # As placed: a line cancelled in Vendure later is a cancellation (cancelled_lines),
        # not another order under the same code.
        "lines": [
            {
                "productNumber": line["productVariant"]["sku"],
                "quantity": str(placed(line)),
                "unitPrice": _amount(line["unitPrice"]),
                "vatPercent": str(line.get("taxRate") or 0),
            }
            for line in placed_lines(order)
        ],
    }
    if order.get("orderPlacedAt"):
        payload["placedAt"] = order["orderPlacedAt"]
    if number:
        payload["customerNumber"] = number
    elif customers_to_extend and customer.get("id") is not None:
        payload["shopCustomerRef"] = f"vendure:{customer['id']}"
    if email:
        payload["email"] = email
    delivery = _address(order.get("shippingAddress"), email)
    if delivery:
        payload["deliveryAddress"] = delivery
    invoice = _address(order.get("billingAddress"), email)
    if invoice:
        payload["invoiceAddress"] = invoice
    return payload


def _customer_address(address: dict[str, Any] | None, fallback_name: str) -> dict[str, Any] | None:
    if not address or not address.get("streetLine1"):
        return None
    return {
        "name": address.get("company") or address.get("fullName") or fallback_name,
        "address_line1": address["streetLine1"],
        "address_line2": address.get("streetLine2") or None,
        "zip_code": address.get("postalCode") or "-",
        "city": address.get("city") or "-",
        "country_code": ((address.get("country") or {}).get("code") or "SE").upper(),
        "care_of": address.get("fullName") if address.get("company") else None,
        "phone": address.get("phoneNumber") or None,
        "email": None,
    }


def customer_registration(customer: dict[str, Any]) -> dict[str, Any]:
    """A registered Vendure customer as the body of `POST /v1/customers` (snake_case, every
    field present: the same customer read twice gives the same registration)."""
    name = " ".join(p for p in (customer.get("firstName"), customer.get("lastName")) if p)
    addresses = customer.get("addresses") or []
    delivery = next((a for a in addresses if a.get("defaultShippingAddress")), None)
    invoice = next((a for a in addresses if a.get("defaultBillingAddress")), None)
    return {
        "shop_ref": f"vendure:{customer['id']}",
        "name": name or customer["emailAddress"],
        "last_name": None,
        "organization_number": None,
        "customer_group": None,
        "price_list": None,
        "salesperson": None,
        "email": customer.get("emailAddress"),
        "phone": customer.get("phoneNumber") or None,
        "delivery_address": _customer_address(delivery, name),
        "invoice_address": _customer_address(invoice, name),
    }
