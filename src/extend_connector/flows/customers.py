"""Customer master data, per `scope.customers`.

- `from_extend`: `CustomerCreated` / `CustomerChanged` mark the customer dirty and the customer
  drain (`refresh_customers`, flows/records.py) refetches the marked ones in batches; a change-date
  sweep (list, then fetch each changed one) reconciles; the local copy keeps addresses, customer
  group, price list, salesperson and organisation number; the shop is told of real changes.
- `to_extend`: the shop registers a customer (`POST /v1/customers`), a durable workflow
  (id `customer-<shopRef>`) creates it in Extend exactly once and stores the mapping
  `id_mappings(kind='customer')`. After a lost answer (OutcomeUnknown) or a duplicate refusal it
  looks the customer up (customers changed since the workflow began, matched on organisation
  number or e-mail) before it posts again. Orders wait for `extend_number_for(shop_ref)`.
- `off`: nothing is synced; orders use `scope.default_customer_number`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session

from extend_connector import engine
from extend_connector.domain import Address, Customer
from extend_connector.extend import (
    BusinessConflict,
    ExtendError,
    NotFound,
    OutcomeUnknown,
    ValidationFailed,
)
from extend_connector.flows import dispatch, outbox, prices, records, retry
from extend_connector.flows.context import current
from extend_connector.flows.failures import park as park_failure
from extend_connector.flows.sync import (
    Listed,
    Progress,
    SweepResult,
    Tally,
    scheduled,
    sweep_changed,
)
from extend_connector.settings import CustomersScope, PricesScope, Settings
from extend_connector.store.models import CustomerRow, IdMappingRow
from extend_connector.webshop import EventType

log = structlog.get_logger("extend_connector.flows.customers")

QUEUE = "customers"
CURSOR = "customers"
MAPPING_KIND = "customer"
FAILURE_KIND = "customer_create"
MAX_CREATE_ATTEMPTS = 5  # lost answers in a row, each looked up, before a person must look
engine.queue(QUEUE, partition_concurrency=1, worker_concurrency=32, poll_seconds=0.5)


# --- the local copy --------------------------------------------------------------------------


def customer_document(customer: Customer) -> dict[str, Any]:
    doc = asdict(customer)
    doc["changed_at"] = customer.changed_at.isoformat() if customer.changed_at else None
    return doc


def content_hash(customer: Customer) -> str:
    doc = customer_document(customer)
    doc.pop("changed_at")
    doc.pop("shop_ref")
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def _address_json(address: Address | None) -> dict[str, Any] | None:
    return None if address is None else asdict(address)


def stored_changed(session: Session, numbers: list[str]) -> dict[str, datetime | None]:
    rows = session.execute(
        sa.select(CustomerRow.customer_number, CustomerRow.extend_changed_at).where(
            CustomerRow.customer_number.in_(numbers)
        )
    )
    return {number: changed for number, changed in rows}


def apply(
    session: Session, customers: list[Customer], *, now: datetime, dry_run: bool = False
) -> list[str]:
    """Upsert customers; publish `customer.changed` for real changes; one outcome per customer."""
    outcomes = []
    for customer in customers:
        row = session.get(CustomerRow, customer.customer_number)
        digest = content_hash(customer)
        old = None if row is None else row.document.get("_hash")
        outcome = "created" if row is None else ("unchanged" if old == digest else "updated")
        outcomes.append(outcome)
        if dry_run:
            continue
        if row is None:
            row = CustomerRow(customer_number=customer.customer_number)
            session.add(row)
        if outcome != "unchanged":
            row.name = customer.name
            row.last_name = customer.last_name
            row.organization_number = customer.organization_number
            row.customer_group = customer.customer_group
            row.price_list = customer.price_list
            row.salesperson = customer.salesperson
            row.email = customer.email
            row.phone = customer.phone
            row.delivery_address = _address_json(customer.delivery_address)
            row.invoice_address = _address_json(customer.invoice_address)
            row.document = {**customer_document(customer), "_hash": digest}
            if customer.shop_ref is not None:
                row.shop_ref = customer.shop_ref
            doc = customer_document(replace(customer, shop_ref=row.shop_ref))
            outbox.publish(
                session, EventType.CUSTOMER_CHANGED, f"customer:{customer.customer_number}", doc
            )
        row.extend_changed_at = customer.changed_at
        row.confirmed_at = now
    return outcomes


def extend_number_for(shop_ref: str) -> str | None:
    """The Extend customer number of a shop customer, once it exists in Extend (else None)."""
    with current().db.read() as session:
        row = session.get(IdMappingRow, (MAPPING_KIND, shop_ref))
        return None if row is None else row.extend_id


async def _fetch(number: str) -> Customer | None:
    try:
        return await current().extend().get_customer(number)
    except NotFound:
        return None


async def _listing(since: datetime | None, tally: Tally) -> AsyncIterator[Listed]:
    async for customer in current().extend().customers_changed_since(since, progress=tally.page):
        yield Listed(key=customer.customer_number, changed_at=customer.changed_at)


async def sweep_customers(
    full: bool = False, dry_run: bool = False, progress: Progress | None = None
) -> SweepResult:
    """List customers changed since the cursor (all when `full` or first run), fetch each changed
    one."""
    return await sweep_changed(
        "customers",
        cursor=CURSOR,
        listing=_listing,
        stored_changed=stored_changed,
        fetch=_fetch,
        apply=apply,
        full=full,
        dry_run=dry_run,
        progress=progress,
    )


# --- from_extend jobs ------------------------------------------------------------------------


@engine.step()
async def _customers_refresh_step(customer_number: str) -> str:
    ctx = current()
    customer = await _fetch(customer_number)
    if customer is None:
        return "skipped"

    def write() -> str:
        with ctx.db.write() as session:
            return apply(session, [customer], now=ctx.clock())[0]

    return await engine.offload(write)


@engine.workflow("customers.refresh")
async def refresh_customer(notification: dict[str, Any]) -> str:
    """CustomerCreated / CustomerChanged: fetch, upsert, and refresh that customer's prices."""
    number = str(notification.get("entityKey") or "").removeprefix("customer:")
    if not number:
        return "skipped"
    outcome = await _customers_refresh_step(number)
    if outcome in ("created", "updated") and current().settings.scope.prices == PricesScope.SYNC:
        prices.enqueue_customer_prices(number, reason=str(notification.get("deliveryId", "")))
    return outcome


async def refresh_customers(numbers: list[str]) -> dict[str, records.Outcome]:
    """The customer drain's refresh (flows/records.py): fetch each customer Extend said changed,
    upsert them in one transaction and, when prices are kept, queue a price refresh for each
    created or changed one (with the upsert)."""
    ctx = current()
    outcomes, found = records.split(await records.fetch_all(numbers, _fetch), missing="skipped")
    prices_kept = ctx.settings.scope.prices == PricesScope.SYNC

    def write(session: Session, number: str, customer: Customer) -> str:
        outcome = apply(session, [customer], now=ctx.clock())[0]
        if outcome in ("created", "updated") and prices_kept:
            # Named after the version of the customer: a pass run again queues nothing twice.
            changed = customer.changed_at
            reason = changed.isoformat() if changed is not None else "changed"
            prices.enqueue_customer_prices(number, reason=reason, session=session)
        return outcome

    outcomes.update(await asyncio.to_thread(records.write_all, found, write))
    return outcomes


records.register(
    records.CUSTOMER, refresh=refresh_customers, policy=retry.ORDERS_REFRESH, bulk=True
)


@engine.workflow("customers.sweep")
async def scheduled_sweep(scheduled_at: Any = None, context: Any = None) -> dict[str, Any]:
    return await _customers_sweep_step()


@engine.step()
async def _customers_sweep_step() -> dict[str, Any]:
    return await scheduled("customers", sweep_customers)


# --- to_extend: create in Extend exactly once ------------------------------------------------


def shop_customer(data: Mapping[str, Any]) -> Customer:
    """The shop's customer (JSON of `POST /v1/customers`, snake_case) as a domain value."""

    def address(value: Any) -> Address | None:
        return Address(**value) if isinstance(value, dict) else None

    return Customer(
        customer_number="",
        name=str(data["name"]),
        last_name=data.get("last_name"),
        organization_number=data.get("organization_number"),
        customer_group=data.get("customer_group"),
        price_list=data.get("price_list"),
        salesperson=data.get("salesperson"),
        email=data.get("email"),
        phone=data.get("phone"),
        delivery_address=address(data.get("delivery_address")),
        invoice_address=address(data.get("invoice_address")),
        shop_ref=str(data["shop_ref"]),
    )


def _digits(value: str | None) -> str:
    return "".join(ch for ch in (value or "") if ch.isdigit())


def _matches(candidate: Customer, wanted: Customer) -> bool:
    if _digits(wanted.organization_number):
        return _digits(candidate.organization_number) == _digits(wanted.organization_number)
    return bool(
        wanted.email and candidate.email and candidate.email.lower() == wanted.email.lower()
    )


@engine.step()
def _customers_began() -> str:
    return current().clock().isoformat()


@engine.step()
async def _customers_lookup(data: dict[str, Any], since_iso: str) -> str | None:
    """Find the customer in Extend among those changed since the workflow began (minus overlap)."""
    ctx = current()
    wanted = shop_customer(data)
    since = datetime.fromisoformat(since_iso) - timedelta(seconds=ctx.settings.sync.overlap_seconds)
    async for candidate in ctx.extend().customers_changed_since(since):
        if _matches(candidate, wanted):
            return candidate.customer_number
    return None


@dataclass(frozen=True, kw_only=True, slots=True)
class Posted:
    """Extend created the customer (`_customers_post`'s result): its document as Extend answered
    (`customer_document`)."""

    customer: dict[str, Any]

    @property
    def customer_number(self) -> str:
        return str(self.customer["customer_number"])

    def as_json(self) -> dict[str, Any]:
        return {"outcome": "created", "customer": self.customer}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Posted:
        return cls(customer=dict(data["customer"]))


@dataclass(frozen=True, kw_only=True, slots=True)
class NotPosted:
    """Extend did not say it created the customer (`_customers_post`'s result): `unknown` (the
    answer was lost), `conflict` (refused as a duplicate) or `invalid` (refused data)."""

    result: str  # unknown, conflict, invalid
    error: str

    def as_json(self) -> dict[str, Any]:
        return {"outcome": self.result, "error": self.error}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NotPosted:
        return cls(result=str(data["outcome"]), error=str(data.get("error") or ""))


def post_from_json(data: Mapping[str, Any]) -> Posted | NotPosted | retry.Failure:
    """What `_customers_post` returned, read back from its recorded JSON."""
    match data.get("outcome"):
        case "created":
            return Posted.from_json(data)
        case "unknown" | "conflict" | "invalid":
            return NotPosted.from_json(data)
        case _:
            return retry.Failure.from_json(data)


@engine.step()
async def _customers_post(data: dict[str, Any]) -> dict[str, Any]:
    """POST Customers once; the outcome is data so the workflow decides (never a blind retry)."""
    try:
        created = await current().extend().create_customer(shop_customer(data))
    except OutcomeUnknown as exc:
        return NotPosted(result="unknown", error=str(exc)).as_json()
    except BusinessConflict as exc:
        return NotPosted(result="conflict", error=str(exc)).as_json()
    except ValidationFailed as exc:
        return NotPosted(result="invalid", error=str(exc)).as_json()
    except ExtendError as exc:
        # Technical or throttled (`retry.decide`): nothing was stored, or Extend said so; wait
        # and post again, for as long as the policy allows.
        return retry.decide(exc).as_json()
    return Posted(customer=customer_document(created)).as_json()


@engine.step()
def _customers_store(
    data: dict[str, Any], extend_number: str, created: dict[str, Any] | None
) -> None:
    ctx = current()
    ref = str(data["shop_ref"])
    with ctx.db.write() as session:
        if session.get(IdMappingRow, (MAPPING_KIND, ref)) is None:
            session.add(
                IdMappingRow(
                    kind=MAPPING_KIND, shop_ref=ref, extend_id=extend_number, created_at=ctx.clock()
                )
            )
        customer = replace(
            shop_customer(data),
            customer_number=extend_number,
            changed_at=datetime.fromisoformat(created["changed_at"])
            if created and created.get("changed_at")
            else None,
        )
        row = session.get(CustomerRow, extend_number)
        if row is None:
            apply(session, [customer], now=ctx.clock())
        elif row.shop_ref is None:
            row.shop_ref = ref


@engine.step()
def _customers_park(data: dict[str, Any], reason: str, error: str) -> None:
    ctx = current()
    with ctx.db.write() as session:
        park_failure(
            session,
            kind=FAILURE_KIND,
            key=f"customer:{data['shop_ref']}",
            reason=reason,
            message=error,
            detail={"error": error},
            payload=data,
            now=ctx.clock(),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class Stored:
    """The customer exists in Extend and is mapped (`create_in_extend`'s result): `created` by
    this workflow, or `found` by the lookup after a lost answer or a duplicate refusal."""

    result: str  # created, found
    customer_number: str

    def as_json(self) -> dict[str, Any]:
        return {"outcome": self.result, "customer_number": self.customer_number}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Stored:
        return cls(result=str(data["outcome"]), customer_number=str(data["customer_number"]))


@dataclass(frozen=True, kw_only=True, slots=True)
class Parked:
    """A person must look (`create_in_extend`'s result): parked with this reason
    (extend_unavailable, validation, conflict, outcome_unknown)."""

    reason: str

    def as_json(self) -> dict[str, Any]:
        return {"outcome": "parked", "reason": self.reason}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Parked:
        return cls(reason=str(data["reason"]))


def creation_from_json(data: Mapping[str, Any]) -> Stored | Parked:
    """What `create_in_extend` returned, read back from its recorded JSON."""
    if data.get("outcome") == "parked":
        return Parked.from_json(data)
    return Stored.from_json(data)


async def _park(data: dict[str, Any], reason: str, error: str) -> dict[str, Any]:
    await engine.offload(_customers_park, data, reason, error)
    return Parked(reason=reason).as_json()


@engine.workflow("customers.create_in_extend")
async def create_in_extend(data: dict[str, Any]) -> dict[str, Any]:
    """Create the shop's customer in Extend exactly once; returns `Stored` or `Parked` as JSON."""
    began = await engine.offload(_customers_began)
    unknown = 0
    failures = 0
    waited = 0.0
    while unknown < MAX_CREATE_ATTEMPTS:
        answer = post_from_json(await _customers_post(data))
        policy = retry.policy(retry.CUSTOMERS_CREATE)
        match answer:
            case retry.Failure() as failure:
                failures += 1
                action = policy.next(failure, attempt=failures, waited=waited)
                if not isinstance(action, retry.RetryAfter):
                    return await _park(data, "extend_unavailable", failure.error)
                waited += await retry.pause(
                    action.seconds, policy=policy, retry_after=failure.retry_after
                )
                continue
            case Posted() as posted:
                number = posted.customer_number
                await engine.offload(_customers_store, data, number, posted.customer)
                return Stored(result="created", customer_number=number).as_json()
            case NotPosted(result="invalid", error=error):
                return await _park(data, "validation", error)
            case NotPosted() as refused:
                pass
        failures = 0
        # Lost answer or duplicate: the customer may already be ours in Extend.
        found = await _customers_lookup(data, began)
        if found is not None:
            await engine.offload(_customers_store, data, found, None)
            return Stored(result="found", customer_number=found).as_json()
        if refused.result == "conflict":
            return await _park(data, "conflict", refused.error)
        unknown += 1
        # The lost-answer waits (1, 2, 4 ... s) do not count against the outage budget.
        await retry.pause(policy.delay(unknown), policy=policy)
    return await _park(
        data, "outcome_unknown", "no answer after repeated attempts and not found by lookup"
    )


class CustomerConflict(Exception):
    """The shop reference was registered before with other data."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Registration:
    created: bool  # False: the same customer had been registered before
    customer_number: str | None  # the Extend number, once it exists


def _canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _registered(ref: str) -> dict[str, Any] | None:
    """The data the creation workflow of `ref` was started with (None: none was started)."""
    info = current().engine.get_status(f"customer-{ref}")
    if info is None or not info.args or not isinstance(info.args[0], dict):
        return None
    return info.args[0]


def _check_same(ref: str, data: dict[str, Any], registered: dict[str, Any]) -> None:
    if _canonical(registered) != _canonical(data):
        raise CustomerConflict(
            f"customer {ref!r} was already registered with "
            "different data; a shop customer reference "
            "identifies one customer (change it in Extend, or use a new reference)"
        )


def register(data: dict[str, Any]) -> Registration:
    """Register a shop customer (JSON of `POST /v1/customers`, snake_case): start its creation
    workflow once. Idempotent on the shop reference; raises CustomerConflict when the reference
    was registered with other data (also when two different bodies race: the workflow that won
    decides, and the loser hears of it)."""
    ref = str(data["shop_ref"])
    registered = _registered(ref)
    if registered is not None:
        _check_same(ref, data, registered)
        return Registration(created=False, customer_number=extend_number_for(ref))
    number = extend_number_for(ref)
    if number is None:
        with current().db.write(durable=True, urgent=True) as session:  # the shop waits
            enqueue_creation(session, data)
        registered = _registered(ref)
        if registered is not None:
            _check_same(ref, data, registered)
    return Registration(created=number is None, customer_number=number)


def enqueue_creation(session: Session, data: dict[str, Any]) -> str:
    """In the caller's transaction: start the creation workflow (idempotent on the shop
    reference)."""
    ref = str(data["shop_ref"])
    return current().engine.enqueue_in_transaction(
        session,
        create_in_extend,
        data,
        queue=QUEUE,
        partition_key=f"customer:{ref}",
        workflow_id=f"customer-{ref}",
    )


def declare_schedules(settings: Settings) -> None:
    if settings.scope.customers == CustomersScope.FROM_EXTEND:
        dispatch.on(["CustomerCreated", "CustomerChanged"], records.handler(records.CUSTOMER))
        engine.schedule(
            "customers.sweep",
            scheduled_sweep,
            every=timedelta(minutes=settings.sync.customers_sweep_minutes),
        )
    else:  # a Connector rebuilt in this process with another scope: no sweep left behind
        engine.forget_schedule("customers.sweep")
        dispatch.forget(["CustomerCreated", "CustomerChanged"])
