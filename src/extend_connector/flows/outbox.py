"""Tell the shop, durably: an outbox row per real change, delivered by a job per row.

`publish()` is called inside the same write transaction that changed the local copy, so the
shop is told if and only if the change committed. Delivery is a durable workflow on a queue
partitioned by record key (events about one record arrive in order); a shop that is down is
retried with capped backoff (`flows.retry`, policy `shop.deliver_event`: 1 s doubling to 5 min,
the shop's Retry-After honoured) for up to 72 h, a shop that refuses an event
gets it parked (kind `shop_delivery`) for a person to look at.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from extend_connector import engine
from extend_connector.flows import failures, retry
from extend_connector.flows.context import current
from extend_connector.store.models import OutboxRow
from extend_connector.webshop import (
    EventType,
    ShopEvent,
    WebshopError,
)

QUEUE = "shop-delivery"
FAILURE_KIND = "shop_delivery"
engine.queue(QUEUE, partition_concurrency=1, worker_concurrency=32, poll_seconds=0.2)


def new_event_id() -> str:
    """A globally unique event id: a shop that dedupes on `webhook-id` must never see one twice
    for two different events, also not across a new database (row ids restart at 1)."""
    return f"evt_{uuid.uuid4().hex}"


def event_id_of(row: OutboxRow) -> str:
    # Rows written before event ids were stored keep the id they may have been delivered with.
    return row.event_id or f"evt_{row.id}"


def publish(session: Session, event_type: EventType, key: str, data: dict[str, Any]) -> int | None:
    """Record an event for the shop in the caller's transaction; returns the outbox id.

    Without a configured shop webhook URL (and no adapter injected) events are still kept
    in the outbox for the read API's change feed but no delivery job is enqueued.
    """
    ctx = current()
    row = OutboxRow(
        event_id=new_event_id(),
        event_type=event_type.value,
        key=key,
        payload=engine.to_json_value(data),
        created_at=ctx.clock(),
    )
    session.add(row)
    session.flush()
    if ctx.deliver_to_shop:
        ctx.engine.enqueue_in_transaction(
            session,
            deliver,
            row.id,
            queue=QUEUE,
            partition_key=key,
            workflow_id=f"shop-event-{row.id}",
        )
    return row.id


def publish_many(
    session: Session, event_type: EventType, events: list[tuple[str, dict[str, Any]]]
) -> list[int]:
    """`publish` for many (key, data) events at once: one multi-row insert instead of one flush
    each (a balance flush can tell the shop about thousands of products)."""
    if not events:
        return []
    ctx = current()
    now = ctx.clock()
    rows = [
        {
            "event_id": new_event_id(),
            "event_type": event_type.value,
            "key": key,
            "payload": engine.to_json_value(data),
            "created_at": now,
            "attempts": 0,
        }
        for key, data in events
    ]
    ids = [
        int(i)
        for i in session.scalars(
            sa.insert(OutboxRow).returning(OutboxRow.id, sort_by_parameter_order=True), rows
        )
    ]
    if ctx.deliver_to_shop:
        for outbox_id, (key, _data) in zip(ids, events, strict=True):
            ctx.engine.enqueue_in_transaction(
                session,
                deliver,
                outbox_id,
                queue=QUEUE,
                partition_key=key,
                workflow_id=f"shop-event-{outbox_id}",
            )
    return ids


@engine.step()
def _load(outbox_id: int) -> dict[str, Any] | None:
    with current().db.read() as session:
        row = session.get(OutboxRow, outbox_id)
        if row is None or row.delivered_at is not None:
            return None
        return {
            "id": event_id_of(row),
            "type": row.event_type,
            "key": row.key,
            "data": row.payload,
            "created_at": row.created_at.isoformat(),
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class Delivered:
    """The shop took the event (`_attempt`'s result, as JSON)."""

    def as_json(self) -> dict[str, Any]:
        return {"outcome": "delivered"}


@dataclass(frozen=True, kw_only=True, slots=True)
class Refused:
    """The shop refused the event: retrying it unchanged cannot help (`_attempt`'s result)."""

    error: str
    status: int | None = None
    body: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"outcome": "refused", "error": self.error, "status": self.status, "body": self.body}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Refused:
        status = data.get("status")
        return cls(
            error=str(data.get("error") or ""),
            status=None if status is None else int(status),
            body=str(data.get("body") or ""),
        )


Attempt = Delivered | Refused | retry.Failure


def attempt_from_json(data: Mapping[str, Any]) -> Attempt:
    """What `_attempt` returned, read back from its recorded JSON."""
    match data.get("outcome"):
        case "delivered":
            return Delivered()
        case "refused":
            return Refused.from_json(data)
        case _:
            return retry.Failure.from_json(data)


@engine.step()
async def _attempt(outbox_id: int, event: dict[str, Any], attempt: int) -> dict[str, Any]:
    ctx = current()
    # `_load` is a recorded step, so every attempt (and a recovered workflow) sends the same id.
    shop_event = ShopEvent(
        event_id=str(event.get("id") or f"evt_{outbox_id}"),
        type=EventType(event["type"]),
        key=event["key"],
        data=event["data"],
        occurred_at=datetime.fromisoformat(event["created_at"]),
        attempt=attempt,
    )
    try:
        await ctx.webshop.deliver(shop_event)
    except WebshopError as exc:
        failure = retry.decide(exc)
        if failure.retryable:
            return failure.as_json()
        return Refused(error=failure.error, status=failure.status, body=failure.body).as_json()
    return Delivered().as_json()


@engine.step()
def _record(outbox_id: int, result: dict[str, Any], attempt: int, next_in: float | None) -> None:
    # Takes the recorded JSON (a step's arguments are recorded too), typed here once.
    outcome = attempt_from_json(result)
    ctx = current()
    now = ctx.clock()
    with ctx.db.write() as session:
        row = session.get(OutboxRow, outbox_id)
        if row is None:
            return
        row.attempts = attempt
        if isinstance(outcome, Delivered):
            row.delivered_at = now
            row.last_error = None
            row.next_attempt_at = None
            return
        row.last_error = outcome.error
        row.next_attempt_at = now + timedelta(seconds=next_in) if next_in is not None else None
        if isinstance(outcome, Refused) or next_in is None:
            _park(session, row, outcome, attempt, now)


def _park(
    session: Session, row: OutboxRow, outcome: Refused | retry.Failure, attempt: int, now: datetime
) -> int:
    """Park an event the shop refused or that could not be delivered in time (one row per event)."""
    refused = isinstance(outcome, Refused)
    error = outcome.error or (
        "the shop refused the event" if refused else "the shop was unreachable"
    )
    return failures.park(
        session,
        kind=FAILURE_KIND,
        key=row.key,
        reason="shop_refused" if refused else "shop_unreachable",
        message=error,
        detail={
            "error": outcome.error,
            "status": outcome.status,
            "body": outcome.body,
            "outbox_id": row.id,
            "attempts": attempt,
        },
        payload={"outbox_id": row.id, "event_type": row.event_type, "data": row.payload},
        now=now,
        merge_open=False,
    )


@engine.workflow("shop.deliver_event")
async def deliver(outbox_id: int) -> str:
    """Deliver one outbox event; returns `delivered`, `refused`, `gave_up` or `already_done`."""
    event = await engine.offload(_load, outbox_id)
    if event is None:
        return "already_done"
    waited = 0.0
    attempt = 0
    while True:
        attempt += 1
        result = await _attempt(outbox_id, event, attempt)
        match attempt_from_json(result):
            case Delivered():
                await engine.offload(_record, outbox_id, result, attempt, None)
                return "delivered"
            case Refused():
                await engine.offload(_record, outbox_id, result, attempt, None)
                return "refused"
            case retry.Failure() as failure:
                pass
        policy = retry.policy(retry.SHOP_DELIVERY)
        action = policy.next(failure, attempt=attempt, waited=waited)
        if not isinstance(action, retry.RetryAfter):
            await engine.offload(_record, outbox_id, result, attempt, None)
            return "gave_up"
        await engine.offload(_record, outbox_id, result, attempt, action.seconds)
        waited += await retry.pause(action.seconds, policy=policy)
