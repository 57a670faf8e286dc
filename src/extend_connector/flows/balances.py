"""Balances within about a second, at a handful of calls per burst: dirty marks, a debounced
flush, and a low-frequency reconciliation sweep.

Path of one `AvailableBalanceChanged` / `BalanceChanged`:

1. The webhook inbox calls `_mark` inside its own transaction: the (product, warehouse) pair is
   upserted into `dirty_balances` (only sell-from warehouses, `extend.warehouses`; a notification
   without a warehouse marks every sell-from warehouse). No job per notification.
2. After the commit, `_after_commit` asks the process's `FlushTrigger` for a flush. The trigger
   calls `Engine.debounce` from a background thread, at most once per `TRIGGER_MIN_INTERVAL`
   (a debounce is a database write of ~3 ms on SQLite, too slow to make per notification at
   1,000/s), and always once more after the last request, so the final notification is covered.
3. `flush_balances` (queue `balances`, one job at a time) snapshots the dirty pairs, notes the
   instant the fetch starts, fetches `GET ProductAvailability` for their product numbers in
   chunks (sell-from warehouses only), writes the balances, tells the shop about real changes,
   and deletes only the dirty rows marked no later than the fetch start. A notification that
   arrives during the fetch keeps its row dirty and has its own debounce pending, so after the
   last notification for a product at least one fetch starts after it arrived.

Rules of the local copy:
- The fetched value is the truth; a notification's value is at most a hint (setting
  `sync.balance_apply_notification_value`, shown as unconfirmed until a fetch confirms it).
- Extend's change date guards every write: a fetched balance older than the stored one (an
  answer overtaken by a newer one) is ignored, so reordered or repeated work never restores an
  older value.
- A (product, sell-from warehouse) that Extend does not return has no stock record there:
  it is stored as 0 available.
- The shop is told (`stock.changed`, key `sku:<productNumber>`) only when its figure changed:
  the sum over sell-from warehouses, or each warehouse's figure (`webshop.stock_figure`).

The reconciliation sweep (`sweep_balances`, scheduled every `sync.balances_sweep_minutes` on the
same queue) reads balances changed since the cursor minus the overlap, page by page, and repairs
whatever lost notifications left behind; without a cursor it loads every balance. It also
triggers a flush when dirty rows are waiting (a crash between an inbox commit and its trigger).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, cast

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session

from extend_connector import engine
from extend_connector.domain import Balance
from extend_connector.extend import errors as extend_errors
from extend_connector.extend.webhooks import AvailableBalanceChanged, BalanceChanged, Notification
from extend_connector.flows import cursors, dispatch, outbox, retry
from extend_connector.flows.context import current
from extend_connector.flows.freshness import reachability
from extend_connector.flows.passes import PassDone, PassFailed, Trigger, run_passes
from extend_connector.flows.sync import Progress, SweepResult, Tally, scheduled
from extend_connector.settings import Settings
from extend_connector.store.models import BalanceRow, DirtyBalanceRow
from extend_connector.store.repositories import dialect_insert, mark_dirty
from extend_connector.webshop import EventType

log = structlog.get_logger("extend_connector.flows.balances")

_BALANCES = cast(sa.Table, BalanceRow.__table__)
_DIRTY = cast(sa.Table, DirtyBalanceRow.__table__)

QUEUE = "balances"
CURSOR = "balances"
FLUSH_KEY = "balances-flush"
SCHEDULE = "balances-sweep"
# One flush or sweep at a time: they write the same rows, and a flush that waits behind another
# picks up everything marked meanwhile. Polled often so a debounce window of 0.3 s means 0.3 s.
engine.queue(QUEUE, concurrency=1, poll_seconds=0.1)

TRIGGER_MIN_INTERVAL = 0.05  # seconds between two debounce calls of one process
MAX_PAIRS_PER_PASS = 5000  # dirty pairs fetched per flush pass (memory and transaction size)
IN_CHUNK = 500  # product numbers per SQL IN (...) list
# A flush pass lists what changed (instead of asking by product number) from this many calls by
# number, and only from a point no further back than LIST_MAX_AGE (`_fetch`).
LIST_FROM_CALLS = 3
LIST_MAX_AGE = timedelta(minutes=5)
# The flush's backoff is `flows.retry` policy `balances.flush` (1 s, then 2 s, then gives up
# after an hour: the rows stay dirty; the next sweep triggers a flush again).


def sell_from(settings: Settings) -> list[str]:
    return list(dict.fromkeys(settings.extend.warehouses))


# --- shop-facing figure --------------------------------------------------------------------


def _number(value: Decimal) -> int | float:
    """A quantity as a JSON number (integral quantities as integers)."""
    return int(value) if value == value.to_integral_value() else float(value)


@dataclass(frozen=True, kw_only=True, slots=True)
class StockFigure:
    """The stock the shop sees for one product: its available balance in each sell-from
    warehouse (in the order of `extend.warehouses`; a warehouse without a balance counts as 0)
    and their sum. The one definition, used by the pushed `stock.changed` events and by the read
    API's `GET /v1/stock`."""

    product_number: str
    warehouses: tuple[tuple[str, Decimal], ...]

    @property
    def available(self) -> Decimal:
        return sum((value for _, value in self.warehouses), Decimal(0))

    def event(self, form: str) -> dict[str, Any]:
        """The event payload: `sum` {"productNumber", "available"}; `per_warehouse`
        {"productNumber", "warehouses": [{"warehouse", "available"}]} (`webshop.stock_figure`)."""
        if form == "sum":
            return {"productNumber": self.product_number, "available": _number(self.available)}
        return {
            "productNumber": self.product_number,
            "warehouses": [{"warehouse": w, "available": _number(v)} for w, v in self.warehouses],
        }


def stock_figure(
    product_number: str, warehouses: Sequence[str], available: Mapping[str, Decimal]
) -> StockFigure:
    """The figure of `product_number` over `warehouses` from their available balances."""
    return StockFigure(
        product_number=product_number,
        warehouses=tuple((w, available.get(w, Decimal(0))) for w in warehouses),
    )


def shop_figure(
    settings: Settings, product_number: str, available: Mapping[str, Decimal]
) -> dict[str, Any]:
    """The pushed form of the shop's figure for one product, over its sell-from warehouses."""
    figure = stock_figure(product_number, sell_from(settings), available)
    return figure.event(settings.webshop.stock_figure)


def shop_figures(session: Session, product_numbers: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The pushed form of the shop's figure for each of `product_numbers`, from the local copy
    (a product without balances: zeros)."""
    settings = current().settings
    held = _Figures(_held(session, product_numbers))
    return {number: held.figure(settings, number) for number in product_numbers}


# --- the webhook side ------------------------------------------------------------------------


def _mark(session: Session, notification: Notification, _json: dict[str, Any]) -> None:
    """Inline handler: mark the notified pairs dirty inside the inbox transaction."""
    _mark_many(session, [notification])


def _mark_many(session: Session, notifications: list[Notification]) -> None:
    """Inline handler for a group-committed batch: one statement marks every notified pair."""
    ctx = current()
    warehouses = sell_from(ctx.settings)
    now = ctx.clock()
    pairs: dict[tuple[str, str], None] = {}  # in order, each once (one upsert may not repeat a row)
    for notification in notifications:
        if not isinstance(notification, AvailableBalanceChanged | BalanceChanged):
            continue
        if notification.warehouse is None:
            targets = warehouses
        elif notification.warehouse in warehouses:
            targets = [notification.warehouse]
        else:
            continue  # the shop does not sell from there
        pairs.update(dict.fromkeys((notification.product_number, w) for w in targets))
    mark_dirty(session, list(pairs), now=now)
    if not ctx.settings.sync.balance_apply_notification_value:
        return
    for notification in notifications:
        if (
            isinstance(notification, AvailableBalanceChanged)
            and notification.available_balance is not None
            and notification.warehouse is not None
            and notification.warehouse in warehouses
        ):
            _note_notified(
                session,
                notification.product_number,
                notification.warehouse,
                notification.available_balance,
                now,
            )


def _note_notified(
    session: Session, product_number: str, warehouse: str, value: Decimal, now: datetime
) -> None:
    """Keep the announced value as unconfirmed (the read API shows it until a fetch confirms)."""
    row = session.get(BalanceRow, (product_number, warehouse), with_for_update=True)
    if row is None:
        session.execute(
            sa.insert(BalanceRow).values(
                product_number=product_number,
                warehouse=warehouse,
                available=value,
                physical=None,
                reserved=None,
                extend_changed_at=None,
                confirmed_at=None,
                notified_available=value,
                notified_at=now,
            )
        )
        return
    row.notified_available = value
    row.notified_at = now


def _after_commit(_notifications: list[Notification]) -> None:
    trigger.request()


dispatch.on(
    ["AvailableBalanceChanged", "BalanceChanged"],
    dispatch.InlineHandler(apply=_mark, apply_many=_mark_many, after_commit=_after_commit),
)


class FlushTrigger(Trigger):
    """The process's trigger of the debounced flush (`passes.Trigger` calling `request_flush`)."""

    def __init__(self, min_interval: float = TRIGGER_MIN_INTERVAL) -> None:
        super().__init__(
            lambda: request_flush(), name="balances-flush-trigger", min_interval=min_interval
        )


trigger = FlushTrigger()


def request_flush() -> str:
    """Debounce a flush now (synchronous); returns the id of the pending flush job."""
    ctx = current()
    sync = ctx.settings.sync
    return ctx.engine.debounce(
        FLUSH_KEY,
        flush_balances,
        queue=QUEUE,
        period_seconds=sync.balance_debounce_seconds,
        max_delay_seconds=sync.balance_max_delay_seconds,
    )


# --- writing balances --------------------------------------------------------------------------


@dataclass(kw_only=True, slots=True)
class _Held:
    """A stored balance as plain values (no ORM objects: thousands per flush must stay cheap)."""

    available: Decimal
    physical: Decimal | None
    reserved: Decimal | None
    changed_at: datetime | None
    confirmed_at: datetime | None
    notified: bool


def _held(session: Session, product_numbers: Sequence[str]) -> dict[tuple[str, str], _Held]:
    found: dict[tuple[str, str], _Held] = {}
    t = _BALANCES.c
    for i in range(0, len(product_numbers), IN_CHUNK):
        chunk = list(product_numbers[i : i + IN_CHUNK])
        query = sa.select(
            t.product_number,
            t.warehouse,
            t.available,
            t.physical,
            t.reserved,
            t.extend_changed_at,
            t.confirmed_at,
            t.notified_at,
        ).where(t.product_number.in_(chunk))
        for p, w, available, physical, reserved, changed, confirmed, notified_at in session.execute(
            query
        ):
            found[(p, w)] = _Held(
                available=available,
                physical=physical,
                reserved=reserved,
                changed_at=changed,
                confirmed_at=confirmed,
                notified=notified_at is not None,
            )
    return found


class _Figures:
    """Per product, the stored available balances of the sell-from warehouses."""

    def __init__(self, held: dict[tuple[str, str], _Held]) -> None:
        self.by_product: dict[str, dict[str, Decimal]] = {}
        for (p, w), h in held.items():
            self.by_product.setdefault(p, {})[w] = h.available

    def figure(self, settings: Settings, product_number: str) -> dict[str, Any]:
        return shop_figure(settings, product_number, self.by_product.get(product_number, {}))


def apply_balances(
    session: Session,
    fetched: Iterable[Balance],
    *,
    absent_as_zero: Iterable[tuple[str, str]] = (),
    read_started: datetime | None = None,
    confirmed_at: datetime,
    dry_run: bool = False,
) -> dict[str, int]:
    """Write fetched balances (and 0 for the `absent_as_zero` pairs Extend did not return).

    `read_started` is when the read that did not return the `absent_as_zero` pairs began: a
    stored balance confirmed at or after it came from a later read of Extend (a flush or sweep
    running beside this one: a product that got stock meanwhile) and keeps its value.

    Returns counts of `created`, `updated`, `unchanged` and `skipped` (older than what is stored,
    or an absent pair a later read confirmed);
    publishes `stock.changed` for each product whose shop figure changed (not in a dry run).
    """
    ctx = current()
    settings = ctx.settings
    warehouses = set(sell_from(settings))
    latest: dict[tuple[str, str], Balance] = {}
    for b in fetched:
        if b.warehouse not in warehouses:
            continue
        key = (b.product_number, b.warehouse)
        seen = latest.get(key)
        if seen is None or _newer_or_same(b.changed_at, seen.changed_at):
            latest[key] = b
    absent = [pair for pair in absent_as_zero if pair not in latest and pair[1] in warehouses]
    held = _held(session, sorted({p for p, _ in latest} | {p for p, _ in absent}))
    skipped = 0
    for product_number, warehouse in absent:
        row = held.get((product_number, warehouse))
        if (
            read_started is not None
            and row is not None
            and row.confirmed_at is not None
            and row.confirmed_at >= read_started
        ):
            skipped += 1
            continue
        latest[(product_number, warehouse)] = Balance(
            product_number=product_number,
            warehouse=warehouse,
            available=Decimal(0),
            physical=None,
            reserved=None,
        )
    products = sorted({p for p, _ in latest})
    before = _Figures(held)
    after = _Figures(held)
    counts = {"created": 0, "updated": 0, "unchanged": 0, "skipped": skipped}
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    touched: list[dict[str, Any]] = []
    for (product_number, warehouse), b in latest.items():
        row = held.get((product_number, warehouse))
        if row is None:
            counts["created"] += 1
            inserts.append(
                {
                    "product_number": product_number,
                    "warehouse": warehouse,
                    "available": b.available,
                    "physical": b.physical,
                    "reserved": b.reserved,
                    "extend_changed_at": b.changed_at,
                    "confirmed_at": confirmed_at,
                    "notified_available": None,
                    "notified_at": None,
                }
            )
        elif (
            row.changed_at is not None
            and b.changed_at is not None
            and b.changed_at < row.changed_at
        ):
            counts["skipped"] += 1
            continue
        elif (
            row.available == b.available
            and row.physical == b.physical
            and row.reserved == b.reserved
            and (b.changed_at is None or row.changed_at == b.changed_at)
        ):
            counts["unchanged"] += 1
            (updates if row.notified else touched).append(
                _update_values(product_number, warehouse, b, row)
            )
        else:
            counts["updated"] += 1
            updates.append(_update_values(product_number, warehouse, b, row))
        after.by_product.setdefault(product_number, {})[warehouse] = b.available
    if dry_run:
        return counts
    t = _BALANCES.c
    if inserts:
        # A concurrent writer (a one-off sweep from the command line) may have inserted meanwhile;
        # its row is as good as ours, and the next flush or sweep reconciles either way.
        session.execute(_insert_ignore(session), inserts)
    if updates:
        session.execute(
            sa.update(_BALANCES)
            .where(t.product_number == sa.bindparam("p"), t.warehouse == sa.bindparam("w"))
            .values(
                available=sa.bindparam("available"),
                physical=sa.bindparam("physical"),
                reserved=sa.bindparam("reserved"),
                extend_changed_at=sa.bindparam("changed_at"),
                confirmed_at=confirmed_at,
                notified_available=None,
                notified_at=None,
            ),
            updates,
        )
    if touched:
        # Unchanged rows only get their confirmation time.
        session.execute(
            sa.update(_BALANCES)
            .where(t.product_number == sa.bindparam("p"), t.warehouse == sa.bindparam("w"))
            .values(confirmed_at=confirmed_at),
            [{"p": u["p"], "w": u["w"]} for u in touched],
        )
    events = []
    for product_number in products:
        figure = after.figure(settings, product_number)
        # A product seen for the first time is told even at 0: the shop may show a figure of
        # its own until the connector gives it Extend's (a Vendure variant created with stock).
        first = product_number not in before.by_product
        if first or figure != before.figure(settings, product_number):
            events.append(
                (f"sku:{product_number}", {**figure, "confirmedAt": confirmed_at.isoformat()})
            )
    outbox.publish_many(session, EventType.STOCK_CHANGED, events)
    return counts


def _update_values(product_number: str, warehouse: str, b: Balance, row: _Held) -> dict[str, Any]:
    return {
        "p": product_number,
        "w": warehouse,
        "available": b.available,
        "physical": b.physical,
        "reserved": b.reserved,
        "changed_at": b.changed_at if b.changed_at is not None else row.changed_at,
    }


def _insert_ignore(session: Session) -> Any:
    return dialect_insert(session)(_BALANCES).on_conflict_do_nothing()


def _newer_or_same(a: datetime | None, b: datetime | None) -> bool:
    return b is None or (a is not None and a >= b)


# --- the flush --------------------------------------------------------------------------------


def _snapshot(limit: int) -> list[tuple[str, str]]:
    with current().db.read() as session:
        rows = session.execute(
            sa.select(DirtyBalanceRow.product_number, DirtyBalanceRow.warehouse)
            .order_by(DirtyBalanceRow.first_marked_at)
            .limit(limit)
        ).all()
    return [(p, w) for p, w in rows]


def _clear(session: Session, pairs: Sequence[tuple[str, str]], fetch_started: datetime) -> int:
    """Delete the dirty rows of `pairs` marked no later than `fetch_started`; newer marks stay.

    A row that another transaction holds is left alone (SKIP LOCKED, PostgreSQL): that is an
    ingest marking it again, so it must stay dirty anyway. Waiting for it instead deadlocked
    against the ingest, which marks rows in notification order while this deletes them in
    mark order (issue #13's fleet scenario; the step's retry recovered, a pass later).
    """
    table = _DIRTY
    held_by_none = (
        sa.select(table.c.product_number, table.c.warehouse)
        .where(
            table.c.product_number == sa.bindparam("p"),
            table.c.warehouse == sa.bindparam("w"),
            table.c.last_marked_at <= sa.bindparam("t"),
        )
        .with_for_update(skip_locked=True)
    )
    result: sa.CursorResult[Any] = session.execute(  # type: ignore[assignment]
        sa.delete(table).where(
            sa.tuple_(table.c.product_number, table.c.warehouse).in_(held_by_none),
            table.c.last_marked_at <= sa.bindparam("t"),
        ),
        [{"p": p, "w": w, "t": fetch_started} for p, w in pairs],
    )
    return int(result.rowcount or 0)


@dataclass(kw_only=True, slots=True)
class _SeenUpTo:
    """The latest change date (Extend's clock) any flush answer of this process held: a flush
    that lists changes asks from there (a flood's next pass, not its whole history)."""

    at: datetime | None = None

    def note(self, balances: Iterable[Balance]) -> None:
        for balance in balances:
            if balance.changed_at is not None and (self.at is None or balance.changed_at > self.at):
                self.at = balance.changed_at


_seen = _SeenUpTo()


async def _fetch(pairs: Sequence[tuple[str, str]], warehouses: list[str]) -> list[Balance]:
    """The current balance of every dirty pair Extend has (a pair it leaves out has none).

    By product number, per warehouse only the products dirty there, one call per chunk of
    numbers. When that would take `LIST_FROM_CALLS` calls or more and an earlier answer told
    how far Extend's changes were seen, first by listing what changed since then in the
    warehouses concerned (`ProductAvailability?changedSince=`, up to 500 balances a page against
    ~170 numbers a chunk): what the listing returned is current, and only the pairs it did not
    return are asked by number. So a pair whose change the listing missed (a notification
    delivered late, clocks apart) is still asked, and the listing is cut off once it costs as
    many calls as asking by number would have."""
    extend = current().extend()
    dirty_in: dict[str, set[str]] = {}
    for product, warehouse in pairs:
        dirty_in.setdefault(warehouse, set()).add(product)
    order = [w for w in warehouses if w in dirty_in] + sorted(set(dirty_in) - set(warehouses))
    by_number = sum(extend.availability_calls(dirty_in[w], warehouses=[w]) for w in order)
    since = _seen.at
    fetched: list[Balance] = []
    if (
        since is not None
        and by_number >= LIST_FROM_CALLS
        and current().clock() - since <= LIST_MAX_AGE
    ):
        fetched = await _list_changed(since, order, max_calls=by_number - 1)
    listed = {(b.product_number, b.warehouse) for b in fetched}
    for warehouse in order:
        wanted = sorted(p for p in dirty_in[warehouse] if (p, warehouse) not in listed)
        if wanted:
            fetched += [
                b
                async for b in extend.availability_for_products(wanted, warehouses=[warehouse])
                if (b.product_number, b.warehouse) not in listed
            ]
    _seen.note(fetched)
    return fetched


async def _list_changed(since: datetime, warehouses: list[str], *, max_calls: int) -> list[Balance]:
    """The balances changed since `since`, stopping after `max_calls` calls (what came by then
    is kept: each is current)."""
    extend = current().extend()
    before = extend.stats().operations.get("list_availability", 0)
    found: list[Balance] = []
    async with contextlib.aclosing(
        extend.availability_changed_since(since, warehouses=warehouses)
    ) as listing:
        async for balance in listing:
            found.append(balance)
            if extend.stats().operations.get("list_availability", 0) - before > max_calls:
                break
    return found


async def flush_once(limit: int = MAX_PAIRS_PER_PASS) -> dict[str, Any]:
    """One pass over (at most `limit`) dirty pairs: fetch, write, clear what the fetch covered.

    Idempotent: a rerun after a crash fetches again and finds the same or newer values. Returns
    `outcome` `done` (with counts and `more`), `retry` (Extend unreachable or throttling) or
    `failed` (an answer that retrying will not change, e.g. an unknown warehouse).
    """
    ctx = current()
    # Database work runs off the event loop: every async job of the process shares that loop.
    pairs = await asyncio.to_thread(_snapshot, limit)
    if not pairs:
        return PassDone(more=False, counts={"pairs": 0, "calls": 0}).as_json()
    extend = ctx.extend()
    calls_before = extend.stats().operations.get("list_availability", 0)
    fetch_started = ctx.clock()
    try:
        fetched = await _fetch(pairs, sell_from(ctx.settings))
    except extend_errors.ExtendError as exc:
        reachability.failed(exc)
        log.warning(
            "balances_flush_fetch_failed", error=str(exc), pairs=len(pairs), kind=type(exc).__name__
        )
        return PassFailed(
            retryable=retry.decide(exc).retryable,
            error=str(exc)[:300],
            kind=type(exc).__name__,
            pairs=len(pairs),
        ).as_json()
    reachability.succeeded()
    calls = extend.stats().operations.get("list_availability", 0) - calls_before

    def write() -> tuple[dict[str, int], int]:
        with ctx.db.write() as session:
            return (
                apply_balances(
                    session,
                    fetched,
                    absent_as_zero=pairs,
                    read_started=fetch_started,
                    confirmed_at=ctx.clock(),
                ),
                _clear(session, pairs, fetch_started),
            )

    counts, cleared = await asyncio.to_thread(write)
    return PassDone(
        more=len(pairs) >= limit,
        counts={"pairs": len(pairs), "cleared": cleared, "calls": calls, **counts},
    ).as_json()


@engine.step()
async def _flush_pass() -> dict[str, Any]:
    return await flush_once()


@engine.workflow("balances.flush")
async def flush_balances() -> dict[str, Any]:
    """Fetch and store every dirty balance; waits out an Extend outage with capped backoff.

    A `failed` pass is not retryable as is (e.g. a sell-from warehouse Extend does not know): a
    person must fix the settings; the rows stay dirty and the error is in the job's result and log.
    """
    return await run_passes(
        _flush_pass,
        add=("pairs", "calls", "created", "updated", "unchanged", "skipped"),
        policy=retry.BALANCES_FLUSH,
    )


# --- the reconciliation sweep ------------------------------------------------------------------


async def sweep_balances(
    full: bool = False, dry_run: bool = False, progress: Progress | None = None
) -> SweepResult:
    """List balances changed since the cursor (every balance when `full` or on first start),
    page by page, and repair the local copy. `dry_run` reads and compares but writes nothing
    (not even the cursor). Returns what it did (`extend-connector sync balances` prints it).

    Every database step runs in a worker thread (`asyncio.to_thread`): the event loop is shared
    by every async job of the process and goes on reading pages meanwhile."""
    ctx = current()
    settings = ctx.settings
    extend = ctx.extend()
    tally = Tally("balances", progress, full=full, dry_run=dry_run, stats=extend.stats)
    overlap = timedelta(seconds=settings.sync.overlap_seconds)
    now = ctx.clock()

    def begin() -> datetime | None:
        if dry_run:
            with ctx.db.read() as session:
                row = cursors.peek(session, CURSOR)
                if full or row is None or row.high_water_mark is None:
                    return None
                return row.high_water_mark - overlap
        with ctx.db.write() as session:
            return cursors.start(session, CURSOR, now=now, overlap=overlap, full=full)

    def write(items: list[Balance], absent: list[tuple[str, str]] | None = None) -> dict[str, int]:
        with ctx.db.write() as session:
            return apply_balances(
                session,
                items,
                absent_as_zero=absent or (),
                read_started=now,
                confirmed_at=ctx.clock(),
                dry_run=dry_run,
            )

    def record(counts: dict[str, int]) -> None:
        for outcome, n in counts.items():
            for _ in range(n):
                tally.record(outcome)

    def held_pairs() -> list[tuple[str, str]]:
        with ctx.db.read() as session:
            return [
                (p, w)
                for p, w in session.execute(
                    sa.select(BalanceRow.product_number, BalanceRow.warehouse).where(
                        BalanceRow.warehouse.in_(sell_from(settings))
                    )
                )
            ]

    since = await asyncio.to_thread(begin)
    full_load = since is None
    latest: datetime | None = None
    seen: set[tuple[str, str]] = set()
    batch: list[Balance] = []
    try:
        for warehouse in sell_from(settings):
            page = tally.listing()
            extend_listing = (
                extend.availability_for_warehouses([warehouse])
                if full_load
                else extend.availability_changed_since(
                    since,  # type: ignore[arg-type]
                    warehouses=[warehouse],
                    progress=page,
                )
            )
            count = 0
            async for balance in extend_listing:
                count += 1
                if full_load and count % settings.extend.dialect.page_size == 0:
                    page(count, None)
                seen.add((balance.product_number, balance.warehouse))
                if balance.changed_at is not None and (
                    latest is None or balance.changed_at > latest
                ):
                    latest = balance.changed_at
                batch.append(balance)
                if len(batch) >= 500:
                    record(await asyncio.to_thread(write, batch))
                    batch = []
            if full_load and count % settings.extend.dialect.page_size:
                page(count, count)
        if batch:
            record(await asyncio.to_thread(write, batch))
        if full_load:
            # A balance we hold that Extend no longer lists has no stock record there any more.
            gone = [pair for pair in await asyncio.to_thread(held_pairs) if pair not in seen]
            for i in range(0, len(gone), 500):
                record(await asyncio.to_thread(write, [], gone[i : i + 500]))
    except extend_errors.ExtendError as exc:
        reachability.failed(exc)
        raise
    reachability.succeeded()

    def finish() -> datetime | None:
        with ctx.db.write() as session:
            return cursors.finish(
                session,
                CURSOR,
                latest_seen=latest,
                now=ctx.clock(),
                stats=tally.result().as_stats(),
            )

    mark = None if dry_run else await asyncio.to_thread(finish)
    result = tally.result(cursor=mark)
    log.info("balances_swept", **result.as_stats())
    if not dry_run and await asyncio.to_thread(_dirty_waiting):
        trigger.request()
    return result


def _dirty_waiting() -> bool:
    with current().db.read() as session:
        return (
            session.execute(sa.select(DirtyBalanceRow.product_number).limit(1)).first() is not None
        )


@engine.step()
async def _sweep_step() -> dict[str, Any]:
    return await scheduled("balances", sweep_balances)


@engine.workflow("balances.sweep")
async def scheduled_sweep(scheduled_at: Any = None, context: Any = None) -> dict[str, Any]:
    """The scheduled reconciliation sweep (see `sweep_balances`)."""
    return await _sweep_step()


# --- schedule and start-up -----------------------------------------------------------------------

_VALID_SECONDS = sorted(
    {
        *(s for s in range(1, 60) if 60 % s == 0),
        *(m * 60 for m in range(1, 60) if 60 % m == 0),
        *(h * 3600 for h in range(1, 24) if 24 % h == 0),
        86400,
    }
)


def sweep_interval(minutes: float) -> timedelta:
    """The longest interval cron can keep exactly that is not longer than `minutes` (>= 1 s)."""
    wanted = max(1.0, minutes * 60)
    return timedelta(seconds=max(s for s in _VALID_SECONDS if s <= wanted))


def declare_schedules(settings: Settings) -> None:
    """Called by `service.Connector`: the sweep schedule, and a flush of what a crash left dirty."""
    engine.schedule(
        SCHEDULE,
        scheduled_sweep,
        every=sweep_interval(settings.sync.balances_sweep_minutes),
        queue=QUEUE,
    )
    engine.on_launch("balances.startup", _startup_flush)


def _startup_flush(eng: engine.Engine) -> None:
    """Once the engine executes: load every balance if none was ever loaded (first start), and
    flush what was left dirty (a crash between an inbox commit and its trigger)."""
    try:
        ctx = current()
    except RuntimeError:  # an engine launched without a Connector (a test, a script)
        return
    try:
        with ctx.db.read() as session:
            row = cursors.peek(session, CURSOR)
            loaded = row is not None and row.high_water_mark is not None
        if not loaded:
            # Idempotent id: several workers starting together load once.
            eng.enqueue(scheduled_sweep, queue=QUEUE, workflow_id="balances-initial-load")
        if _dirty_waiting():
            trigger.request()
    except Exception as exc:  # the first scheduled sweep covers both
        log.warning("balances_startup_failed", error=str(exc))
