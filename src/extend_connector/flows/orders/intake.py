"""Intake: a shop order stored with its submit job in one transaction (idempotent on shopRef)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import IntegrityError

from extend_connector import metrics
from extend_connector.domain import OrderStatus
from extend_connector.flows import failures
from extend_connector.flows.context import current
from extend_connector.flows.orders.base import (
    FAILURE_KIND,
    SUBMIT_QUEUE,
    Intake,
    OrderConflict,
    canonical,
    log,
)
from extend_connector.flows.orders.checks import check_order
from extend_connector.flows.orders.payload import ShopOrder
from extend_connector.flows.orders.replay import as_the_shop_sent_it
from extend_connector.flows.orders.submit import intake_start, submit
from extend_connector.flows.orders.view import tell_shop
from extend_connector.store.models import OrderRow


def accept_order(payload: dict[str, Any]) -> Intake:
    """Store a shop order and its submit job in one transaction (idempotent on shopRef).

    Raises OrderConflict when the reference was used for a different order. An invalid order
    is stored as `Parked` (with its failure) and no job is enqueued. Two requests racing with
    one new reference (both read it as new): the loser's insert violates the primary key, and
    it answers as a repeat of the order that won.
    """
    order = ShopOrder.from_json(payload)
    try:
        return _accept_once(payload, order)
    except IntegrityError:
        with current().db.read() as session:
            if session.get(OrderRow, order.shop_ref) is None:
                raise
        return _accept_once(payload, order)


def _accept_once(payload: dict[str, Any], order: ShopOrder) -> Intake:
    # `payload` is stored as sent (a repeat post is compared with it); `order` is it parsed.
    ctx = current()
    ref = order.shop_ref
    now = ctx.clock()
    # Reads first, outside the write transaction: a repeat post needs no write at all (it is
    # answered while another writer holds SQLite's lock), and the checks' reads do not hold the
    # other writers back. Two posts of one new reference race to the insert below; the loser's
    # primary key violation makes `accept_order` answer it as a repeat.
    with ctx.db.read() as session:
        existing = session.get(OrderRow, ref)
        if existing is not None:
            if canonical(as_the_shop_sent_it(existing.shop_payload)) != canonical(payload):
                raise OrderConflict(
                    f"order {ref!r} was already received with different content; a shop order "
                    "reference identifies one order (send changes as a cancellation, or use a new "
                    "reference)"
                )
            return Intake(shop_ref=ref, status=existing.status, created=False)
        problems, customer = check_order(session, ctx.settings, order)
    # On disk before the shop hears "accepted" (202), power cut included: store/database.py.
    with ctx.db.write(durable=True) as session:
        row = OrderRow(
            shop_ref=ref,
            status=OrderStatus.RECEIVED.value,
            customer_number=customer,
            shop_payload=payload,
            created_at=now,
            updated_at=now,
            submit_attempts=0,
        )
        session.add(row)
        session.flush()
        if problems:
            row.status = OrderStatus.PARKED.value
            message = "; ".join(p.message for p in problems)
            row.last_error = message
            failure_id = failures.park(
                session,
                kind=FAILURE_KIND,
                key=ref,
                reason="invalid_order",
                message=message,
                detail={"problems": [p.as_json() for p in problems]},
                payload={"shopRef": ref},
                now=now,
            )
            tell_shop(session, row, None)
            log.warning(
                "order_parked", shop_ref=ref, reason="invalid_order", problems=len(problems)
            )
            metrics.ORDERS.labels("invalid").inc()
            return Intake(
                shop_ref=ref,
                status=row.status,
                created=True,
                problems=tuple(problems),
                failure_id=failure_id,
            )
        ctx.engine.enqueue_in_transaction(
            session,
            submit,
            ref,
            intake_start(customer),
            queue=SUBMIT_QUEUE,
            workflow_id=f"order-{ref}",
        )
    log.info("order_received", shop_ref=ref, lines=len(order.lines))
    metrics.ORDERS.labels("received").inc()
    return Intake(shop_ref=ref, status=OrderStatus.RECEIVED.value, created=True)
