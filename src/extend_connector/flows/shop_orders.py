"""Orders read from a shop platform (Vendure): both ways in go through the one intake.

A platform adapter that is an `OrderSource` is read by `pull`: with scope `to_extend` first the
customers registered since the cursor `shop_customers` (each handed to `customers.register`,
as `POST /v1/customers` would: created in Extend once), then the paid and cancelled orders
changed since the cursor (`shop_orders`, re-read with an overlap), each paid one handed to
`orders.accept_order` exactly as `POST /v1/orders` would (idempotent on the shop's order code:
an order seen twice is stored once and sent to Extend once), each cancelled one to
`orders.request_cancel`. `pull` runs soon after the shop's plugin tells the connector an order
was paid (`trigger()`, called by `POST /webhooks/vendure`), at start-up, and on a schedule
(`webshop.vendure.poll_seconds`): the event is a trigger, the shop's Admin API the truth, so an
event lost while the connector was down costs nothing but the wait for the next poll.

All three ask for a pull the same way (`_debounce`): at most one pull runs and at most one
waits to start. A schedule that enqueued a pull per tick piled them up whenever a pull took
longer than the period (a loaded shop: 59 pulls waiting in a CI run, each re-reading every
recent order and slowing the shop further, so that deliveries to it fell minutes behind).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import structlog

from extend_connector import engine
from extend_connector.domain import OrderStatus
from extend_connector.flows import cursors, customers
from extend_connector.flows.context import current
from extend_connector.flows.orders import changes, intake
from extend_connector.flows.orders.base import ChangeRefused, OrderConflict, UnknownOrder
from extend_connector.flows.orders.progress import line_cancelled
from extend_connector.flows.passes import Trigger
from extend_connector.settings import CustomersScope, Settings
from extend_connector.store.models import OrderRow
from extend_connector.webshop.port import (
    CustomerSource,
    OrderSource,
    ShopCustomerChange,
    ShopOrderChange,
    WebshopError,
)

log = structlog.get_logger("extend_connector.flows.shop_orders")

QUEUE = "shop-orders"
CURSOR = "shop_orders"
CUSTOMERS_CURSOR = "shop_customers"
# Re-read this far back: the shop's clock and ours differ, and several orders share an instant.
OVERLAP = timedelta(seconds=60)
engine.queue(QUEUE, concurrency=1, poll_seconds=0.5)


def _start(name: str) -> datetime | None:
    ctx = current()
    with ctx.db.write() as session:
        return cursors.start(session, name, now=ctx.clock(), overlap=OVERLAP)


def _finish(name: str, latest: datetime | None, stats: dict[str, Any]) -> None:
    ctx = current()
    with ctx.db.write() as session:
        cursors.finish(session, name, latest_seen=latest, stats=stats, now=ctx.clock())


def _register(change: ShopCustomerChange) -> str:
    """A customer registered in the shop: created in Extend once (scope `to_extend`)."""
    try:
        registration = customers.register(change.data)
    except customers.CustomerConflict as exc:
        log.warning(
            "shop_customer_changed_after_registration", shop_ref=change.shop_ref, reason=str(exc)
        )
        return "conflict"
    return "registered" if registration.created else "seen"


def _take(change: ShopOrderChange) -> str:
    """Hand one order to the intake (or its cancellation to the change flow); the outcome."""
    if change.cancelled:
        try:
            changes.request_cancel(change.shop_ref, None)
        except UnknownOrder:
            return "cancelled_unknown"  # cancelled before it was paid: nothing to undo
        except ChangeRefused as exc:
            log.warning("shop_cancel_refused", shop_ref=change.shop_ref, reason=str(exc))
            return "cancel_refused"
        return "cancelled"
    try:
        taken = intake.accept_order(change.payload)
    except OrderConflict as exc:
        # The shop's order changed after we took it (a line edited in the shop's admin): the
        # order already in Extend stays as taken; a person decides.
        log.warning("shop_order_changed_after_intake", shop_ref=change.shop_ref, reason=str(exc))
        return "conflict"
    if taken.problems:
        return "parked"
    if change.cancelled_lines and not _asked_already(change.shop_ref, change.cancelled_lines):
        try:
            changes.request_cancel(change.shop_ref, list(change.cancelled_lines))
        except ChangeRefused as exc:
            log.warning("shop_cancel_refused", shop_ref=change.shop_ref, reason=str(exc))
            return "cancel_refused"
        return "lines_cancelled"
    return "new" if taken.created else "seen"


def _asked_already(shop_ref: str, lines: tuple[int, ...]) -> bool:
    """Whether these lines' cancellation was asked for before (or the order is cancelled)."""
    with current().db.read() as session:
        row = session.get(OrderRow, shop_ref)
        if row is None:
            return False
        if row.status == OrderStatus.CANCELLED.value:
            return True
        asked = set((row.shop_change or {}).get("lines") or [])
        detail = row.extend_detail or {}
        return all(n in asked or line_cancelled(detail, n) for n in lines)


@engine.workflow("shop_orders.pull")
async def pull(scheduled_at: Any = None, context: Any = None) -> dict[str, Any]:
    return await _pull_step()


@engine.step(name="shop_orders.pull_once")
async def _pull_step() -> dict[str, Any]:
    """One read of the shop's orders since the cursor (retried by the next pull on failure)."""
    ctx = current()
    shop = ctx.webshop
    if not isinstance(shop, OrderSource):
        return {"skipped": "the webshop adapter is not an order source"}
    counts: dict[str, int] = {}
    # Customers first: an order of a customer registered since the last read finds its
    # registration (and waits for the customer's creation in Extend, not parked).
    if ctx.settings.scope.customers == CustomersScope.TO_EXTEND and isinstance(
        shop, CustomerSource
    ):
        since = await asyncio.to_thread(_start, CUSTOMERS_CURSOR)
        latest: datetime | None = None
        try:
            async for customer in shop.customers_changed_since(since):
                outcome = await asyncio.to_thread(_register, customer)
                counts[f"customers_{outcome}"] = counts.get(f"customers_{outcome}", 0) + 1
                latest = customer.updated_at if latest is None else max(latest, customer.updated_at)
        except WebshopError as exc:
            log.warning("shop_customers_unreadable", error=str(exc), taken=counts)
            return {**counts, "error": str(exc)}
        await asyncio.to_thread(_finish, CUSTOMERS_CURSOR, latest, counts)
    since = await asyncio.to_thread(_start, CURSOR)
    latest = None
    try:
        async for change in shop.orders_changed_since(since):
            outcome = await asyncio.to_thread(_take, change)
            counts[outcome] = counts.get(outcome, 0) + 1
            latest = change.updated_at if latest is None else max(latest, change.updated_at)
    except WebshopError as exc:
        # The cursor stays: the next pull reads again from where this one began.
        log.warning("shop_orders_unreadable", error=str(exc), taken=counts)
        return {**counts, "error": str(exc)}
    await asyncio.to_thread(_finish, CURSOR, latest, counts)
    if counts.get("new"):
        log.info("shop_orders_taken", **counts)
    return counts


def _debounce() -> None:
    """A pull soon, unless one waits to start already: it reads from the cursor when it starts,
    so it sees whatever this request is about (a debounce alone coalesces only the requests of
    one short window; while a slow pull runs, each window would queue one more)."""
    eng = current().engine
    if eng.has_waiting_run(pull, queue=QUEUE):
        return
    eng.debounce("shop-orders-pull", pull, queue=QUEUE, period_seconds=0.2, max_delay_seconds=1.0)


_trigger = Trigger(_debounce, name="shop-orders-trigger")


def trigger() -> None:
    """Pull soon (a shop event said an order was paid or cancelled); never blocks."""
    _trigger.request()


@engine.step(name="shop_orders.request_pull")
def _request_pull() -> None:
    try:
        current()
    except RuntimeError:  # an engine launched without a Connector (a test, a script)
        return
    _debounce()


@engine.workflow("shop_orders.poll")
async def poll(scheduled_at: Any = None, context: Any = None) -> None:
    """The schedule's tick: a pull soon, joined with one already waiting (never one per tick)."""
    await engine.offload(_request_pull)


def _on_launch(eng: engine.Engine) -> None:
    try:
        ctx = current()
    except RuntimeError:
        return
    if isinstance(ctx.webshop, OrderSource):
        trigger()


def declare_schedules(settings: Settings) -> None:
    if settings.webshop.adapter != "vendure":
        # A Connector rebuilt in this process with another adapter: no poll of a shop it has not.
        engine.forget_schedule("shop_orders.poll")
        return
    engine.schedule(
        "shop_orders.poll",
        poll,
        every=timedelta(seconds=settings.webshop.vendure.poll_seconds),
    )
    engine.on_launch("shop_orders.startup", _on_launch)
