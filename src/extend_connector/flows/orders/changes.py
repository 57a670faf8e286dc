"""Changes from the shop: a cancellation of the order or of lines before Reserved, sent to Extend
by the `orders.apply_change` job (later it is refused)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from extend_connector import engine
from extend_connector.domain import OrderLine, OrderStatus
from extend_connector.extend import (
    BusinessConflict,
    OutcomeUnknown,
    TechnicalFailure,
    Throttled,
    ValidationFailed,
)
from extend_connector.flows import failures, retry
from extend_connector.flows.context import current
from extend_connector.flows.orders.base import (
    CANCEL_FAILURE_KIND,
    FAILURE_KIND,
    PROGRESS_QUEUE,
    ChangeRefused,
    UnknownOrder,
)
from extend_connector.flows.orders.payload import ShopOrder
from extend_connector.flows.orders.progress import apply_state, line_cancelled
from extend_connector.flows.orders.view import order_view, projection, tell_shop
from extend_connector.store.models import OrderRow


def request_cancel(shop_ref: str, line_numbers: list[int] | None = None) -> dict[str, Any]:
    """The shop cancels the order (`line_numbers` None) or some of its lines (1-based).

    Refused (ChangeRefused) once the order is Reserved or later; accepted changes are sent to
    Extend by a job (or simply not sent, when the order has not reached Extend yet). Returns
    the order view.
    """
    ctx = current()
    now = ctx.clock()
    with ctx.db.write(durable=True, urgent=True) as session:  # the shop waits on it
        row = session.get(OrderRow, shop_ref)
        if row is None:
            raise UnknownOrder(f"no order with shop reference {shop_ref!r}")
        status = OrderStatus(row.status)
        if status == OrderStatus.CANCELLED:
            return order_view(session, row)
        if not status.editable:
            raise ChangeRefused(
                f"order {shop_ref} is {status.value} in Extend (order {row.order_number}); "
                "Extend accepts no change once an order is reserved — ask the warehouse to stop "
                "it, or handle it as a return"
            )
        order = ShopOrder.from_json(row.shop_payload)
        count = len(order.lines)
        if line_numbers is not None:
            bad = [n for n in line_numbers if not 1 <= n <= count]
            if bad:
                raise UnknownOrder(f"order {shop_ref} has lines 1..{count}; no line {bad}")
        before = projection(order_view(session, row))
        change = dict(row.shop_change or {})
        if line_numbers is None:
            change["order"] = True
        else:
            change["lines"] = sorted(set(change.get("lines") or []) | set(line_numbers))
        change["requestedAt"] = now.isoformat()
        row.shop_change = change
        row.updated_at = now
        if status == OrderStatus.PARKED and (
            change.get("order") or not order.active_line_numbers(change)
        ):
            # Never sent and never will be: cancelled here and now.
            row.status = OrderStatus.CANCELLED.value
            row.shop_change = None
            failures.resolve_open(session, kind=FAILURE_KIND, key=shop_ref, now=now)
        elif row.order_number is not None:
            ctx.engine.enqueue_in_transaction(
                session,
                apply_change,
                shop_ref,
                queue=PROGRESS_QUEUE,
                partition_key=f"order:{row.order_number}",
                workflow_id=f"order-change-{shop_ref}-{now.timestamp():.6f}",
            )
        # else: the submit job reads the change before it sends (and after, if it raced a POST).
        tell_shop(session, row, before)
        return order_view(session, row)


@dataclass(frozen=True, kw_only=True, slots=True)
class Changed:
    """What `_change_once` did (its result, as JSON): `nothing` to send, Extend `refused` or found
    the change `invalid` (with its message), else `apply_state`'s answer for the changed order."""

    result: str
    message: str | None = None  # refused, invalid
    error: str | None = None  # invalid

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"outcome": self.result}
        if self.message is not None:
            data["message"] = self.message
        if self.error is not None:
            data["error"] = self.error
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Changed:
        message, error = data.get("message"), data.get("error")
        return cls(
            result=str(data["outcome"]),
            message=None if message is None else str(message),
            error=None if error is None else str(error),
        )


def change_from_json(data: Mapping[str, Any]) -> Changed | retry.Failure:
    """What `_change_once` returned, read back from its recorded JSON."""
    if data.get("outcome") in (retry.Verdict.RETRY, retry.Verdict.PARK):
        return retry.Failure.from_json(data)
    return Changed.from_json(data)


@engine.step(name="orders.change_once")
async def _change_once(shop_ref: str) -> dict[str, Any]:
    ctx = current()

    def load() -> dict[str, Any] | None:
        with ctx.db.read() as session:
            row = session.get(OrderRow, shop_ref)
            if row is None or row.order_number is None or not row.shop_change:
                return None
            return {
                "number": row.order_number,
                "change": row.shop_change,
                "detail": row.extend_detail or {},
                "order": ShopOrder.from_json(row.shop_payload),
            }

    loaded = await asyncio.to_thread(load)
    if loaded is None:
        return Changed(result="nothing").as_json()
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
                if position is None or line_cancelled(loaded["detail"], n):
                    continue
                line = loaded["order"].line(n)
                lines.append(
                    OrderLine(
                        product_number=line.product_number,
                        quantity=line.quantity,
                        warehouse=line.warehouse or ctx.settings.extend.warehouses[0],
                        position=int(position),
                    )
                )
            if not lines:
                state = await extend.get_order(loaded["number"])
            else:
                state = await extend.cancel_order_rows(loaded["number"], lines)
    except BusinessConflict as exc:
        return Changed(result="refused", message=exc.error.message or str(exc)).as_json()
    except ValidationFailed as exc:
        message = exc.error.message or str(exc)
        return Changed(result="invalid", message=message, error=str(exc)).as_json()
    except (TechnicalFailure, Throttled, OutcomeUnknown) as exc:
        # A lost cancel answer is harmless to repeat: cancelling twice is refused or a no-op.
        return retry.decide(exc).as_json()

    def write() -> str:
        with ctx.db.write() as session:
            now = ctx.clock()
            result = apply_state(session, state, now=now)
            row = session.get(OrderRow, shop_ref)
            if row is not None and row.shop_change:
                before = projection(order_view(session, row))
                row.shop_change = None
                tell_shop(session, row, before)
            # A `failures retry` of a refused cancellation is through.
            failures.resolve_open(session, kind=CANCEL_FAILURE_KIND, key=shop_ref, now=now)
            return result

    return Changed(result=await asyncio.to_thread(write)).as_json()


@engine.step(name="orders.change_refused")
def _change_refused(shop_ref: str, message: str, park: bool) -> None:
    ctx = current()
    with ctx.db.write() as session:
        row = session.get(OrderRow, shop_ref)
        if row is None:
            return
        before = projection(order_view(session, row))
        row.shop_change = None
        row.last_error = f"cancellation refused by Extend: {message}"
        if park:
            failures.park(
                session,
                kind=CANCEL_FAILURE_KIND,
                key=shop_ref,
                reason="extend_rejected",
                message=row.last_error,
                payload={"shopRef": shop_ref, "change": before["pendingChange"]},
            )
        else:
            # Refused for good (too late): a retried cancellation failure says so, open again.
            failures.still_failing(
                session,
                kind=CANCEL_FAILURE_KIND,
                key=shop_ref,
                message=row.last_error,
                now=ctx.clock(),
            )
        tell_shop(session, row, before)


async def change_loop(shop_ref: str) -> str:
    attempt = 0
    while True:
        attempt += 1
        outcome = change_from_json(await _change_once(shop_ref))
        match outcome:
            case Changed(result="refused"):
                await engine.offload(_change_refused, shop_ref, outcome.message or "", False)
                return "refused"
            case Changed(result="invalid"):
                await engine.offload(_change_refused, shop_ref, outcome.message or "", True)
                return "parked"
            case Changed():
                return outcome.result
            case retry.Failure(verdict=retry.Verdict.PARK):
                return outcome.verdict.value
        failure = outcome
        policy = retry.policy(retry.ORDERS)
        # No lost-answer shortcut as in a submit: a cancel is sent again after the backoff.
        await retry.pause(
            policy.delay(attempt, failure.retry_after),
            policy=policy,
            retry_after=failure.retry_after,
        )


@engine.workflow("orders.apply_change")
async def apply_change(shop_ref: str) -> str:
    """Send the shop's pending cancellation of an order that is in Extend."""
    with structlog.contextvars.bound_contextvars(shop_ref=shop_ref):
        return await change_loop(shop_ref)
