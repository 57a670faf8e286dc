"""`POST /v1/customers`: the shop registers a customer (scope.customers = to_extend).

The answer is a local durable write (never waits on Extend): the creation workflow
`customer-<shopRef>` is enqueued in one transaction, so a shop that retries the same request
gets the same workflow and Extend gets one customer. `GET /v1/customer-registrations/{shopRef}`
tells whether it has reached Extend yet.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel
from starlette.concurrency import run_in_threadpool

from extend_connector.api.deps import Context, shop_token
from extend_connector.api.errors import ApiError, ApiProblem
from extend_connector.api.fields import MAX_KEY, AddressIn, path_key, shop_ref_field, text
from extend_connector.flows import customers as flow
from extend_connector.settings import CustomersScope

router = APIRouter()


class _Model(BaseModel):
    # camelCase on the wire like the rest of /v1 (snake_case names are accepted too).
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class CustomerIn(_Model):
    shop_ref: str = shop_ref_field(
        128,
        description="The shop's customer reference (identity): letters, digits "
        "and `._:-`, starting with a letter or digit.",
    )
    name: str = text(400, min_length=1)
    last_name: str | None = text(200, None)
    organization_number: str | None = text(MAX_KEY, None)
    customer_group: str | None = text(MAX_KEY, None)
    price_list: str | None = text(MAX_KEY, None)
    salesperson: str | None = text(MAX_KEY, None)
    email: str | None = text(320, None)
    phone: str | None = text(64, None)
    delivery_address: AddressIn | None = None
    invoice_address: AddressIn | None = None


def _require_scope(ctx: Context) -> None:
    if ctx.settings.scope.customers != CustomersScope.TO_EXTEND:
        raise ApiProblem(
            409, "scope", "customers are created in Extend only with scope.customers = to_extend"
        )


@router.post(
    "/v1/customers",
    status_code=202,
    dependencies=[Depends(shop_token)],
    responses={
        200: {"description": "The same customer was registered before (nothing new started)."},
        409: {
            "model": ApiError,
            "description": "This shopRef was registered with other data, "
            "or customers are not created in Extend here.",
        },
    },
)
async def create_customer(body: CustomerIn, ctx: Context) -> JSONResponse:
    """Accept a shop customer; it is created in Extend exactly once, in the background.

    Idempotent on `shopRef`: 202 the first time, 200 for an identical repeat, 409 for the same
    reference with other data."""
    _require_scope(ctx)
    data = body.model_dump(mode="json")
    try:
        registration = await run_in_threadpool(flow.register, data)
    except flow.CustomerConflict as exc:
        raise ApiProblem(
            409, "customer_conflict", str(exc), [{"field": "shopRef", "message": str(exc)}]
        ) from exc
    number = registration.customer_number
    return JSONResponse(
        {
            "shopRef": body.shop_ref,
            "customerNumber": number,
            "status": "in_extend" if number else "pending",
            "created": registration.created,
            "workflowId": f"customer-{body.shop_ref}",
        },
        status_code=202 if registration.created else 200,
    )


@router.get("/v1/customer-registrations/{shop_ref}", dependencies=[Depends(shop_token)])
async def get_customer(shop_ref: str) -> dict[str, Any]:
    ref = path_key(shop_ref, "shopRef", 128)
    # A database read: off the event loop, which every request of the process shares.
    number = await run_in_threadpool(flow.extend_number_for, ref)
    return {
        "shopRef": ref,
        "customerNumber": number,
        "status": "in_extend" if number else "pending",
    }
