"""Tell the shop, durably: an outbox row per real change, delivered by one drainer.

`publish()` is called inside the same write transaction that changed the local copy, so the
shop is told if and only if the change committed. The same transaction enqueues a wake-up of
the drainer (`shop.drain_outbox`, one at a time in the fleet: partition `shop-drain` of the
delivery queue), which takes the due head event of every key (the oldest undelivered one) in
batches and delivers them concurrently (at most `DRAIN_CONCURRENCY` at once): events about one
record arrive in order, events about different records do not wait for each other. A shop that
is down is retried with capped backoff (`flows.retry`, policy `shop.deliver_event`: 1 s doubling
to 5 min, the shop's Retry-After honoured) for up to 72 h: the row keeps its `next_attempt_at`
and a delayed drainer run is enqueued for it. A shop that refuses an event gets it parked (kind
`shop_delivery`) for a person to look at, once. An adapter that applies some event types as
whole states (`webshop.port.latest_state_types`: Vendure) is given, of a run of owed events about
one record of such a type, only the newest; the run's older rows are recorded delivered with it.

Row states: `next_attempt_at` set and `delivered_at` null = owed to the shop from that instant;
`delivered_at` set = delivered; both null = not for delivery (no shop configured, parked, or
written by a version that delivered it with a `shop-event-<id>` job, which still runs:
`deliver` below).

Why not a job per row (as before): each job is a DBOS workflow with its dequeue, status writes
and three checkpoints, about 50 deliveries/s per process; a first balance load of 3,000 products
kept the queue busy for a minute, and fresh events queued behind it (trickle p99 18.5 s, most
of the trickle not even delivered within the benchmark's window). See docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session

from extend_connector import engine, metrics
from extend_connector.flows import failures, retry
from extend_connector.flows.context import current
from extend_connector.store.models import OutboxRow
from extend_connector.webshop import (
    EventType,
    ShopEvent,
    WebshopError,
)
from extend_connector.webshop.port import deliver_all, latest_state_types

log = structlog.get_logger("extend_connector.outbox")

QUEUE = "shop-delivery"
_OUTBOX = cast(sa.Table, OutboxRow.__table__)
FAILURE_KIND = "shop_delivery"
engine.queue(QUEUE, partition_concurrency=1, worker_concurrency=32, poll_seconds=0.2)
# The drainer's partition of QUEUE: partition_concurrency=1 makes it one drainer in the fleet.
DRAIN_KEY = "shop-drain"
DRAIN_BATCH = 1000  # head events taken per pass
DRAIN_CONCURRENCY = 32  # deliveries in flight at once (each to a different key)
DRAIN_PASSES = 50  # passes per drainer run before it hands over to a fresh run (bounded history)
# A retry counts as due this much early: a delayed drainer run must not find it just short of due.
DUE_SLACK = timedelta(seconds=0.05)


def new_event_id() -> str:
    """A globally unique event id: a shop that dedupes on `webhook-id` must never see one twice
    for two different events, also not across a new database (row ids restart at 1)."""
    return f"evt_{uuid.uuid4().hex}"


def event_id_of(row: OutboxRow) -> str:
    # Rows written before event ids were stored keep the id they may have been delivered with.
    return row.event_id or f"evt_{row.id}"


def owed() -> sa.ColumnElement[bool]:
    """Events owed to the shop: not delivered and due for delivery (not those kept while no shop
    was configured, nor those parked after a refusal)."""
    return sa.and_(OutboxRow.delivered_at.is_(None), OutboxRow.next_attempt_at.is_not(None))


def owed_counts(session: Session) -> tuple[int, datetime | None]:
    """(events owed to the shop, when the oldest was written)."""
    count, oldest = session.execute(
        sa.select(sa.func.count(), sa.func.min(OutboxRow.created_at)).where(owed())
    ).one()
    return int(count), oldest if isinstance(oldest, datetime) else None


def last_owed_error(session: Session) -> dict[str, Any] | None:
    """The newest failure of an event still owed to the shop (key, attempts, error), if any:
    why the shop is behind, for `status`."""
    row = session.execute(
        sa.select(OutboxRow.key, OutboxRow.attempts, OutboxRow.last_error)
        .where(owed(), OutboxRow.last_error.is_not(None))
        .order_by(OutboxRow.id.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    return {"key": row.key, "attempts": int(row.attempts), "error": str(row.last_error)[:300]}


def newer_state_delivered(outbox_id: int) -> str | None:
    """Why event `outbox_id` must not be sent again, if so: the shop applies its type as a whole
    state (`webshop.port.latest_state_types`) and a newer event of the same record and type was
    delivered since (replaying the older one would set the older state). None: send it."""
    ctx = current()
    types = {t.value for t in latest_state_types(ctx.webshop)}
    with ctx.db.read() as session:
        row = session.get(OutboxRow, outbox_id)
        if row is None or row.event_type not in types:
            return None
        key, event_type = row.key, row.event_type
        newer = session.execute(
            sa.select(OutboxRow.id, OutboxRow.event_id, OutboxRow.delivered_at)
            .where(
                OutboxRow.key == row.key,
                OutboxRow.event_type == row.event_type,
                OutboxRow.id > row.id,
                OutboxRow.delivered_at.is_not(None),
            )
            .order_by(OutboxRow.id.desc())
            .limit(1)
        ).first()
    if newer is None:
        return None
    return (
        f"not sent: the shop was given a newer {event_type} of {key} since (event "
        f"{newer.event_id or newer.id}, delivered {newer.delivered_at.isoformat()})"
    )


def publish(session: Session, event_type: EventType, key: str, data: dict[str, Any]) -> int | None:
    """Record an event for the shop in the caller's transaction; returns the outbox id.

    Without a configured shop webhook URL (and no adapter injected) events are still kept
    in the outbox for the read API's change feed but no delivery job is enqueued.
    """
    ctx = current()
    now = ctx.clock()
    row = OutboxRow(
        event_id=new_event_id(),
        event_type=event_type.value,
        key=key,
        payload=engine.to_json_value(data),
        created_at=now,
        next_attempt_at=now if ctx.deliver_to_shop else None,
    )
    session.add(row)
    session.flush()
    if ctx.deliver_to_shop:
        _wake_in_transaction(session, row.id)
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
            "next_attempt_at": now if ctx.deliver_to_shop else None,
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
        _wake_in_transaction(session, ids[0])
    return ids


def _wake_in_transaction(session: Session, first_id: int) -> None:
    """A drainer run that starts after this transaction commits (and only if it does): one job
    per publishing transaction, never one per event.

    Not joined with a run already waiting to start: joining is only safe if that run cannot
    start before this transaction commits, which needs its row locked, and DBOS dequeues a
    partitioned queue `FOR UPDATE NOWAIT`: a locked row is a contention error there, and DBOS
    answers contention by doubling the queue's polling interval (up to 120 s)."""
    current().engine.enqueue_in_transaction(
        session, drain, queue=QUEUE, partition_key=DRAIN_KEY, workflow_id=f"shop-drain-{first_id}"
    )


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
            _count_delivered([row.created_at], now)
            # A `failures retry` of this event is through.
            failures.resolve_open(
                session,
                kind=FAILURE_KIND,
                key=row.key,
                now=now,
                where=lambda f: f.payload.get("outbox_id") == outbox_id,
            )
            return
        row.last_error = outcome.error
        row.next_attempt_at = now + timedelta(seconds=next_in) if next_in is not None else None
        if isinstance(outcome, Refused) or next_in is None:
            _park(session, row, outcome, attempt, now)
            metrics.SHOP_DELIVERIES.labels("parked").inc()
        else:
            metrics.SHOP_DELIVERIES.labels("retrying").inc()


def _count_delivered(created: list[datetime], now: datetime) -> None:
    metrics.SHOP_DELIVERIES.labels("delivered").inc(len(created))
    for at in created:
        if at.tzinfo is None:  # SQLite hands back naive UTC
            at = at.replace(tzinfo=UTC)
        metrics.SHOP_DELIVERY_SECONDS.observe(max(0.0, (now - at).total_seconds()))


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
        merge_open=lambda f: f.payload.get("outbox_id") == row.id,
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


# --- the drainer ------------------------------------------------------------------------------


def _waited_before(policy: retry.Backoff, attempt: int) -> float:
    """Seconds the policy has made an event wait before attempt number `attempt` (the budget
    `give_up_seconds` is counted against): the sum of its backoff after each earlier failure."""
    waited = 0.0
    for earlier in range(1, attempt):
        wait = policy.delay(earlier)
        if wait >= policy.cap_seconds:  # capped from here on: the rest in one multiplication
            return waited + wait * (attempt - earlier)
        waited += wait
    return waited


def _owed_heads() -> tuple[sa.ColumnElement[bool], sa.ColumnElement[bool]]:
    """Conditions on `outbox`: the row is owed to the shop; and no older row of its key is."""
    t = OutboxRow.__table__.c
    earlier = OutboxRow.__table__.alias("earlier")
    owed = sa.and_(t.delivered_at.is_(None), t.next_attempt_at.is_not(None))
    head = ~sa.exists().where(
        earlier.c.key == t.key,
        earlier.c.id < t.id,
        earlier.c.delivered_at.is_(None),
        earlier.c.next_attempt_at.is_not(None),
    )
    return owed, head


def _due_heads(
    now: datetime, busy_keys: set[str], latest_types: frozenset[str] = frozenset()
) -> list[dict[str, Any]]:
    """The oldest owed event of every key, if it is due now (at most `DRAIN_BATCH`, oldest
    first), leaving out keys that wait for a delivery job.

    Where the head's type is one the shop applies as a whole state (`latest_types`), the head
    stands for its run: it and the owed events of its key after it of the same type, up to the
    first of another type. The shop is given the run's newest event (`event`, `last_id`); the
    run's first row (`id`) carries its attempts and retry time."""
    columns = OutboxRow.__table__.c
    owed, head = _owed_heads()
    with current().db.read() as session:
        rows = session.execute(
            sa.select(*_EVENT_COLUMNS, columns.attempts)
            .where(owed, columns.next_attempt_at <= now + DUE_SLACK, head)
            .order_by(columns.id)
            .limit(DRAIN_BATCH + len(busy_keys))
        ).all()
        rows = [row for row in rows if row.key not in busy_keys][:DRAIN_BATCH]
        newest = _run_ends(session, [r for r in rows if r.event_type in latest_types])
    return [
        {
            "id": row.id,
            "last_id": newest.get(row.id, row).id,
            "event": _event_json(newest.get(row.id, row)),
            "attempt": row.attempts + 1,
            "first_created_at": row.created_at.isoformat(),
        }
        for row in rows
    ]


_EVENT_COLUMNS = tuple(
    OutboxRow.__table__.c[name]
    for name in ("id", "event_id", "event_type", "key", "payload", "created_at")
)
RUN_CHUNK = 500  # keys per SQL IN (...) list when runs are looked up


def _event_json(row: Any) -> dict[str, Any]:
    return {
        "id": row.event_id or f"evt_{row.id}",
        "type": row.event_type,
        "key": row.key,
        "data": row.payload,
        "created_at": row.created_at.isoformat(),
    }


def _run_ends(session: Session, heads: list[Any]) -> dict[int, Any]:
    """For each head row (by id) whose run holds more than itself: the run's newest row."""
    columns = OutboxRow.__table__.c
    owed, _ = _owed_heads()
    by_key = {row.key: row for row in heads}
    last: dict[int, int] = {}
    keys = list(by_key)
    for i in range(0, len(keys), RUN_CHUNK):
        chunk = keys[i : i + RUN_CHUNK]
        ended: set[str] = set()
        for key, event_type, row_id in session.execute(
            sa.select(columns.key, columns.event_type, columns.id)
            .where(owed, columns.key.in_(chunk))
            .order_by(columns.key, columns.id)
        ):
            first = by_key[key]
            if key in ended or row_id <= first.id:
                continue
            if event_type != first.event_type:
                ended.add(key)  # the run ends at the first event of another type
                continue
            last[first.id] = row_id
    if not last:
        return {}
    found = {
        row.id: row
        for i in range(0, len(last), RUN_CHUNK)
        for row in session.execute(
            sa.select(*_EVENT_COLUMNS).where(columns.id.in_(list(last.values())[i : i + RUN_CHUNK]))
        )
    }
    return {first: found[row_id] for first, row_id in last.items() if row_id in found}


def _next_due(now: datetime) -> datetime | None:
    """When the next owed event waiting for a retry is due (None: none waits)."""
    t = OutboxRow.__table__.c
    owed, head = _owed_heads()
    with current().db.read() as session:
        later: datetime | None = session.scalar(
            sa.select(sa.func.min(t.next_attempt_at)).where(owed, head, t.next_attempt_at > now)
        )
    return later


def _keys_with_delivery_jobs() -> set[str]:
    """Keys that still have a `shop-event-<id>` job of the previous version (or a replay of a
    parked event) waiting or running: their events wait for it, to stay in order."""
    jobs = current().engine.list_workflows(
        name=engine.workflow_name(deliver),
        status=("ENQUEUED", "PENDING", "DELAYED"),
        limit=10_000,
    )
    return {job.partition_key for job in jobs if job.partition_key}


def _shop_event(head: dict[str, Any]) -> ShopEvent:
    event = head["event"]
    return ShopEvent(
        event_id=event["id"],
        type=EventType(event["type"]),
        key=event["key"],
        data=event["data"],
        occurred_at=datetime.fromisoformat(event["created_at"]),
        attempt=head["attempt"],
    )


def _outcome(error: WebshopError | None) -> Attempt:
    if error is None:
        return Delivered()
    failure = retry.decide(error)
    if failure.retryable:
        return failure
    return Refused(error=failure.error, status=failure.status, body=failure.body)


def _in_run(head: dict[str, Any]) -> sa.ColumnElement[bool]:
    """The owed rows a head stands for (only itself unless the shop applies whole states)."""
    t = OutboxRow.__table__.c
    return sa.and_(
        t.key == head["event"]["key"],
        t.event_type == head["event"]["type"],
        t.id.between(head["id"], head["last_id"]),
        t.delivered_at.is_(None),
        t.next_attempt_at.is_not(None),
    )


def _record_many(results: list[tuple[dict[str, Any], Attempt]]) -> dict[str, int]:
    """Write every outcome of one pass in one transaction: delivered (with the older events of
    a run, superseded by the newest the shop was given), due again later, parked."""
    ctx = current()
    now = ctx.clock()
    policy = retry.policy(retry.SHOP_DELIVERY)
    counts = {"delivered": 0, "superseded": 0, "retrying": 0, "parked": 0}
    t = OutboxRow.__table__.c
    delivered = [
        {"b_id": head["id"], "b_attempts": head["attempt"]}
        for head, outcome in results
        if isinstance(outcome, Delivered) and head["last_id"] == head["id"]
    ]
    with ctx.db.write() as session:
        if delivered:
            # One statement for the common case; a row a job of the previous version delivered
            # meanwhile keeps its own record.
            session.execute(
                sa.update(_OUTBOX)
                .where(t.id == sa.bindparam("b_id"), t.delivered_at.is_(None))
                .values(
                    delivered_at=now,
                    last_error=None,
                    next_attempt_at=None,
                    attempts=sa.bindparam("b_attempts"),
                ),
                delivered,
            )
            counts["delivered"] = len(delivered)
        for head, outcome in results:
            if not isinstance(outcome, Delivered) or head["last_id"] == head["id"]:
                continue
            result = session.execute(
                sa.update(_OUTBOX)
                .where(_in_run(head))
                .values(
                    delivered_at=now,
                    last_error=None,
                    next_attempt_at=None,
                    attempts=head["attempt"],
                )
            )
            marked = cast("sa.CursorResult[Any]", result).rowcount
            counts["delivered"] += 1
            counts["superseded"] += max(0, marked - 1)
        if counts["superseded"]:
            metrics.SHOP_DELIVERIES.labels("superseded").inc(counts["superseded"])
        _count_delivered(
            [
                datetime.fromisoformat(head["first_created_at"])
                for head, outcome in results
                if isinstance(outcome, Delivered)
            ],
            now,
        )
        for head, outcome in results:
            if isinstance(outcome, Delivered):
                continue
            run = list(session.scalars(sa.select(OutboxRow).where(_in_run(head))))
            row = next((r for r in run if r.id == head["last_id"]), None)
            if row is None:
                continue  # delivered meanwhile by a job of the previous version: nothing owed
            attempt = head["attempt"]
            next_in: float | None = None
            if isinstance(outcome, retry.Failure):
                action = policy.next(
                    outcome, attempt=attempt, waited=_waited_before(policy, attempt)
                )
                if isinstance(action, retry.RetryAfter):
                    next_in = action.seconds
            for each in run:  # the run's first row carries its retry time
                each.attempts = attempt
                each.last_error = outcome.error or None
                each.next_attempt_at = (
                    now + timedelta(seconds=next_in) if next_in is not None else None
                )
            if next_in is None:
                # One failure for the run, with the newest event: replaying it gives the shop
                # the state the older ones would have.
                _park(session, row, outcome, attempt, now)
                counts["parked"] += 1
                metrics.SHOP_DELIVERIES.labels("parked").inc()
            else:
                counts["retrying"] += 1
                metrics.SHOP_DELIVERIES.labels("retrying").inc()
    return counts


@engine.step(name="outbox.drain_pass")
async def _drain_pass() -> dict[str, Any]:
    """Deliver the due head event of every key once; what happened and when to look again.

    Run again after a crash, the pass delivers what is still owed: an event whose delivery was
    not yet recorded goes out again with the same `webhook-id` (at least once)."""
    ctx = current()
    busy = await asyncio.to_thread(_keys_with_delivery_jobs)
    latest_types = frozenset(t.value for t in latest_state_types(ctx.webshop))
    heads = await asyncio.to_thread(_due_heads, ctx.clock(), busy, latest_types)
    counts = {"delivered": 0, "superseded": 0, "retrying": 0, "parked": 0}
    if heads:
        # One call per batch where the adapter takes batches (Vendure), else one per event.
        errors = await deliver_all(
            ctx.webshop, [_shop_event(head) for head in heads], DRAIN_CONCURRENCY
        )
        outcomes = [_outcome(error) for error in errors]
        counts = await asyncio.to_thread(_record_many, list(zip(heads, outcomes, strict=True)))
        failed = [
            (head, outcome)
            for head, outcome in zip(heads, outcomes, strict=True)
            if not isinstance(outcome, Delivered)
        ]
        if failed:
            # One line per pass, not per event: a shop that is down fails every event at once.
            head, outcome = failed[0]
            log.warning(
                "shop_delivery_failed",
                failed=len(failed),
                retrying=counts["retrying"],
                parked=counts["parked"],
                first_key=head["event"]["key"],
                first_error=outcome.error[:300],
                status=outcome.status,
            )
    now = ctx.clock()
    later = await asyncio.to_thread(_next_due, now)
    if busy and later is None:
        later = now + timedelta(seconds=1)  # look again for the events that wait for those jobs
    wake = (
        None
        if later is None
        else {
            "next_in": max(0.0, (later - now).total_seconds()),
            "retry_at": int(later.timestamp() * 1000),
        }
    )
    # A delivered or parked head may leave its key's next event due now: another pass.
    more = counts["delivered"] + counts["parked"] > 0 or len(heads) >= DRAIN_BATCH
    return {**counts, "more": more, "wake": wake, "last_id": heads[-1]["id"] if heads else None}


@engine.workflow("shop.drain_outbox")
async def drain() -> dict[str, int]:
    """Deliver what the outbox owes the shop, pass after pass until nothing is due; then, if an
    event waits for a retry, leave a delayed run for the instant it is due."""
    totals = {"delivered": 0, "superseded": 0, "retrying": 0, "parked": 0, "passes": 0}
    result: dict[str, Any] = {"more": False, "wake": None}
    for _ in range(DRAIN_PASSES):
        result = await _drain_pass()
        totals["passes"] += 1
        for name in ("delivered", "superseded", "retrying", "parked"):
            totals[name] += int(result.get(name, 0))
        if not result["more"]:
            break
    ctx = current()
    if result["more"]:
        # Still busy after DRAIN_PASSES: a fresh run goes on (a workflow's history stays short).
        ctx.engine.enqueue(
            drain,
            queue=QUEUE,
            partition_key=DRAIN_KEY,
            workflow_id=f"shop-drain-after-{result['last_id']}",
        )
    elif result["wake"] is not None:
        # Named after the instant it is for: every run that sees the same next retry leaves the
        # same job, not one each.
        wake = result["wake"]
        ctx.engine.enqueue(
            drain,
            queue=QUEUE,
            partition_key=DRAIN_KEY,
            workflow_id=f"shop-drain-retry-{wake['retry_at']}",
            delay_seconds=float(wake["next_in"]) + 0.1,
        )
    return totals


def _startup_drain(eng: engine.Engine) -> None:
    """Once the engine executes: a drainer run for whatever is owed (a shop configured since the
    last start finds nothing old: rows written without a shop are not owed)."""
    try:
        ctx = current()
    except RuntimeError:  # an engine launched without a Connector (a test, a script)
        return
    if ctx.deliver_to_shop:
        eng.enqueue(
            drain,
            queue=QUEUE,
            partition_key=DRAIN_KEY,
            workflow_id=f"shop-drain-start-{uuid.uuid4().hex}",
        )


engine.on_launch("outbox.startup", _startup_drain)
