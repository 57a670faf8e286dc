"""Paging as small strategy objects: how a page is read (envelope) and how pages are walked.

Envelopes (the dialect's `envelope` setting):
- `BodyEnvelope`: `{"items": [...], "page", "pageSize", "totalCount", "totalPages"}`;
- `HeaderEnvelope`: a bare array, totals in `x-total-count` / `x-total-pages` / `x-page` headers.

Walks:
- `PageNumberWalk`: page 1, 2, … until the last page. Right for lists whose membership does not
  move while they are read (product numbers, a warehouse, prices).
- `ChangeDateWalk`: for every list Extend orders by change date then key, filtered by a change
  date or not (a full listing, a list of given product numbers). Plain page numbers lose records
  there: a record that changes while page 2 is read moves to the end, everything behind it shifts
  one place forward, and one record slips past the page boundary unseen. This walk re-anchors
  instead: after each page it asks again from the last change date seen (inclusive) at page 1,
  skipping records already yielded with the same change date. A record that changes mid-walk is
  read again in its new version; none is skipped. Inside a tie of one change date bigger than a
  page it steps by page number and checks afterwards (see `pages`). Its chase bound counts records
  (the first total plus `extra_pages` pages), so a tie over many pages is read to the end.

Both stream page by page; nothing is materialised beyond one page and a small dedupe set.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol


class EnvelopeError(ValueError):
    """The list answer does not have the configured envelope shape."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Page:
    items: list[Any]
    page: int
    page_size: int | None = None
    total_count: int | None = None
    total_pages: int | None = None


class Envelope(Protocol):
    def parse(self, data: Any, headers: Mapping[str, str], *, requested_page: int) -> Page: ...


def _int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True, kw_only=True, slots=True)
class BodyEnvelope:
    items_key: str = "items"

    def parse(self, data: Any, headers: Mapping[str, str], *, requested_page: int) -> Page:
        if not isinstance(data, dict):
            raise EnvelopeError(
                f"expected an object with `{self.items_key}`, got {type(data).__name__}"
            )
        lowered = {str(k).lower(): v for k, v in data.items()}
        items = lowered.get(self.items_key.lower())
        if not isinstance(items, list):
            raise EnvelopeError(f"expected `{self.items_key}` to be a list")
        return Page(
            items=items,
            page=_int(lowered.get("page")) or requested_page,
            page_size=_int(lowered.get("pagesize")),
            total_count=_int(lowered.get("totalcount")),
            total_pages=_int(lowered.get("totalpages")),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class HeaderEnvelope:
    total_count_header: str = "x-total-count"
    total_pages_header: str = "x-total-pages"
    page_header: str = "x-page"
    page_size_header: str = "x-page-size"

    def parse(self, data: Any, headers: Mapping[str, str], *, requested_page: int) -> Page:
        if not isinstance(data, list):
            raise EnvelopeError(f"expected a bare JSON array, got {type(data).__name__}")
        return Page(
            items=data,
            page=_int(headers.get(self.page_header)) or requested_page,
            page_size=_int(headers.get(self.page_size_header)),
            total_count=_int(headers.get(self.total_count_header)),
            total_pages=_int(headers.get(self.total_pages_header)),
        )


FetchPage = Callable[[dict[str, str], int], Awaitable[Page]]
"""Fetch one page: (extra query parameters, 1-based page number) -> Page."""


def is_last(page: Page, requested_size: int) -> bool:
    if not page.items:
        return True
    if page.total_pages is not None:
        return page.page >= page.total_pages
    # Without totals a short page is the last one.
    return len(page.items) < (page.page_size or requested_size)


@dataclass(frozen=True, kw_only=True, slots=True)
class PageNumberWalk:
    page_size: int

    async def pages(self, fetch: FetchPage, params: dict[str, str]) -> AsyncIterator[list[Any]]:
        number = 1
        while True:
            page = await fetch(params, number)
            if page.items:
                yield page.items
            if is_last(page, self.page_size):
                return
            number += 1


@dataclass(frozen=True, kw_only=True, slots=True)
class ChangeDateWalk:
    """Walk a change-date list without losing records that change between pages.

    `since=None` walks the whole list (a full load): the first page is asked without the
    change-date filter, every later one from the last change date seen. A full listing shifts
    under plain page numbers exactly as a filtered one does.
    """

    page_size: int
    since_param: str
    format_since: Callable[[datetime], str]
    key: Callable[[Any], Hashable]
    changed: Callable[[Any], datetime | None]
    ordered: bool = True  # dialect: the server sorts by change date then key
    # A list that keeps changing is chased for at most this many pages of records beyond its
    # first total (the caller's cursor, the last change date it stored, picks up the rest on its
    # next sweep); a server that keeps answering nothing new is left after this many such pages.
    extra_pages: int = 20
    # Re-read a page back at every step inside a tie (the walk before ties were checked
    # afterwards; twice the calls). The re-read of a suspect tie walks this way.
    careful: bool = False

    async def pages(
        self, fetch: FetchPage, params: dict[str, str], since: datetime | None
    ) -> AsyncGenerator[list[Any], None]:
        anchor = since
        number = 1
        ordered = self.ordered
        seen: set[tuple[Hashable, datetime | None]] = set()  # yielded since `anchor` was set
        # The chase bound counts records, not requests (a request budget ran out in the middle of
        # a tie bigger than a page: every later sweep then stopped at the same place).
        limit: int | None = None
        yielded = 0
        idle = 0  # requests in a row that brought nothing new
        # Ties read over more than one page: instant -> keys read in it. A tie is stepped through
        # by page number; a tied record read already that changes meanwhile shifts every record
        # behind it one place forward, and one slides onto a page already read, unseen. Instead
        # of re-reading a page back at every step (twice the calls for every tie), the walk
        # notices afterwards: the record reappears later with a newer change date (or the total
        # shrinks). Only then is that tie read again, carefully (`_reread_tie`).
        stepped: dict[datetime, set[Hashable]] = {}
        tie_total: dict[datetime, int] = {}
        suspect: set[datetime] = set()
        left: dict[datetime, datetime] = {}  # tie instant -> where the walk went on after it
        marks: set[tuple[Hashable, datetime | None]] = set()  # yielded since the first stepped tie

        def note(key: Hashable, stamp: datetime | None) -> None:
            for instant, keys in stepped.items():
                if stamp is not None and stamp > instant and key in keys:
                    suspect.add(instant)  # read in the tie, changed since: it may have shifted

        async def get(n: int) -> tuple[Page, list[Any]]:
            nonlocal limit, yielded, idle
            query = (
                dict(params)
                if anchor is None
                else {**params, self.since_param: self.format_since(anchor)}
            )
            page = await fetch(query, n)
            if limit is None and page.total_count is not None:
                limit = page.total_count + self.extra_pages * self.page_size
            fresh = []
            for item in page.items:
                key, stamp = self.key(item), self.changed(item)
                if (key, stamp) in seen:
                    continue
                seen.add((key, stamp))
                fresh.append(item)
                if stepped:
                    marks.add((key, stamp))
                    note(key, stamp)
            if anchor in stepped and page.total_count is not None:
                if page.total_count < tie_total.get(anchor, page.total_count):
                    suspect.add(anchor)  # a record went: the rest shifted forward
                tie_total[anchor] = page.total_count
            yielded += len(fresh)
            idle = 0 if fresh else idle + 1
            return page, fresh

        def spent() -> bool:
            return (limit is not None and yielded >= limit) or idle > self.extra_pages

        while True:
            page, fresh = await get(number)
            if fresh:
                yield fresh
            if number > 1 and ordered and self.careful:
                # Records may vanish without a trace: re-read backwards at every step until a
                # page brings nothing new.
                back = number - 1
                while back >= 1 and not spent():
                    _, again = await get(back)
                    if not again:
                        break
                    yield again
                    back -= 1
            if not page.items or is_last(page, self.page_size) or spent():
                break
            stamps = [self.changed(item) for item in page.items]
            if ordered and (
                any(s is None for s in stamps)
                or any(a > b for a, b in itertools.pairwise(stamps) if a and b)
            ):
                ordered = False  # the server does not sort as promised: fall back to page numbers
            last = stamps[-1]
            if ordered and last is not None and (anchor is None or last > anchor):
                # Everything not yet seen is at or after `last`: ask again from there.
                if anchor in stepped:
                    left[anchor] = last
                anchor, number = last, 1
                seen = {mark for mark in seen if mark[1] == last}
                continue
            if ordered and not self.careful and anchor is not None and last == anchor:
                # A whole page inside one change date: step through the tie by page number,
                # remembering what was read in it.
                if not stepped:
                    marks |= seen
                stepped.setdefault(anchor, set()).update(self.key(item) for item in page.items)
                if page.total_count is not None:
                    tie_total.setdefault(anchor, page.total_count)
            number += 1
        if stepped and limit is not None and yielded >= limit:
            # Left a list that keeps changing: a moved record may not have come round yet.
            suspect |= stepped.keys()
        # A re-read can bring the new version of a record read in another tie: that tie is
        # suspect too, so this runs until no tie is left to check.
        checked: set[datetime] = set()
        while suspect - checked:
            instant = min(suspect - checked)
            checked.add(instant)
            async for again in self._reread_tie(fetch, params, instant, left.get(instant), marks):
                for item in again:
                    note(self.key(item), self.changed(item))
                yield again

    async def _reread_tie(
        self,
        fetch: FetchPage,
        params: dict[str, str],
        instant: datetime,
        until: datetime | None,
        marks: set[tuple[Hashable, datetime | None]],
    ) -> AsyncIterator[list[Any]]:
        """Read again, carefully (re-reading backwards at every step), from the tie at `instant` to
        where the walk went on after it (`until`; None: the end), and yield what was never
        yielded: whatever slid back while the tie was stepped through lies there."""
        careful = replace(self, careful=True)
        async with contextlib.aclosing(careful.pages(fetch, params, instant)) as pages:
            async for items in pages:
                fresh = self._unseen(items, marks)
                if fresh:
                    yield fresh
                stamps = [self.changed(item) for item in items]
                if until is not None and any(s is not None and s > until for s in stamps):
                    return

    def _unseen(self, items: list[Any], marks: set[tuple[Hashable, datetime | None]]) -> list[Any]:
        fresh = []
        for item in items:
            mark = (self.key(item), self.changed(item))
            if mark not in marks:
                marks.add(mark)
                fresh.append(item)
        return fresh
