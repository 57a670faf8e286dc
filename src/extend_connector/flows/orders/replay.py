"""`failures retry` of a parked order (check again, then a new submit job) and of a refused
cancellation (send it again)."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from extend_connector.domain import OrderStatus
from extend_connector.extend import ExtendError, NotFound
from extend_connector.flows import failures
from extend_connector.flows.context import current
from extend_connector.flows.orders.base import (
    CANCEL_FAILURE_KIND,
    FAILURE_KIND,
    PROGRESS_QUEUE,
    SUBMIT_QUEUE,
    log,
)
from extend_connector.flows.orders.changes import apply_change
from extend_connector.flows.orders.checks import check_order
from extend_connector.flows.orders.payload import ShopOrder
from extend_connector.flows.orders.submit import submit
from extend_connector.flows.orders.view import order_view, projection, tell_shop
from extend_connector.store.models import OrderRow, ProductRow


async def _replay_order(failure: failures.Failure) -> str:
    """`failures retry` of an order: check it again (asking Extend about products our copy
    lacks), then queue a new submit."""
    ctx = current()
    ref = failure.key

    def load() -> tuple[str | None, ShopOrder] | None:
        with ctx.db.read() as session:
            row = session.get(OrderRow, ref)
            return (
                None if row is None else (row.order_number, ShopOrder.from_json(row.shop_payload))
            )

    loaded = await asyncio.to_thread(load)
    if loaded is None:
        raise failures.StillFailing(f"order {ref} is no longer stored")
    if loaded[0] is not None:
        return f"order {ref} is already in Extend as {loaded[0]}"
    order = loaded[1]
    in_extend = await _products_known_in_extend(order)

    def requeue() -> str:
        with ctx.db.write() as session:
            row = session.get(OrderRow, ref)
            assert row is not None
            problems, customer = check_order(
                session, ctx.settings, order, known_in_extend=in_extend.__contains__
            )
            if problems:
                raise failures.StillFailing("; ".join(p.message for p in problems))
            before = projection(order_view(session, row))
            row.status = OrderStatus.RECEIVED.value
            row.last_error = None
            row.customer_number = customer
            row.updated_at = ctx.clock()
            tell_shop(session, row, before)
            ctx.engine.enqueue_in_transaction(
                session,
                submit,
                ref,
                queue=SUBMIT_QUEUE,
                workflow_id=f"order-{ref}-retry-{failure.id}-{failure.retry_count + 1}",
            )
        # Resolved when it reaches Extend (submit), parked again with the new reason if not.
        return failures.Queued(f"order {ref} queued for sending to Extend")

    return await asyncio.to_thread(requeue)


async def _products_known_in_extend(order: ShopOrder) -> set[str]:
    """Product numbers of the order that our copy lacks but Extend has (one GET each)."""
    ctx = current()

    def local_numbers(numbers: set[str]) -> set[str]:
        with ctx.db.read() as session:
            return set(
                session.scalars(
                    sa.select(ProductRow.product_number).where(
                        ProductRow.product_number.in_(numbers)
                    )
                )
            )

    numbers = order.product_numbers()
    unknown = sorted(numbers - await asyncio.to_thread(local_numbers, numbers))
    found: set[str] = set()
    for number in unknown:
        try:
            await ctx.extend().get_product(number)
        except NotFound:
            continue
        except ExtendError as exc:
            raise failures.StillFailing(
                f"could not ask Extend about product {number}: {exc}"
            ) from exc
        found.add(number)
    return found


failures.register_replay(FAILURE_KIND, _replay_order)


def _replay_cancel(failure: failures.Failure) -> str:
    ctx = current()
    change = failure.payload.get("change")
    with ctx.db.write() as session:
        row = session.get(OrderRow, failure.key)
        if row is None or row.order_number is None or not change:
            raise failures.StillFailing(f"order {failure.key} has no cancellation to send again")
        if not OrderStatus(row.status).editable:
            raise failures.StillFailing(
                f"order {failure.key} is {row.status}; it can no longer be changed"
            )
        row.shop_change = change
        ctx.engine.enqueue_in_transaction(
            session,
            apply_change,
            failure.key,
            queue=PROGRESS_QUEUE,
            partition_key=f"order:{row.order_number}",
            workflow_id=f"order-change-{failure.key}-retry-{failure.id}-{failure.retry_count + 1}",
        )
    return failures.Queued(f"cancellation of order {failure.key} queued again")


failures.register_replay(CANCEL_FAILURE_KIND, _replay_cancel)


ADDRESS_FIELDS = (
    "name",
    "addressLine1",
    "addressLine2",
    "careOf",
    "zipCode",
    "city",
    "countryCode",
    "phone",
    "email",
)


class AmendError(failures.FailureError):
    """The amendment cannot be made (the order was sent, a line does not exist, ...)."""


def as_the_shop_sent_it(stored: Mapping[str, Any]) -> dict[str, Any]:
    """A stored order payload with every amendment undone: what the shop sent. A shop that sends
    the order again (a retry of `POST /v1/orders`, the Vendure adapter reading it again) is
    compared with this, so an order fixed by an operator is not "the same reference with other
    content"."""
    payload = copy.deepcopy(dict(stored))
    for amendment in reversed(payload.pop("amendments", None) or []):
        for path, change in (amendment.get("changes") or {}).items():
            old = change.get("from")
            if path.startswith("lines["):
                number = int(path[len("lines[") : path.index("]")])
                payload["lines"][number - 1]["productNumber"] = old
            elif path == "customerNumber":
                if old is None:
                    payload.pop("customerNumber", None)
                else:
                    payload["customerNumber"] = old
            elif path.startswith("deliveryAddress."):
                address = payload.setdefault("deliveryAddress", {})
                name = path.removeprefix("deliveryAddress.")
                if old is None:
                    address.pop(name, None)
                else:
                    address[name] = old
                if not address:
                    payload.pop("deliveryAddress")
    return payload


def amend_parked_order(
    shop_ref: str,
    *,
    products: Mapping[int, str] | None = None,
    customer_number: str | None = None,
    delivery_address: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Fix a parked order's data before it is replayed (`failures retry ... --product 1=SKU`):
    a line's product number, the customer number, delivery address fields. Returns what changed.

    Only an order that is parked and not in Extend can be amended; the replay that follows
    sends it under the same external order number with the same look-up-before-resend rule,
    so exactly once holds. The shop's original values are kept in `amendments` of the stored
    order, with the time of each change.
    """
    products = dict(products or {})
    address = dict(delivery_address or {})
    unknown = sorted(set(address) - set(ADDRESS_FIELDS))
    if unknown:
        raise AmendError(
            f"unknown address field(s) {', '.join(unknown)} (known: {', '.join(ADDRESS_FIELDS)})"
        )
    if not products and customer_number is None and not address:
        raise AmendError("nothing to amend: give a product, a customer or an address field")
    ctx = current()
    with ctx.db.write() as session:
        row = session.get(OrderRow, shop_ref)
        if row is None:
            raise AmendError(f"order {shop_ref} is not stored")
        if row.order_number is not None:
            raise AmendError(f"order {shop_ref} is in Extend as {row.order_number} already")
        if row.status != OrderStatus.PARKED.value:
            raise AmendError(f"order {shop_ref} is {row.status}, not parked: nothing to fix")
        payload = copy.deepcopy(dict(row.shop_payload))
        lines = payload.get("lines") or []
        changes: dict[str, Any] = {}
        for number, sku in sorted(products.items()):
            if not 1 <= number <= len(lines):
                raise AmendError(f"order {shop_ref} has lines 1..{len(lines)}; no line {number}")
            if not sku.strip():
                raise AmendError(f"line {number}: an empty product number")
            old = lines[number - 1].get("productNumber")
            if old != sku:
                lines[number - 1]["productNumber"] = sku
                changes[f"lines[{number}].productNumber"] = {"from": old, "to": sku}
        if customer_number is not None and payload.get("customerNumber") != customer_number:
            changes["customerNumber"] = {
                "from": payload.get("customerNumber"),
                "to": customer_number,
            }
            payload["customerNumber"] = customer_number or None
        if address:
            current_address = dict(payload.get("deliveryAddress") or {})
            for name, value in sorted(address.items()):
                if current_address.get(name) != value:
                    changes[f"deliveryAddress.{name}"] = {
                        "from": current_address.get(name),
                        "to": value,
                    }
                    current_address[name] = value
            payload["deliveryAddress"] = current_address
        if not changes:
            return {}
        payload["amendments"] = [
            *(payload.get("amendments") or []),
            {"at": ctx.clock().isoformat(), "changes": changes},
        ]
        ShopOrder.from_json(payload)  # still readable as an order
        row.shop_payload = payload
        row.updated_at = ctx.clock()
    log.info("order_amended", shop_ref=shop_ref, changes=changes)
    return changes
