"""Extend's JSON shapes as tolerant pydantic models, plus the drift registry.

Extend promises to add data to its models and never remove any (Code of Conduct, rule 6), so
an unknown field never fails parsing: it is kept on the model (`model_extra`) and reported to a
`DriftRegistry` (model, field, first seen, an example), which the store can persist so operators
learn when Extend adds data. Keys are matched case-insensitively, because the KB mixes
camelCase (REST) and PascalCase (webhooks). Only identity fields are required.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, model_validator
from pydantic.alias_generators import to_camel

EXAMPLE_CHARS = 200


class DriftRecord(BaseModel):
    """One field Extend sent that this client does not know."""

    model_config = ConfigDict(frozen=True)

    model: str
    field: str
    first_seen: datetime
    last_seen: datetime
    count: int
    example: str


class DriftRegistry:
    """Unknown fields seen in this process; thread-safe; `drain_new` hands new ones to the store."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[tuple[str, str], DriftRecord] = {}
        self._new: list[tuple[str, str]] = []

    def record(self, model: str, field: str, value: Any) -> None:
        now = datetime.now(UTC)
        key = (model, field)
        with self._lock:
            old = self._records.get(key)
            if old is None:
                self._records[key] = DriftRecord(
                    model=model,
                    field=field,
                    first_seen=now,
                    last_seen=now,
                    count=1,
                    example=repr(value)[:EXAMPLE_CHARS],
                )
                self._new.append(key)
            else:
                self._records[key] = old.model_copy(
                    update={"last_seen": now, "count": old.count + 1}
                )

    def snapshot(self) -> list[DriftRecord]:
        with self._lock:
            return sorted(self._records.values(), key=lambda r: (r.model, r.field))

    def drain_new(self) -> list[DriftRecord]:
        """Records first seen since the last drain (each is returned once)."""
        with self._lock:
            keys, self._new = self._new, []
            return [self._records[k] for k in keys]


default_drift = DriftRegistry()
"""The registry used when a parse is given none (webhook parsing, ad-hoc use)."""


_ALIASES: dict[type[BaseModel], tuple[dict[str, str], frozenset[str]]] = {}
_NULL_RULES: dict[type[BaseModel], tuple[frozenset[str], frozenset[str]]] = {}
_null_warned: set[tuple[str, str]] = set()
_null_lock = threading.Lock()
log = logging.getLogger(__name__)


def _null_rules(model: type[BaseModel]) -> tuple[frozenset[str], frozenset[str]]:
    """(aliases that must not be null, aliases whose null reads as absent and is noted): a
    required field cannot be null; a field whose default is not None (a list, a nested object)
    reads a null as its default. A null on an optional scalar is what the house contract sends
    for "no value" and is neither."""
    cached = _NULL_RULES.get(model)
    if cached is None:
        required = set()
        noted = set()
        for name, info in model.model_fields.items():
            alias = info.alias or name
            if info.is_required():
                required.add(alias)
            elif info.default_factory is not None or info.default is not None:
                noted.add(alias)
        cached = _NULL_RULES[model] = (frozenset(required), frozenset(noted))
    return cached


def _note_null(registry: DriftRegistry, model: str, field: str) -> None:
    registry.record(model, f"{field}: null", None)
    key = (model, field)
    with _null_lock:
        if key in _null_warned:
            return
        _null_warned.add(key)
    log.warning("Extend sent null for %s.%s; read as absent (noted once)", model, field)


def _aliases(model: type[BaseModel]) -> tuple[dict[str, str], frozenset[str]]:
    """(lower-cased alias -> alias, the aliases) of a model's fields, computed once per model
    (parsing is hot: a first price load parses millions of records)."""
    cached = _ALIASES.get(model)
    if cached is None:
        known = {
            (info.alias or name).lower(): info.alias or name
            for name, info in model.model_fields.items()
        }
        cached = _ALIASES[model] = (known, frozenset(known.values()))
    return cached


def _date_or_instant(value: Any) -> Any:
    """A bare `2026-12-03` is a date; anything with a time is an instant. (Tried the other way
    round, pydantic reads `2026-12-03T00:00:00+01:00` as the date 2026-12-03 and the offset, and
    with it the instant, is lost.)"""
    if isinstance(value, str) and len(value.strip()) == 10:
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            return value
    return value


DateOrInstant = Annotated[datetime | date, BeforeValidator(_date_or_instant)]


def _none_as_empty(value: Any) -> Any:
    return [] if value is None else value


# Extend's samples show `null` for an empty list (.NET services often serialise one that way).
NullAsEmpty = BeforeValidator(_none_as_empty)


def _renames(info: ValidationInfo, model: str) -> Mapping[str, str] | None:
    """The dialect's renames for `model` (lower-cased name Extend sends -> expected name)."""
    context = info.context
    if not isinstance(context, dict):
        return None
    renames = context.get("renames")
    return renames.get(model) if renames else None


def _registry(info: ValidationInfo) -> DriftRegistry:
    context = info.context if isinstance(info.context, dict) else {}
    registry = context.get("drift")
    return registry if isinstance(registry, DriftRegistry) else default_drift


class WireModel(BaseModel):
    model_config = ConfigDict(
        extra="allow",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
    )

    @model_validator(mode="before")
    @classmethod
    def _fold_case(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        known, exact = _aliases(cls)
        renames = _renames(info, cls.__name__)
        if renames:
            data = {
                renames.get(k.lower(), k) if isinstance(k, str) else k: v for k, v in data.items()
            }
        if data.keys() <= exact:
            folded = data  # every key already spelled as the model spells it (the usual case)
        else:
            folded = {}
            for key, value in data.items():
                target = known.get(key.lower(), key) if isinstance(key, str) else key
                if target in folded and target != key:
                    continue  # the exactly spelled key wins over a case variant
                folded[target] = value
        if None in folded.values():
            folded = cls._read_nulls(folded, info)
        return folded

    @classmethod
    def _read_nulls(cls, data: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        required, noted = _null_rules(cls)
        out = dict(data)
        for key, value in data.items():
            if value is not None:
                continue
            if key in required:
                raise ValueError(f"{cls.__name__}.{key} is null but a value is required")
            if key in noted:
                del out[key]
                _note_null(_registry(info), cls.__name__, key)
        return out

    @model_validator(mode="after")
    def _report_drift(self, info: ValidationInfo) -> WireModel:
        extra = self.model_extra
        if extra:
            registry = _registry(info)
            for key, value in extra.items():
                registry.record(type(self).__name__, key, value)
        return self


# --- availability ------------------------------------------------------------------------------


class WireAvailability(WireModel):
    product_number: str
    warehouse: str
    available_balance: Decimal
    physical_balance: Decimal | None = None
    reserved_quantity: Decimal | None = None
    changed_date: datetime | None = None


# --- orders -------------------------------------------------------------------------------------


class WireOrderLight(WireModel):
    order_number: str
    status: str
    changed_date: datetime
    order_number_external: str | None = None


class WireProductRef(WireModel):
    product_number: str
    product_name: str | None = None
    product_notes: str | None = None
    customer_product_number: str | None = None
    customs_commodity_code: str | None = None


class WireSalesData(WireModel):
    quantity: Decimal | None = None
    unit: str | None = None
    unit_price: Decimal | None = None
    vat_percent: Decimal | None = None
    currency: str | None = None
    list_price: Decimal | None = None
    unit_explicit_cost: Decimal | None = None


class WireOrderRow(WireModel):
    product: WireProductRef
    position: int | None = None
    row_operation: str | None = None
    sales_data: WireSalesData | None = None
    warehouse: str | None = None
    ship_date: datetime | None = None
    expected_delivery_date: DateOrInstant | None = None
    delivery_data: WireSalesData | None = None
    supply_mode: str | None = None
    batch_number: str | None = None


class WireOrderHeader(WireModel):
    # Echoed header fields (house contract §5.6) are typed loosely: the client reads only a few.
    order_number: str | None = None
    order_number_external: str | None = None
    customer_number: str | None = None
    status: str | None = None
    order_type: str | None = None
    currency: str | None = None
    asked_delivery_date: datetime | None = None
    partial_delivery: bool | None = None
    freight_free: bool | None = None
    delivery_address: dict[str, Any] | None = None
    invoice_address: dict[str, Any] | None = None
    payment_type: str | None = None
    your_reference: str | None = None
    our_reference: str | None = None
    order_email: str | None = None
    notes: str | None = None
    order_date: datetime | None = None
    expected_delivery_date: DateOrInstant | None = None
    changed_date: datetime | None = None


class WireShipmentRow(WireModel):
    position: int
    product_number: str
    quantity: Decimal


class WireShipment(WireModel):
    shipment_number: str
    carrier: str | None = None
    tracking_number: str | None = None
    tracking_url: str | None = None
    ship_date: datetime | None = None
    rows: Annotated[list[WireShipmentRow], NullAsEmpty] = Field(default_factory=list)


class WireOrder(WireModel):
    order_number: str
    order_number_external: str | None = None
    order_header: WireOrderHeader = Field(default_factory=WireOrderHeader)
    order_rows: Annotated[list[WireOrderRow], NullAsEmpty] = Field(default_factory=list)
    status: str | None = None
    changed_date: datetime | None = None
    expected_delivery_date: DateOrInstant | None = None
    shipments: Annotated[list[WireShipment], NullAsEmpty] = Field(default_factory=list)


# --- master data --------------------------------------------------------------------------------


class WireProduct(WireModel):
    product_number: str
    product_name: str | None = None
    changed_date: datetime | None = None
    product_notes: str | None = None
    unit: str | None = None
    ean: str | None = None
    vat_percent: Decimal | None = None
    customs_commodity_code: str | None = None
    supply_mode: str | None = None
    phase_out: bool | None = None
    product_group: str | None = None


class WireAddress(WireModel):
    type: str | None = None
    name: str | None = None
    care_of: str | None = None
    address_line1: str | None = Field(default=None, alias="addressLine1")
    address_line2: str | None = Field(default=None, alias="addressLine2")
    zip_code: str | None = None
    city: str | None = None
    country_code: str | None = None
    phone: str | None = None
    email: str | None = None


class WireCustomer(WireModel):
    customer_number: str
    name: str | None = None
    changed_date: datetime | None = None
    last_name: str | None = None
    organization_number: str | None = None
    customer_group: str | None = None
    price_list: str | None = None
    salesperson: str | None = None
    email: str | None = None
    phone: str | None = None
    addresses: Annotated[list[WireAddress], NullAsEmpty] = Field(default_factory=list)
    customer_type: str | None = None
    discount_list: str | None = None
    currency: str | None = None


class WirePrice(WireModel):
    product_number: str
    unit_price: Decimal
    customer_number: str | None = None
    price_list: str | None = None
    list_price: Decimal | None = None
    discount_percent: Decimal | None = None
    campaign_price: Decimal | None = None
    campaign_from: datetime | None = None
    campaign_to: datetime | None = None
    currency: str | None = None
    vat_percent: Decimal | None = None
    price_source: str | None = None
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    changed_date: datetime | None = None
