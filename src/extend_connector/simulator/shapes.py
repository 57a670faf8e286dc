"""Response-field dialect of the simulator: renamed fields per model and null empty lists.

The simulator's own copy of the shape of each response (it must not import the connector):
which model each endpoint answers with and which fields hold nested models, so
`SimulatorConfig.field_renames` (model, house-contract name, name sent) can rename a field of
one model only, and `null_empty_lists` can send `null` for an empty list as .NET services do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

NESTED: dict[str, dict[str, str]] = {
    "Order": {"orderHeader": "OrderHeader", "orderRows": "OrderRow", "shipments": "Shipment"},
    "OrderRow": {"product": "ProductRef", "salesData": "SalesData", "deliveryData": "SalesData"},
    "Shipment": {"rows": "ShipmentRow"},
    "Customer": {"addresses": "Address"},
}
"""model -> {field -> the model of its value (or of each item of its list)}."""

MODELS: frozenset[str] = frozenset(
    {
        "Address",
        "Availability",
        "Customer",
        "Order",
        "OrderHeader",
        "OrderLight",
        "OrderRow",
        "Price",
        "Product",
        "ProductRef",
        "SalesData",
        "Shipment",
        "ShipmentRow",
    }
)

ENDPOINT_MODELS: dict[str, str] = {
    "GET /CustomerOrders": "OrderLight",
    "GET /CustomerOrders/{orderNumber}": "Order",
    "POST /CustomerOrders": "Order",
    "PUT /CustomerOrders/{orderNumber}": "Order",
    "DELETE /CustomerOrders/{orderNumber}": "Order",
    "GET /ProductAvailability": "Availability",
    "GET /Products": "Product",
    "GET /Products/{productNumber}": "Product",
    "GET /Customers": "Customer",
    "GET /Customers/{customerNumber}": "Customer",
    "POST /Customers": "Customer",
    "GET /ProductPrices": "Price",
}
"""endpoint key -> the model of its record (or of each item of its list)."""


def reshape(
    value: Any, model: str, renames: Mapping[str, Mapping[str, str]], null_lists: bool
) -> Any:
    """`value` (one record of `model`, or a list of them) as the configured dialect sends it."""
    if isinstance(value, list):
        return [reshape(v, model, renames, null_lists) for v in value]
    if not isinstance(value, dict):
        return value
    names = renames.get(model, {})
    nested = NESTED.get(model, {})
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key in nested:
            item = reshape(item, nested[key], renames, null_lists)
        if null_lists and isinstance(item, list) and not item:
            item = None
        out[names.get(key, key)] = item
    return out


def reshape_reply(
    endpoint: str, payload: Any, renames: Mapping[str, Mapping[str, str]], null_lists: bool
) -> Any:
    """A successful /api answer in the dialect: the body envelope's `items` or the record."""
    model = ENDPOINT_MODELS.get(endpoint)
    if model is None:
        return payload
    if isinstance(payload, dict) and "items" in payload and "totalCount" in payload:
        return {**payload, "items": reshape(payload["items"], model, renames, null_lists)}
    return reshape(payload, model, renames, null_lists)
