"""Parked failures: work a person must look at, shared by every flow; list, show and replay.

A flow parks an item (`park()`, inside its own write transaction) when retrying it unchanged
cannot help: Extend refused the data, the shop refused an event, an order refers to a product
that does not exist. Each flow registers how to replay its kinds (`register_replay`); `retry()`
looks the failure up and runs the replay of its kind. A replay that finished the work (the
item is through) returns a plain message and the failure is resolved. A replay that queued the
work returns `Queued`: the failure stays open, marked *retrying*, and the flow resolves it when
the item goes through (an order reaches Extend, the shop accepts an event, a resumed job
succeeds) or parks it again with the new reason. A replay that finds the cause still there
raises `StillFailing` with a reason a person can act on, and the failure stays open.
`dismiss()` closes a failure nobody will replay, with the reason kept.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from extend_connector.flows import executors, outbox
from extend_connector.flows.context import FlowContext, current
from extend_connector.store.models import ParkedFailureRow


class FailureError(Exception):
    """Root of this module's errors: the replay did not happen."""


class UnknownFailure(FailureError):
    """No parked failure has this id."""


class AlreadyResolved(FailureError):
    """The failure was resolved already (replayed or fixed)."""


class NoReplay(FailureError):
    """No flow registered a replay for the failure's kind."""


class StillFailing(FailureError):
    """The replay checked the item again and the cause is still there (the message says which)."""


class Queued(str):
    """A replay's answer when it queued the work: the failure stays open (retrying) until the
    flow sees the item through (`resolve_open` / `resolve_where`) or parks it again."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Failure:
    """One parked failure as the operator sees it."""

    id: int
    kind: str
    key: str
    reason: str
    detail: dict[str, Any]
    payload: dict[str, Any]
    created_at: datetime
    resolved_at: datetime | None
    retry_count: int

    @property
    def message(self) -> str:
        """The one line a person reads first."""
        text = self.detail.get("message") or self.detail.get("error")
        return str(text) if text else self.reason

    @property
    def state(self) -> str:
        """`open`, `retrying` (a replay queued the work, not through yet), `resolved` or
        `dismissed`."""
        if self.resolved_at is not None:
            return "dismissed" if self.detail.get("dismissed") else "resolved"
        return "retrying" if self.detail.get("retryingSince") else "open"

    @property
    def parked_at(self) -> datetime:
        """When it was last parked (a failure parked again keeps its id and `created_at`)."""
        text = self.detail.get("parkedAt")
        return datetime.fromisoformat(text) if isinstance(text, str) else self.created_at

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "key": self.key,
            "reason": self.reason,
            "message": self.message,
            "state": self.state,
            "detail": self.detail,
            "payload": self.payload,
            "createdAt": self.created_at.isoformat(),
            "resolvedAt": self.resolved_at.isoformat() if self.resolved_at else None,
            "retryCount": self.retry_count,
        }


def view(row: ParkedFailureRow) -> Failure:
    """A stored row as the operator sees it."""
    return Failure(
        id=row.id,
        kind=row.kind,
        key=row.key,
        reason=row.reason,
        detail=dict(row.detail or {}),
        payload=dict(row.payload or {}),
        created_at=row.created_at,
        resolved_at=row.resolved_at,
        retry_count=row.retry_count,
    )


Replay = Callable[[Failure], "str | Awaitable[str]"]
"""Replays one failure; returns what it did (e.g. "order S-1 queued for sending"). Raises
StillFailing when the cause is still there. May be async."""

_REPLAYS: dict[str, Replay] = {}


def register_replay(kind: str, replay: Replay) -> None:
    """Declare how failures of `kind` are replayed (call at import time of the flow module)."""
    existing = _REPLAYS.get(kind)
    if existing is not None and existing is not replay:
        raise ValueError(f"failure kind {kind!r} already has a replay: {existing}")
    _REPLAYS[kind] = replay


def replay_kinds() -> list[str]:
    return sorted(_REPLAYS)


# --- writing ---------------------------------------------------------------------------------


def park(
    session: Session,
    *,
    kind: str,
    key: str,
    reason: str,
    message: str,
    detail: dict[str, Any] | None = None,
    payload: dict[str, Any] | None = None,
    now: datetime | None = None,
    merge_open: bool | Callable[[Failure], bool] = True,
) -> int:
    """Park an item in the caller's transaction: the one way any flow parks a failure, so every
    parked row has the same shape (`detail["message"]` is the line a person reads first).

    With `merge_open` an open failure of the same kind and key is updated instead of duplicated
    (the same order parked twice is one thing to fix); given a predicate, only an open failure
    of the kind and key it accepts is (each refused shop event is its own thing to replay, also
    when several concern one record, and the same event refused again after a retry is still
    the same failure); with False every park adds a row.
    """
    when = now or current().clock()
    # A failure parked again (a replay that failed again) drops its `retryingSince`: open again.
    body = {**(detail or {}), "message": message, "parkedAt": when.isoformat()}
    existing = None
    if merge_open is not False:
        candidates = _open_rows(session, kind, key)
        existing = next((r for r in candidates if merge_open is True or merge_open(view(r))), None)
    if existing is not None:
        existing.reason = reason
        existing.detail = body
        if payload is not None:
            existing.payload = payload
        return existing.id
    row = ParkedFailureRow(
        kind=kind, key=key, reason=reason, detail=body, payload=payload or {}, created_at=when
    )
    session.add(row)
    session.flush()
    return row.id


def _open_rows(session: Session, kind: str, key: str) -> list[ParkedFailureRow]:
    """The open failures of (kind, key), oldest first."""
    return list(
        session.scalars(
            sa.select(ParkedFailureRow)
            .where(
                ParkedFailureRow.kind == kind,
                ParkedFailureRow.key == key,
                ParkedFailureRow.resolved_at.is_(None),
            )
            .order_by(ParkedFailureRow.id)
        )
    )


def resolve_open(
    session: Session,
    *,
    kind: str,
    key: str,
    now: datetime,
    where: Callable[[Failure], bool] | None = None,
) -> int:
    """Mark the open failures of (kind, key) resolved (the item went through, by a replay or
    another way); `where` narrows them (e.g. to one outbox event of a record)."""
    rows = _open_rows(session, kind, key)
    done = 0
    for row in rows:
        if where is None or where(view(row)):
            row.resolved_at = now
            row.detail = {k: v for k, v in (row.detail or {}).items() if k != "retryingSince"}
            done += 1
    return done


def still_failing(session: Session, *, kind: str, key: str, message: str, now: datetime) -> int:
    """A queued replay ended without the item going through and without parking it again (e.g.
    Extend refused a cancellation as too late): the open failures of (kind, key) say so and are
    open again, not retrying."""
    rows = _open_rows(session, kind, key)
    for row in rows:
        detail = {k: v for k, v in (row.detail or {}).items() if k != "retryingSince"}
        row.detail = {**detail, "message": message, "parkedAt": now.isoformat()}
    return len(rows)


def dismiss(failure_id: int, reason: str) -> Failure:
    """Close a failure nobody will replay (the order was re-entered by hand, the event is
    obsolete), keeping who-knows-why: `reason` is required and shown with it."""
    reason = reason.strip()
    if not reason:
        raise FailureError("a dismissal needs a reason (it is kept with the failure)")
    ctx = current()
    with ctx.db.write() as session:
        row = session.get(ParkedFailureRow, failure_id)
        if row is None:
            raise UnknownFailure(f"no parked failure {failure_id}")
        if row.resolved_at is not None:
            raise AlreadyResolved(
                f"failure {failure_id} was closed at {row.resolved_at.isoformat()}"
            )
        now = ctx.clock()
        row.resolved_at = now
        detail = {k: v for k, v in (row.detail or {}).items() if k != "retryingSince"}
        row.detail = {**detail, "dismissed": {"reason": reason, "at": now.isoformat()}}
        session.flush()
        return view(row)


# --- reading ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Filter:
    """Which failures a list or a bulk retry takes: all given conditions hold."""

    include_resolved: bool = False
    kind: str | None = None
    reason: str | None = None  # a substring of the reason code or of the message, any case
    older_than: timedelta | None = None  # parked longer ago than this

    def query(self, now: datetime) -> sa.Select[ParkedFailureRow]:
        query = sa.select(ParkedFailureRow)
        if not self.include_resolved:
            query = query.where(ParkedFailureRow.resolved_at.is_(None))
        if self.kind is not None:
            query = query.where(ParkedFailureRow.kind == self.kind)
        if self.older_than is not None:
            query = query.where(ParkedFailureRow.created_at < now - self.older_than)
        return query

    def matches(self, failure: Failure, now: datetime) -> bool:
        if self.older_than is not None and failure.parked_at >= now - self.older_than:
            return False
        if self.reason is None:
            return True
        needle = self.reason.casefold()
        return needle in failure.reason.casefold() or needle in failure.message.casefold()


def list_failures(
    *,
    include_resolved: bool = False,
    kind: str | None = None,
    limit: int = 200,
    where: Filter | None = None,
) -> list[Failure]:
    """The newest `limit` failures matching the filter (open ones unless it says otherwise)."""
    where = where or Filter(include_resolved=include_resolved, kind=kind)
    ctx = current()
    now = ctx.clock()
    found: list[Failure] = []
    query = where.query(now).order_by(ParkedFailureRow.id.desc())
    with ctx.db.read() as session:
        # The reason filter reads the message, so rows are filtered here, a page at a time.
        for row in session.scalars(query.execution_options(yield_per=500)):
            failure = view(row)
            if where.matches(failure, now):
                found.append(failure)
                if len(found) >= limit:
                    break
    return found


def open_counts(session: Session) -> dict[str, int]:
    """Open failures per kind (for `status`)."""
    rows = session.execute(
        sa.select(ParkedFailureRow.kind, sa.func.count())
        .where(ParkedFailureRow.resolved_at.is_(None))
        .group_by(ParkedFailureRow.kind)
    ).all()
    return {kind: int(n) for kind, n in rows}


def get(failure_id: int) -> Failure:
    with current().db.read() as session:
        row = session.get(ParkedFailureRow, failure_id)
        if row is None:
            raise UnknownFailure(f"no parked failure {failure_id}")
        return view(row)


# --- replay ----------------------------------------------------------------------------------


async def retry(failure_id: int) -> str:
    """Replay one failure through its kind's replay; mark it resolved when accepted.

    Raises UnknownFailure, AlreadyResolved, NoReplay, or StillFailing (the failure stays open,
    its detail gets the new reason). Its database work runs off the event loop.
    """
    failure = await asyncio.to_thread(get, failure_id)
    if failure.resolved_at is not None:
        raise AlreadyResolved(
            f"failure {failure_id} was resolved at {failure.resolved_at.isoformat()}"
        )
    replay = _REPLAYS.get(failure.kind)
    if replay is None:
        raise NoReplay(
            f"no replay is registered for failures of kind {failure.kind!r} "
            f"(known: {', '.join(replay_kinds()) or 'none'})"
        )
    ctx = current()
    try:
        # A sync replay does its database work where it is called: in a worker thread.
        result: str | Awaitable[str]
        if inspect.iscoroutinefunction(replay):
            result = replay(failure)
        else:
            result = await asyncio.to_thread(replay, failure)
        outcome = await result if inspect.isawaitable(result) else result
    except StillFailing as exc:
        detail = {"lastRetry": str(exc), "message": str(exc)}
        await asyncio.to_thread(_note_retry, ctx, failure_id, detail, resolved=False)
        raise
    queued = isinstance(outcome, Queued)
    detail = {"lastRetry": str(outcome)}
    if queued:
        detail["retryingSince"] = ctx.clock().isoformat()
    await asyncio.to_thread(_note_retry, ctx, failure_id, detail, resolved=not queued)
    return outcome if queued else str(outcome)


@dataclass(frozen=True, kw_only=True, slots=True)
class BulkResult:
    """What a bulk retry did to each failure it took: the replay's message or its error."""

    replayed: list[tuple[int, str]]
    refused: list[tuple[int, str]]


async def retry_matching(where: Filter, *, limit: int = 500) -> BulkResult:
    """Retry every open failure the filter takes (at most `limit`), oldest first, one at a
    time: each through its own kind's replay, exactly as `retry` would."""
    if where.include_resolved:
        raise FailureError("a bulk retry takes open failures only")
    found = await asyncio.to_thread(list_failures, where=where, limit=limit)
    replayed: list[tuple[int, str]] = []
    refused: list[tuple[int, str]] = []
    for failure in reversed(found):
        try:
            replayed.append((failure.id, await retry(failure.id)))
        except FailureError as exc:
            refused.append((failure.id, str(exc)))
    return BulkResult(replayed=replayed, refused=refused)


def _note_retry(
    ctx: FlowContext, failure_id: int, detail: dict[str, Any], *, resolved: bool
) -> None:
    with ctx.db.write() as session:
        row = session.get(ParkedFailureRow, failure_id)
        if row is not None:
            row.retry_count += 1
            kept = dict(row.detail or {})
            if resolved:
                row.resolved_at = ctx.clock()
                kept.pop("retryingSince", None)
            row.detail = {**kept, **detail}


def _replay_shop_delivery(failure: Failure) -> str:
    """Deliver a refused or given-up shop event again, as a new job (the outbox row is kept)."""
    outbox_id = failure.payload.get("outbox_id") or failure.detail.get("outbox_id")
    if outbox_id is None:
        raise StillFailing(f"failure {failure.id} does not name its outbox event")
    ctx = current()
    newer = outbox.newer_state_delivered(int(outbox_id))
    if newer is not None:
        # Resolved, not sent: the shop shows a newer state of the record than this event's.
        return newer
    # The outbox module is glue shared by every flow; its replay lives here with the others.
    ctx.engine.enqueue(
        outbox.deliver,
        int(outbox_id),
        queue=outbox.QUEUE,
        partition_key=failure.key,
        workflow_id=f"shop-event-{outbox_id}-retry-{failure.id}-{failure.retry_count + 1}",
    )
    # Resolved when the shop takes it (outbox._record), parked again when it refuses.
    return Queued(f"shop event {outbox_id} queued for delivery again")


register_replay("shop_delivery", _replay_shop_delivery)


# --- operator status -------------------------------------------------------------------------


def status_snapshot() -> dict[str, Any]:
    """What `extend-connector status` shows, read generically so every flow appears by itself:
    each cursor (one per swept data point), the newest `confirmed_at` of every local-copy table
    that has one, open failures per kind, the outbox backlog, marks waiting for a fetch, the
    fleet-wide rate limit's reservations, queue depth per queue, and the processes that run jobs
    (alive or gone, and the jobs each holds as running)."""
    from extend_connector.store.models import Base, CursorRow, RateBucketRow

    ctx = current()
    snapshot: dict[str, Any] = {"now": ctx.clock().isoformat(), "cursors": [], "confirmed": {}}
    with ctx.db.read() as session:
        for row in session.scalars(sa.select(CursorRow).order_by(CursorRow.name)):
            snapshot["cursors"].append(
                {
                    "name": row.name,
                    "highWaterMark": row.high_water_mark.isoformat()
                    if row.high_water_mark
                    else None,
                    "lastRunAt": row.last_run_at.isoformat() if row.last_run_at else None,
                    "running": row.signpost is not None,
                    "stats": row.stats or {},
                }
            )
        for table in Base.metadata.sorted_tables:
            column = table.c.get("confirmed_at")
            if column is None:
                continue
            newest, count = session.execute(
                sa.select(sa.func.max(column), sa.func.count()).select_from(table)
            ).one()
            snapshot["confirmed"][table.name] = {
                "rows": int(count),
                "newest": newest.isoformat() if isinstance(newest, datetime) else newest,
            }
        snapshot["failures"] = open_counts(session)
        pending, oldest = outbox.owed_counts(session)
        snapshot["outbox"] = {
            "pending": int(pending),
            "oldest": oldest.isoformat() if isinstance(oldest, datetime) else oldest,
            "lastError": outbox.last_owed_error(session),
        }
        # Work marked and not yet fetched from Extend (balances, product-triggered prices).
        snapshot["marked"] = {
            table.name: int(session.scalar(sa.select(sa.func.count()).select_from(table)) or 0)
            for table in Base.metadata.sorted_tables
            if table.name.startswith("dirty_")
        }
        # The fleet-wide rate limit per group: seconds until its bucket is full again, i.e. how far
        # the processes sharing this database have drawn it down (0: full, no wait for anyone).
        now_epoch = time.time()
        snapshot["rateLimits"] = {
            group: {"fullAgainInSeconds": round(max(0.0, float(tat) - now_epoch), 3)}
            for group, tat in session.execute(
                sa.select(RateBucketRow.rate_group, RateBucketRow.tat).order_by(
                    RateBucketRow.rate_group
                )
            )
        }
        from extend_connector.flows.watchdog import unsent_orders

        snapshot["ordersNotInExtend"] = unsent_orders(
            session,
            now=ctx.clock(),
            stuck_after=timedelta(minutes=ctx.settings.engine.stuck_order_minutes),
        ).as_json()
    try:
        snapshot["queues"] = ctx.engine.queue_depth()
    except Exception as exc:  # the job tables may not exist before the first start
        snapshot["queues"] = {"error": str(exc)}
    snapshot["executors"] = executors.listing(
        ctx.db,
        ctx.engine,
        now=ctx.clock(),
        dead_after=timedelta(seconds=ctx.settings.engine.executor_dead_seconds),
    )
    return snapshot
