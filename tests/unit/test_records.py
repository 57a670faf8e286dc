"""The record drain (flows/records.py) as plain calls: the inline engine and the simulator in
process, on SQLite. Marks coalesce, a mark made during a fetch survives it, failures wait by the
kind's policy and end early once Extend answers again, and a spent budget drops the mark."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa

from extend_connector import engine
from extend_connector.flows import context, products, records, retry
from extend_connector.flows.freshness import reachability
from extend_connector.store.models import DirtyRecordRow, ProductRow
from support.extend_fake import ExtendFake, extend_fake, inline_context
from support.extend_fake import run_flow as _run


@pytest.fixture
def fake() -> Iterator[ExtendFake]:
    reachability.reset()
    with extend_fake() as f:
        yield f
    reachability.reset()


def _mark(ctx: context.FlowContext, *keys: str) -> None:
    for key in keys:  # one transaction per mark, as one delivery each
        with ctx.db.write() as session:
            records.mark(session, records.PRODUCT, [key], now=ctx.clock())


def _marks(ctx: context.FlowContext) -> dict[str, tuple[int, int]]:
    """key -> (generation, attempts) of the product marks."""
    t = DirtyRecordRow.__table__.c
    with ctx.db.read() as session:
        rows = session.execute(
            sa.select(t.key, t.generation, t.attempts).where(t.kind == records.PRODUCT)
        )
        return {key: (generation, attempts) for key, generation, attempts in rows}


def _fetches(fake: ExtendFake, number: str) -> int:
    return sum(1 for m, p in fake.requests if m == "GET" and p.endswith(f"/Products/{number}"))


def test_marks_coalesce_and_one_drain_fetches_each_record_once(
    tmp_path: Path, fake: ExtendFake
) -> None:
    assert records.kind(records.PRODUCT).refresh is products.refresh_products
    p1, p2 = list(fake.state.products)[:2]
    with inline_context(tmp_path, fake) as (ctx, run):
        _mark(ctx, p1, p1, p2, p1)
        assert _marks(ctx) == {p1: (3, 0), p2: (1, 0)}
        totals = _run(records.drain(records.PRODUCT))
        assert totals == {"done": 2, "retrying": 0, "gave_up": 0, "passes": 2}
        assert (_fetches(fake, p1), _fetches(fake, p2)) == (1, 1)
        assert _marks(ctx) == {}
        with ctx.db.read() as session:
            row = session.get(ProductRow, p1)
            assert row is not None and row.extend_changed_at is not None  # fetched and stored
        assert [j for j in run.jobs if j.workflow == "records.drain"] == []  # nothing waits


def test_a_mark_made_while_its_record_is_fetched_is_fetched_again(
    tmp_path: Path, fake: ExtendFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    p1 = next(iter(fake.state.products))
    real = records.kind(records.PRODUCT)
    fetched_once: list[str] = []

    async def marked_during_the_fetch(keys: list[str]) -> dict[str, records.Outcome]:
        if not fetched_once:
            fetched_once.extend(keys)
            _mark(context.current(), p1)  # a newer hook, after the fetch began
        return await real.refresh(keys)

    monkeypatch.setitem(
        records._KINDS, records.PRODUCT, replace(real, refresh=marked_during_the_fetch)
    )
    with inline_context(tmp_path, fake) as (ctx, _run_state):
        _mark(ctx, p1)
        totals = _run(records.drain(records.PRODUCT))
        assert totals["done"] == 2 and totals["passes"] == 3
        assert _fetches(fake, p1) == 2  # the first fetch may predate the second hook
        assert _marks(ctx) == {}


def test_a_failed_refresh_waits_by_its_policy_and_goes_once_extend_answers_again(
    tmp_path: Path, fake: ExtendFake
) -> None:
    p1, other = list(fake.state.products)[:2]
    with inline_context(tmp_path, fake, observer=reachability) as (ctx, run):
        fake.set_faults(outage=True)
        _mark(ctx, p1)
        totals = _run(records.drain(records.PRODUCT))
        assert totals == {"done": 0, "retrying": 1, "gave_up": 0, "passes": 1}
        assert not reachability.reachable
        assert _marks(ctx) == {p1: (1, 1)}
        # A delayed drain is left, at most the wake check ahead (not the policy's minutes).
        [wake] = [j for j in run.jobs if j.workflow == "records.drain"]
        assert wake.workflow_id is not None and wake.workflow_id.startswith(
            "records-product-retry-"
        )
        assert wake.args == (records.PRODUCT,)

        # Still down, not yet due: a drain takes nothing and calls nothing.
        before = len(fake.requests)
        assert _run(records.drain(records.PRODUCT))["retrying"] == 0
        assert len(fake.requests) == before

        # Extend answers another call: the waiting mark is due now, long before its backoff ends.
        fake.set_faults(outage=False)

        async def another_call() -> None:
            await context.current().extend().get_product(other)

        _run(another_call())
        assert _run(records.drain(records.PRODUCT))["done"] == 1
        assert _marks(ctx) == {}
        assert _fetches(fake, p1) == 2


def test_a_spent_budget_drops_the_mark_for_the_sweep(tmp_path: Path, fake: ExtendFake) -> None:
    p1 = next(iter(fake.state.products))
    policy = retry.Backoff(base_seconds=1.0, cap_seconds=4.0, jitter=0.0, give_up_seconds=10.0)
    clock = engine.FakeClock()
    with (
        retry.override({retry.ORDERS_REFRESH: policy}),
        inline_context(tmp_path, fake, clock=clock) as (ctx, _run_state),
    ):
        fake.set_faults(error_rate=1.0)
        _mark(ctx, p1)
        results = []
        for _ in range(10):
            results.append(_run(records.drain(records.PRODUCT)))
            if results[-1]["gave_up"]:
                break
            clock.advance(5.0)  # past the longest wait (4 s)
        # Waits 1, 2, 4; a fourth (4 s) would pass the 10 s budget: the fourth failure gives up.
        assert [r["retrying"] for r in results] == [1, 1, 1, 0]
        assert results[-1]["gave_up"] == 1
        assert _marks(ctx) == {}


def test_marks_nobody_drains_get_their_drain_asked_for_again(
    tmp_path: Path, fake: ExtendFake
) -> None:
    # The watchdog calls this each pass (flows/watchdog.watch_once).
    p1 = next(iter(fake.state.products))
    clock = engine.FakeClock()
    with inline_context(tmp_path, fake, clock=clock) as (ctx, run):
        _mark(ctx, p1)  # committed, but its process died before the trigger
        assert records.request_forgotten_drains(clock()) == 0  # due only just now
        clock.advance(records.FORGOTTEN_AFTER.total_seconds() + 1)
        assert records.request_forgotten_drains(clock()) == 1
        [job] = [j for j in run.jobs if j.workflow == "records.drain"]
        assert (job.kind, job.args) == ("debounce", (records.PRODUCT,))


def test_a_scope_without_products_or_customers_leaves_no_webhook_handler_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Connector rebuilt in one process with products and customers off (a test, a script)
    must not keep routing their webhooks to the drains the earlier scope declared."""
    from extend_connector.engine import _declare
    from extend_connector.flows import customers, dispatch
    from extend_connector.settings import EmbeddedSettings

    # This process's declarations as they were, back after the test.
    monkeypatch.setattr(dispatch, "_HANDLERS", dict(dispatch._HANDLERS))
    monkeypatch.setattr(_declare, "_SCHEDULES", dict(_declare._SCHEDULES))

    on = EmbeddedSettings(scope={"products": "sync", "customers": "from_extend"})
    off = EmbeddedSettings(scope={"products": "off", "customers": "off"})
    products.declare_schedules(on)
    customers.declare_schedules(on)
    assert dispatch.handler_for("ProductChanged") is not None
    assert dispatch.handler_for("CustomerCreated") is not None
    products.declare_schedules(off)
    customers.declare_schedules(off)
    for action in ("ProductCreated", "ProductChanged", "CustomerCreated", "CustomerChanged"):
        assert dispatch.handler_for(action) is None, action


def test_catalogue_drains_make_bulk_calls_and_the_order_drain_does_not(
    tmp_path: Path, fake: ExtendFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flood of ProductChanged (a mass update in Extend) must not hold an order's call back:
    the product and customer drains' calls are bulk calls (`extend.bulk_calls`), which go on
    below the budget's low-water mark (20%) down to the bulk reserve and give way to the rest;
    the order drain's are not."""
    from fakes import FakeTime, budget_with

    from extend_connector.flows import customers, orders  # noqa: F401  (their drains' kinds)

    budget = budget_with(FakeTime(), remaining=50)  # below the 20% mark
    waits: dict[str, list[float]] = {}
    for name in (records.PRODUCT, records.CUSTOMER, records.ORDER):
        declared = records.kind(name)

        async def refresh(keys: list[str], name: str = name) -> dict[str, records.Outcome]:
            waits.setdefault(name, []).extend([await budget.acquire("standard") for _ in range(3)])
            return dict.fromkeys(keys, "unchanged")

        monkeypatch.setitem(records._KINDS, name, replace(declared, refresh=refresh))
    with inline_context(tmp_path, fake) as (ctx, _run_jobs):
        for name in (records.PRODUCT, records.CUSTOMER, records.ORDER):
            with ctx.db.write() as session:
                records.mark(session, name, ["K1"], now=ctx.clock())
            _run(records.drain(name))
    assert waits[records.PRODUCT] == [0.0, 0.0, 0.0]
    assert waits[records.CUSTOMER] == [0.0, 0.0, 0.0]
    assert waits[records.ORDER][1:] == [pytest.approx(0.2)] * 2  # paced: not bulk
