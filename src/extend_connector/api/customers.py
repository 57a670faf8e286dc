"""`POST /v1/customers`: the shop registers a customer (scope.customers = to_extend).

The answer is a local durable write (never waits on Extend): the creation workflow
`customer-<shopRef>` is enqueued in one transaction, so a shop that retries the same request
gets the same workflow and Extend gets one customer. `GET /v1/customer-registrations/{shopRef}` tells whether
it has reached Extend yet.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from extend_connector.api.auth import require_shop_token
from extend_connector.api.errors import ApiProblem
from extend_connector.flows import customers as flow
from extend_connector.flows.context import current
from extend_connector.settings import CustomersScope

router = APIRouter()


class _Model(BaseModel):
    # camelCase on the wire like the rest of /v1 (snake_case names are accepted too).
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class AddressIn(_Model):
    name: str
    address_line1: str
    zip_code: str
    city: str
    country_code: str = "SE"
    care_of: str | None = None
    address_line2: str | None = None
    phone: str | None = None
    email: str | None = None


class CustomerIn(_Model):
    shop_ref: str = Field(min_length=1, max_length=128, description="The shop's customer reference (identity).")
    name: str = Field(min_length=1, max_length=400)
    last_name: str | None = None
    organization_number: str | None = None
    customer_group: str | None = None
    price_list: str | None = None
    salesperson: str | None = None
    email: str | None = None
    phone: str | None = None
    delivery_address: AddressIn | None = None
    invoice_address: AddressIn | None = None


async def _token(request: Request) -> None:
    await require_shop_token(current().settings.webshop.api_token.get_secret_value())(request)


def _require_scope() -> None:
    if current().settings.scope.customers != CustomersScope.TO_EXTEND:
        raise ApiProblem(409, "scope", "customers are created in Extend only with scope.customers = to_extend")


@router.post("/v1/customers", status_code=202, dependencies=[Depends(_token)])
async def create_customer(body: CustomerIn) -> dict[str, Any]:
    """Accept a shop customer; it is created in Extend exactly once, in the background."""
    _require_scope()
    data = body.model_dump(mode="json")
    number = flow.extend_number_for(body.shop_ref)
    if number is None:
        with current().db.write() as session:
            flow.enqueue_creation(session, data)
    return {"shopRef": body.shop_ref, "customerNumber": number,
            "status": "in_extend" if number else "pending", "workflowId": f"customer-{body.shop_ref}"}


@router.get("/v1/customer-registrations/{shop_ref}", dependencies=[Depends(_token)])
async def get_customer(shop_ref: str) -> dict[str, Any]:
    number = flow.extend_number_for(shop_ref)
    return {"shopRef": shop_ref, "customerNumber": number, "status": "in_extend" if number else "pending"}
