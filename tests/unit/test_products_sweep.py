"""The list-then-fetch machinery and the product content hash, with in-memory fakes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from extend_connector.domain import Product
from extend_connector.flows.products import content_hash
from extend_connector.flows.sync import Listed, NullProgress, Tally, list_then_fetch

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Recorder(NullProgress):
    def __init__(self) -> None:
        self.outcomes: list[str] = []
        self.pages: list[tuple[int, int]] = []

    def record(self, outcome: str) -> None:
        self.outcomes.append(outcome)

    def page(self, *, pages: int, records: int, total: int | None) -> None:
        self.pages.append((pages, records))


def _run(
    items: list[Listed],
    stored: dict[str, datetime | None],
    gone: set[str] = frozenset(),  # type: ignore[assignment]
    batch_size: int = 3,
) -> tuple[datetime | None, list[str], list[list[str]], Recorder]:
    fetched: list[str] = []
    applied: list[list[str]] = []
    progress = Recorder()
    tally = Tally("products", progress)

    async def listing() -> AsyncIterator[Listed]:
        for item in items:
            yield item

    async def fetch(key: str) -> str | None:
        fetched.append(key)
        return None if key in gone else key

    def apply(records: list[str]) -> list[str]:
        applied.append(records)
        return ["updated"] * len(records)

    latest = asyncio.run(
        list_then_fetch(
            listing(),
            stored_changed=lambda keys: {k: stored[k] for k in keys if k in stored},
            fetch=fetch,
            apply=apply,
            tally=tally,
            batch_size=batch_size,
        )
    )
    return latest, fetched, applied, progress


def test_only_records_whose_change_date_differs_are_fetched() -> None:
    items = [Listed(key=f"P{i}", changed_at=T0 + timedelta(seconds=i)) for i in range(7)]
    stored = {"P0": T0, "P1": T0, "P3": T0 + timedelta(seconds=3), "P6": None}
    latest, fetched, applied, progress = _run(items, stored)
    assert sorted(fetched) == ["P1", "P2", "P4", "P5", "P6"]
    assert latest == T0 + timedelta(seconds=6)
    assert progress.outcomes.count("unchanged") == 2
    assert progress.outcomes.count("updated") == 5
    # Batches of three: memory holds at most one batch.
    assert all(len(batch) <= 3 for batch in applied)


def test_a_record_listed_twice_in_a_batch_is_fetched_once_and_a_vanished_one_is_skipped() -> None:
    items = [
        Listed(key="A", changed_at=T0),
        Listed(key="A", changed_at=T0),
        Listed(key="B", changed_at=T0),
    ]
    _latest, fetched, applied, progress = _run(items, {}, gone={"B"})
    assert fetched == ["A", "B"]
    assert applied == [["A"]]
    assert sorted(progress.outcomes) == ["skipped", "updated"]


def test_nothing_listed_means_no_cursor_move_and_no_work() -> None:
    latest, fetched, applied, progress = _run([], {})
    assert (latest, fetched, applied, progress.outcomes) == (None, [], [], [])


def test_tally_counts_records_across_listings() -> None:
    progress = Recorder()
    tally = Tally("prices", progress)
    first = tally.listing()
    first(100, None)
    first(150, None)
    second = tally.listing()
    second(40, None)
    assert progress.pages == [(1, 100), (2, 150), (3, 190)]
    assert tally.result().records == 190


def test_tally_counts_listings_running_at_the_same_time() -> None:
    progress = Recorder()
    tally = Tally("prices", progress)
    a, b = tally.listing(), tally.listing()
    a(100, None)
    b(500, None)
    a(200, None)
    b(520, None)
    tally.page(7, None)  # the default list of a one-list sweep counts alongside
    assert progress.pages == [(1, 100), (2, 600), (3, 700), (4, 720), (5, 727)]
    assert tally.result().records == 727


def test_content_hash_ignores_the_change_date_only() -> None:
    a = Product(product_number="P1", name="Chair", changed_at=T0)
    assert content_hash(a) == content_hash(
        Product(product_number="P1", name="Chair", changed_at=T0 + timedelta(days=1))
    )
    assert content_hash(a) != content_hash(
        Product(product_number="P1", name="Chair", changed_at=T0, phase_out=True)
    )
    assert content_hash(a) != content_hash(
        Product(product_number="P1", name="Chair!", changed_at=T0)
    )


def test_the_listing_and_the_fetches_are_bulk_calls_in_the_rate_budget() -> None:
    """A sweep's calls give way to orders and stock (`extend.bulk_calls`): below the budget's
    low-water mark (20%) they still go at once, down to the bulk reserve (3%)."""
    from fakes import FakeTime, budget_with

    budget = budget_with(FakeTime(), remaining=50)  # below the 20% mark
    waits: list[float] = []

    async def listing() -> AsyncIterator[Listed]:
        for i in range(4):
            waits.append(await budget.acquire("standard"))
            yield Listed(key=f"P{i}", changed_at=T0)

    async def fetch(key: str) -> str:
        waits.append(await budget.acquire("standard"))
        return key

    asyncio.run(
        list_then_fetch(
            listing(),
            stored_changed=lambda keys: {},
            fetch=fetch,
            apply=lambda records: ["created"] * len(records),
            tally=Tally("products", NullProgress()),
            batch_size=2,
        )
    )
    assert len(waits) == 8 and waits == [0.0] * 8  # paced (0.2 s each) as other calls
