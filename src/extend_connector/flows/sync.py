"""One-off and scheduled sweeps: the progress protocol every sweep reports to, and its tally.

A sweep (products, customers, prices, balances, orders) lists what changed in Extend page by
page and handles each record. `extend-connector sync` shows a progress bar and a summary
table; schedules run the same sweep with no one watching. So a sweep takes a `Progress`
(anything with the four methods below; `NullProgress` when no one watches) and returns a
`SweepResult`. `Tally` does the counting for a sweep and forwards to the `Progress`:

    async def sweep_balances(full: bool, dry_run: bool, progress: Progress | None = None) ->
    SweepResult:
        extend = current().extend()
        tally = Tally("balances", progress, full=full, dry_run=dry_run, stats=extend.stats)
        async for balance in extend.availability_changed_since(since, progress=tally.page):
            tally.record("updated" if changed else "unchanged")
        return tally.result(cursor=new_mark)

`Tally.page` has the shape of the client's `PageProgress` callback, so it can be passed
straight to any `ExtendClient` list method; given `stats` (the client's counters), the tally
reports API calls and rate-limit waits after every page and record (as a difference from the
counters when the tally was made, since the client is shared by everything on its loop).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

import structlog
from sqlalchemy.orm import Session

from extend_connector.extend import bulk_calls
from extend_connector.extend.client import ClientStats
from extend_connector.extend.errors import ExtendError
from extend_connector.flows import cursors, retry
from extend_connector.flows.context import FlowContext, current

log = structlog.get_logger("extend_connector.sync")

# The record outcomes the summary table knows; sweeps may add their own words.
OUTCOMES = ("created", "updated", "unchanged", "deleted", "skipped", "failed")


class Progress(Protocol):
    """What a sweep tells whoever watches it. Every method must be cheap and must not raise."""

    def begin(self, data_point: str, *, total: int | None = None) -> None:
        """A sweep (or one listing inside it, e.g. one customer's prices) starts."""

    def page(self, *, pages: int, records: int, total: int | None) -> None:
        """A list page was read: pages and records read so far in this sweep, total if known."""

    def record(self, outcome: str) -> None:
        """One record was handled, with its outcome (see OUTCOMES)."""

    def api(self, *, calls: int, rate_limit_waits: int, waited_seconds: float) -> None:
        """Extend API counters since the sweep began (retries included)."""


class NullProgress:
    """No one is watching (schedules, webhooks)."""

    def begin(self, data_point: str, *, total: int | None = None) -> None:
        pass

    def page(self, *, pages: int, records: int, total: int | None) -> None:
        pass

    def record(self, outcome: str) -> None:
        pass

    def api(self, *, calls: int, rate_limit_waits: int, waited_seconds: float) -> None:
        pass


@dataclass(frozen=True, kw_only=True)
class SweepResult:
    """What one sweep did; printed by `extend-connector sync` and stored in the cursor stats."""

    data_point: str
    full: bool
    dry_run: bool
    pages: int
    records: int  # records read from list pages
    outcomes: Mapping[str, int] = field(default_factory=dict)
    api_calls: int = 0
    rate_limit_waits: int = 0
    waited_seconds: float = 0.0
    cursor: datetime | None = None  # the cursor's new mark (None: unchanged or not cursor-based)

    def as_stats(self) -> dict[str, object]:
        """A JSON-able summary (cursor stats, workflow results)."""
        return {
            "data_point": self.data_point,
            "full": self.full,
            "dry_run": self.dry_run,
            "pages": self.pages,
            "records": self.records,
            "outcomes": dict(self.outcomes),
            "api_calls": self.api_calls,
            "rate_limit_waits": self.rate_limit_waits,
            "waited_seconds": round(self.waited_seconds, 3),
            "cursor": self.cursor.isoformat() if self.cursor else None,
        }


class Tally:
    """Counts one sweep and forwards every event to its `Progress`."""

    def __init__(
        self,
        data_point: str,
        progress: Progress | None = None,
        *,
        full: bool = False,
        dry_run: bool = False,
        total: int | None = None,
        stats: Callable[[], ClientStats] | None = None,
    ) -> None:
        self.data_point = data_point
        self.progress: Progress = progress if progress is not None else NullProgress()
        self.full = full
        self.dry_run = dry_run
        self.pages = 0
        self.records = 0
        self.outcomes: Counter[str] = Counter()
        self._default_seen = 0  # records of the default list's current listing (see page())
        self._stats = stats
        self._stats_start: ClientStats | None = stats() if stats is not None else None
        self._stats_last: ClientStats | None = self._stats_start
        self.progress.begin(data_point, total=total)

    def listing(self) -> Callable[[int, int | None], None]:
        """A new list starts inside this sweep: returns its page callback (the client's
        `PageProgress`, counting from zero for this list). Several lists may run at once."""
        seen = 0

        def page(records_in_listing: int, total: int | None) -> None:
            nonlocal seen
            self._advance(records_in_listing - seen, total)
            seen = records_in_listing

        return page

    def page(self, records_in_listing: int, total: int | None) -> None:
        """The page callback of the sweep's default list (for sweeps that read one list at a
        time)."""
        self._advance(records_in_listing - self._default_seen, total)
        self._default_seen = records_in_listing

    def _advance(self, new_records: int, total: int | None) -> None:
        self.pages += 1
        self.records += new_records
        self.progress.page(pages=self.pages, records=self.records, total=total)
        self.refresh_api()

    def record(self, outcome: str) -> None:
        self.outcomes[outcome] += 1
        self.progress.record(outcome)
        self.refresh_api()

    def record_many(self, outcomes: Iterable[str]) -> None:
        """`record` for a written batch: the API counters are refreshed once, not per record."""
        for outcome in outcomes:
            self.outcomes[outcome] += 1
            self.progress.record(outcome)
        self.refresh_api()

    def refresh_api(self) -> None:
        """Report the API counters again (called by page() and record(); call it after lone
        calls)."""
        if self._stats is not None:
            self.api(self._stats())

    def api(self, stats: ClientStats) -> None:
        """Feed the client's counters by hand; the first value fed sets the zero point."""
        if self._stats_start is None:
            self._stats_start = stats
        self._stats_last = stats
        calls, waits, waited = self._api_delta()
        self.progress.api(calls=calls, rate_limit_waits=waits, waited_seconds=waited)

    def _api_delta(self) -> tuple[int, int, float]:
        if self._stats_start is None or self._stats_last is None:
            return 0, 0, 0.0
        delta = self._stats_last - self._stats_start
        return (
            delta.calls,
            sum(g.waits for g in delta.groups.values()),
            sum(g.waited_seconds for g in delta.groups.values()),
        )

    def result(self, *, cursor: datetime | None = None) -> SweepResult:
        calls, waits, waited = self._api_delta()
        return SweepResult(
            data_point=self.data_point,
            full=self.full,
            dry_run=self.dry_run,
            pages=self.pages,
            records=self.records,
            outcomes=dict(self.outcomes),
            api_calls=calls,
            rate_limit_waits=waits,
            waited_seconds=waited,
            cursor=cursor,
        )


# --- list, then fetch what changed -----------------------------------------------------------

R = TypeVar("R")


@dataclass(frozen=True, kw_only=True)
class Listed:
    """One list item reduced to what the sweep needs: its key and Extend's change date."""

    key: str
    changed_at: datetime | None


async def list_then_fetch(
    listing: AsyncIterator[Listed],
    *,
    stored_changed: Callable[[list[str]], Mapping[str, datetime | None]],
    fetch: Callable[[str], Awaitable[R | None]],
    apply: Callable[[list[R]], list[str]],
    tally: Tally,
    batch_size: int,
    fetch_concurrency: int = 8,
) -> datetime | None:
    """Extend's sync pattern: list what changed, fetch each changed record, apply in batches.

    A list item whose change date equals the stored one is not fetched (a second sweep with
    nothing changed costs only the list calls); `fetch` returns None for a record gone since
    it was listed. Up to `fetch_concurrency` fetches of a batch run at once. Batches keep memory
    flat whatever the catalogue size: at most `batch_size` items are held at once. Returns the
    latest change date seen (for the cursor). Every Extend call of the listing and the fetches
    is bulk work (`extend.bulk_calls`): it uses the rate budget down to its bulk reserve and
    gives way to orders and stock.
    """
    latest: datetime | None = None
    batch: list[Listed] = []

    async def flush() -> None:
        # Database work off the event loop (every async job of the process shares it).
        known = await asyncio.to_thread(stored_changed, [item.key for item in batch])
        wanted: list[str] = []
        for item in batch:
            if item.key in wanted:  # the overlap walk may list a record twice
                continue
            if (
                item.key in known
                and item.changed_at is not None
                and known[item.key] == item.changed_at
            ):
                tally.record("unchanged")
                continue
            wanted.append(item.key)
        gate = asyncio.Semaphore(fetch_concurrency)

        async def one(key: str) -> R | None:
            async with gate:  # the client's shared rate budget still paces every call
                return await fetch(key)

        fetched: list[R] = []
        for record in await asyncio.gather(*(one(key) for key in wanted)):
            if record is None:
                tally.record("skipped")
            else:
                fetched.append(record)
        tally.record_many(await asyncio.to_thread(apply, fetched) if fetched else [])
        batch.clear()

    with bulk_calls():
        async for item in listing:
            if item.changed_at is not None and (latest is None or item.changed_at > latest):
                latest = item.changed_at
            batch.append(item)
            if len(batch) >= batch_size:
                await flush()
        if batch:
            await flush()
    return latest


async def sweep_changed(
    name: str,
    *,
    cursor: str,
    listing: Callable[[datetime | None, Tally], AsyncIterator[Listed]],
    stored_changed: Callable[[Session, list[str]], Mapping[str, datetime | None]],
    fetch: Callable[[str], Awaitable[R | None]],
    apply: Callable[..., list[str]],
    full: bool = False,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> SweepResult:
    """One list-then-fetch sweep of a record type, from its change-date cursor to now.

    `listing(since, tally)` yields the light list items changed since `since` (None: all);
    `apply(session, records, now=, dry_run=)` writes a batch and returns an outcome per record.
    A dry run reads the cursor in a session that is never committed and writes nothing.
    """
    ctx = current()
    extend = ctx.extend()
    tally = Tally(name, progress, full=full, dry_run=dry_run, stats=extend.stats)
    overlap = timedelta(seconds=ctx.settings.sync.overlap_seconds)

    # Database work off the event loop (every async job of the process shares it).
    def begin() -> datetime | None:
        with ctx.db.read() if dry_run else ctx.db.write() as session:
            return cursors.start(session, cursor, now=ctx.clock(), overlap=overlap, full=full)

    since = await asyncio.to_thread(begin)

    def known(keys: list[str]) -> Mapping[str, datetime | None]:
        with ctx.db.read() as session:
            return stored_changed(session, keys)

    def write(records: list[R]) -> list[str]:
        with ctx.db.read() if dry_run else ctx.db.write() as session:
            return apply(session, records, now=ctx.clock(), dry_run=dry_run)

    latest = await list_then_fetch(
        listing(since, tally),
        stored_changed=known,
        fetch=fetch,
        apply=write,
        tally=tally,
        batch_size=extend.dialect.page_size,
    )

    def finish() -> datetime | None:
        with ctx.db.write() as session:
            return cursors.finish(
                session,
                cursor,
                latest_seen=latest,
                now=ctx.clock(),
                stats=tally.result().as_stats(),
            )

    mark = None if dry_run else await asyncio.to_thread(finish)
    result = tally.result(cursor=mark)
    log.info(f"{name}_swept", **result.as_stats())
    return result


# --- `extend-connector sync`: run one sweep now, with a progress bar and a summary ------------

EXIT_OK = 0
EXIT_SCOPE_OFF = 4


class RichProgress:
    """A terminal progress bar: records, pages, API calls and rate-limit waits."""

    def __init__(self, console: Any = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as Bar

        self.console = console or Console(stderr=True)
        self._bar = Bar(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self._task: Any = None
        self._pages = self._records = self._calls = self._waits = 0

    def __enter__(self) -> RichProgress:
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def _refresh(self) -> None:
        detail = f"pages {self._pages}  API calls {self._calls}  rate-limit waits {self._waits}"
        if self._task is not None:
            self._bar.update(self._task, completed=self._records, detail=detail)

    def begin(self, data_point: str, *, total: int | None = None) -> None:
        if self._task is None:
            self._task = self._bar.add_task(data_point, total=total, detail="")

    def page(self, *, pages: int, records: int, total: int | None) -> None:
        self._pages, self._records = pages, records
        if total is not None and self._task is not None:
            task = self._bar.tasks[0]
            if task.total is None or task.total < records:
                self._bar.update(self._task, total=max(total, records))
        self._refresh()

    def record(self, outcome: str) -> None:
        pass

    def api(self, *, calls: int, rate_limit_waits: int, waited_seconds: float) -> None:
        if (calls, rate_limit_waits) != (self._calls, self._waits):
            self._calls, self._waits = calls, rate_limit_waits
            self._refresh()


def summary_table(result: SweepResult) -> Any:
    from rich.table import Table

    title = f"sync {result.data_point}" + (
        " (dry run: nothing written, nothing told)" if result.dry_run else ""
    )
    table = Table(title=title)
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("records listed", str(result.records))
    table.add_row("pages", str(result.pages))
    for outcome in (*OUTCOMES, *sorted(set(result.outcomes) - set(OUTCOMES))):
        if outcome in result.outcomes or outcome in OUTCOMES[:3]:
            label = (
                f"would be {outcome}"
                if result.dry_run and outcome in ("created", "updated", "deleted")
                else outcome
            )
            table.add_row(label, str(result.outcomes.get(outcome, 0)))
    table.add_row("API calls", str(result.api_calls))
    table.add_row("rate-limit waits", f"{result.rate_limit_waits} ({result.waited_seconds:.1f} s)")
    table.add_row("cursor", result.cursor.isoformat() if result.cursor else "-")
    return table


def scope_off(settings: Any, data_point: str) -> str | None:
    scope = settings.scope
    if data_point == "products" and scope.products == "off":
        return "scope.products = off"
    if data_point == "customers" and scope.customers != "from_extend":
        return (
            f"scope.customers = {scope.customers.value} (customers are read from Extend only "
            "with from_extend)"
        )
    if data_point == "prices" and scope.prices == "off":
        return "scope.prices = off"
    return None


def run_sweep(
    ctx: FlowContext,
    sweep: Callable[[bool, bool, Progress | None], Awaitable[SweepResult]],
    *,
    full: bool,
    dry_run: bool,
    console: Any,
) -> SweepResult:
    """Run one sweep now in `ctx` (the caller built it and closes it), with a progress bar."""

    async def go() -> SweepResult:
        try:
            with RichProgress(console) as bar:
                return await sweep(full, dry_run, bar)
        finally:
            await ctx.aclose()

    return asyncio.run(go())


async def scheduled(name: str, sweep: Callable[[], Awaitable[SweepResult]]) -> dict[str, Any]:
    """Run a scheduled sweep for its job: `{"outcome": "done", ...its stats}`.

    Extend unreachable, throttling or refusing the credential (an error a later try can get
    past) ends the run quietly with outcome `extend_unreachable` and a warning: the next
    scheduled run reads from the same cursor, so nothing is missed, and staleness shows in
    `status`, the freshness figures and the `extend_unreachable` alert. Parking the job for a
    person (as a stopped job is) would ask them to clear what the schedule repairs by itself.
    An answer no retry changes (Extend refusing the request itself) still stops the job, and
    the watchdog parks it with Extend's words.
    """
    try:
        result = await sweep()
    except ExtendError as exc:
        if not retry.decide(exc).retryable:
            raise
        log.warning(f"{name}_sweep_failed", error=str(exc)[:300], kind=type(exc).__name__)
        return {"outcome": "extend_unreachable", "error": str(exc)[:300]}
    return {"outcome": "done", **result.as_stats()}
