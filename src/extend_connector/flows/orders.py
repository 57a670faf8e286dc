"""Orders: the shop's orders into Extend exactly once, and their progress back to the shop.

- Intake (`accept_order`): the order is checked against the local copy and stored with its
  submit job in one transaction; an order that cannot be valid is parked (kind `order`).
- Submit (`submit`, workflow id `order-<shopRef>`): POST CustomerOrders once. Every attempt is
  written down before it is sent; an attempt that may have reached Extend (lost answer, 5xx,
  a crash mid-call) is followed by a look-up by `orderNumberExternal` before any new POST.
  Extend down or failing: the order waits, visibly `WaitingForExtend`, with capped backoff and
  no retry budget; a long backoff ends early once Extend answers any call of any process again
  (`flows.retry`, policy `orders`). Extend refusing the data: parked with Extend's message.
- Progress (`refresh`): order webhooks enqueue it per order; it fetches the order, and the
  fetched order is the truth, applied unless an even newer one was applied already (Extend's
  changedDate decides, not the status rank). The shop is told only when something it shows
  changed.
- Sweep (`sweep_orders`): every `sync.orders_sweep_minutes` the orders changed since the cursor
  are listed and each of ours whose change is newer than our copy is fetched: it repairs lost
  webhooks. Never a poll per order.
- Shop changes (`request_cancel`): a cancellation of the order or of lines before Reserved is
  sent to Extend by a job; later it is refused.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from extend_connector import engine
from extend_connector.domain import Address, Order, OrderLine, OrderState, OrderStatus, Shipment
from extend_connector.extend import (
    BusinessConflict,
    ExtendError,
    NotFound,
    OutcomeUnknown,
    TechnicalFailure,
    Throttled,
    ValidationFailed,
)
from extend_connector.extend.webhooks import ORDER_ACTIONS
from extend_connector.flows import cursors, dispatch, failures, outbox, retry
from extend_connector.flows.context import current
from extend_connector.flows.sync import Progress, SweepResult, Tally
from extend_connector.settings import CustomersScope, ProductsScope, Settings
from extend_connector.store.models import (
    CursorRow,
    CustomerRow,
    IdMappingRow,
    OrderRow,
    ProductRow,
    ShipmentRow,
)
from extend_connector.webshop import EventType

log = structlog.get_logger("extend_connector.orders")

SUBMIT_QUEUE = "orders-submit"
PROGRESS_QUEUE = "orders-progress"
SWEEP_QUEUE = "orders-sweep"
# Most of a submit job's life during an outage is a durable sleep; a wide queue keeps those sleepers
# from holding back fresh orders (calls to Extend are bounded by the client's max_in_flight).
engine.queue(SUBMIT_QUEUE, worker_concurrency=32, poll_seconds=0.2)
engine.queue(PROGRESS_QUEUE, partition_concurrency=1, worker_concurrency=32, poll_seconds=0.2)
engine.queue(SWEEP_QUEUE, concurrency=1)

CURSOR = "orders"
FAILURE_KIND = "order"
CANCEL_FAILURE_KIND = "order_cancel"

TERMINAL = frozenset({OrderStatus.PICKED.value, OrderStatus.CANCELLED.value})
# Acknowledged to the shop and not in Extend yet: a submit job must be carrying these.
UNSENT = frozenset({OrderStatus.RECEIVED.value, OrderStatus.WAITING_FOR_EXTEND.value})


class OrderError(Exception):
    """Root of what the shop-facing order operations refuse."""


class OrderConflict(OrderError):
    """The same shop reference was posted with different content."""


class UnknownOrder(OrderError):
    """No order with this shop reference."""


class ChangeRefused(OrderError):
    """The order can no longer be changed (Extend refuses every change once it is reserved)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Problem:
    """Why an order cannot be sent, phrased for the person who fixes it."""

    field: str
    message: str

    def as_json(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


@dataclass(frozen=True, kw_only=True, slots=True)
class Intake:
    shop_ref: str
    status: str
    created: bool  # False: the same order had been posted before
    problems: tuple[Problem, ...] = ()
    failure_id: int | None = None


def backoff_seconds(failures_in_a_row: int, retry_after: float | None = None) -> float:
    """The orders' backoff (`flows.retry` policy `orders`); a longer Retry-After wins."""
    return retry.policy(retry.ORDERS).delay(failures_in_a_row, retry_after)


def canonical(payload: dict[str, Any]) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# --- payload <-> domain ------------------------------------------------------------------------


def _dec(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _when(value: Any) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _address(data: dict[str, Any] | None) -> Address | None:
    if not data:
        return None
    return Address(name=data.get("name", ""), address_line1=data.get("addressLine1", ""),
                   zip_code=data.get("zipCode", ""), city=data.get("city", ""),
                   country_code=data.get("countryCode") or "SE", care_of=data.get("careOf"),
                   address_line2=data.get("addressLine2"), phone=data.get("phone"), email=data.get("email"))


def active_line_numbers(payload: dict[str, Any], change: dict[str, Any] | None) -> list[int]:
    """1-based shop line numbers still wanted (the shop may cancel lines before sending)."""
    cancelled = set((change or {}).get("lines") or [])
    return [i + 1 for i in range(len(payload.get("lines") or [])) if i + 1 not in cancelled]


def order_from_payload(payload: dict[str, Any], *, customer_number: str, line_numbers: list[int],
                       placed_fallback: datetime) -> Order:
    lines = []
    for number in line_numbers:
        line = payload["lines"][number - 1]
        lines.append(OrderLine(product_number=line["productNumber"], quantity=Decimal(str(line["quantity"])),
                               unit=line.get("unit"), unit_price=_dec(line.get("unitPrice")),
                               vat_percent=_dec(line.get("vatPercent")), warehouse=line.get("warehouse")))
    return Order(
        shop_ref=payload["shopRef"], lines=tuple(lines),
        placed_at=_when(payload.get("placedAt")) or placed_fallback,
        customer_number=customer_number, shop_customer_ref=payload.get("shopCustomerRef"),
        currency=payload.get("currency") or "SEK", asked_delivery_date=_when(payload.get("askedDeliveryDate")),
        delivery_address=_address(payload.get("deliveryAddress")),
        invoice_address=_address(payload.get("invoiceAddress")),
        payment_type=payload.get("paymentType"), email=payload.get("email"), notes=payload.get("notes"),
    )


def _iso(value: datetime | date | None) -> str | None:
    return None if value is None else value.isoformat()


def state_json(state: OrderState) -> dict[str, Any]:
    """What Extend said about the order, kept in orders.extend_detail and shown to the shop."""
    return {
        "orderNumber": state.order_number, "orderNumberExternal": state.order_number_external,
        "status": state.status.value, "changedAt": state.changed_at.isoformat(),
        "expectedDeliveryDate": _iso(state.expected_delivery_date),
        "lines": [{"position": line.position, "productNumber": line.product_number,
                   "quantity": str(line.quantity), "unitPrice": None if line.unit_price is None else str(line.unit_price),
                   "warehouse": line.warehouse, "cancelled": line.cancelled} for line in state.lines],
    }


def _expected(value: datetime | date | None) -> datetime | None:
    """Extend's expected delivery date as the instant it names, in UTC: the same form the column
    gives back, so a refetch of an unchanged order compares equal (no event for nothing)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime(value.year, value.month, value.day, tzinfo=UTC)


def _shipment_json(s: Shipment | ShipmentRow) -> dict[str, Any]:
    if isinstance(s, ShipmentRow):
        return {"shipmentNumber": s.shipment_number, "carrier": s.carrier, "trackingNumber": s.tracking_number,
                "trackingUrl": s.tracking_url, "shipDate": _iso(s.ship_date), "lines": list(s.lines or [])}
    return {"shipmentNumber": s.shipment_number, "carrier": s.carrier, "trackingNumber": s.tracking_number,
            "trackingUrl": s.tracking_url, "shipDate": _iso(s.ship_date),
            "lines": [{"position": x.position, "productNumber": x.product_number, "quantity": str(x.quantity)}
                      for x in s.lines]}


def order_view(session: Session, row: OrderRow) -> dict[str, Any]:
    """The order as the shop sees it (GET /v1/orders/{ref} and the order.updated event)."""
    shipments = session.scalars(sa.select(ShipmentRow).where(ShipmentRow.shop_ref == row.shop_ref)
                                .order_by(ShipmentRow.shipment_number)).all()
    detail = row.extend_detail or {}
    return {
        "shopRef": row.shop_ref, "orderNumber": row.order_number, "status": row.status,
        "customerNumber": row.customer_number,
        "expectedDeliveryDate": _iso(row.expected_delivery_date),
        "shipments": [_shipment_json(s) for s in shipments],
        "lines": detail.get("lines") or [],
        "pendingChange": row.shop_change, "lastError": row.last_error,
        "extendChangedAt": _iso(row.extend_changed_at),
    }


def _projection(view: dict[str, Any]) -> dict[str, Any]:
    """The parts a shop shows; an event is owed only when one of them changes."""
    return {k: view[k] for k in ("orderNumber", "status", "expectedDeliveryDate", "shipments", "lines",
                                 "pendingChange", "lastError")}


def _tell_shop(session: Session, row: OrderRow, before: dict[str, Any] | None) -> bool:
    view = order_view(session, row)
    if before is not None and _projection(view) == before:
        return False
    outbox.publish(session, EventType.ORDER_UPDATED, f"order:{row.shop_ref}", view)
    return True


# --- validation against the local copy ----------------------------------------------------------


def _fully_loaded(session: Session, cursor: str) -> bool:
    """Whether a sweep of this master data has completed at least once. Before that, the local
    copy holds only what webhooks brought, and a record missing from it proves nothing."""
    row = session.get(CursorRow, cursor)
    return row is not None and row.high_water_mark is not None


def _mapped_customer(session: Session, shop_customer_ref: str) -> str | None:
    mapping = session.get(IdMappingRow, ("customer", shop_customer_ref))
    if mapping is not None:
        return mapping.extend_id
    row = session.scalars(sa.select(CustomerRow).where(CustomerRow.shop_ref == shop_customer_ref)).first()
    return row.customer_number if row is not None else None


def check_order(session: Session, settings: Settings, payload: dict[str, Any],
                known_in_extend: Callable[[str], bool] | None = None) -> tuple[list[Problem], str | None]:
    """Problems that make the order invalid, and the Extend customer number (None: the
    shop's customer is still being created in Extend, scope `to_extend`).

    Products (customers) are checked when that master data is synced and a full sweep has
    completed (before that the copy holds only what webhooks brought); `known_in_extend` lets a
    replay accept a product Extend has although our copy does not yet.
    """
    problems: list[Problem] = []
    warehouses = settings.extend.warehouses
    lines = payload.get("lines") or []
    check_products = settings.scope.products == ProductsScope.SYNC and _fully_loaded(session, "products")
    numbers = sorted({line["productNumber"] for line in lines})
    known = {}
    if check_products and numbers:
        known = {p.product_number: p for p in session.scalars(
            sa.select(ProductRow).where(ProductRow.product_number.in_(numbers)))}
    for i, line in enumerate(lines):
        where = f"lines[{i}]"
        warehouse = line.get("warehouse")
        if warehouse is not None and warehouse not in warehouses:
            problems.append(Problem(field=f"{where}.warehouse",
                                    message=f"warehouse {warehouse!r} is not one the shop sells from "
                                            f"(extend.warehouses: {', '.join(warehouses)})"))
        if check_products:
            number = line["productNumber"]
            product = known.get(number)
            if product is None and not (known_in_extend is not None and known_in_extend(number)):
                problems.append(Problem(field=f"{where}.productNumber",
                                        message=f"product {number!r} is not known in Extend; create it there "
                                                "(or fix the shop's product number), then retry"))
            elif product is not None and product.phase_out:
                problems.append(Problem(field=f"{where}.productNumber",
                                        message=f"product {number!r} is phased out in Extend and cannot be "
                                                "ordered; replace or remove the line"))
    scope = settings.scope.customers
    given = payload.get("customerNumber")
    shop_customer = payload.get("shopCustomerRef")
    customer: str | None = settings.scope.default_customer_number
    if scope == CustomersScope.OFF:
        customer = given or settings.scope.default_customer_number
    elif scope == CustomersScope.FROM_EXTEND:
        if given:
            customer = given
            if _fully_loaded(session, "customers") and session.get(CustomerRow, given) is None:
                problems.append(Problem(field="customerNumber",
                                        message=f"customer {given!r} is not in the local copy of Extend's "
                                                "customers; check the number or sync customers, then retry"))
        elif shop_customer:
            customer = _mapped_customer(session, shop_customer)
            if customer is None:
                problems.append(Problem(field="shopCustomerRef",
                                        message=f"shop customer {shop_customer!r} has no Extend customer "
                                                "(customers come from Extend in this setup)"))
    elif given:
        customer = given
    elif shop_customer:
        customer = _mapped_customer(session, shop_customer)  # None: wait for its creation job
    return problems, customer


# --- intake -------------------------------------------------------------------------------------


def accept_order(payload: dict[str, Any]) -> Intake:
    """Store a shop order and its submit job in one transaction (idempotent on shopRef).

    Raises OrderConflict when the reference was used for a different order. An invalid order
    is stored as `Parked` (with its failure) and no job is enqueued. Two requests racing with
    one new reference (PostgreSQL, where both may insert at once): the loser's insert violates
    the primary key, and it answers as a repeat of the order that won.
    """
    try:
        return _accept_once(payload)
    except IntegrityError:
        with current().db.read() as session:
            if session.get(OrderRow, payload["shopRef"]) is None:
                raise
        return _accept_once(payload)


def _accept_once(payload: dict[str, Any]) -> Intake:
    ctx = current()
    ref = payload["shopRef"]
    now = ctx.clock()
    with ctx.db.write() as session:
        existing = session.get(OrderRow, ref)
        if existing is not None:
            if canonical(existing.shop_payload) != canonical(payload):
                raise OrderConflict(
                    f"order {ref!r} was already received with different content; a shop order reference "
                    "identifies one order (send changes as a cancellation, or use a new reference)")
            return Intake(shop_ref=ref, status=existing.status, created=False)
        problems, customer = check_order(session, ctx.settings, payload)
        row = OrderRow(shop_ref=ref, status=OrderStatus.RECEIVED.value, customer_number=customer,
                       shop_payload=payload, created_at=now, updated_at=now, submit_attempts=0)
        session.add(row)
        session.flush()
        if problems:
            row.status = OrderStatus.PARKED.value
            message = "; ".join(p.message for p in problems)
            row.last_error = message
            failure_id = failures.park(session, kind=FAILURE_KIND, key=ref, reason="invalid_order",
                                       message=message, detail={"problems": [p.as_json() for p in problems]},
                                       payload={"shopRef": ref}, now=now)
            _tell_shop(session, row, None)
            log.warning("order_parked", shop_ref=ref, reason="invalid_order", problems=len(problems))
            return Intake(shop_ref=ref, status=row.status, created=True, problems=tuple(problems),
                          failure_id=failure_id)
        ctx.engine.enqueue_in_transaction(session, submit, ref, queue=SUBMIT_QUEUE, workflow_id=f"order-{ref}")
    log.info("order_received", shop_ref=ref, lines=len(payload.get("lines") or []))
    return Intake(shop_ref=ref, status=OrderStatus.RECEIVED.value, created=True)


def get_order_view(shop_ref: str) -> dict[str, Any]:
    with current().db.read() as session:
        row = session.get(OrderRow, shop_ref)
        if row is None:
            raise UnknownOrder(f"no order with shop reference {shop_ref!r}")
        return order_view(session, row)


# --- applying what Extend says --------------------------------------------------------------------


def _find_local(session: Session, state_number: str, external: str | None) -> OrderRow | None:
    row = session.scalars(sa.select(OrderRow).where(OrderRow.order_number == state_number)).first()
    if row is None and external:
        row = session.get(OrderRow, external)
        if row is not None and row.order_number not in (None, state_number):
            return None  # that shop order went into Extend as another order
    return row


def apply_state(session: Session, state: OrderState, *, now: datetime,
                line_numbers: list[int] | None = None) -> str:
    """Make the local order what Extend says; returns applied / unchanged / stale / not_ours.

    A fetched order older than the one applied last (a slow fetch overtaken by a newer one) is
    ignored; otherwise it is the truth, whatever its status rank.
    """
    row = _find_local(session, state.order_number, state.order_number_external)
    if row is None:
        return "not_ours"
    if row.extend_changed_at is not None and state.changed_at < row.extend_changed_at:
        return "stale"
    before = _projection(order_view(session, row)) if row.order_number is not None else None
    detail = state_json(state)
    old_detail = row.extend_detail or {}
    positions = dict(old_detail.get("linePositions") or {})
    if line_numbers is not None and not positions:
        # Extend keeps the rows in the order they were sent: shop line n -> Extend position.
        positions = {str(n): line.position for n, line in zip(line_numbers, state.lines, strict=False)}
    detail["linePositions"] = positions
    row.order_number = state.order_number
    row.status = state.status.value
    row.extend_detail = detail
    row.extend_changed_at = state.changed_at
    row.expected_delivery_date = _expected(state.expected_delivery_date)
    row.updated_at = now
    if row.status not in (OrderStatus.WAITING_FOR_EXTEND.value, OrderStatus.PARKED.value):
        row.last_error = None if row.last_error and row.last_error.startswith("waiting") else row.last_error
    change = row.shop_change
    if change and (state.status == OrderStatus.CANCELLED or (
            change.get("lines") and all(_line_cancelled(detail, n) for n in change["lines"]))):
        row.shop_change = None
    existing = {s.shipment_number: s for s in session.scalars(
        sa.select(ShipmentRow).where(ShipmentRow.shop_ref == row.shop_ref))}
    for shipment in state.shipments:
        target = existing.get(shipment.shipment_number)
        if target is None:
            target = ShipmentRow(shop_ref=row.shop_ref, shipment_number=shipment.shipment_number)
            session.add(target)
        target.carrier = shipment.carrier
        target.tracking_number = shipment.tracking_number
        target.tracking_url = shipment.tracking_url
        target.ship_date = None if shipment.ship_date is None else shipment.ship_date.astimezone(UTC)
        target.lines = _shipment_json(shipment)["lines"]
    if session.get(IdMappingRow, (FAILURE_KIND, row.shop_ref)) is None:
        session.add(IdMappingRow(kind=FAILURE_KIND, shop_ref=row.shop_ref, extend_id=state.order_number,
                                 created_at=now))
    session.flush()
    return "applied" if _tell_shop(session, row, before) else "unchanged"


def _line_cancelled(detail: dict[str, Any], line_number: int) -> bool:
    position = (detail.get("linePositions") or {}).get(str(line_number))
    return any(line.get("position") == position and line.get("cancelled") for line in detail.get("lines") or [])


# --- submit ---------------------------------------------------------------------------------------


@engine.step(name="orders.begin")
def _begin(shop_ref: str) -> dict[str, Any]:
    with current().db.read() as session:
        row = session.get(OrderRow, shop_ref)
        if row is None:
            return {"state": "missing"}
        if row.order_number is not None:
            return {"state": "done"}
        return {"state": "send", "base": row.submit_attempts, "customer": row.customer_number}


@engine.step(name="orders.resolve_customer")
def _resolve_customer(shop_ref: str) -> str | None:
    ctx = current()
    with ctx.db.write() as session:
        row = session.get(OrderRow, shop_ref)
        if row is None:
            return None
        _, customer = check_order(session, ctx.settings, row.shop_payload)
        if customer is not None:
            row.customer_number = customer
        return customer


def _outcome_of(exc: ExtendError, looked_up: bool) -> dict[str, Any]:
    # Whether Extend may have created the order although the call failed (`retry.decide`): then
    # the next attempt looks it up first; so does every attempt after a look-up.
    failure = retry.decide(exc)
    if not failure.retryable:  # e.g. a conflict answering the look-up: keep the order queued
        failure = replace(failure, verdict=retry.Verdict.RETRY)
    if looked_up and not failure.ambiguous:
        failure = replace(failure, ambiguous=True)
    return failure.as_json()


def _mark_attempt(shop_ref: str, attempt: int) -> dict[str, Any]:
    ctx = current()
    with ctx.db.write() as session:
        row = session.get(OrderRow, shop_ref)
        if row is None:
            return {"state": "missing"}
        if row.order_number is not None:
            return {"state": "done", "orderNumber": row.order_number}
        change = row.shop_change or {}
        lines = active_line_numbers(row.shop_payload, change)
        if change.get("order") or not lines:
            before = _projection(order_view(session, row))
            row.status = OrderStatus.CANCELLED.value
            row.shop_change = None
            row.updated_at = ctx.clock()
            _tell_shop(session, row, before)
            return {"state": "cancelled"}
        began_before = row.submit_attempts >= attempt
        row.submit_attempts = max(row.submit_attempts, attempt)
        return {"state": "send", "began_before": began_before, "payload": row.shop_payload, "lines": lines,
                "created_at": row.created_at.isoformat()}


def _record(state: OrderState, line_numbers: list[int] | None) -> dict[str, Any]:
    ctx = current()
    now = ctx.clock()
    with ctx.db.write() as session:
        result = apply_state(session, state, now=now, line_numbers=line_numbers)
        row = _find_local(session, state.order_number, state.order_number_external)
        failures.resolve_open(session, kind=FAILURE_KIND, key=state.order_number_external, now=now)
        pending = bool(row is not None and row.shop_change)
    return {"result": result, "pendingChange": pending}


def _refusal(exc: ValidationFailed | BusinessConflict) -> str:
    """Extend's message with what it names (the SKU, the customer, the field): its headline alone
    ("refers to unknown or missing data") does not tell the shop what to fix."""
    message = exc.error.message or str(exc)
    named = "; ".join(f"{d.field}: {d.message}" if d.field else d.message for d in exc.details if d.message)
    return f"{message} ({named})" if named else message


@engine.step(name="orders.send")
async def _send(shop_ref: str, customer: str, attempt: int, look_up: bool) -> dict[str, Any]:
    """One attempt: look the order up when an earlier attempt may have reached Extend, else POST."""
    ctx = current()
    mark = await asyncio.to_thread(_mark_attempt, shop_ref, attempt)
    if mark["state"] != "send":
        return {"outcome": mark["state"], "orderNumber": mark.get("orderNumber")}
    looked_up = look_up or mark["began_before"]
    extend = ctx.extend()
    lines: list[int] = mark["lines"]
    try:
        if looked_up:
            found = await extend.find_order(shop_ref)
            if found is not None:
                state = await extend.get_order(found.order_number)
                recorded = await asyncio.to_thread(_record, state, lines)
                log.info("order_found_in_extend", shop_ref=shop_ref, order_number=state.order_number)
                return {"outcome": "found", "orderNumber": state.order_number, **recorded}
        order = order_from_payload(mark["payload"], customer_number=customer, line_numbers=lines,
                                   placed_fallback=datetime.fromisoformat(mark["created_at"]))
        try:
            state = await extend.create_order(order)
        except BusinessConflict as conflict:
            found = await extend.find_order(shop_ref)
            if found is None:
                return {"outcome": "invalid", "reason": "extend_conflict", "error": str(conflict),
                        "message": _refusal(conflict),
                        "details": [{"field": d.field, "message": d.message} for d in conflict.details]}
            state = await extend.get_order(found.order_number)
            recorded = await asyncio.to_thread(_record, state, lines)
            return {"outcome": "found", "orderNumber": state.order_number, **recorded}
        recorded = await asyncio.to_thread(_record, state, lines)
        log.info("order_created_in_extend", shop_ref=shop_ref, order_number=state.order_number, attempt=attempt)
        return {"outcome": "created", "orderNumber": state.order_number, **recorded}
    except ValidationFailed as exc:
        return {"outcome": "invalid", "reason": "extend_rejected", "error": str(exc),
                "message": _refusal(exc),
                "details": [{"field": d.field, "message": d.message} for d in exc.details]}
    except (TechnicalFailure, Throttled, OutcomeUnknown) as exc:
        return _outcome_of(exc, looked_up)
    except ExtendError as exc:  # any other class: treat as technical, keep the order queued
        return _outcome_of(exc, True)


@engine.step(name="orders.mark_waiting")
def _mark_waiting(shop_ref: str, error: str) -> None:
    ctx = current()
    with ctx.db.write() as session:
        row = session.get(OrderRow, shop_ref)
        if row is None or row.order_number is not None:
            return
        before = _projection(order_view(session, row))
        row.status = OrderStatus.WAITING_FOR_EXTEND.value
        row.last_error = f"waiting for Extend: {error}"[:2000]
        row.updated_at = ctx.clock()
        # The shop hears about the first wait (and each new error text), not about every retry.
        if before["status"] != row.status:
            _tell_shop(session, row, before)


@engine.step(name="orders.park_order")
def _park_order(shop_ref: str, reason: str, message: str, detail: dict[str, Any]) -> int:
    ctx = current()
    with ctx.db.write() as session:
        row = session.get(OrderRow, shop_ref)
        failure_id = failures.park(session, kind=FAILURE_KIND, key=shop_ref, reason=reason, message=message,
                                   detail=detail, payload={"shopRef": shop_ref})
        if row is not None and row.order_number is None:
            before = _projection(order_view(session, row))
            row.status = OrderStatus.PARKED.value
            row.last_error = message
            row.updated_at = ctx.clock()
            _tell_shop(session, row, before)
    log.warning("order_parked", shop_ref=shop_ref, reason=reason, message=message)
    return failure_id


def park_unsent(session: Session, shop_ref: str, *, reason: str, message: str, detail: dict[str, Any],
                now: datetime) -> int | None:
    """Park an acknowledged order that is not in Extend (the watchdog gave up on its job); None when
    it reached Extend or a person already settled it meanwhile."""
    row = session.get(OrderRow, shop_ref)
    if row is None or row.order_number is not None or row.status not in UNSENT:
        return None
    failure_id = failures.park(session, kind=FAILURE_KIND, key=shop_ref, reason=reason, message=message,
                               detail=detail, payload={"shopRef": shop_ref}, now=now)
    before = _projection(order_view(session, row))
    row.status = OrderStatus.PARKED.value
    row.last_error = message[:2000]
    row.updated_at = now
    _tell_shop(session, row, before)
    log.error("order_parked", shop_ref=shop_ref, reason=reason, message=message)
    return failure_id


@engine.workflow("orders.submit")
async def submit(shop_ref: str) -> str:
    """Send one shop order to Extend exactly once; returns how it ended."""
    start = await engine.offload(_begin, shop_ref)
    if start["state"] != "send":
        return str(start["state"])
    customer: str | None = start["customer"]
    if customer is None:
        customer = await _wait_for_customer(shop_ref)
        if customer is None:
            return "parked"
    base = int(start["base"])
    attempt = 0
    failures_in_a_row = 0
    # A job started on an order that earlier jobs already tried to send (a `failures retry`, the
    # watchdog's replacement for a lost job) cannot know how those ended: ask Extend first.
    look_up = base > 0
    while True:
        attempt += 1
        outcome = await _send(shop_ref, customer, base + attempt, look_up)
        kind = outcome["outcome"]
        if kind in ("created", "found"):
            if outcome.get("pendingChange"):
                await _change_loop(shop_ref)
            return str(kind)
        if kind in ("done", "cancelled", "missing"):
            return str(kind)
        if kind == "invalid":
            await engine.offload(_park_order, shop_ref, outcome["reason"],
                                 f"Extend refused order {shop_ref}: {outcome['message']}",
                                 {"error": outcome["error"], "details": outcome["details"]})
            return "parked"
        failure = retry.Failure.from_json(outcome)
        failures_in_a_row += 1
        look_up = failure.ambiguous
        await engine.offload(_mark_waiting, shop_ref, failure.error)
        policy = retry.policy(retry.ORDERS)
        action = policy.next(failure, attempt=failures_in_a_row)
        if not isinstance(action, retry.RetryAfter):
            # An acknowledged order is never given up on here (the watchdog and a person decide).
            raise ValueError(f"retry policy {retry.ORDERS!r} must not give up: {policy}")
        await retry.pause(action.seconds, policy=policy, retry_after=failure.retry_after)


async def _wait_for_customer(shop_ref: str) -> str | None:
    """scope to_extend: poll until the customer's creation job mapped the shop customer; None
    when the order was parked because that took longer than the policy's budget."""
    policy = retry.policy(retry.ORDERS_CUSTOMER_WAIT)
    waited = 0.0
    rounds = 0
    while True:
        rounds += 1
        # The budget is checked before the wait, so the last wait may end past it (as before).
        if policy.give_up_seconds is not None and waited > policy.give_up_seconds:
            message = (f"the shop customer of order {shop_ref} was not created in Extend "
                       f"within {policy.give_up_seconds / 3600:g} h; see failures of kind "
                       "customer, then retry")
            await engine.offload(_park_order, shop_ref, "customer_not_created", message, {})
            return None
        wait = policy.delay(rounds)
        await retry.pause(wait, policy=policy)
        waited += wait
        customer = await engine.offload(_resolve_customer, shop_ref)
        if customer is not None:
            return customer


async def _replay_order(failure: failures.Failure) -> str:
    """`failures retry` of an order: check it again (asking Extend about products our copy
    lacks), then queue a new submit."""
    ctx = current()
    ref = failure.key

    def load() -> tuple[str | None, dict[str, Any]] | None:
        with ctx.db.read() as session:
            row = session.get(OrderRow, ref)
            return None if row is None else (row.order_number, dict(row.shop_payload))

    loaded = await asyncio.to_thread(load)
    if loaded is None:
        raise failures.StillFailing(f"order {ref} is no longer stored")
    if loaded[0] is not None:
        return f"order {ref} is already in Extend as {loaded[0]}"
    payload = loaded[1]
    in_extend = await _products_known_in_extend(payload)

    def requeue() -> str:
        with ctx.db.write() as session:
            row = session.get(OrderRow, ref)
            assert row is not None
            problems, customer = check_order(session, ctx.settings, payload, known_in_extend=in_extend.__contains__)
            if problems:
                raise failures.StillFailing("; ".join(p.message for p in problems))
            before = _projection(order_view(session, row))
            row.status = OrderStatus.RECEIVED.value
            row.last_error = None
            row.customer_number = customer
            row.updated_at = ctx.clock()
            _tell_shop(session, row, before)
            ctx.engine.enqueue_in_transaction(
                session, submit, ref, queue=SUBMIT_QUEUE,
                workflow_id=f"order-{ref}-retry-{failure.id}-{failure.retry_count + 1}")
        return f"order {ref} queued for sending to Extend"

    return await asyncio.to_thread(requeue)


async def _products_known_in_extend(payload: dict[str, Any]) -> set[str]:
    """Product numbers of the order that our copy lacks but Extend has (one GET each)."""
    ctx = current()

    def local_numbers(numbers: set[str]) -> set[str]:
        with ctx.db.read() as session:
            return set(session.scalars(sa.select(ProductRow.product_number)
                                       .where(ProductRow.product_number.in_(numbers))))

    numbers = {line["productNumber"] for line in payload.get("lines") or []}
    unknown = sorted(numbers - await asyncio.to_thread(local_numbers, numbers))
    found: set[str] = set()
    for number in unknown:
        try:
            await ctx.extend().get_product(number)
        except NotFound:
            continue
        except ExtendError as exc:
            raise failures.StillFailing(f"could not ask Extend about product {number}: {exc}") from exc
        found.add(number)
    return found


failures.register_replay(FAILURE_KIND, _replay_order)


# --- progress from Extend ------------------------------------------------------------------------


@engine.step(name="orders.refresh_once")
async def _refresh_once(order_number: str) -> dict[str, Any]:
    ctx = current()
    try:
        state = await ctx.extend().get_order(order_number)
    except NotFound:
        return {"outcome": "not_found"}
    except (TechnicalFailure, Throttled) as exc:
        return retry.decide(exc).as_json()

    def write() -> str:
        with ctx.db.write() as session:
            return apply_state(session, state, now=ctx.clock())

    return {"outcome": await asyncio.to_thread(write), "status": state.status.value}


@engine.workflow("orders.refresh")
async def refresh(notification: dict[str, Any]) -> str:
    """An order webhook: fetch the order and apply it (the hook itself is only a trigger)."""
    key = str(notification.get("entityKey") or "")
    order_number = key.removeprefix("order:")
    if not key.startswith("order:") or not order_number:
        return "ignored"
    waited = 0.0
    attempt = 0
    while True:
        attempt += 1
        outcome = await _refresh_once(order_number)
        if outcome["outcome"] != retry.Verdict.RETRY:
            return str(outcome["outcome"])
        policy = retry.policy(retry.ORDERS_REFRESH)
        failure = retry.Failure.from_json(outcome)
        action = policy.next(failure, attempt=attempt, waited=waited)
        if not isinstance(action, retry.RetryAfter):
            log.warning("order_refresh_gave_up", order_number=order_number, error=failure.error)
            return "gave_up"  # the next sweep fetches it
        waited += await retry.pause(action.seconds, policy=policy,
                                    retry_after=failure.retry_after)


dispatch.on(sorted(ORDER_ACTIONS), dispatch.JobHandler(workflow=refresh, queue=PROGRESS_QUEUE))


# --- changes from the shop -------------------------------------------------------------------------


def request_cancel(shop_ref: str, line_numbers: list[int] | None = None) -> dict[str, Any]:
    """The shop cancels the order (`line_numbers` None) or some of its lines (1-based).

    Refused (ChangeRefused) once the order is Reserved or later; accepted changes are sent to
    Extend by a job (or simply not sent, when the order has not reached Extend yet). Returns
    the order view.
    """
    ctx = current()
    now = ctx.clock()
    with ctx.db.write() as session:
        row = session.get(OrderRow, shop_ref)
        if row is None:
            raise UnknownOrder(f"no order with shop reference {shop_ref!r}")
        status = OrderStatus(row.status)
        if status == OrderStatus.CANCELLED:
            return order_view(session, row)
        if not status.editable:
            raise ChangeRefused(
                f"order {shop_ref} is {status.value} in Extend (order {row.order_number}); Extend accepts no "
                "change once an order is reserved — ask the warehouse to stop it, or handle it as a return")
        count = len(row.shop_payload.get("lines") or [])
        if line_numbers is not None:
            bad = [n for n in line_numbers if not 1 <= n <= count]
            if bad:
                raise UnknownOrder(f"order {shop_ref} has lines 1..{count}; no line {bad}")
        before = _projection(order_view(session, row))
        change = dict(row.shop_change or {})
        if line_numbers is None:
            change["order"] = True
        else:
            change["lines"] = sorted(set(change.get("lines") or []) | set(line_numbers))
        change["requestedAt"] = now.isoformat()
        row.shop_change = change
        row.updated_at = now
        if status == OrderStatus.PARKED and (change.get("order") or not active_line_numbers(row.shop_payload,
                                                                                             change)):
            # Never sent and never will be: cancelled here and now.
            row.status = OrderStatus.CANCELLED.value
            row.shop_change = None
            failures.resolve_open(session, kind=FAILURE_KIND, key=shop_ref, now=now)
        elif row.order_number is not None:
            ctx.engine.enqueue_in_transaction(session, apply_change, shop_ref, queue=PROGRESS_QUEUE,
                                              partition_key=f"order:{row.order_number}",
                                              workflow_id=f"order-change-{shop_ref}-{now.timestamp():.6f}")
        # else: the submit job reads the change before it sends (and after, if it raced a POST).
        _tell_shop(session, row, before)
        return order_view(session, row)


@engine.step(name="orders.change_once")
async def _change_once(shop_ref: str) -> dict[str, Any]:
    ctx = current()

    def load() -> dict[str, Any] | None:
        with ctx.db.read() as session:
            row = session.get(OrderRow, shop_ref)
            if row is None or row.order_number is None or not row.shop_change:
                return None
            return {"number": row.order_number, "change": row.shop_change, "detail": row.extend_detail or {},
                    "payload": row.shop_payload}

    loaded = await asyncio.to_thread(load)
    if loaded is None:
        return {"outcome": "nothing"}
    extend = ctx.extend()
    change = loaded["change"]
    try:
        if change.get("order"):
            state = await extend.cancel_order(loaded["number"])
        else:
            positions = loaded["detail"].get("linePositions") or {}
            lines = []
            for n in change.get("lines") or []:
                position = positions.get(str(n))
                if position is None or _line_cancelled(loaded["detail"], n):
                    continue
                line = loaded["payload"]["lines"][n - 1]
                lines.append(OrderLine(product_number=line["productNumber"], quantity=Decimal(str(line["quantity"])),
                                       warehouse=line.get("warehouse") or ctx.settings.extend.warehouses[0],
                                       position=int(position)))
            if not lines:
                state = await extend.get_order(loaded["number"])
            else:
                state = await extend.cancel_order_rows(loaded["number"], lines)
    except BusinessConflict as exc:
        return {"outcome": "refused", "message": exc.error.message or str(exc)}
    except ValidationFailed as exc:
        return {"outcome": "invalid", "message": exc.error.message or str(exc), "error": str(exc)}
    except (TechnicalFailure, Throttled, OutcomeUnknown) as exc:
        # A lost cancel answer is harmless to repeat: cancelling twice is refused or a no-op.
        return retry.decide(exc).as_json()

    def write() -> str:
        with ctx.db.write() as session:
            result = apply_state(session, state, now=ctx.clock())
            row = session.get(OrderRow, shop_ref)
            if row is not None and row.shop_change:
                before = _projection(order_view(session, row))
                row.shop_change = None
                _tell_shop(session, row, before)
            return result

    return {"outcome": await asyncio.to_thread(write)}


@engine.step(name="orders.change_refused")
def _change_refused(shop_ref: str, message: str, park: bool) -> None:
    ctx = current()
    with ctx.db.write() as session:
        row = session.get(OrderRow, shop_ref)
        if row is None:
            return
        before = _projection(order_view(session, row))
        row.shop_change = None
        row.last_error = f"cancellation refused by Extend: {message}"
        if park:
            failures.park(session, kind=CANCEL_FAILURE_KIND, key=shop_ref, reason="extend_rejected",
                          message=row.last_error, payload={"shopRef": shop_ref, "change": before["pendingChange"]})
        _tell_shop(session, row, before)


async def _change_loop(shop_ref: str) -> str:
    attempt = 0
    while True:
        attempt += 1
        outcome = await _change_once(shop_ref)
        kind = outcome["outcome"]
        if kind == "refused":
            await engine.offload(_change_refused, shop_ref, outcome["message"], False)
            return "refused"
        if kind == "invalid":
            await engine.offload(_change_refused, shop_ref, outcome["message"], True)
            return "parked"
        if kind != retry.Verdict.RETRY:
            return str(kind)
        failure = retry.Failure.from_json(outcome)
        policy = retry.policy(retry.ORDERS)
        # No lost-answer shortcut as in a submit: a cancel is sent again after the backoff.
        await retry.pause(policy.delay(attempt, failure.retry_after), policy=policy,
                          retry_after=failure.retry_after)


@engine.workflow("orders.apply_change")
async def apply_change(shop_ref: str) -> str:
    """Send the shop's pending cancellation of an order that is in Extend."""
    return await _change_loop(shop_ref)


def _replay_cancel(failure: failures.Failure) -> str:
    ctx = current()
    change = failure.payload.get("change")
    with ctx.db.write() as session:
        row = session.get(OrderRow, failure.key)
        if row is None or row.order_number is None or not change:
            raise failures.StillFailing(f"order {failure.key} has no cancellation to send again")
        if not OrderStatus(row.status).editable:
            raise failures.StillFailing(f"order {failure.key} is {row.status}; it can no longer be changed")
        row.shop_change = change
        ctx.engine.enqueue_in_transaction(
            session, apply_change, failure.key, queue=PROGRESS_QUEUE, partition_key=f"order:{row.order_number}",
            workflow_id=f"order-change-{failure.key}-retry-{failure.id}-{failure.retry_count + 1}")
    return f"cancellation of order {failure.key} queued again"


failures.register_replay(CANCEL_FAILURE_KIND, _replay_cancel)


# --- sweep ------------------------------------------------------------------------------------------


def _open_since(session: Session, overlap: timedelta) -> datetime | None:
    """Without a cursor: from the oldest open order of ours (older changes cannot concern us)."""
    oldest = session.execute(
        sa.select(sa.func.min(OrderRow.created_at)).where(OrderRow.order_number.is_not(None),
                                                          OrderRow.status.not_in(TERMINAL))
    ).scalar()
    return None if oldest is None else oldest - overlap


async def sweep_orders(full: bool = False, dry_run: bool = False, progress: Progress | None = None) -> SweepResult:
    """List orders changed since the cursor; fetch and apply each of ours that is newer than our
    copy. `full` reads from the oldest open order instead of the cursor; `dry_run` fetches and
    counts but writes nothing (the cursor does not move).

    Outcomes: `updated` (the shop was told), `unchanged` (fetched, nothing the shop shows
    changed), `skipped` (not ours, or our copy is as new), `failed` (fetch failed; the cursor
    stays at its change date so the next sweep reads it again).
    """
    ctx = current()
    now = ctx.clock()
    overlap = timedelta(seconds=ctx.settings.sync.overlap_seconds)
    extend = ctx.extend()
    tally = Tally("orders", progress, full=full, dry_run=dry_run, stats=extend.stats)

    def begin() -> datetime | None:
        with (ctx.db.read() if dry_run else ctx.db.write()) as session:
            since = None if dry_run else cursors.start(session, CURSOR, now=now, overlap=overlap, full=full)
            if dry_run and not full:
                peek = cursors.peek(session, CURSOR)
                since = peek.high_water_mark - overlap if peek and peek.high_water_mark else None
            return since if since is not None else _open_since(session, overlap)

    since = await asyncio.to_thread(begin)
    latest: datetime | None = None
    first_failed: datetime | None = None
    if since is not None:
        async for change in extend.orders_changed_since(since, progress=tally.page):
            latest = change.changed_at if latest is None else max(latest, change.changed_at)

            def local(c: Any = change) -> tuple[bool, datetime | None]:
                with ctx.db.read() as session:
                    row = _find_local(session, c.order_number, c.order_number_external)
                    return (row is not None, None if row is None else row.extend_changed_at)

            ours, known_at = await asyncio.to_thread(local)
            if not ours or (known_at is not None and known_at >= change.changed_at):
                tally.record("skipped")
                continue
            try:
                state = await extend.get_order(change.order_number)
            except (TechnicalFailure, Throttled, NotFound) as exc:
                tally.record("failed")
                log.warning("order_sweep_fetch_failed", order_number=change.order_number, error=str(exc))
                first_failed = change.changed_at if first_failed is None else min(first_failed, change.changed_at)
                continue
            if dry_run:
                tally.record("updated" if known_at is None or state.changed_at > known_at else "unchanged")
                continue

            def write(st: OrderState = state) -> str:
                with ctx.db.write() as session:
                    return apply_state(session, st, now=ctx.clock())

            applied = await asyncio.to_thread(write)
            tally.record({"applied": "updated", "unchanged": "unchanged"}.get(applied, "skipped"))
    mark: datetime | None = None
    if not dry_run:
        # A failed fetch holds the mark at its change date, so the next sweep reads it again.
        seen = latest if first_failed is None else first_failed
        summary = tally.result().as_stats()

        def finish() -> datetime | None:
            with ctx.db.write() as session:
                return cursors.finish(session, CURSOR, latest_seen=seen if seen is not None else now,
                                      stats=summary, now=ctx.clock())

        mark = await asyncio.to_thread(finish)
    result = tally.result(cursor=mark)
    log.info("orders_swept", since=_iso(since), **result.as_stats())
    return result


@engine.step(name="orders.sweep_step")
async def _sweep_step() -> dict[str, Any]:
    return (await sweep_orders()).as_stats()


@engine.workflow("orders.sweep")
async def scheduled_sweep(scheduled_at: Any = None, context: Any = None) -> dict[str, Any]:
    """The scheduled reconciliation (one at a time: its queue has concurrency 1)."""
    result: dict[str, Any] = await _sweep_step()
    return result


def declare_schedules(settings: Settings) -> None:
    every = timedelta(minutes=settings.sync.orders_sweep_minutes)
    engine.schedule("orders.sweep", scheduled_sweep, every=timedelta(seconds=round(every.total_seconds())),
                    queue=SWEEP_QUEUE)


__all__ = [
    "CANCEL_FAILURE_KIND",
    "FAILURE_KIND",
    "PROGRESS_QUEUE",
    "SUBMIT_QUEUE",
    "UNSENT",
    "ChangeRefused",
    "Intake",
    "OrderConflict",
    "OrderError",
    "Problem",
    "UnknownOrder",
    "accept_order",
    "apply_change",
    "apply_state",
    "backoff_seconds",
    "check_order",
    "declare_schedules",
    "get_order_view",
    "order_from_payload",
    "park_unsent",
    "refresh",
    "request_cancel",
    "submit",
    "sweep_orders",
]
