"""Records Extend says changed (orders, products, customers): a dirty mark per record, one
drainer per kind, refreshes in batches.

Path of one `OrderPicked` (or `ProductChanged`, `CustomerChanged`, ...):

1. The webhook inbox calls the kind's marker inside its own transaction: the record is upserted
   into `dirty_records` (kind, key); a record marked again only has its `generation` moved on.
   No durable job per notification: a burst of hooks about one order is one row.
2. After the commit, the kind's `Trigger` asks for a drain (`Engine.debounce`, at most once per
   `TRIGGER_MIN_INTERVAL` per process, always once more after the last request).
3. `records.drain(kind)` (queue `records-<kind>`, one run at a time in the fleet) takes the due
   marks, oldest first, up to `BATCH` per pass, and hands their keys to the kind's `refresh`
   (registered by the flow: it fetches each record from Extend, at most `CONCURRENCY` at once,
   and writes what it fetched, usually in one transaction). Then, in one transaction, a mark
   whose refresh succeeded is deleted if its generation is still the one the pass took (a
   record marked again during the fetch stays dirty and is fetched again by the next pass);
   a failed refresh keeps its mark with `next_attempt_at` set by the kind's `flows.retry`
   policy, until the policy's budget is spent (then the mark is dropped with a warning: the
   kind's change-date sweep repairs the record).
4. When marks wait for a retry, a delayed drain is left for the earliest one, but at most
   `WAKE_CHECK_SECONDS` ahead: a waiting mark is due again as soon as any process of the fleet
   got an answer from Extend after it failed (flows/freshness), so after an outage the records
   go within seconds, not when their backoff (up to minutes) ends.

Guarantees kept from the job-per-notification design it replaces: work on one record is
serialised (one drainer per kind, each key once per pass), every notification is followed by a
fetch that started after it was marked (the generation rule), and a crash loses nothing (the
marks are durable; a recovered pass fetches again, and every refresh is idempotent: the fetched
record is the truth, guarded by Extend's change date).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session

from extend_connector import engine
from extend_connector.extend import ExtendError, bulk_calls
from extend_connector.extend.webhooks import Notification
from extend_connector.flows import dispatch, retry
from extend_connector.flows.context import current
from extend_connector.flows.freshness import fleet_reachability
from extend_connector.flows.passes import Trigger
from extend_connector.store.models import DirtyRecordRow
from extend_connector.store.repositories import built_once

log = structlog.get_logger("extend_connector.flows.records")

_DIRTY = cast(sa.Table, DirtyRecordRow.__table__)

# The kinds and their queues (declared at import: queue names are durable). One drain per kind
# at a time across the fleet. Every queue costs each executing process a dequeue transaction per
# poll (about 40 a second in all; a third of a busy process's CPU in a profile of the ingest
# benchmark, docs/benchmarks.md), so only order progress is polled as often as its job-per-hook
# queue was; master data waits at most half a second.
ORDER = "order"
PRODUCT = "product"
CUSTOMER = "customer"
POLL_SECONDS = {ORDER: 0.2, PRODUCT: 0.5, CUSTOMER: 0.5}
KINDS = tuple(POLL_SECONDS)
for _kind, _poll in POLL_SECONDS.items():
    engine.queue(f"records-{_kind}", concurrency=1, poll_seconds=_poll)

BATCH = 200  # marks taken per pass
CONCURRENCY = 16  # fetches in flight at once within a pass (the client's limits still apply)
PASSES = 50  # passes per drain run before it hands over to a fresh run (bounded history)
DEBOUNCE_SECONDS = 0.05  # quiet time before a requested drain starts
MAX_DELAY_SECONDS = 0.25  # bound on that wait during a steady stream of hooks
WAKE_CHECK_SECONDS = retry.WAKE_CHECK_SECONDS  # how far ahead a waiting drain looks again


Outcome = str | retry.Failure
"""What a refresh did with one key: a short word (applied, unchanged, not_found, ...) when it is
done, or a `retry.Failure` when Extend failed (the mark stays, by the kind's policy)."""

T = TypeVar("T")

Refresh = Callable[[list[str]], Awaitable[Mapping[str, Outcome]]]


@dataclass(frozen=True, kw_only=True, slots=True)
class Kind:
    """A kind of record refreshed by a drainer: its refresh and the retry policy it waits by."""

    name: str
    refresh: Refresh
    policy: str
    bulk: bool = False  # catalogue work: its Extend calls give way to orders and stock

    @property
    def queue(self) -> str:
        return f"records-{self.name}"


_KINDS: dict[str, Kind] = {}
_HANDLERS: dict[str, dispatch.InlineHandler] = {}


def register(name: str, *, refresh: Refresh, policy: str, bulk: bool = False) -> Kind:
    """Declare how records of kind `name` are refreshed (a flow, at import). `bulk`: the
    refresh's Extend calls are bulk calls (`extend.bulk_calls`: they give way to the others)."""
    if name not in KINDS:
        raise ValueError(f"unknown record kind {name!r} (known: {', '.join(KINDS)})")
    kind = Kind(name=name, refresh=refresh, policy=policy, bulk=bulk)
    _KINDS[name] = kind
    return kind


def kind(name: str) -> Kind:
    try:
        return _KINDS[name]
    except KeyError:
        raise ValueError(f"record kind {name!r} has no refresh registered") from None


def handler(name: str) -> dispatch.InlineHandler:
    """The inbox handler that marks the notified record of kind `name` (one object per kind, so
    declaring it twice is the same handler)."""
    found = _HANDLERS.get(name)
    if found is None:

        def apply(session: Session, note: Notification, _json: dict[str, Any]) -> None:
            mark(session, name, [key_of(note)], now=current().clock())

        def apply_many(session: Session, notes: list[Notification]) -> None:
            mark(session, name, [key_of(note) for note in notes], now=current().clock())

        def after_commit(_notes: list[Notification]) -> None:
            trigger(name).request()

        found = _HANDLERS[name] = dispatch.InlineHandler(
            apply=apply, apply_many=apply_many, after_commit=after_commit
        )
    return found


def key_of(note: Notification) -> str:
    """The record's own number from the notification's entity key (`order:123` -> `123`)."""
    return note.entity_key.partition(":")[2]


def mark(session: Session, name: str, keys: Sequence[str], *, now: datetime) -> None:
    """Mark records of kind `name` dirty in the caller's transaction (a mark already there has
    its generation moved on and stays due when it was). Each key once, in key order (concurrent
    batches on PostgreSQL lock the rows in one order)."""
    rows = [
        {
            "kind": name,
            "key": key,
            "generation": 1,
            "first_marked_at": now,
            "last_marked_at": now,
            "attempts": 0,
            "next_attempt_at": now,
        }
        for key in sorted(set(keys))
        if key
    ]
    if rows:
        session.execute(built_once(session, "records.mark", _mark_statement), rows)


def _mark_statement(insert: Any) -> Any:
    stmt = insert(_DIRTY)
    return stmt.on_conflict_do_update(
        index_elements=["kind", "key"],
        set_={
            "generation": _DIRTY.c.generation + 1,
            "last_marked_at": stmt.excluded.last_marked_at,
        },
    )


# --- what a kind's refresh is made of ----------------------------------------------------------


async def fetch_all(
    keys: Sequence[str], fetch: Callable[[str], Awaitable[T | None]]
) -> dict[str, T | retry.Failure | None]:
    """Fetch every key from Extend, at most `CONCURRENCY` at once: the record, None where the
    flow's `fetch` read the answer as "no such record", or the `retry.Failure` Extend's error
    decides (`retry.decide`)."""
    limit = asyncio.Semaphore(CONCURRENCY)

    async def one(key: str) -> T | retry.Failure | None:
        async with limit:
            try:
                return await fetch(key)
            except ExtendError as exc:
                return retry.decide(exc)

    found = await asyncio.gather(*(one(key) for key in keys))
    return dict(zip(keys, found, strict=True))


def split(
    fetched: Mapping[str, T | retry.Failure | None], *, missing: str
) -> tuple[dict[str, Outcome], list[tuple[str, T]]]:
    """`fetch_all`'s answers as the outcomes already known (`missing` for a record Extend does
    not have, the failures) and the (key, record) pairs to write."""
    outcomes: dict[str, Outcome] = {}
    found: list[tuple[str, T]] = []
    for key, got in fetched.items():
        if got is None:
            outcomes[key] = missing
        elif isinstance(got, retry.Failure):
            outcomes[key] = got
        else:
            found.append((key, got))
    return outcomes, found


def write_all(
    items: Sequence[tuple[str, T]], write: Callable[[Session, str, T], str]
) -> dict[str, Outcome]:
    """Write fetched records in one transaction (`write(session, key, record)` returns the
    outcome word); if that transaction fails, each record in its own, so one bad record cannot
    hold back the others (its failure waits by the kind's policy)."""
    if not items:
        return {}
    db = current().db
    try:
        with db.write() as session:
            return {key: write(session, key, record) for key, record in items}
    except Exception as exc:
        if len(items) == 1:
            log.exception("record_write_failed", key=items[0][0])
            return {items[0][0]: _write_failed(exc)}
    outcomes: dict[str, Outcome] = {}
    for key, record in items:
        try:
            with db.write() as session:
                outcomes[key] = write(session, key, record)
        except Exception as exc:
            log.exception("record_write_failed", key=key)
            outcomes[key] = _write_failed(exc)
    return outcomes


def _write_failed(exc: BaseException) -> retry.Failure:
    return retry.Failure(verdict=retry.Verdict.RETRY, reason="write_failed", error=f"{exc!r}"[:500])


# --- asking for a drain ------------------------------------------------------------------------

_TRIGGERS: dict[str, Trigger] = {}


def trigger(name: str) -> Trigger:
    """The process's trigger of kind `name`'s drain."""
    found = _TRIGGERS.get(name)
    if found is None:
        found = _TRIGGERS[name] = Trigger(
            lambda: request_drain(name), name=f"records-{name}-trigger"
        )
    return found


def request_drain(name: str) -> str:
    """Debounce a drain of kind `name` now (synchronous); returns the pending job's id."""
    return current().engine.debounce(
        f"records-{name}",
        drain,
        name,
        queue=f"records-{name}",
        period_seconds=DEBOUNCE_SECONDS,
        max_delay_seconds=MAX_DELAY_SECONDS,
    )


FORGOTTEN_AFTER = timedelta(seconds=60)  # a due mark this old has no drain coming (watchdog)


def request_forgotten_drains(now: datetime) -> int:
    """Ask again for the drain of every kind with a mark due for longer than `FORGOTTEN_AFTER`
    (the watchdog calls this); returns how many drains were asked for."""
    t = _DIRTY.c
    with current().db.read() as session:
        names = list(
            session.scalars(
                sa.select(t.kind).where(t.next_attempt_at <= now - FORGOTTEN_AFTER).distinct()
            )
        )
    asked = 0
    for name in names:
        if name in _KINDS:
            request_drain(name)
            asked += 1
    if asked:
        log.warning("record_drains_requested_again", kinds=sorted(n for n in names if n in _KINDS))
    return asked


# --- the drainer -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class _Taken:
    key: str
    generation: int
    attempts: int


def _answered_at() -> datetime | None:
    """When any process last got an answer from Extend (None: not reachable now)."""
    state = fleet_reachability(current().db.engine).state()
    return state.last_success_at if state.reachable else None


def _due(name: str, now: datetime, answered: datetime | None) -> list[_Taken]:
    """The marks of kind `name` due now, oldest first: due by their backoff, or failed before
    Extend answered again."""
    t = _DIRTY.c
    due = t.next_attempt_at <= now
    if answered is not None:
        due = sa.or_(due, t.last_failed_at < answered)
    with current().db.read() as session:
        rows = session.execute(
            sa.select(t.key, t.generation, t.attempts)
            .where(t.kind == name, due)
            .order_by(t.first_marked_at)
            .limit(BATCH)
        ).all()
    return [_Taken(key=r.key, generation=r.generation, attempts=r.attempts) for r in rows]


def _next_due(name: str, now: datetime) -> datetime | None:
    with current().db.read() as session:
        later: datetime | None = session.scalar(
            sa.select(sa.func.min(_DIRTY.c.next_attempt_at)).where(_DIRTY.c.kind == name)
        )
    return later


def _record(name: str, taken: list[_Taken], outcomes: Mapping[str, Outcome]) -> dict[str, int]:
    """Write what one pass did in one transaction: clear, wait again, or give up each mark."""
    ctx = current()
    now = ctx.clock()
    # Compared with reachability's instants, which are real UTC whatever clock the context has.
    failed_at = datetime.now(UTC)
    policy = retry.policy(kind(name).policy)
    counts = {"done": 0, "retrying": 0, "gave_up": 0}
    t = _DIRTY.c
    done = [
        {"b_key": item.key, "b_generation": item.generation}
        for item in taken
        if not isinstance(outcomes.get(item.key), retry.Failure) and item.key in outcomes
    ]
    with ctx.db.write() as session:
        if done:
            session.execute(
                sa.delete(_DIRTY).where(
                    t.kind == name,
                    t.key == sa.bindparam("b_key"),
                    t.generation == sa.bindparam("b_generation"),
                ),
                done,
            )
            counts["done"] = len(done)
        for item in taken:
            outcome = outcomes.get(item.key)
            if outcome is None:
                # The refresh said nothing about it: wait a little, like a failure.
                outcome = retry.Failure(
                    verdict=retry.Verdict.RETRY, reason="no_outcome", error="not refreshed"
                )
            if not isinstance(outcome, retry.Failure):
                continue
            attempt = item.attempts + 1
            action = policy.next(outcome, attempt=attempt, waited=_waited_before(policy, attempt))
            where = sa.and_(t.kind == name, t.key == item.key)
            if not isinstance(action, retry.RetryAfter):
                log.warning(
                    "record_refresh_gave_up",
                    kind=name,
                    key=item.key,
                    attempts=attempt,
                    error=outcome.error,
                )
                # Marked again meanwhile: a fresh mark, due now (the hook is newer than the
                # failures); else dropped: the kind's sweep repairs the record.
                session.execute(sa.delete(_DIRTY).where(where, t.generation == item.generation))
                session.execute(
                    sa.update(_DIRTY)
                    .where(where)
                    .values(attempts=0, next_attempt_at=now, last_failed_at=None)
                )
                counts["gave_up"] += 1
                continue
            session.execute(
                sa.update(_DIRTY)
                .where(where)
                .values(
                    attempts=attempt,
                    next_attempt_at=now + timedelta(seconds=action.seconds),
                    last_failed_at=failed_at,
                    last_error=outcome.error[:2000] if outcome.error else None,
                )
            )
            counts["retrying"] += 1
    return counts


def _waited_before(policy: retry.Backoff, attempt: int) -> float:
    """Seconds the policy has made a mark wait before attempt number `attempt` (what its
    `give_up_seconds` budget is counted against)."""
    waited = 0.0
    for earlier in range(1, attempt):
        wait = policy.delay(earlier)
        if wait >= policy.cap_seconds:
            return waited + wait * (attempt - earlier)
        waited += wait
    return waited


@engine.step(name="records.drain_pass")
async def _drain_pass(name: str) -> dict[str, Any]:
    """Refresh the due marks of kind `name` once; what happened and when to look again.

    Run again after a crash, the pass fetches its records again (a refresh is idempotent)."""
    ctx = current()
    answered = await asyncio.to_thread(_answered_at)
    taken = await asyncio.to_thread(_due, name, ctx.clock(), answered)
    counts = {"done": 0, "retrying": 0, "gave_up": 0}
    if taken:
        declared = kind(name)
        try:
            with bulk_calls() if declared.bulk else nullcontext():
                outcomes = await declared.refresh([item.key for item in taken])
        except Exception as exc:  # a bug or a database fault: every mark waits by the policy
            log.exception("record_refresh_failed", kind=name, keys=len(taken))
            failure = retry.Failure(
                verdict=retry.Verdict.RETRY, reason="refresh_failed", error=f"{exc!r}"[:500]
            )
            outcomes = dict.fromkeys((item.key for item in taken), failure)
        counts = await asyncio.to_thread(_record, name, taken, outcomes)
    now = ctx.clock()
    later = await asyncio.to_thread(_next_due, name, now)
    wake = None
    if later is not None:
        at = min(later, now + timedelta(seconds=WAKE_CHECK_SECONDS))
        wake = {
            "next_in": max(0.0, (at - now).total_seconds()),
            "retry_at": int(at.timestamp() * 1000),
        }
    more = counts["done"] + counts["gave_up"] > 0 or len(taken) >= BATCH
    return {**counts, "taken": len(taken), "more": more, "wake": wake}


@engine.workflow("records.drain")
async def drain(name: str) -> dict[str, int]:
    """Refresh the marked records of kind `name`, pass after pass until none is due; then, if a
    mark waits for a retry, leave a delayed run for when it is due (or Extend may be back)."""
    totals = {"done": 0, "retrying": 0, "gave_up": 0, "passes": 0}
    result: dict[str, Any] = {"more": False, "wake": None}
    for _ in range(PASSES):
        result = await _drain_pass(name)
        totals["passes"] += 1
        for counter in ("done", "retrying", "gave_up"):
            totals[counter] += int(result[counter])
        if not result["more"]:
            break
    eng = current().engine
    if result["more"]:
        eng.enqueue(
            drain,
            name,
            queue=f"records-{name}",
            workflow_id=f"records-{name}-after-{engine.workflow_id()}",
        )
    elif result["wake"] is not None:
        wake = result["wake"]
        eng.enqueue(
            drain,
            name,
            queue=f"records-{name}",
            workflow_id=f"records-{name}-retry-{wake['retry_at']}",
            delay_seconds=float(wake["next_in"]) + 0.05,
        )
    return totals


def _startup_drain(eng: engine.Engine) -> None:
    """Once the engine executes: a drain of every kind with marks left (a crash between an inbox
    commit and its trigger, or a drain that gave up)."""
    try:
        ctx = current()
    except RuntimeError:  # an engine launched without a Connector (a test, a script)
        return
    with ctx.db.read() as session:
        names = list(session.scalars(sa.select(_DIRTY.c.kind).distinct()))
    for name in names:
        if name in _KINDS:
            eng.enqueue(
                drain,
                name,
                queue=f"records-{name}",
                workflow_id=f"records-{name}-start-{uuid.uuid4().hex}",
            )


engine.on_launch("records.startup", _startup_drain)
