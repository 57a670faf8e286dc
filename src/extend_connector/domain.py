"""Our own value objects, independent of Extend's wire format and of any webshop.

Frozen, keyword-only, and strict about time: a naive datetime is refused at construction,
because change-date cursors compare instants across time zones.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any


class NaiveDatetimeError(ValueError):
    """A datetime without a UTC offset was given where an instant is required."""


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _check_aware(obj: Any) -> None:
    cls = type(obj)
    names = _FIELD_NAMES.get(cls)
    if names is None:  # fields() per object cost more than the check itself on a price load
        names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(obj))
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, datetime) and (value.tzinfo is None or value.utcoffset() is None):
            raise NaiveDatetimeError(
                f"{cls.__name__}.{name} must carry a UTC offset, got {value!r}"
            )


class OrderStatus(StrEnum):
    """Where an order is. Local-only states come first; the rest mirror Extend's life cycle."""

    RECEIVED = "Received"  # accepted from the shop, not yet sent
    WAITING_FOR_EXTEND = "WaitingForExtend"  # Extend unreachable or failing technically; will retry
    PARKED = "Parked"  # cannot be sent as is; a person must act (see failures)
    REGISTERED = "Registered"
    RESERVED = "Reserved"
    PARTIALLY_PICKED = "PartiallyPicked"
    PICKED = "Picked"
    CANCELLED = "Cancelled"

    @property
    def rank(self) -> int:
        """Progress order: a status never moves to a lower rank because a late hook arrived."""
        return _STATUS_RANK[self]

    @property
    def in_extend(self) -> bool:
        return self.rank >= _STATUS_RANK[OrderStatus.REGISTERED]

    @property
    def editable(self) -> bool:
        """Extend refuses every change once the order is reserved."""
        return self.rank < _STATUS_RANK[OrderStatus.RESERVED]


_STATUS_RANK = {
    OrderStatus.RECEIVED: 0,
    OrderStatus.WAITING_FOR_EXTEND: 1,
    OrderStatus.PARKED: 1,
    OrderStatus.REGISTERED: 2,
    OrderStatus.RESERVED: 3,
    OrderStatus.PARTIALLY_PICKED: 4,
    OrderStatus.PICKED: 5,
    OrderStatus.CANCELLED: 6,
}


# Spelt out per class (not an alias) so mypy sees the fields and dataclasses.replace works.
@dataclass(frozen=True, kw_only=True, slots=True)
class Address:
    name: str
    address_line1: str
    zip_code: str
    city: str
    country_code: str = "SE"
    care_of: str | None = None
    address_line2: str | None = None
    phone: str | None = None
    email: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class OrderLine:
    product_number: str
    quantity: Decimal
    unit: str | None = None
    unit_price: Decimal | None = None  # None: Extend prices the row for the customer
    vat_percent: Decimal | None = None
    warehouse: str | None = None  # None: the first sell-from warehouse
    position: int | None = None  # Extend's row position, once known
    cancelled: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class Order:
    """An order as the shop placed it; `shop_ref` is its identity everywhere."""

    shop_ref: str
    lines: tuple[OrderLine, ...]
    placed_at: datetime
    customer_number: str | None = None  # None: the shop customer is resolved per scope
    shop_customer_ref: str | None = None
    currency: str = "SEK"
    asked_delivery_date: datetime | None = None
    delivery_address: Address | None = None
    invoice_address: Address | None = None
    payment_type: str | None = None
    email: str | None = None
    notes: str | None = None

    def __post_init__(self) -> None:
        _check_aware(self)
        if not self.lines:
            raise ValueError("an order needs at least one line")


@dataclass(frozen=True, kw_only=True, slots=True)
class ShipmentLine:
    position: int
    product_number: str
    quantity: Decimal


@dataclass(frozen=True, kw_only=True, slots=True)
class Shipment:
    shipment_number: str
    carrier: str | None
    tracking_number: str | None
    tracking_url: str | None
    ship_date: datetime | None
    lines: tuple[ShipmentLine, ...] = ()

    def __post_init__(self) -> None:
        _check_aware(self)


@dataclass(frozen=True, kw_only=True, slots=True)
class OrderState:
    """What Extend says about an order (fetched, never taken from a hook)."""

    order_number: str
    order_number_external: str
    status: OrderStatus
    changed_at: datetime
    expected_delivery_date: datetime | date | None = None
    lines: tuple[OrderLine, ...] = ()
    shipments: tuple[Shipment, ...] = ()

    def __post_init__(self) -> None:
        _check_aware(self)


@dataclass(frozen=True, kw_only=True, slots=True)
class OrderChange:
    """A light item of the order list: enough to decide whether to fetch the detail."""

    order_number: str
    order_number_external: str | None
    status: OrderStatus
    changed_at: datetime

    def __post_init__(self) -> None:
        _check_aware(self)


@dataclass(frozen=True, kw_only=True, slots=True)
class Balance:
    """Stock of one product in one warehouse, as Extend computes it."""

    product_number: str
    warehouse: str
    available: Decimal
    physical: Decimal | None = None
    reserved: Decimal | None = None
    changed_at: datetime | None = None

    def __post_init__(self) -> None:
        _check_aware(self)


@dataclass(frozen=True, kw_only=True, slots=True)
class Product:
    product_number: str
    name: str
    changed_at: datetime
    unit: str | None = None
    ean: str | None = None
    vat_percent: Decimal | None = None
    notes: str | None = None
    customs_commodity_code: str | None = None
    supply_mode: str | None = None
    phase_out: bool = False
    extra: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        _check_aware(self)


@dataclass(frozen=True, kw_only=True, slots=True)
class Customer:
    customer_number: str
    name: str
    changed_at: datetime | None = None
    last_name: str | None = None
    organization_number: str | None = None
    customer_group: str | None = None
    price_list: str | None = None
    salesperson: str | None = None
    email: str | None = None
    phone: str | None = None
    delivery_address: Address | None = None
    invoice_address: Address | None = None
    shop_ref: str | None = None  # set when the shop is master (scope.customers = to_extend)

    def __post_init__(self) -> None:
        _check_aware(self)

    @property
    def is_b2b(self) -> bool:
        return bool(self.organization_number)


@dataclass(frozen=True, kw_only=True, slots=True)
class Price:
    """The net 'best price right now' of one product for one customer."""

    customer_number: str
    product_number: str
    unit_price: Decimal
    currency: str = "SEK"
    list_price: Decimal | None = None
    discount_percent: Decimal | None = None
    price_list: str | None = None
    vat_percent: Decimal | None = None
    valid_to: datetime | None = None

    def __post_init__(self) -> None:
        _check_aware(self)
