"""Per-customer net prices from Extend (`scope.prices = sync`): kept per customer and product.

Extend sends no price webhook, so prices are refreshed
- in full for every kept customer every `sync.prices_full_refresh_minutes` (also `sync prices`);
- for customers active recently (placed an order within the full-refresh interval) every
  `sync.prices_active_refresh_minutes`;
- on triggers that can change them: `CustomerChanged` (that customer's prices) and
  `ProductChanged` / `ProductCreated` (that product, for every kept customer: marked, then
  refreshed in coalesced batches, see `flush_product_prices`).
Kept customers: every B2B customer of the local copy (has an organisation number), the
default customer number for anonymous shoppers, and `scope.price_customer_numbers`.
A full listing confirms every row it returns (`confirmed_at`) and deletes the rows of that
customer Extend no longer returns; only real changes are told to the shop: one `price.changed`
event per written batch of one customer (up to `BATCH` prices), not one per price.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session

from extend_connector import engine
from extend_connector.domain import Price
from extend_connector.extend import (
    ExtendError,
    NotFound,
    bulk_calls,
)
from extend_connector.flows import outbox, retry
from extend_connector.flows.context import FlowContext, current
from extend_connector.flows.passes import PassDone, PassFailed, run_passes
from extend_connector.flows.sync import Progress, SweepResult, Tally, scheduled
from extend_connector.settings import PricesScope, Settings
from extend_connector.store import repositories
from extend_connector.store.models import CustomerRow, DirtyPriceProductRow, OrderRow, PriceRow
from extend_connector.webshop import EventType

log = structlog.get_logger("extend_connector.flows.prices")

QUEUE = "prices"
_PRICES = cast(sa.Table, PriceRow.__table__)
_DIRTY = cast(sa.Table, DirtyPriceProductRow.__table__)
engine.queue(QUEUE, partition_concurrency=1, worker_concurrency=32, poll_seconds=0.5)
BATCH = 500
CONCURRENT_CUSTOMERS = 2


def kept_customer_numbers(session: Session, settings: Settings) -> list[str]:
    """Every customer number whose prices are kept, in a stable order."""
    numbers = dict.fromkeys(
        [settings.scope.default_customer_number, *settings.scope.price_customer_numbers]
    )
    rows = session.execute(
        sa.select(CustomerRow.customer_number)
        .where(CustomerRow.organization_number.is_not(None), CustomerRow.organization_number != "")
        .order_by(CustomerRow.customer_number)
    )
    numbers.update(dict.fromkeys(number for (number,) in rows))
    return list(numbers)


def active_customer_numbers(session: Session, settings: Settings, *, now: datetime) -> list[str]:
    """Kept customers that placed an order within the full-refresh interval."""
    since = now - timedelta(minutes=settings.sync.prices_full_refresh_minutes)
    kept = set(kept_customer_numbers(session, settings))
    rows = session.execute(
        sa.select(OrderRow.customer_number)
        .distinct()
        .where(OrderRow.created_at >= since, OrderRow.customer_number.is_not(None))
    )
    return sorted(number for (number,) in rows if number in kept)


def prices_key(customer_number: str) -> str:
    """Outbox key of a customer's price events: one partition per customer keeps them in order."""
    return f"prices:{customer_number}"


def price_document(price: Price) -> dict[str, Any]:
    def text(value: object) -> str | None:
        return None if value is None else str(value)

    return {
        "product_number": price.product_number,
        "unit_price": str(price.unit_price),
        "currency": price.currency,
        "list_price": text(price.list_price),
        "discount_percent": text(price.discount_percent),
        "price_list": price.price_list,
        "vat_percent": text(price.vat_percent),
        "valid_to": price.valid_to.isoformat() if price.valid_to else None,
    }


def publish_changes(
    session: Session,
    customer_number: str,
    *,
    changed: list[dict[str, Any]] | None = None,
    deleted: list[str] | None = None,
) -> None:
    """Tell the shop about one batch of a customer's price changes: ONE `price.changed` event.

    A first load of 200 customers x 20,000 products is 4 million new prices; an event (outbox
    row and delivery job) per price made that hours of bookkeeping and millions of webhook
    calls. An event per batch (at most `BATCH` prices) is 8,000 events for the same load.
    """
    if changed or deleted:
        outbox.publish(
            session,
            EventType.PRICE_CHANGED,
            prices_key(customer_number),
            {"customer_number": customer_number, "prices": changed or [], "deleted": deleted or []},
        )


# The columns that make a price; compared as a tuple to tell a real change from a confirmation.
_VALUE_COLUMNS = (
    "unit_price",
    "currency",
    "list_price",
    "discount_percent",
    "price_list",
    "vat_percent",
    "valid_to",
)


def _values(price: Price) -> dict[str, Any]:
    return {name: getattr(price, name) for name in _VALUE_COLUMNS}


def apply(
    session: Session, prices: list[Price], *, now: datetime, dry_run: bool = False
) -> list[str]:
    """Upsert one batch of one customer's prices; publish the real changes as one event.

    Core statements only (a first load is millions of prices): one query reads the batch's
    stored values, then one executemany each for new, changed and confirmed prices.
    Returns one outcome per price written (`created`, `updated`, `unchanged`)."""
    if not prices:
        return []
    customer = prices[0].customer_number
    if any(p.customer_number != customer for p in prices):
        raise ValueError("apply() takes the prices of one customer per batch")
    # A product listed twice in one batch (a page repeated by Extend) is written once, last wins.
    prices = list({p.product_number: p for p in prices}.values())
    columns = [getattr(PriceRow, name) for name in _VALUE_COLUMNS]
    stored = {
        number: tuple(values)
        for number, *values in session.execute(
            sa.select(PriceRow.product_number, *columns).where(
                PriceRow.customer_number == customer,
                PriceRow.product_number.in_([p.product_number for p in prices]),
            )
        )
    }
    outcomes: list[str] = []
    created: list[dict[str, Any]] = []
    updated: list[dict[str, Any]] = []
    unchanged: list[str] = []
    changed_docs: list[dict[str, Any]] = []
    for price in prices:
        values = _values(price)
        old = stored.get(price.product_number)
        if old is None:
            outcomes.append("created")
            created.append(
                {
                    "customer_number": customer,
                    "product_number": price.product_number,
                    **values,
                    "confirmed_at": now,
                }
            )
        elif old == tuple(values.values()):
            outcomes.append("unchanged")
            unchanged.append(price.product_number)
            continue
        else:
            outcomes.append("updated")
            updated.append({"b_product": price.product_number, **values})
        changed_docs.append(price_document(price))
    if dry_run:
        return outcomes
    if created:
        repositories.insert_many(session, _PRICES, created)
    if updated:
        # On the Table, not the mapped class: an ORM executemany UPDATE wants whole primary keys.
        table = _PRICES
        session.execute(
            sa.update(table)
            .where(
                table.c.customer_number == customer,
                table.c.product_number == sa.bindparam("b_product"),
            )
            .values({**{name: sa.bindparam(name) for name in _VALUE_COLUMNS}, "confirmed_at": now}),
            updated,
        )
    if unchanged:
        session.execute(
            sa.update(PriceRow)
            .where(PriceRow.customer_number == customer, PriceRow.product_number.in_(unchanged))
            .values(confirmed_at=now)
            .execution_options(synchronize_session=False)
        )
    publish_changes(session, customer, changed=changed_docs)
    return outcomes


def _delete_unconfirmed(session: Session, customer_number: str, *, before: datetime) -> int:
    """Delete the prices of a customer a complete listing did not return; tell the shop."""
    gone = list(
        session.scalars(
            sa.select(PriceRow.product_number).where(
                PriceRow.customer_number == customer_number,
                sa.or_(PriceRow.confirmed_at.is_(None), PriceRow.confirmed_at < before),
            )
        )
    )
    for start in range(0, len(gone), BATCH):
        chunk = gone[start : start + BATCH]
        session.execute(
            sa.delete(PriceRow).where(
                PriceRow.customer_number == customer_number, PriceRow.product_number.in_(chunk)
            )
        )
        publish_changes(session, customer_number, deleted=chunk)
    return len(gone)


async def refresh_customer(
    customer_number: str,
    product_numbers: Iterable[str] | None = None,
    *,
    tally: Tally,
    dry_run: bool = False,
) -> None:
    """Read one customer's prices (all, or the given products, chunked) and apply them batch by
    batch.

    Each batch is written in a worker thread, so the event loop goes on reading pages (this
    customer's next one, or another customer's in a concurrent sweep) while SQLite writes.
    """
    ctx = current()
    started = ctx.clock()
    page = tally.listing()
    batch: list[Price] = []
    seen: set[str] | None = set() if dry_run and product_numbers is None else None

    def write(prices: list[Price]) -> list[str]:
        if dry_run:
            with ctx.db.read() as session:
                return apply(session, prices, now=started, dry_run=True)
        with ctx.db.write() as session:
            return apply(session, prices, now=started)

    async def flush() -> None:
        nonlocal batch
        prices, batch = batch, []
        tally.record_many(await asyncio.to_thread(write, prices))

    try:
        async for price in ctx.extend().prices_for_customer(
            customer_number, product_numbers, progress=page
        ):
            batch.append(price)
            if seen is not None:
                seen.add(price.product_number)
            if len(batch) >= BATCH:
                await flush()
    except NotFound:
        # The customer no longer exists in Extend: it has no prices to keep.
        log.info("prices_customer_not_found", customer_number=customer_number)
    if batch:
        await flush()
    if product_numbers is not None:
        return  # a partial listing says nothing about the products it did not ask for

    def finish() -> int:
        if dry_run:
            with ctx.db.read() as session:
                stored = session.scalars(
                    sa.select(PriceRow.product_number).where(
                        PriceRow.customer_number == customer_number
                    )
                )
                return sum(1 for number in stored if seen is not None and number not in seen)
        with ctx.db.write() as session:
            return _delete_unconfirmed(session, customer_number, before=started)

    tally.record_many(["deleted"] * await asyncio.to_thread(finish))


def _kept_customers(ctx: FlowContext) -> list[str]:
    with ctx.db.read() as session:
        return kept_customer_numbers(session, ctx.settings)


async def sweep_prices(
    full: bool = False,
    dry_run: bool = False,
    progress: Progress | None = None,
    *,
    customers: list[str] | None = None,
) -> SweepResult:
    """Refresh every kept customer's prices (or the given customers'). Prices have no change
    cursor, so every sweep is a full listing; `full` is accepted for the common signature.

    `CONCURRENT_CUSTOMERS` customers are listed at once: one listing at a time left the
    connector waiting on Extend, then Extend waiting on the connector's writes. Every call still
    goes through the client's rate budget, so concurrency never means more than Extend allows.
    """
    ctx = current()
    extend = ctx.extend()
    if customers is None:
        customers = await asyncio.to_thread(_kept_customers, ctx)
    tally = Tally("prices", progress, full=full, dry_run=dry_run, stats=extend.stats)
    gate = asyncio.Semaphore(CONCURRENT_CUSTOMERS)

    async def one(number: str) -> None:
        async with gate:
            await refresh_customer(number, tally=tally, dry_run=dry_run)

    with bulk_calls():  # a sweep: it gives way to orders and stock in the rate budget
        await asyncio.gather(*(one(number) for number in customers))
    result = tally.result()
    log.info("prices_swept", customers=len(customers), **result.as_stats())
    return result


# --- durable jobs ----------------------------------------------------------------------------


@engine.step()
async def _prices_customer_step(customer_number: str) -> dict[str, Any]:
    return (await sweep_prices(customers=[customer_number])).as_stats()


@engine.workflow("prices.customer")
async def refresh_customer_prices(customer_number: str) -> dict[str, Any]:
    """All prices of one customer (CustomerChanged, or a new B2B customer)."""
    return await _prices_customer_step(customer_number)


def enqueue_customer_prices(
    customer_number: str, *, reason: str, session: Session | None = None
) -> str:
    """Called by the customer flow; idempotent per customer and trigger (`reason`). With a
    `session`, the job commits with the caller's transaction."""
    eng = current().engine
    options: dict[str, Any] = {
        "queue": QUEUE,
        "partition_key": f"customer:{customer_number}",
        "workflow_id": f"prices-customer-{customer_number}-{reason}",
    }
    if session is not None:
        return eng.enqueue_in_transaction(
            session, refresh_customer_prices, customer_number, **options
        )
    return eng.enqueue(refresh_customer_prices, customer_number, **options)


# --- product triggers, coalesced ----------------------------------------------------------------
#
# A changed product may change its price for every kept customer. One listing per customer and
# product would cost (kept customers) heavy calls per ProductChanged: 200 calls for one product,
# 10,000 for a batch of 50 changes, hours of Extend's heavy budget. Instead the product job marks
# the product dirty (a row, committed with the product) and asks for a debounced flush; the flush
# lists each kept customer's prices for ALL dirty products at once (product numbers chunked to
# the URL limit), so 50 changes cost one or two calls per customer. A mark made after the flush
# started stays for the next flush. Large backlogs (more than FULL_LISTING_ABOVE products) list
# each customer's whole price list instead, which is fewer pages than product-number chunks.

TRIGGER_QUEUE = "prices-triggers"
engine.queue(TRIGGER_QUEUE, worker_concurrency=1, poll_seconds=1.0)  # debounced by 5 s anyway
FLUSH_KEY = "prices.products"
FLUSH_DEBOUNCE_SECONDS = 5.0
FLUSH_MAX_DELAY_SECONDS = 60.0
FLUSH_MAX_PRODUCTS = 2_000  # per pass; a pass covers every kept customer
FULL_LISTING_ABOVE = 500
# The flush's backoff is `flows.retry` policy `prices.products_flush`: after six hours of
# failures the marks stay for the next trigger; the scheduled full refresh covers the prices
# meanwhile.


def mark_products(session: Session, product_numbers: Iterable[str], *, now: datetime) -> None:
    """Mark products whose prices must be refreshed for every kept customer (caller's
    transaction)."""
    repositories.mark_price_products(session, product_numbers, now=now)


def request_product_prices() -> str:
    """Ask for a flush of the marked products' prices within FLUSH_DEBOUNCE_SECONDS (coalesced)."""
    return current().engine.debounce(
        FLUSH_KEY,
        flush_product_prices,
        queue=TRIGGER_QUEUE,
        period_seconds=FLUSH_DEBOUNCE_SECONDS,
        max_delay_seconds=FLUSH_MAX_DELAY_SECONDS,
    )


async def refresh_marked_products(limit: int = FLUSH_MAX_PRODUCTS) -> dict[str, Any]:
    """One pass: refresh the prices of up to `limit` marked products for every kept customer,
    then clear the marks made before the pass began. Extend errors propagate (marks stay)."""
    ctx = current()
    started = ctx.clock()

    def snapshot() -> tuple[list[str], list[str], bool]:
        with ctx.db.read() as session:
            rows = list(
                session.scalars(
                    sa.select(DirtyPriceProductRow.product_number)
                    .order_by(DirtyPriceProductRow.marked_at)
                    .limit(limit + 1)
                )
            )
            return rows[:limit], kept_customer_numbers(session, ctx.settings), len(rows) > limit

    numbers, customers, more = await asyncio.to_thread(snapshot)
    if not numbers:
        return {"products": 0, "customers": 0, "more": False}
    tally = Tally("prices", stats=ctx.extend().stats)
    whole = len(numbers) > FULL_LISTING_ABOVE
    for customer in customers:
        await refresh_customer(customer, None if whole else numbers, tally=tally)

    def clear() -> None:
        table = _DIRTY
        with ctx.db.write() as session:
            session.execute(
                sa.delete(table).where(
                    table.c.product_number == sa.bindparam("p"),
                    table.c.marked_at <= sa.bindparam("t"),
                ),
                [{"p": n, "t": started} for n in numbers],
            )

    await asyncio.to_thread(clear)
    result = {
        "products": len(numbers),
        "customers": len(customers),
        "whole_lists": whole,
        "more": more,
        **tally.result().as_stats(),
    }
    log.info("prices_products_refreshed", **result)
    return result


@engine.step()
async def _product_prices_pass() -> dict[str, Any]:
    try:
        return PassDone.from_json(await refresh_marked_products()).as_json()
    except ExtendError as exc:
        if not retry.decide(exc).retryable:
            raise  # refused data: the job fails and shows it; the marks stay
        return PassFailed(retryable=True, error=str(exc)).as_json()


@engine.workflow("prices.products_flush")
async def flush_product_prices() -> dict[str, Any]:
    """Refresh the prices of every marked product; waits out an Extend outage with capped
    backoff."""
    return await run_passes(_product_prices_pass, add=("products",), policy=retry.PRICES_FLUSH)


@engine.workflow("prices.full_refresh")
async def scheduled_full_refresh(scheduled_at: Any = None, context: Any = None) -> dict[str, Any]:
    return await _prices_full_step()


@engine.step()
async def _prices_full_step() -> dict[str, Any]:
    return await scheduled("prices", sweep_prices)


@engine.workflow("prices.active_refresh")
async def scheduled_active_refresh(scheduled_at: Any = None, context: Any = None) -> dict[str, Any]:
    return await _prices_active_step()


@engine.step()
async def _prices_active_step() -> dict[str, Any]:
    return await scheduled("prices_active", refresh_active)


async def refresh_active() -> SweepResult:
    """Refresh the prices of the customers active recently (see the module docstring)."""
    ctx = current()

    def read() -> tuple[list[str], bool]:
        with ctx.db.read() as session:
            active = active_customer_numbers(session, ctx.settings, now=ctx.clock())
            # Marks whose flush was never asked for (the process died between storing a product
            # and asking): picked up here, so at most `prices_active_refresh_minutes` late.
            marked = sa.select(DirtyPriceProductRow.product_number).limit(1)
            orphaned = session.execute(marked).first() is not None
        return active, orphaned

    active, orphaned = await asyncio.to_thread(read)
    if orphaned:
        await asyncio.to_thread(request_product_prices)
    return await sweep_prices(customers=active)


def declare_schedules(settings: Settings) -> None:
    if settings.scope.prices == PricesScope.SYNC:
        engine.schedule(
            "prices.full_refresh",
            scheduled_full_refresh,
            every=timedelta(minutes=settings.sync.prices_full_refresh_minutes),
        )
        engine.schedule(
            "prices.active_refresh",
            scheduled_active_refresh,
            every=timedelta(minutes=settings.sync.prices_active_refresh_minutes),
        )
    else:  # a Connector rebuilt in this process with prices off: no refresh left behind
        engine.forget_schedule("prices.full_refresh")
        engine.forget_schedule("prices.active_refresh")
