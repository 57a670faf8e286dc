"""Submit: the `orders.submit` job that POSTs an order to Extend exactly once (look-up before any
re-POST after an attempt that may have reached Extend), waits out outages and parks refusals."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.orm import Session

from extend_connector import engine, metrics
from extend_connector.domain import OrderState, OrderStatus
from extend_connector.extend import (
    BusinessConflict,
    ExtendError,
    OutcomeUnknown,
    TechnicalFailure,
    Throttled,
    ValidationFailed,
)
from extend_connector.flows import failures, retry
from extend_connector.flows.context import current
from extend_connector.flows.orders.base import FAILURE_KIND, UNSENT, log
from extend_connector.flows.orders.changes import change_loop
from extend_connector.flows.orders.checks import check_order
from extend_connector.flows.orders.lookup import lookups
from extend_connector.flows.orders.payload import ShopOrder
from extend_connector.flows.orders.progress import apply_state_to
from extend_connector.flows.orders.view import order_view, projection, tell_shop
from extend_connector.store.models import OrderRow


@engine.step(name="orders.begin")
def _begin(shop_ref: str) -> dict[str, Any]:
    with current().db.read() as session:
        row = session.get(OrderRow, shop_ref)
        if row is None:
            return {"state": "missing"}
        if row.order_number is not None:
            return {"state": "done"}
        return _send_start(row.submit_attempts, row.customer_number)


@engine.step(name="orders.resolve_customer")
def _resolve_customer(shop_ref: str) -> str | None:
    ctx = current()
    with ctx.db.write() as session:
        row = session.get(OrderRow, shop_ref)
        if row is None:
            return None
        _, customer = check_order(session, ctx.settings, ShopOrder.from_json(row.shop_payload))
        if customer is not None:
            row.customer_number = customer
        return customer


@dataclass(frozen=True, kw_only=True, slots=True)
class Sent:
    """The order is in Extend: `created` now or `found` by a look-up (`_send`'s result, as JSON),
    with what applying Extend's state did and whether the shop has a change waiting."""

    outcome: str  # created, found
    order_number: str
    result: str  # apply_state's answer
    pending_change: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "orderNumber": self.order_number,
            "result": self.result,
            "pendingChange": self.pending_change,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Sent:
        return cls(
            outcome=str(data["outcome"]),
            order_number=str(data["orderNumber"]),
            result=str(data["result"]),
            pending_change=bool(data["pendingChange"]),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class Settled:
    """Nothing was sent: the order is `done`, `cancelled` or `missing` (`_send`'s result)."""

    outcome: str  # done, cancelled, missing
    order_number: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "orderNumber": self.order_number}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Settled:
        number = data.get("orderNumber")
        return cls(
            outcome=str(data["outcome"]), order_number=None if number is None else str(number)
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class Invalid:
    """Extend refused the order (`_send`'s result): it is parked with this reason and message."""

    reason: str  # extend_rejected, extend_conflict
    error: str
    message: str
    details: tuple[dict[str, Any], ...] = ()  # {"field", "message"} each

    def as_json(self) -> dict[str, Any]:
        return {
            "outcome": "invalid",
            "reason": self.reason,
            "error": self.error,
            "message": self.message,
            "details": list(self.details),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Invalid:
        return cls(
            reason=str(data["reason"]),
            error=str(data["error"]),
            message=str(data["message"]),
            details=tuple(data.get("details") or ()),
        )


def send_from_json(data: Mapping[str, Any]) -> Sent | Settled | Invalid | retry.Failure:
    """What `_send` returned, read back from its recorded JSON."""
    match data.get("outcome"):
        case "created" | "found":
            return Sent.from_json(data)
        case "invalid":
            return Invalid.from_json(data)
        case retry.Verdict.RETRY | retry.Verdict.PARK:
            return retry.Failure.from_json(data)
        case _:
            return Settled.from_json(data)


def _outcome_of(exc: ExtendError, looked_up: bool, floor: datetime | None = None) -> dict[str, Any]:
    # Whether Extend may have created the order although the call failed (`retry.decide`): then
    # the next attempt looks it up first; so does every attempt after a look-up.
    failure = retry.decide(exc)
    if not failure.retryable:  # e.g. a conflict answering the look-up: keep the order queued
        failure = replace(failure, verdict=retry.Verdict.RETRY)
    if looked_up and not failure.ambiguous:
        failure = replace(failure, ambiguous=True)
    return {**failure.as_json(), "floor": None if floor is None else floor.isoformat()}


def _mark_attempt(shop_ref: str, attempt: int) -> dict[str, Any]:
    ctx = current()
    with ctx.db.write() as session:
        row = session.get(OrderRow, shop_ref)
        if row is None:
            return {"state": "missing"}
        if row.order_number is not None:
            return {"state": "done", "orderNumber": row.order_number}
        change = row.shop_change or {}
        order = ShopOrder.from_json(row.shop_payload)
        lines = order.active_line_numbers(change)
        if change.get("order") or not lines:
            before = projection(order_view(session, row))
            row.status = OrderStatus.CANCELLED.value
            row.shop_change = None
            row.updated_at = ctx.clock()
            tell_shop(session, row, before)
            return {"state": "cancelled"}
        began_before = row.submit_attempts >= attempt
        row.submit_attempts = max(row.submit_attempts, attempt)
        return {
            "state": "send",
            "began_before": began_before,
            "order": order,
            "lines": lines,
            "created_at": row.created_at.isoformat(),
        }


def _record(shop_ref: str, state: OrderState, line_numbers: list[int] | None) -> tuple[str, bool]:
    ctx = current()
    now = ctx.clock()
    with ctx.db.write() as session:
        row = session.get(OrderRow, shop_ref)
        result = apply_state_to(session, row, state, now=now, line_numbers=line_numbers)
        failures.resolve_open(session, kind=FAILURE_KIND, key=shop_ref, now=now)
        pending = bool(row is not None and row.shop_change)
    return result, pending


def _refusal(exc: ValidationFailed | BusinessConflict) -> str:
    """Extend's message with what it names (the SKU, the customer, the field): its headline alone
    ("refers to unknown or missing data") does not tell the shop what to fix."""
    message = exc.error.message or str(exc)
    named = "; ".join(
        f"{d.field}: {d.message}" if d.field else d.message for d in exc.details if d.message
    )
    return f"{message} ({named})" if named else message


@engine.step(name="orders.send")
async def _send(
    shop_ref: str, customer: str, attempt: int, look_up: bool, since: str | None = None
) -> dict[str, Any]:
    """One attempt: look the order up when an earlier attempt may have reached Extend, else POST.

    `since`: no order created by this job's earlier attempts has an older change date (the first
    attempt's `floor`), or None (unknown): lets the look-up be gathered with others (lookup.py).
    A failed attempt's answer carries its own `floor`, read before anything was sent, or None when
    this attempt began once before (cut off mid-call: what it sent then is not bounded by now)."""
    ctx = current()
    mark = await asyncio.to_thread(_mark_attempt, shop_ref, attempt)
    if mark["state"] != "send":
        return Settled(outcome=mark["state"], order_number=mark.get("orderNumber")).as_json()
    looked_up = look_up or mark["began_before"]
    extend = ctx.extend()
    floor = None if mark["began_before"] else extend.created_no_earlier_than()
    lines: list[int] = mark["lines"]
    try:
        return await _attempt(shop_ref, customer, attempt, looked_up, since, mark, lines)
    except ValidationFailed as exc:
        return _refused("extend_rejected", exc)
    except (TechnicalFailure, Throttled, OutcomeUnknown) as exc:
        return _outcome_of(exc, looked_up, floor)
    except ExtendError as exc:  # any other class: treat as technical, keep the order queued
        return _outcome_of(exc, True, floor)


async def _attempt(
    shop_ref: str,
    customer: str,
    attempt: int,
    looked_up: bool,
    since: str | None,
    mark: dict[str, Any],
    lines: list[int],
) -> dict[str, Any]:
    extend = current().extend()
    if looked_up:
        found = await lookups(extend).find(
            shop_ref, None if since is None else datetime.fromisoformat(since)
        )
        if found is not None:
            return await _found(shop_ref, found.order_number, lines)
    shop_order: ShopOrder = mark["order"]
    order = shop_order.to_order(
        customer_number=customer,
        line_numbers=lines,
        placed_fallback=datetime.fromisoformat(mark["created_at"]),
    )
    try:
        state = await extend.create_order(order)
    except BusinessConflict as conflict:
        found = await extend.find_order(shop_ref)
        if found is None:
            return _refused("extend_conflict", conflict)
        return await _found(shop_ref, found.order_number, lines)
    result, pending = await asyncio.to_thread(_record, shop_ref, state, lines)
    log.info(
        "order_created_in_extend",
        shop_ref=shop_ref,
        order_number=state.order_number,
        attempt=attempt,
    )
    metrics.ORDERS.labels("created").inc()
    return Sent(
        outcome="created",
        order_number=state.order_number,
        result=result,
        pending_change=pending,
    ).as_json()


async def _found(shop_ref: str, order_number: str, lines: list[int]) -> dict[str, Any]:
    """The order is in Extend already (a look-up found it): read it and record it."""
    state = await current().extend().get_order(order_number)
    result, pending = await asyncio.to_thread(_record, shop_ref, state, lines)
    log.info("order_found_in_extend", shop_ref=shop_ref, order_number=state.order_number)
    metrics.ORDERS.labels("found").inc()
    return Sent(
        outcome="found", order_number=state.order_number, result=result, pending_change=pending
    ).as_json()


def _refused(reason: str, exc: ValidationFailed | BusinessConflict) -> dict[str, Any]:
    return Invalid(
        reason=reason,
        error=str(exc),
        message=_refusal(exc),
        details=tuple({"field": d.field, "message": d.message} for d in exc.details),
    ).as_json()


@engine.step(name="orders.mark_waiting")
def _mark_waiting(shop_ref: str, error: str) -> None:
    ctx = current()
    with ctx.db.write() as session:
        row = session.get(OrderRow, shop_ref)
        if row is None or row.order_number is not None:
            return
        before = projection(order_view(session, row))
        row.status = OrderStatus.WAITING_FOR_EXTEND.value
        row.last_error = f"waiting for Extend: {error}"[:2000]
        row.updated_at = ctx.clock()
        # The shop hears about the first wait (and each new error text), not about every retry.
        if before["status"] != row.status:
            tell_shop(session, row, before)


@engine.step(name="orders.park_order")
def _park_order(shop_ref: str, reason: str, message: str, detail: dict[str, Any]) -> int:
    ctx = current()
    with ctx.db.write() as session:
        row = session.get(OrderRow, shop_ref)
        failure_id = failures.park(
            session,
            kind=FAILURE_KIND,
            key=shop_ref,
            reason=reason,
            message=message,
            detail=detail,
            payload={"shopRef": shop_ref},
        )
        if row is not None and row.order_number is None:
            before = projection(order_view(session, row))
            row.status = OrderStatus.PARKED.value
            row.last_error = message
            row.updated_at = ctx.clock()
            tell_shop(session, row, before)
    log.warning("order_parked", shop_ref=shop_ref, reason=reason, message=message)
    metrics.ORDERS.labels("parked").inc()
    return failure_id


def park_unsent(
    session: Session,
    shop_ref: str,
    *,
    reason: str,
    message: str,
    detail: dict[str, Any],
    now: datetime,
) -> int | None:
    """Park an acknowledged order that is not in Extend (the watchdog gave up on its job); None when
    it reached Extend or a person already settled it meanwhile."""
    row = session.get(OrderRow, shop_ref)
    if row is None or row.order_number is not None or row.status not in UNSENT:
        return None
    failure_id = failures.park(
        session,
        kind=FAILURE_KIND,
        key=shop_ref,
        reason=reason,
        message=message,
        detail=detail,
        payload={"shopRef": shop_ref},
        now=now,
    )
    before = projection(order_view(session, row))
    row.status = OrderStatus.PARKED.value
    row.last_error = message[:2000]
    row.updated_at = now
    tell_shop(session, row, before)
    log.error("order_parked", shop_ref=shop_ref, reason=reason, message=message)
    metrics.ORDERS.labels("parked").inc()
    return failure_id


def _send_start(base: int, customer: str | None) -> dict[str, Any]:
    """A job's start when the order is to be sent: the attempts made before (`base`) and the
    customer (None: the job waits for it)."""
    return {"state": "send", "base": base, "customer": customer}


def intake_start(customer: str | None) -> dict[str, Any]:
    """What the intake knows when it enqueues a new order's job: no attempt yet, and the
    customer it resolved. The job's second argument."""
    return _send_start(0, customer)


@engine.workflow("orders.submit")
async def submit(shop_ref: str, start: dict[str, Any] | None = None) -> str:
    """Send one shop order to Extend exactly once; returns how it ended.

    `start`: the intake's `intake_start(...)`, so the job does not read the order back in a step
    (one checkpoint write fewer per order; a job's arguments are as durable as a checkpoint).
    None (a job the watchdog or a replay enqueued, or one recorded before 2026-12-04): the
    `orders.begin` step reads the attempt count and the customer from the order. A count that
    is stale by the time the job runs only makes its first attempt look the order up first
    (`_mark_attempt`: an attempt number already begun is looked up)."""
    # Every line of this job (the HTTP client's and the engine's too) names the order.
    with structlog.contextvars.bound_contextvars(shop_ref=shop_ref, order_number=None):
        return await _submit(shop_ref, start)


async def _submit(shop_ref: str, start: dict[str, Any] | None) -> str:
    if start is None:
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
    # The first attempt's floor bounds every attempt of this job (Extend's clock only moves on);
    # a job picking up earlier jobs' attempts has none.
    since: str | None = None
    while True:
        attempt += 1
        sent = await _send(shop_ref, customer, base + attempt, look_up, since)
        if attempt == 1 and base == 0:
            since = sent.get("floor")
        outcome = send_from_json(sent)
        match outcome:
            case Sent():
                structlog.contextvars.bind_contextvars(order_number=outcome.order_number)
                if outcome.pending_change:
                    await change_loop(shop_ref)
                return outcome.outcome
            case Settled():
                return outcome.outcome
            case Invalid():
                await engine.offload(
                    _park_order,
                    shop_ref,
                    outcome.reason,
                    f"Extend refused order {shop_ref}: {outcome.message}",
                    {"error": outcome.error, "details": list(outcome.details)},
                )
                return "parked"
        failure = outcome
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
            message = (
                f"the shop customer of order {shop_ref} was not created in Extend "
                f"within {policy.give_up_seconds / 3600:g} h; see failures of kind "
                "customer, then retry"
            )
            await engine.offload(_park_order, shop_ref, "customer_not_created", message, {})
            return None
        wait = policy.delay(rounds)
        await retry.pause(wait, policy=policy)
        waited += wait
        customer = await engine.offload(_resolve_customer, shop_ref)
        if customer is not None:
            return customer
