"""The shop's read API (`/v1`): stock, products, prices and customers from the local copy.

It never calls Extend, so it answers the same whether Extend is up or down; what changes is
what each answer says about its freshness: `confirmedAt` (when Extend last confirmed the
value), `ageSeconds`, and `stale` (older than `webshop.stale_after_seconds`, never confirmed,
or Extend unreachable right now). Lists are paged (`page`, `pageSize`, `totalCount`); bad
parameters get a 4xx with the one error body (`api.errors.ApiError`).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from sqlalchemy.orm import Session

from extend_connector.api.deps import Context, shop_token
from extend_connector.api.errors import ApiError, ApiProblem
from extend_connector.api.fields import MAX_KEY, path_key, utc_representable
from extend_connector.flows import balances as balance_flow
from extend_connector.flows.context import FlowContext
from extend_connector.flows.freshness import Freshness, fleet_reachability, freshness, oldest
from extend_connector.store.models import BalanceRow, CustomerRow, PriceRow, ProductRow

MAX_NUMBERS = 500
MAX_PAGE_SIZE = 500


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ApiError, "description": "A parameter is not usable (the body says which)."},
    401: {"model": ApiError, "description": "Missing or wrong bearer token."},
    422: {"model": ApiError, "description": "A parameter does not have the expected form."},
}

router = APIRouter(
    prefix="/v1", tags=["read"], dependencies=[Depends(shop_token)], responses=_ERRORS
)


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)


class FreshnessOut(_Model):
    confirmed_at: datetime | None = Field(
        description="When Extend last confirmed this value (null: never)."
    )
    age_seconds: float | None = Field(description="Seconds since `confirmedAt`.")
    stale: bool = Field(
        description="Older than the threshold, never confirmed, or Extend unreachable now."
    )


class WarehouseStock(_Model):
    warehouse: str
    available: float = Field(description="Available balance (physical minus reserved).")
    physical: float | None = None
    reserved: float | None = None
    confirmed: bool = Field(
        description="False while the value comes from a notification not yet fetched."
    )
    changed_at: datetime | None = Field(None, description="Extend's change date of this balance.")
    freshness: FreshnessOut


class StockItem(_Model):
    product_number: str
    known: bool = Field(
        description="False: the local copy has no balance (in any warehouse) and no product with "
        "this number; `available` is then 0 and nothing is confirmed."
    )
    available: float = Field(
        description="Sum over the warehouses listed (the sell-from warehouses, or the one asked)."
    )
    warehouses: list[WarehouseStock]
    freshness: FreshnessOut = Field(description="The oldest confirmation among the warehouses.")


class Page(_Model):
    page: int
    page_size: int
    total_count: int
    extend_reachable: bool = Field(
        description="Whether Extend answers: the latest call of any connector process got an "
        "answer and no call has hung without one for long."
    )


class StockPage(Page):
    items: list[StockItem]


class ProductOut(_Model):
    product_number: str
    name: str
    unit: str | None = None
    ean: str | None = None
    vat_percent: Decimal | None = None
    notes: str | None = None
    customs_commodity_code: str | None = None
    supply_mode: str | None = None
    phase_out: bool = False
    changed_at: datetime | None = None
    freshness: FreshnessOut


class ProductPage(Page):
    items: list[ProductOut]


class PriceOut(_Model):
    customer_number: str
    product_number: str
    unit_price: Decimal
    currency: str
    list_price: Decimal | None = None
    discount_percent: Decimal | None = None
    price_list: str | None = None
    vat_percent: Decimal | None = None
    valid_to: datetime | None = None
    freshness: FreshnessOut


class PricePage(Page):
    items: list[PriceOut]


class AddressOut(_Model):
    name: str | None = None
    address_line1: str | None = None
    address_line2: str | None = None
    zip_code: str | None = None
    city: str | None = None
    country_code: str | None = None
    care_of: str | None = None
    phone: str | None = None
    email: str | None = None


def _address(stored: dict[str, Any] | None) -> AddressOut | None:
    """Stored addresses are the domain's snake_case documents; the shop reads camelCase."""
    if not stored:
        return None
    known = AddressOut.model_fields
    return AddressOut(**{k: v for k, v in stored.items() if k in known})


class CustomerOut(_Model):
    customer_number: str
    shop_ref: str | None = None
    name: str
    last_name: str | None = None
    organization_number: str | None = None
    customer_group: str | None = None
    price_list: str | None = None
    salesperson: str | None = None
    email: str | None = None
    phone: str | None = None
    delivery_address: AddressOut | None = None
    invoice_address: AddressOut | None = None
    changed_at: datetime | None = None
    extend_reachable: bool
    freshness: FreshnessOut


# --- parameters ---------------------------------------------------------------------------------

PageQ = Annotated[int, Query(ge=1, le=1_000_000, description="1-based page number.")]
PageSizeQ = Annotated[
    int, Query(alias="pageSize", ge=1, le=MAX_PAGE_SIZE, description="Items per page.")
]
# 500 numbers of up to 20 characters; the HTTP server accepts request lines of this size even
# when every character is percent-encoded (see service.MAX_REQUEST_LINE_BYTES).
NumbersQ = Annotated[
    str | None,
    Query(
        alias="productNumbers",
        max_length=10_500,
        description=f"Comma list of product numbers (at most {MAX_NUMBERS}).",
    ),
]


def _clean_key(value: str, name: str) -> str:
    """Keys are matched exactly; control characters can never be part of one (and PostgreSQL
    refuses NUL), so they are a client error, not a lookup."""
    return path_key(value, name, MAX_KEY)


def _numbers(raw: str | None) -> list[str] | None:
    if raw is None:
        return None
    numbers = list(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))
    if not numbers:
        raise ApiProblem(
            400,
            "invalid_parameter",
            "`productNumbers` is empty",
            [{"field": "productNumbers", "message": "give at least one product number"}],
        )
    if len(numbers) > MAX_NUMBERS:
        raise ApiProblem(
            400,
            "too_many_product_numbers",
            f"at most {MAX_NUMBERS} product numbers per request, got {len(numbers)}",
            [{"field": "productNumbers", "message": f"at most {MAX_NUMBERS}"}],
        )
    return [_clean_key(n, "productNumbers") for n in numbers]


def _aware(value: datetime | None, name: str) -> datetime | None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise ApiProblem(
            400,
            "invalid_parameter",
            f"`{name}` needs a UTC offset, e.g. 2025-01-31T12:00:00+01:00",
            [{"field": name, "message": "ISO-8601 with offset"}],
        )
    return utc_representable(value, name)


class _Now:
    """One instant and one reachability reading per answer, so its parts agree."""

    def __init__(self, ctx: FlowContext) -> None:
        self.now = ctx.clock()
        # Every process's view (a web process calls Extend for nothing itself); rows cached 1 s.
        self.reachable = fleet_reachability(ctx.db.engine).reachable
        self.stale_after = ctx.settings.webshop.stale_after_seconds

    def of(self, confirmed_at: datetime | None) -> Freshness:
        return freshness(
            confirmed_at,
            now=self.now,
            stale_after_seconds=self.stale_after,
            reachable=self.reachable,
        )

    @staticmethod
    def out(f: Freshness) -> FreshnessOut:
        return FreshnessOut(confirmed_at=f.confirmed_at, age_seconds=f.age_seconds, stale=f.stale)


def _dec(value: Decimal | None, *, places: int = 0) -> Decimal | None:
    """Stored amounts carry six decimals; show them without trailing zeros (at least `places`)."""
    if value is None:
        return None
    shown = value.normalize()
    exponent = shown.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -places:
        shown = shown.quantize(Decimal(1).scaleb(-places))
    return shown


def _count(session: Session, query: sa.Select[Any]) -> int:
    return int(
        session.execute(sa.select(sa.func.count()).select_from(query.subquery())).scalar_one()
    )


# --- stock ----------------------------------------------------------------------------------------


def _known_products(session: Session, numbers: list[str]) -> set[str]:
    """Those of `numbers` the local copy knows although no sell-from warehouse holds a balance:
    a balance in another warehouse, or a product record."""
    if not numbers:
        return set()
    found = set(
        session.scalars(
            sa.select(BalanceRow.product_number).where(BalanceRow.product_number.in_(numbers))
        )
    )
    found |= set(
        session.scalars(
            sa.select(ProductRow.product_number).where(ProductRow.product_number.in_(numbers))
        )
    )
    return found


def _unconfirmed(row: BalanceRow) -> bool:
    return (
        row.notified_at is not None
        and row.notified_available is not None
        and (row.confirmed_at is None or row.notified_at > row.confirmed_at)
    )


def _shown(row: BalanceRow) -> Decimal:
    """The value shown: a notified value not yet confirmed by a fetch, else the fetched one."""
    if _unconfirmed(row) and row.notified_available is not None:
        return row.notified_available
    return row.available


def _warehouse_stock(
    row: BalanceRow | None,
    warehouse: str,
    available: Decimal,
    clock: _Now,
    product: Freshness,
    known: bool = True,
) -> WarehouseStock:
    if row is None:
        # No row: Extend has no stock record here, as of the product's last confirmation; for a
        # product the copy does not know at all, nothing has confirmed anything.
        return WarehouseStock(
            warehouse=warehouse,
            available=float(available),
            confirmed=known,
            freshness=clock.out(product),
        )
    unconfirmed = _unconfirmed(row)
    return WarehouseStock(
        warehouse=warehouse,
        available=float(available),
        physical=None if row.physical is None else float(row.physical),
        reserved=None if row.reserved is None else float(row.reserved),
        confirmed=not unconfirmed,
        changed_at=row.extend_changed_at,
        freshness=clock.out(clock.of(row.confirmed_at)),
    )


@router.get(
    "/stock", response_model=StockPage, summary="Available stock per product (sell-from warehouses)"
)
def get_stock(
    ctx: Context,
    page: PageQ = 1,
    page_size: PageSizeQ = 100,
    product_numbers: NumbersQ = None,
    warehouse: Annotated[
        str | None, Query(max_length=64, description="Only this sell-from warehouse.")
    ] = None,
) -> StockPage:
    """Stock from the local copy, never from Extend: with `productNumbers`, those products (one the
    copy does not know at all says `known: false`, 0, nothing confirmed); without, every product
    with a balance, ordered by product number."""
    sell_from = balance_flow.sell_from(ctx.settings)
    if warehouse is not None and warehouse not in sell_from:
        raise ApiProblem(
            400,
            "unknown_warehouse",
            f"`warehouse` must be one of the sell-from warehouses {sell_from}",
            [{"field": "warehouse", "message": f"one of {sell_from}"}],
        )
    warehouses = [warehouse] if warehouse is not None else sell_from
    numbers = _numbers(product_numbers)
    clock = _Now(ctx)
    with ctx.db.read() as session:
        if numbers is not None:
            total = len(numbers)
            wanted = numbers[(page - 1) * page_size : page * page_size]
        else:
            listing = (
                sa.select(BalanceRow.product_number)
                .where(BalanceRow.warehouse.in_(warehouses))
                .group_by(BalanceRow.product_number)
            )
            total = _count(session, listing)
            wanted = list(
                session.scalars(
                    listing.order_by(BalanceRow.product_number)
                    .offset((page - 1) * page_size)
                    .limit(page_size)
                )
            )
        rows: dict[tuple[str, str], BalanceRow] = {}
        if wanted:
            for row in session.scalars(
                sa.select(BalanceRow).where(
                    BalanceRow.product_number.in_(wanted), BalanceRow.warehouse.in_(warehouses)
                )
            ):
                rows[(row.product_number, row.warehouse)] = row
        known = _known_products(
            session, [n for n in wanted if not any((n, w) in rows for w in warehouses)]
        )
        items = []
        for number in wanted:
            held = [rows[(number, w)] for w in warehouses if (number, w) in rows]
            is_known = bool(held) or number in known
            # A warehouse without a row had no stock record when the product was last fetched, so
            # the product's confirmation covers it; a product without any row was never confirmed.
            confirmed = oldest([r.confirmed_at for r in held]) if held else None
            item_freshness = clock.of(confirmed)
            shown = {w: _shown(r) for w in warehouses if (r := rows.get((number, w))) is not None}
            figure = balance_flow.stock_figure(number, warehouses, shown)
            per = [
                _warehouse_stock(rows.get((number, w)), w, value, clock, item_freshness, is_known)
                for w, value in figure.warehouses
            ]
            if any(not w.confirmed for w in per):
                item_freshness = Freshness(
                    confirmed_at=item_freshness.confirmed_at,
                    age_seconds=item_freshness.age_seconds,
                    stale=True,
                )
            items.append(
                StockItem(
                    product_number=number,
                    known=is_known,
                    available=float(figure.available),
                    warehouses=per,
                    freshness=clock.out(item_freshness),
                )
            )
    return StockPage(
        page=page,
        page_size=page_size,
        total_count=total,
        extend_reachable=clock.reachable,
        items=items,
    )


# --- products -------------------------------------------------------------------------------------


def _product(row: ProductRow, clock: _Now) -> ProductOut:
    return ProductOut(
        product_number=row.product_number,
        name=row.name,
        unit=row.unit,
        ean=row.ean,
        vat_percent=_dec(row.vat_percent),
        notes=row.notes,
        customs_commodity_code=row.customs_commodity_code,
        supply_mode=row.supply_mode,
        phase_out=row.phase_out,
        changed_at=row.extend_changed_at,
        freshness=clock.out(clock.of(row.confirmed_at)),
    )


@router.get("/products", response_model=ProductPage, summary="Products of the local copy, paged")
def list_products(
    ctx: Context,
    page: PageQ = 1,
    page_size: PageSizeQ = 100,
    product_numbers: NumbersQ = None,
    changed_since: Annotated[
        datetime | None,
        Query(alias="changedSince", description="Only products Extend changed at or after this."),
    ] = None,
    include_phased_out: Annotated[bool, Query(alias="includePhasedOut")] = True,
) -> ProductPage:
    numbers = _numbers(product_numbers)
    since = _aware(changed_since, "changedSince")
    clock = _Now(ctx)
    query = sa.select(ProductRow)
    if numbers is not None:
        query = query.where(ProductRow.product_number.in_(numbers))
    if since is not None:
        query = query.where(ProductRow.extend_changed_at >= since)
    if not include_phased_out:
        query = query.where(ProductRow.phase_out.is_(False))
    with ctx.db.read() as session:
        total = _count(session, query)
        rows = list(
            session.scalars(
                query.order_by(ProductRow.product_number)
                .offset((page - 1) * page_size)
                .limit(page_size)
            )
        )
        items = [_product(r, clock) for r in rows]
    return ProductPage(
        page=page,
        page_size=page_size,
        total_count=total,
        extend_reachable=clock.reachable,
        items=items,
    )


@router.get(
    "/products/{productNumber}",
    response_model=ProductOut,
    summary="One product of the local copy",
    responses={404: {"model": ApiError, "description": "Not in the local copy."}},
)
def get_product(
    ctx: Context, product_number: Annotated[str, Path(alias="productNumber")]
) -> ProductOut:
    number = _clean_key(product_number, "productNumber")
    clock = _Now(ctx)
    with ctx.db.read() as session:
        row = session.get(ProductRow, number)
        if row is None:
            raise ApiProblem(404, "not_found", f"product {number!r} is not in the local copy")
        return _product(row, clock)


# --- prices ---------------------------------------------------------------------------------------


@router.get(
    "/prices",
    response_model=PricePage,
    summary="Net prices of one customer (default: the anonymous one)",
)
def list_prices(
    ctx: Context,
    page: PageQ = 1,
    page_size: PageSizeQ = 100,
    customer_number: Annotated[
        str | None,
        Query(
            alias="customerNumber",
            max_length=64,
            description="Default: scope.default_customer_number.",
        ),
    ] = None,
    product_numbers: NumbersQ = None,
) -> PricePage:
    customer = _clean_key(
        customer_number or ctx.settings.scope.default_customer_number, "customerNumber"
    )
    numbers = _numbers(product_numbers)
    clock = _Now(ctx)
    query = sa.select(PriceRow).where(PriceRow.customer_number == customer)
    if numbers is not None:
        query = query.where(PriceRow.product_number.in_(numbers))
    with ctx.db.read() as session:
        total = _count(session, query)
        rows = list(
            session.scalars(
                query.order_by(PriceRow.product_number)
                .offset((page - 1) * page_size)
                .limit(page_size)
            )
        )
        items = [
            PriceOut(
                customer_number=r.customer_number,
                product_number=r.product_number,
                unit_price=_dec(r.unit_price, places=2),
                currency=r.currency,
                list_price=_dec(r.list_price, places=2),
                discount_percent=_dec(r.discount_percent),
                price_list=r.price_list,
                vat_percent=_dec(r.vat_percent),
                valid_to=r.valid_to,
                freshness=clock.out(clock.of(r.confirmed_at)),
            )
            for r in rows
        ]
    return PricePage(
        page=page,
        page_size=page_size,
        total_count=total,
        extend_reachable=clock.reachable,
        items=items,
    )


# --- customers ------------------------------------------------------------------------------------


@router.get(
    "/customers/{customerNumber}",
    response_model=CustomerOut,
    summary="One customer of the local copy, by Extend customer number or the shop's reference",
    responses={404: {"model": ApiError, "description": "Not in the local copy."}},
)
def get_customer(
    ctx: Context, customer_number: Annotated[str, Path(alias="customerNumber")]
) -> CustomerOut:
    key = _clean_key(customer_number, "customerNumber")
    clock = _Now(ctx)
    with ctx.db.read() as session:
        row = (
            session.get(CustomerRow, key)
            or session.scalars(sa.select(CustomerRow).where(CustomerRow.shop_ref == key)).first()
        )
        if row is None:
            raise ApiProblem(404, "not_found", f"customer {key!r} is not in the local copy (yet)")
        return CustomerOut(
            customer_number=row.customer_number,
            shop_ref=row.shop_ref,
            name=row.name,
            last_name=row.last_name,
            organization_number=row.organization_number,
            customer_group=row.customer_group,
            price_list=row.price_list,
            salesperson=row.salesperson,
            email=row.email,
            phone=row.phone,
            delivery_address=_address(row.delivery_address),
            invoice_address=_address(row.invoice_address),
            changed_at=row.extend_changed_at,
            extend_reachable=clock.reachable,
            freshness=clock.out(clock.of(row.confirmed_at)),
        )
