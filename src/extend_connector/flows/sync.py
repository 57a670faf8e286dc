"""One-off and scheduled sweeps: the progress protocol every sweep reports to, and its tally.

A sweep (products, customers, prices, balances, orders) lists what changed in Extend page by
page and handles each record. `extend-connector sync` shows a progress bar and a summary
table; schedules run the same sweep with no one watching. So a sweep takes a `Progress`
(anything with the four methods below; `NullProgress` when no one watches) and returns a
`SweepResult`. `Tally` does the counting for a sweep and forwards to the `Progress`:

    async def sweep_balances(full: bool, dry_run: bool, progress: Progress | None = None) -> SweepResult:
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

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from extend_connector.extend.client import ClientStats

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
        return {"data_point": self.data_point, "full": self.full, "dry_run": self.dry_run,
                "pages": self.pages, "records": self.records, "outcomes": dict(self.outcomes),
                "api_calls": self.api_calls, "rate_limit_waits": self.rate_limit_waits,
                "waited_seconds": round(self.waited_seconds, 3),
                "cursor": self.cursor.isoformat() if self.cursor else None}


class Tally:
    """Counts one sweep and forwards every event to its `Progress`."""

    def __init__(self, data_point: str, progress: Progress | None = None, *, full: bool = False,
                 dry_run: bool = False, total: int | None = None,
                 stats: Callable[[], ClientStats] | None = None) -> None:
        self.data_point = data_point
        self.progress: Progress = progress if progress is not None else NullProgress()
        self.full = full
        self.dry_run = dry_run
        self.pages = 0
        self.records = 0
        self.outcomes: Counter[str] = Counter()
        self._listing_base = 0  # records of earlier listings in this sweep
        self._stats = stats
        self._stats_start: ClientStats | None = stats() if stats is not None else None
        self._stats_last: ClientStats | None = self._stats_start
        self.progress.begin(data_point, total=total)

    def listing(self) -> None:
        """A new list starts inside this sweep (the client's page callback counts from zero again)."""
        self._listing_base = self.records

    def page(self, records_in_listing: int, total: int | None) -> None:
        """The client's `PageProgress` callback: (items of this listing so far, total if known)."""
        self.pages += 1
        self.records = self._listing_base + records_in_listing
        self.progress.page(pages=self.pages, records=self.records, total=total)
        self.refresh_api()

    def record(self, outcome: str) -> None:
        self.outcomes[outcome] += 1
        self.progress.record(outcome)
        self.refresh_api()

    def refresh_api(self) -> None:
        """Report the API counters again (called by page() and record(); call it after lone calls)."""
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
        return (delta.calls, sum(g.waits for g in delta.groups.values()),
                sum(g.waited_seconds for g in delta.groups.values()))

    def result(self, *, cursor: datetime | None = None) -> SweepResult:
        calls, waits, waited = self._api_delta()
        return SweepResult(data_point=self.data_point, full=self.full, dry_run=self.dry_run, pages=self.pages,
                           records=self.records, outcomes=dict(self.outcomes), api_calls=calls,
                           rate_limit_waits=waits, waited_seconds=waited, cursor=cursor)
