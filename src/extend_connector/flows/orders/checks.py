"""Checking an order against the local copy of Extend's master data before it is sent."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.orm import Session

from extend_connector.flows.orders.base import Problem
from extend_connector.flows.orders.payload import ShopOrder
from extend_connector.settings import CustomersScope, ProductsScope, Settings
from extend_connector.store.models import CursorRow, CustomerRow, IdMappingRow, ProductRow


def _fully_loaded(session: Session, cursor: str) -> bool:
    """Whether a sweep of this master data has completed at least once. Before that, the local
    copy holds only what webhooks brought, and a record missing from it proves nothing."""
    row = session.get(CursorRow, cursor)
    return row is not None and row.high_water_mark is not None


def _mapped_customer(session: Session, shop_customer_ref: str) -> str | None:
    mapping = session.get(IdMappingRow, ("customer", shop_customer_ref))
    if mapping is not None:
        return mapping.extend_id
    row = session.scalars(
        sa.select(CustomerRow).where(CustomerRow.shop_ref == shop_customer_ref)
    ).first()
    return row.customer_number if row is not None else None


def check_order(
    session: Session,
    settings: Settings,
    order: ShopOrder,
    known_in_extend: Callable[[str], bool] | None = None,
) -> tuple[list[Problem], str | None]:
    """Problems that make the order invalid, and the Extend customer number (None: the
    shop's customer is still being created in Extend, scope `to_extend`).

    Products (customers) are checked when that master data is synced and a full sweep has
    completed (before that the copy holds only what webhooks brought); `known_in_extend` lets a
    replay accept a product Extend has although our copy does not yet.
    """
    problems: list[Problem] = []
    warehouses = settings.extend.warehouses
    check_products = settings.scope.products == ProductsScope.SYNC and _fully_loaded(
        session, "products"
    )
    numbers = sorted(order.product_numbers())
    known = {}
    if check_products and numbers:
        known = {
            p.product_number: p
            for p in session.scalars(
                sa.select(ProductRow).where(ProductRow.product_number.in_(numbers))
            )
        }
    for line in order.lines:
        where = f"lines[{line.number - 1}]"
        warehouse = line.warehouse
        if warehouse is not None and warehouse not in warehouses:
            problems.append(
                Problem(
                    field=f"{where}.warehouse",
                    message=f"warehouse {warehouse!r} is not one the shop sells from "
                    f"(extend.warehouses: {', '.join(warehouses)})",
                )
            )
        if check_products:
            number = line.product_number
            product = known.get(number)
            if product is None and not (known_in_extend is not None and known_in_extend(number)):
                problems.append(
                    Problem(
                        field=f"{where}.productNumber",
                        message=f"product {number!r} is not known in Extend; create it there "
                        "(or fix the shop's product number), then retry",
                    )
                )
            elif product is not None and product.phase_out:
                problems.append(
                    Problem(
                        field=f"{where}.productNumber",
                        message=f"product {number!r} is phased out in Extend and cannot be "
                        "ordered; replace or remove the line",
                    )
                )
    scope = settings.scope.customers
    given = order.customer_number
    shop_customer = order.shop_customer_ref
    customer: str | None = settings.scope.default_customer_number
    if scope == CustomersScope.OFF:
        customer = given or settings.scope.default_customer_number
    elif scope == CustomersScope.FROM_EXTEND:
        if given:
            customer = given
            if _fully_loaded(session, "customers") and session.get(CustomerRow, given) is None:
                problems.append(
                    Problem(
                        field="customerNumber",
                        message=f"customer {given!r} is not in the local copy of Extend's "
                        "customers; check the number or sync customers, then retry",
                    )
                )
        elif shop_customer:
            customer = _mapped_customer(session, shop_customer)
            if customer is None:
                problems.append(
                    Problem(
                        field="shopCustomerRef",
                        message=f"shop customer {shop_customer!r} has no Extend customer "
                        "(customers come from Extend in this setup)",
                    )
                )
    elif given:
        customer = given
    elif shop_customer:
        customer = _mapped_customer(session, shop_customer)  # None: wait for its creation job
    return problems, customer
