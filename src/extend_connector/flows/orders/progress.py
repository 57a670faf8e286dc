"""Progress from Extend: apply a fetched order (the truth unless an even newer one was applied),
and the `orders.refresh` job an order webhook enqueues."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session

from extend_connector import engine
from extend_connector.domain import OrderState, OrderStatus
from extend_connector.extend import NotFound, TechnicalFailure, Throttled
from extend_connector.extend.webhooks import ORDER_ACTIONS, ORDER_CREATED, Notification
from extend_connector.flows import dispatch, records, retry
from extend_connector.flows.context import current
from extend_connector.flows.orders.base import FAILURE_KIND, log
from extend_connector.flows.orders.view import (
    expected_at,
    order_view,
    projection,
    shipment_json,
    state_json,
    tell_shop,
)
from extend_connector.store.models import IdMappingRow, OrderRow, ShipmentRow
from extend_connector.store.repositories import built_once


def find_local(session: Session, state_number: str, external: str | None) -> OrderRow | None:
    row = session.scalars(sa.select(OrderRow).where(OrderRow.order_number == state_number)).first()
    if row is None and external:
        row = session.get(OrderRow, external)
        if row is not None and row.order_number not in (None, state_number):
            return None  # that shop order went into Extend as another order
    return row


def apply_state(
    session: Session, state: OrderState, *, now: datetime, line_numbers: list[int] | None = None
) -> str:
    """Make the local order what Extend says; returns applied / unchanged / stale / not_ours.

    A fetched order older than the one applied last (a slow fetch overtaken by a newer one) is
    ignored; otherwise it is the truth, whatever its status rank.
    """
    row = find_local(session, state.order_number, state.order_number_external)
    return apply_state_to(session, row, state, now=now, line_numbers=line_numbers)


def apply_state_to(
    session: Session,
    row: OrderRow | None,
    state: OrderState,
    *,
    now: datetime,
    line_numbers: list[int] | None = None,
) -> str:
    """`apply_state` on the local order already found (the submit job holds its own: it need
    not be looked up by Extend's number)."""
    if row is None or row.order_number not in (None, state.order_number):
        return "not_ours"
    if row.extend_changed_at is not None and state.changed_at < row.extend_changed_at:
        return "stale"
    before = projection(order_view(session, row)) if row.order_number is not None else None
    detail = state_json(state)
    old_detail = row.extend_detail or {}
    positions = dict(old_detail.get("linePositions") or {})
    if line_numbers is not None and not positions:
        # Extend keeps the rows in the order they were sent: shop line n -> Extend position.
        positions = {
            str(n): line.position for n, line in zip(line_numbers, state.lines, strict=False)
        }
    detail["linePositions"] = positions
    row.order_number = state.order_number
    row.status = state.status.value
    row.extend_detail = detail
    row.extend_changed_at = state.changed_at
    row.expected_delivery_date = expected_at(state.expected_delivery_date)
    row.updated_at = now
    if row.status not in (OrderStatus.WAITING_FOR_EXTEND.value, OrderStatus.PARKED.value):
        row.last_error = (
            None if row.last_error and row.last_error.startswith("waiting") else row.last_error
        )
    change = row.shop_change
    if change and (
        state.status == OrderStatus.CANCELLED
        or (change.get("lines") and all(line_cancelled(detail, n) for n in change["lines"]))
    ):
        row.shop_change = None
    existing = (
        {
            s.shipment_number: s
            for s in session.scalars(
                sa.select(ShipmentRow).where(ShipmentRow.shop_ref == row.shop_ref)
            )
        }
        if state.shipments
        else {}
    )
    for shipment in state.shipments:
        target = existing.get(shipment.shipment_number)
        if target is None:
            target = ShipmentRow(shop_ref=row.shop_ref, shipment_number=shipment.shipment_number)
            session.add(target)
        target.carrier = shipment.carrier
        target.tracking_number = shipment.tracking_number
        target.tracking_url = shipment.tracking_url
        target.ship_date = (
            None if shipment.ship_date is None else shipment.ship_date.astimezone(UTC)
        )
        target.lines = shipment_json(shipment)["lines"]
    # One statement, not a read and an insert; another shop order mapped to this Extend order
    # still fails (the other unique key is not a conflict target).
    session.execute(
        built_once(session, "orders.map_id", _map_id_statement),
        {
            "kind": FAILURE_KIND,
            "shop_ref": row.shop_ref,
            "extend_id": state.order_number,
            "created_at": now,
        },
    )
    session.flush()
    return "applied" if tell_shop(session, row, before) else "unchanged"


def _map_id_statement(insert: Any) -> Any:
    return insert(IdMappingRow).on_conflict_do_nothing(index_elements=["kind", "shop_ref"])


def line_cancelled(detail: dict[str, Any], line_number: int) -> bool:
    position = (detail.get("linePositions") or {}).get(str(line_number))
    return any(
        line.get("position") == position and line.get("cancelled")
        for line in detail.get("lines") or []
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class Refreshed:
    """What `_refresh_once` did with the order it fetched (its result, as JSON): `apply_state`'s
    answer (applied / unchanged / stale / not_ours) with the order's status, or `not_found`."""

    result: str
    status: str | None = None  # absent for not_found

    def as_json(self) -> dict[str, Any]:
        if self.status is None:
            return {"outcome": self.result}
        return {"outcome": self.result, "status": self.status}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Refreshed:
        status = data.get("status")
        return cls(result=str(data["outcome"]), status=None if status is None else str(status))


def refresh_from_json(data: Mapping[str, Any]) -> Refreshed | retry.Failure:
    """What `_refresh_once` returned, read back from its recorded JSON."""
    if data.get("outcome") in (retry.Verdict.RETRY, retry.Verdict.PARK):
        return retry.Failure.from_json(data)
    return Refreshed.from_json(data)


@engine.step(name="orders.refresh_once")
async def _refresh_once(order_number: str) -> dict[str, Any]:
    ctx = current()
    try:
        state = await ctx.extend().get_order(order_number)
    except NotFound:
        return Refreshed(result="not_found").as_json()
    except (TechnicalFailure, Throttled) as exc:
        return retry.decide(exc).as_json()

    def write() -> str:
        with ctx.db.write() as session:
            return apply_state(session, state, now=ctx.clock())

    return Refreshed(result=await asyncio.to_thread(write), status=state.status.value).as_json()


@engine.workflow("orders.refresh")
async def refresh(notification: dict[str, Any]) -> str:
    """An order webhook: fetch the order and apply it (the hook itself is only a trigger)."""
    key = str(notification.get("entityKey") or "")
    order_number = key.removeprefix("order:")
    if not key.startswith("order:") or not order_number:
        return "ignored"
    with structlog.contextvars.bound_contextvars(order_number=order_number):
        return await _refresh(order_number)


async def _refresh(order_number: str) -> str:
    waited = 0.0
    attempt = 0
    while True:
        attempt += 1
        outcome = refresh_from_json(await _refresh_once(order_number))
        if isinstance(outcome, Refreshed):
            return outcome.result
        if not outcome.retryable:
            return outcome.verdict.value
        failure = outcome
        policy = retry.policy(retry.ORDERS_REFRESH)
        action = policy.next(failure, attempt=attempt, waited=waited)
        if not isinstance(action, retry.RetryAfter):
            log.warning("order_refresh_gave_up", order_number=order_number, error=failure.error)
            return "gave_up"  # the next sweep fetches it
        waited += await retry.pause(action.seconds, policy=policy, retry_after=failure.retry_after)


async def refresh_orders(numbers: list[str]) -> dict[str, records.Outcome]:
    """The order drain's refresh (flows/records.py): fetch each order Extend said changed and
    apply what came back, all in one transaction."""
    ctx = current()
    client = ctx.extend()

    async def fetch(number: str) -> OrderState | None:
        try:
            return await client.get_order(number)
        except NotFound:
            return None

    outcomes, states = records.split(await records.fetch_all(numbers, fetch), missing="not_found")

    def write(session: Session, _number: str, state: OrderState) -> str:
        return apply_state(session, state, now=ctx.clock())

    outcomes.update(await asyncio.to_thread(records.write_all, states, write))
    return outcomes


def _not_recorded(session: Session, notes: list[Notification]) -> list[Notification]:
    """The notifications whose order number no local order holds yet."""
    numbers = {records.key_of(note) for note in notes}
    known = set(
        session.scalars(sa.select(OrderRow.order_number).where(OrderRow.order_number.in_(numbers)))
    )
    return [note for note in notes if records.key_of(note) not in known]


def _created_handler() -> dispatch.InlineHandler:
    """`OrderCreated` marks only orders not recorded here. An order this connector created holds
    its number once Extend's answer to the POST is recorded, and that answer is the order as
    created; every later change comes with its own action (reserved, picked, cancelled, delivery
    date), so fetching it again would cost a call and bring nothing. An order created elsewhere,
    or whose POST's answer is not recorded yet, is fetched as before."""

    def apply_many(session: Session, notes: list[Notification]) -> None:
        keys = [records.key_of(note) for note in _not_recorded(session, notes)]
        records.mark(session, records.ORDER, keys, now=current().clock())

    return dispatch.InlineHandler(
        apply=lambda session, note, _json: apply_many(session, [note]),
        apply_many=apply_many,
        after_commit=records.handler(records.ORDER).after_commit,
    )


records.register(records.ORDER, refresh=refresh_orders, policy=retry.ORDERS_REFRESH)
# Order hooks mark the order for the drain; `refresh` (a job per hook) stays declared for jobs
# the previous version enqueued.
dispatch.on(sorted(ORDER_ACTIONS - {ORDER_CREATED}), records.handler(records.ORDER))
dispatch.on([ORDER_CREATED], _created_handler())
