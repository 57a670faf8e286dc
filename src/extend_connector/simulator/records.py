"""The simulator's own records: Extend's side of the world, mutable, internal.

These are not the connector's domain objects (the simulator imports nothing of the
connector); they are what `state.SimState` keeps and what `wire` turns into JSON.
Every record carries `changed_ms` (epoch ms, the sort key) and `changed` (its ISO text).
Quantities and prices are floats: JSON numbers, as in Extend's samples (`41.0`, `10.6778`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True, kw_only=True)
class Product:
    product_number: str
    product_name: str
    product_notes: str | None
    unit: str
    ean: str
    vat_percent: float
    customs_commodity_code: str | None
    supply_mode: str
    phase_out: bool
    product_group: str
    list_price: float
    changed_ms: int = 0
    changed: str = ""
    price_changed_ms: int = 0  # list price changes (no webhook exists for prices)


@dataclass(slots=True, kw_only=True)
class Customer:
    customer_number: str
    customer_type: str  # "B2B" | "B2C"
    name: str
    last_name: str | None
    organization_number: str | None
    customer_group: str | None
    price_list: str | None
    discount_list: str | None
    salesperson: str | None
    email: str | None
    phone: str | None
    addresses: list[dict[str, Any]]
    currency: str = "SEK"
    changed_ms: int = 0
    changed: str = ""
    pricing_changed_ms: int = 0  # price list / discount list / group assignment changed


@dataclass(slots=True, kw_only=True)
class Balance:
    product_number: str
    warehouse: str
    physical: float
    reserved: float = 0.0
    changed_ms: int = 0
    changed: str = ""

    @property
    def available(self) -> float:
        return self.physical - self.reserved


@dataclass(slots=True, kw_only=True)
class PriceList:
    name: str
    currency: str = "SEK"
    entries: dict[str, float] = field(default_factory=dict)
    entry_changed_ms: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True, kw_only=True)
class DiscountList:
    name: str
    by_group: dict[str, float] = field(default_factory=dict)  # percent off the list price
    by_product: dict[str, float] = field(default_factory=dict)  # wins over the group percent
    changed_ms: int = 0


@dataclass(slots=True, kw_only=True)
class Campaign:
    code: str
    name: str
    prices: dict[str, float]
    valid_from_ms: int
    valid_to_ms: int
    customer_group: str | None = None  # None: every customer
    changed_ms: int = 0

    def active(self, now_ms: int) -> bool:
        return self.valid_from_ms <= now_ms < self.valid_to_ms


@dataclass(slots=True, kw_only=True)
class OrderRow:
    position: int
    product: dict[str, Any]
    sales_data: dict[str, Any]
    warehouse: str | None
    row_operation: str | None = None  # "Inactive" when cancelled
    supply_mode: str = "Warehouse"
    batch_number: str | None = None
    ship_date: str | None = None
    expected_delivery_date: str | None = None
    delivered: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)  # other row fields sent, echoed back

    @property
    def active(self) -> bool:
        return self.row_operation != "Inactive"

    @property
    def product_number(self) -> str:
        return str(self.product.get("productNumber"))

    @property
    def quantity(self) -> float:
        return float(self.sales_data.get("quantity") or 0.0)


@dataclass(slots=True, kw_only=True)
class Shipment:
    shipment_number: str
    carrier: str | None
    tracking_number: str | None
    tracking_url: str | None
    ship_date: str
    rows: list[dict[str, Any]]


@dataclass(slots=True, kw_only=True)
class Order:
    order_number: str
    header: dict[str, Any]  # the orderHeader as sent (camelCase), completed with defaults
    rows: list[OrderRow]
    status: str = "Registered"
    order_date: str = ""
    expected_delivery_date: str | None = None
    shipments: list[Shipment] = field(default_factory=list)
    changed_ms: int = 0
    changed: str = ""

    @property
    def order_number_external(self) -> str | None:
        value = self.header.get("orderNumberExternal")
        return None if value is None else str(value)

    @property
    def customer_number(self) -> str:
        return str(self.header.get("customerNumber"))

    def next_position(self) -> int:
        return max((r.position for r in self.rows), default=0) + 10
