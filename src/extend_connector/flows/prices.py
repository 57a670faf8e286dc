"""Per-customer net prices from Extend (`scope.prices = sync`): kept per customer and product.

Extend sends no price webhook, so prices are refreshed
- in full for every kept customer every `sync.prices_full_refresh_minutes` (also `sync prices`);
- for customers active recently (placed an order within the full-refresh interval) every
  `sync.prices_active_refresh_minutes`;
- on triggers that can change them: `CustomerChanged` (that customer's prices) and
  `ProductChanged` / `ProductCreated` (that product, for every kept customer).
Kept customers: every B2B customer of the local copy (has an organisation number), the
default customer number for anonymous shoppers, and `scope.price_customer_numbers`.
A full listing confirms every row it returns (`confirmed_at`) and deletes the rows of that
customer Extend no longer returns; only real changes are told to the shop (`price.changed`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session

from extend_connector import engine
from extend_connector.domain import Price
from extend_connector.extend import NotFound
from extend_connector.flows import outbox
from extend_connector.flows.context import current
from extend_connector.flows.sync import Progress, SweepResult, Tally
from extend_connector.settings import PricesScope, Settings
from extend_connector.store.models import CustomerRow, OrderRow, PriceRow
from extend_connector.webshop import EventType

log = structlog.get_logger("extend_connector.flows.prices")

QUEUE = "prices"
engine.queue(QUEUE, partition_concurrency=1, worker_concurrency=32, poll_seconds=0.5)
BATCH = 500


def kept_customer_numbers(session: Session, settings: Settings) -> list[str]:
    """Every customer number whose prices are kept, in a stable order."""
    numbers = dict.fromkeys([settings.scope.default_customer_number, *settings.scope.price_customer_numbers])
    rows = session.execute(sa.select(CustomerRow.customer_number)
                           .where(CustomerRow.organization_number.is_not(None),
                                  CustomerRow.organization_number != "")
                           .order_by(CustomerRow.customer_number))
    numbers.update(dict.fromkeys(number for (number,) in rows))
    return list(numbers)


def active_customer_numbers(session: Session, settings: Settings, *, now: datetime) -> list[str]:
    """Kept customers that placed an order within the full-refresh interval."""
    since = now - timedelta(minutes=settings.sync.prices_full_refresh_minutes)
    kept = set(kept_customer_numbers(session, settings))
    rows = session.execute(sa.select(OrderRow.customer_number).distinct()
                           .where(OrderRow.created_at >= since, OrderRow.customer_number.is_not(None)))
    return sorted(number for (number,) in rows if number in kept)


def price_key(customer_number: str, product_number: str) -> str:
    return f"price:{customer_number}:{product_number}"


def price_document(price: Price) -> dict[str, Any]:
    def text(value: object) -> str | None:
        return None if value is None else str(value)

    return {"customer_number": price.customer_number, "product_number": price.product_number,
            "unit_price": str(price.unit_price), "currency": price.currency,
            "list_price": text(price.list_price), "discount_percent": text(price.discount_percent),
            "price_list": price.price_list, "vat_percent": text(price.vat_percent),
            "valid_to": price.valid_to.isoformat() if price.valid_to else None}


def _same(row: PriceRow, price: Price) -> bool:
    return (row.unit_price == price.unit_price and row.currency == price.currency
            and row.list_price == price.list_price and row.discount_percent == price.discount_percent
            and row.price_list == price.price_list and row.vat_percent == price.vat_percent
            and row.valid_to == price.valid_to)


def apply(session: Session, prices: list[Price], *, now: datetime, dry_run: bool = False) -> list[str]:
    """Upsert one batch of prices (one query to read the batch); publish real changes."""
    if not prices:
        return []
    customer = prices[0].customer_number
    stored = {row.product_number: row for row in session.scalars(
        sa.select(PriceRow).where(PriceRow.customer_number == customer,
                                  PriceRow.product_number.in_([p.product_number for p in prices])))}
    outcomes = []
    unchanged = []
    for price in prices:
        row = stored.get(price.product_number)
        outcome = "created" if row is None else ("unchanged" if _same(row, price) else "updated")
        outcomes.append(outcome)
        if dry_run:
            continue
        if outcome == "unchanged":
            unchanged.append(price.product_number)
            continue
        if row is None:
            # Core insert: a first load writes a whole catalogue per customer, no row objects.
            session.execute(sa.insert(PriceRow).values(
                customer_number=price.customer_number, product_number=price.product_number,
                unit_price=price.unit_price, currency=price.currency, list_price=price.list_price,
                discount_percent=price.discount_percent, price_list=price.price_list,
                vat_percent=price.vat_percent, valid_to=price.valid_to, confirmed_at=now))
            outbox.publish(session, EventType.PRICE_CHANGED,
                           price_key(price.customer_number, price.product_number), price_document(price))
            continue
        row.unit_price = price.unit_price
        row.currency = price.currency
        row.list_price = price.list_price
        row.discount_percent = price.discount_percent
        row.price_list = price.price_list
        row.vat_percent = price.vat_percent
        row.valid_to = price.valid_to
        row.confirmed_at = now
        outbox.publish(session, EventType.PRICE_CHANGED, price_key(price.customer_number, price.product_number),
                       price_document(price))
    if unchanged:
        # One statement per batch: confirming an unchanged price must not cost a row object each.
        session.execute(sa.update(PriceRow).where(PriceRow.customer_number == customer,
                                                  PriceRow.product_number.in_(unchanged))
                        .values(confirmed_at=now))
    return outcomes


def _delete_unconfirmed(session: Session, customer_number: str, *, before: datetime) -> int:
    """Delete the prices of a customer a complete listing did not return; tell the shop."""
    gone = list(session.scalars(sa.select(PriceRow.product_number).where(
        PriceRow.customer_number == customer_number,
        sa.or_(PriceRow.confirmed_at.is_(None), PriceRow.confirmed_at < before))))
    for start in range(0, len(gone), BATCH):
        chunk = gone[start:start + BATCH]
        session.execute(sa.delete(PriceRow).where(PriceRow.customer_number == customer_number,
                                                  PriceRow.product_number.in_(chunk)))
        for number in chunk:
            outbox.publish(session, EventType.PRICE_CHANGED, price_key(customer_number, number),
                           {"customer_number": customer_number, "product_number": number, "deleted": True})
    return len(gone)


async def refresh_customer(customer_number: str, product_numbers: Iterable[str] | None = None, *,
                           tally: Tally, dry_run: bool = False) -> None:
    """Read one customer's prices (all, or the given products, chunked) and apply them batch by batch."""
    ctx = current()
    started = ctx.clock()
    tally.listing()
    batch: list[Price] = []
    seen: set[str] | None = set() if dry_run and product_numbers is None else None

    def flush() -> None:
        if dry_run:
            with ctx.db.read() as session:
                outcomes = apply(session, batch, now=started, dry_run=True)
        else:
            with ctx.db.write() as session:
                outcomes = apply(session, batch, now=started)
        for outcome in outcomes:
            tally.record(outcome)
        batch.clear()

    try:
        async for price in ctx.extend().prices_for_customer(customer_number, product_numbers, progress=tally.page):
            batch.append(price)
            if seen is not None:
                seen.add(price.product_number)
            if len(batch) >= BATCH:
                flush()
    except NotFound:
        # The customer no longer exists in Extend: it has no prices to keep.
        log.info("prices_customer_not_found", customer_number=customer_number)
    if batch:
        flush()
    if product_numbers is not None:
        return  # a partial listing says nothing about the products it did not ask for
    if dry_run:
        with ctx.db.read() as session:
            stored = session.scalars(sa.select(PriceRow.product_number)
                                     .where(PriceRow.customer_number == customer_number))
            for number in stored:
                if seen is not None and number not in seen:
                    tally.record("deleted")
        return
    with ctx.db.write() as session:
        for _ in range(_delete_unconfirmed(session, customer_number, before=started)):
            tally.record("deleted")


async def sweep_prices(full: bool = False, dry_run: bool = False, progress: Progress | None = None,
                       *, customers: list[str] | None = None) -> SweepResult:
    """Refresh every kept customer's prices (or the given customers'). Prices have no change
    cursor, so every sweep is a full listing; `full` is accepted for the common signature."""
    ctx = current()
    extend = ctx.extend()
    if customers is None:
        with ctx.db.read() as session:
            customers = kept_customer_numbers(session, ctx.settings)
    tally = Tally("prices", progress, full=full, dry_run=dry_run, stats=extend.stats)
    for number in customers:
        await refresh_customer(number, tally=tally, dry_run=dry_run)
    result = tally.result()
    log.info("prices_swept", customers=len(customers), **result.as_stats())
    return result


# --- durable jobs ----------------------------------------------------------------------------


@engine.step()
async def _prices_customer_step(customer_number: str) -> dict[str, Any]:
    return (await sweep_prices(customers=[customer_number])).as_stats()


@engine.step()
async def _prices_product_step(product_number: str) -> dict[str, Any]:
    ctx = current()
    with ctx.db.read() as session:
        numbers = kept_customer_numbers(session, ctx.settings)
    tally = Tally("prices", stats=ctx.extend().stats)
    for number in numbers:
        await refresh_customer(number, [product_number], tally=tally)
    return tally.result().as_stats()


@engine.workflow("prices.customer")
async def refresh_customer_prices(customer_number: str) -> dict[str, Any]:
    """All prices of one customer (CustomerChanged, or a new B2B customer)."""
    return await _prices_customer_step(customer_number)


@engine.workflow("prices.product")
async def refresh_product_prices(product_number: str) -> dict[str, Any]:
    """One product's prices for every kept customer (ProductCreated / ProductChanged)."""
    return await _prices_product_step(product_number)


def enqueue_customer_prices(customer_number: str, *, reason: str) -> str:
    """Called by the customer flow; idempotent per customer and trigger."""
    return current().engine.enqueue(refresh_customer_prices, customer_number, queue=QUEUE,
                                    partition_key=f"customer:{customer_number}",
                                    workflow_id=f"prices-customer-{customer_number}-{reason}")


def enqueue_product_prices(product_number: str, *, reason: str) -> str:
    """Called by the product flow; idempotent per product and trigger."""
    return current().engine.enqueue(refresh_product_prices, product_number, queue=QUEUE,
                                    partition_key=f"sku:{product_number}",
                                    workflow_id=f"prices-product-{product_number}-{reason}")


@engine.workflow("prices.full_refresh")
async def scheduled_full_refresh(scheduled_at: Any = None, context: Any = None) -> dict[str, Any]:
    return await _prices_full_step()


@engine.step()
async def _prices_full_step() -> dict[str, Any]:
    return (await sweep_prices()).as_stats()


@engine.workflow("prices.active_refresh")
async def scheduled_active_refresh(scheduled_at: Any = None, context: Any = None) -> dict[str, Any]:
    return await _prices_active_step()


@engine.step()
async def _prices_active_step() -> dict[str, Any]:
    ctx = current()
    with ctx.db.read() as session:
        active = active_customer_numbers(session, ctx.settings, now=ctx.clock())
    return (await sweep_prices(customers=active)).as_stats()


def declare_schedules(settings: Settings) -> None:
    if settings.scope.prices == PricesScope.SYNC:
        engine.schedule("prices.full_refresh", scheduled_full_refresh,
                        every=timedelta(minutes=settings.sync.prices_full_refresh_minutes))
        engine.schedule("prices.active_refresh", scheduled_active_refresh,
                        every=timedelta(minutes=settings.sync.prices_active_refresh_minutes))
