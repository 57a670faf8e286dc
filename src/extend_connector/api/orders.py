"""Order intake for the headless shop: `POST /v1/orders`, `GET /v1/orders/{ref}`, cancellations.

The shop never waits on Extend: an accepted order is a local durable write answered 202 with
its local status; Extend hears about it from the submit job. Idempotent on `shopRef`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from starlette.concurrency import run_in_threadpool

from extend_connector.api.deps import shop_token
from extend_connector.api.errors import ApiProblem
from extend_connector.api.fields import (
    MAX_KEY,
    AddressIn,
    path_key,
    shop_ref_field,
    text,
    utc_representable,
)
from extend_connector.flows import orders as flow

router = APIRouter(prefix="/v1/orders", tags=["orders"], dependencies=[Depends(shop_token)])


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class OrderLineIn(_Model):
    product_number: str = text(MAX_KEY, min_length=1)
    quantity: Decimal = Field(gt=0, max_digits=14, decimal_places=6)
    unit_price: Decimal | None = Field(
        None,
        ge=0,
        max_digits=20,
        decimal_places=6,
        description="The shop's price, sent unchanged; omit to let Extend price it.",
    )
    vat_percent: Decimal | None = Field(None, ge=0, le=100, max_digits=9, decimal_places=6)
    unit: str | None = text(32, None)
    warehouse: str | None = text(
        MAX_KEY, None, description="Default: the first of extend.warehouses."
    )


class OrderIn(_Model):
    """An order as the shop placed it. `shopRef` is its identity: posting it again is harmless."""

    shop_ref: str = shop_ref_field(
        100,
        description="The shop's order reference (identity): letters, digits and "
        "`._:-`, starting with a letter or digit.",
    )
    lines: list[OrderLineIn] = Field(min_length=1, max_length=1000)
    placed_at: AwareDatetime | None = None
    customer_number: str | None = text(
        MAX_KEY, None, description="Extend customer number, when known."
    )
    shop_customer_ref: str | None = shop_ref_field(
        128, None, description="The shop's customer id (scope to_extend)."
    )
    currency: str = Field("SEK", min_length=3, max_length=3, pattern=r"^[A-Za-z]{3}$")
    asked_delivery_date: AwareDatetime | None = None
    delivery_address: AddressIn | None = None
    invoice_address: AddressIn | None = None
    payment_type: str | None = text(16, None)
    email: str | None = text(320, None)
    notes: str | None = text(2000, None, multiline=True)


class CancelLinesIn(_Model):
    lines: list[Annotated[int, Field(ge=1, le=1000)]] = Field(
        min_length=1, max_length=1000, description="1-based line numbers of the order as posted."
    )


def _payload(order: OrderIn) -> dict[str, Any]:
    utc_representable(order.placed_at, "placedAt")
    utc_representable(order.asked_delivery_date, "askedDeliveryDate")
    data: dict[str, Any] = order.model_dump(mode="json", by_alias=True, exclude_none=True)
    return data


@router.post("", status_code=202, summary="Receive a shop order (idempotent on shopRef)")
async def post_order(order: OrderIn) -> JSONResponse:
    payload = _payload(order)
    try:
        intake = await run_in_threadpool(flow.accept_order, payload)
    except flow.OrderConflict as exc:
        raise ApiProblem(
            409, "order_conflict", str(exc), [{"field": "shopRef", "message": str(exc)}]
        ) from exc
    if intake.problems:
        raise ApiProblem(
            422,
            "order_parked",
            f"order {intake.shop_ref} cannot be sent to Extend as it is; it is stored and parked "
            f"(failure {intake.failure_id}): fix the cause, then `extend-connector failures retry "
            f"{intake.failure_id}`",
            [p.as_json() for p in intake.problems],
        )
    body = {"shopRef": intake.shop_ref, "status": intake.status, "created": intake.created}
    return JSONResponse(body, status_code=202 if intake.created else 200)


@router.get(
    "/{shop_ref}", summary="The order as the connector knows it (status, shipments, tracking)"
)
async def get_order(shop_ref: str) -> dict[str, Any]:
    ref = path_key(shop_ref, "shopRef", 128)
    try:
        return await run_in_threadpool(flow.get_order_view, ref)
    except flow.UnknownOrder as exc:
        raise ApiProblem(404, "not_found", str(exc)) from exc


async def _cancel(shop_ref: str, lines: list[int] | None) -> JSONResponse:
    ref = path_key(shop_ref, "shopRef", 128)
    try:
        view = await run_in_threadpool(flow.request_cancel, ref, lines)
    except flow.UnknownOrder as exc:
        raise ApiProblem(404, "not_found", str(exc)) from exc
    except flow.ChangeRefused as exc:
        raise ApiProblem(409, "order_locked", str(exc)) from exc
    return JSONResponse(view, status_code=202)


@router.post(
    "/{shop_ref}/cancel", status_code=202, summary="Cancel the whole order (before Reserved)"
)
async def cancel_order(shop_ref: str) -> JSONResponse:
    return await _cancel(shop_ref, None)


@router.post("/{shop_ref}/lines/cancel", status_code=202, summary="Cancel lines (before Reserved)")
async def cancel_lines(shop_ref: str, body: CancelLinesIn) -> JSONResponse:
    return await _cancel(shop_ref, sorted(set(body.lines)))
