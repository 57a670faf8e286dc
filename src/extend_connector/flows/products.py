"""Product master data from Extend (`scope.products = sync`): webhook refetch and change-date sweep.

`ProductCreated` / `ProductChanged` mark the product dirty (flows/records.py); the product drain
(`refresh_products`) fetches the marked products with `GET Products/{productNumber}` and upserts
them in one transaction (and, when prices are kept, marks their prices for a coalesced refresh:
flows/prices.py). `refresh_product` (a job per hook) stays declared for jobs of the previous
version.
The sweep lists products changed since the cursor and fetches each changed one; it reconciles
webhooks that never came. The shop is told (`product.changed`) only when the content hash
changes, so a touch in Extend that changed nothing the shop shows tells it nothing. A phased-out
product stays in the local copy with `phase_out = true` and is told to the shop as such.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session

from extend_connector import engine
from extend_connector.domain import Product
from extend_connector.extend import NotFound
from extend_connector.flows import balances, dispatch, outbox, prices, records, retry
from extend_connector.flows.context import current
from extend_connector.flows.sync import (
    Listed,
    Progress,
    SweepResult,
    Tally,
    scheduled,
    sweep_changed,
)
from extend_connector.settings import PricesScope, ProductsScope, Settings
from extend_connector.store.models import ProductRow
from extend_connector.webshop import EventType

log = structlog.get_logger("extend_connector.flows.products")

QUEUE = "products"
CURSOR = "products"
# Product hooks go to the product drain (flows/records.py); this queue only runs `products.refresh`
# jobs of the previous version, so it is polled seldom (each poll is a dequeue transaction).
engine.queue(QUEUE, partition_concurrency=1, worker_concurrency=32, poll_seconds=2.0)


def product_document(product: Product) -> dict[str, Any]:
    """The product as plain JSON (stored and sent to the shop)."""
    doc = asdict(product)
    doc["changed_at"] = product.changed_at.isoformat()
    doc["vat_percent"] = None if product.vat_percent is None else str(product.vat_percent)
    return doc


def content_hash(product: Product) -> str:
    """Hash of what the shop shows: every field but Extend's change date."""
    doc = product_document(product)
    doc.pop("changed_at")
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def stored_changed(session: Session, numbers: list[str]) -> dict[str, datetime | None]:
    rows = session.execute(
        sa.select(ProductRow.product_number, ProductRow.extend_changed_at).where(
            ProductRow.product_number.in_(numbers)
        )
    )
    return {number: changed for number, changed in rows}


def apply(
    session: Session, products: list[Product], *, now: datetime, dry_run: bool = False
) -> list[str]:
    """Upsert products; publish `product.changed` for real changes. Returns one outcome per product.

    With `dry_run` nothing is written or published: the outcomes say what would happen.
    """
    outcomes = []
    # A product new to the shop arrives with its stock: a stock event published before the shop
    # had the product (the first balance load runs first) found nothing to update.
    new = [p.product_number for p in products if session.get(ProductRow, p.product_number) is None]
    stock = balances.shop_figures(session, new) if new and not dry_run else {}
    for product in products:
        row = session.get(ProductRow, product.product_number)
        digest = content_hash(product)
        outcome = (
            "created" if row is None else ("unchanged" if row.content_hash == digest else "updated")
        )
        outcomes.append(outcome)
        if dry_run:
            continue
        if row is None:
            row = ProductRow(product_number=product.product_number)
            session.add(row)
        if outcome != "unchanged":
            row.name = product.name
            row.unit = product.unit
            row.ean = product.ean
            row.vat_percent = product.vat_percent
            row.notes = product.notes
            row.customs_commodity_code = product.customs_commodity_code
            row.supply_mode = product.supply_mode
            row.phase_out = product.phase_out
            row.document = product_document(product)
            row.content_hash = digest
            doc = product_document(product)
            if product.product_number in stock:
                doc["stock"] = stock[product.product_number]
            outbox.publish(session, EventType.PRODUCT_CHANGED, f"sku:{product.product_number}", doc)
        row.extend_changed_at = product.changed_at
        row.confirmed_at = now
    return outcomes


async def _fetch(number: str) -> Product | None:
    try:
        return await current().extend().get_product(number)
    except NotFound:
        # Gone between list and fetch (or the webhook named a product that no longer exists):
        # Extend has no product deletion event, so the local copy keeps what it had.
        return None


async def _listing(since: datetime | None, tally: Tally) -> AsyncIterator[Listed]:
    async for product in current().extend().products_changed_since(since, progress=tally.page):
        yield Listed(key=product.product_number, changed_at=product.changed_at)


async def sweep_products(
    full: bool = False, dry_run: bool = False, progress: Progress | None = None
) -> SweepResult:
    """List products changed since the cursor (all when `full` or first run) and fetch each changed
    one."""
    return await sweep_changed(
        "products",
        cursor=CURSOR,
        listing=_listing,
        stored_changed=stored_changed,
        fetch=_fetch,
        apply=apply,
        full=full,
        dry_run=dry_run,
        progress=progress,
    )


# --- durable jobs ----------------------------------------------------------------------------


@engine.step()
async def _products_refresh_step(product_number: str) -> str:
    ctx = current()
    product = await _fetch(product_number)
    if product is None:
        return "skipped"
    prices_kept = ctx.settings.scope.prices == PricesScope.SYNC

    def write() -> str:
        with ctx.db.write() as session:
            outcome = apply(session, [product], now=ctx.clock())[0]
            if prices_kept:
                # A new or changed product may have new prices for every kept customer (Extend
                # sends no price event): marked with the product, refreshed in a coalesced batch.
                prices.mark_products(session, [product_number], now=ctx.clock())
            return outcome

    outcome = await engine.offload(write)
    if prices_kept:
        await asyncio.to_thread(prices.request_product_prices)
    return outcome


@engine.workflow("products.refresh")
async def refresh_product(notification: dict[str, Any]) -> str:
    """ProductCreated / ProductChanged: fetch the product, upsert it, mark its prices for
    refresh."""
    number = str(
        notification.get("entityKey") or notification.get("details", {}).get("ProductNumber") or ""
    )
    number = number.removeprefix("sku:")
    if not number:
        return "skipped"
    return await _products_refresh_step(number)


async def refresh_products(numbers: list[str]) -> dict[str, records.Outcome]:
    """The product drain's refresh (flows/records.py): fetch each product Extend said changed,
    upsert them in one transaction and mark their prices for the coalesced price refresh."""
    ctx = current()
    # A product gone since its hook keeps its local copy: Extend has no product deletion event.
    outcomes, found = records.split(await records.fetch_all(numbers, _fetch), missing="skipped")
    prices_kept = ctx.settings.scope.prices == PricesScope.SYNC

    def write(session: Session, number: str, product: Product) -> str:
        outcome = apply(session, [product], now=ctx.clock())[0]
        if prices_kept:
            # A new or changed product may have new prices for every kept customer (Extend
            # sends no price event): marked with the product, refreshed in a coalesced batch.
            prices.mark_products(session, [number], now=ctx.clock())
        return outcome

    outcomes.update(await asyncio.to_thread(records.write_all, found, write))
    if prices_kept and found:
        await asyncio.to_thread(prices.request_product_prices)
    return outcomes


records.register(records.PRODUCT, refresh=refresh_products, policy=retry.ORDERS_REFRESH, bulk=True)


@engine.workflow("products.sweep")
async def scheduled_sweep(scheduled_at: Any = None, context: Any = None) -> dict[str, Any]:
    return await _products_sweep_step()


@engine.step()
async def _products_sweep_step() -> dict[str, Any]:
    return await scheduled("products", sweep_products)


def declare_schedules(settings: Settings) -> None:
    if settings.scope.products == ProductsScope.SYNC:
        dispatch.on(["ProductCreated", "ProductChanged"], records.handler(records.PRODUCT))
        engine.schedule(
            "products.sweep",
            scheduled_sweep,
            every=timedelta(minutes=settings.sync.products_sweep_minutes),
        )
    else:  # a Connector rebuilt in this process with products off: no sweep left behind
        engine.forget_schedule("products.sweep")
        dispatch.forget(["ProductCreated", "ProductChanged"])
