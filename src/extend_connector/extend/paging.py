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
  read again in its new version; none is skipped. Its chase bound counts records (the first total
  plus `extra_pages` pages), so a tie of one change date over many pages is read to the end.

Both stream page by page; nothing is materialised beyond one page and a small dedupe set.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass
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

    async def pages(
        self, fetch: FetchPage, params: dict[str, str], since: datetime | None
    ) -> AsyncIterator[list[Any]]:
        anchor = since
        number = 1
        ordered = self.ordered
        seen: set[tuple[Hashable, datetime | None]] = set()  # yielded since `anchor` was set
        # The chase bound counts records, not requests: re-reading inside a tie bigger than a page
        # costs two requests per page, and a request budget ran out in the middle of such a tie
        # (every later sweep then stopped at the same place, its cursor stuck at that instant).
        limit: int | None = None
        yielded = 0
        idle = 0  # requests in a row that brought nothing new

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
                mark = (self.key(item), self.changed(item))
                if mark not in seen:
                    seen.add(mark)
                    fresh.append(item)
            yielded += len(fresh)
            idle = 0 if fresh else idle + 1
            return page, fresh

        def spent() -> bool:
            return (limit is not None and yielded >= limit) or idle > self.extra_pages

        while True:
            page, fresh = await get(number)
            if fresh:
                yield fresh
            if number > 1 and ordered:
                # Stepping pages inside one change date (a tie bigger than a page): a tied record
                # that changed meanwhile left the tie, and everything behind it slid one place
                # forward, so the head of this page may now sit on the page before. Re-read
                # backwards until a page brings nothing new.
                back = number - 1
                while back >= 1 and not spent():
                    _, again = await get(back)
                    if not again:
                        break
                    yield again
                    back -= 1
            if is_last(page, self.page_size) or spent():
                return
            stamps = [self.changed(item) for item in page.items]
            if ordered and (
                any(s is None for s in stamps)
                or any(a > b for a, b in itertools.pairwise(stamps) if a and b)
            ):
                ordered = False  # the server does not sort as promised: fall back to page numbers
            last = stamps[-1]
            if ordered and last is not None and (anchor is None or last > anchor):
                # Everything not yet seen is at or after `last`: ask again from there.
                anchor, number = last, 1
                seen = {mark for mark in seen if mark[1] == last}
            else:
                number += 1
