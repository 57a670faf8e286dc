"""The orders submit logic as plain calls: the inline engine (no DBOS, no waiting: sleeps move a
fake clock and are recorded) against the simulator in process (no socket), on SQLite.

Asserts what is observable: order rows, failures, the simulator's orders, the recorded waits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from extend_connector import engine
from extend_connector.flows import context
from extend_connector.flows.orders import accept_order, intake_start, submit
from extend_connector.store.models import OrderRow, ParkedFailureRow, ProductRow
from support.extend_fake import ExtendFake, extend_fake, inline_context
from support.extend_fake import run_flow as _run


class HookedClock(engine.FakeClock):
    """A fake clock that calls `on_wait` whenever a durable sleep advances it."""

    def __init__(self, on_wait: Callable[[float], None]) -> None:
        super().__init__()
        self.on_wait = on_wait

    def advance(self, seconds: float) -> None:
        super().advance(seconds)
        self.on_wait(seconds)


@pytest.fixture
def fake() -> Iterator[ExtendFake]:
    with extend_fake() as f:
        yield f


def _payload(ref: str, product: str = "P000001") -> dict[str, Any]:
    return {
        "shopRef": ref,
        "lines": [{"productNumber": product, "quantity": 2, "unitPrice": "99.50"}],
    }


def _row(ctx: context.FlowContext, ref: str) -> OrderRow:
    with ctx.db.read() as session:
        row = session.get(OrderRow, ref)
        assert row is not None
        session.expunge(row)
        return row


def test_intake_records_the_submit_job_and_submit_creates_the_order_once(
    tmp_path: Path, fake: ExtendFake
) -> None:
    with inline_context(tmp_path, fake) as (ctx, run):
        accept_order(_payload("S-1"))
        assert [(j.kind, j.workflow, j.args, j.workflow_id) for j in run.jobs] == [
            ("enqueue", "orders.submit", ("S-1", intake_start("WEB")), "order-S-1")
        ]
        assert _run(submit(*run.jobs[0].args)) == "created"
        assert "orders.begin" not in run.steps  # the intake said where to start
        # A second job, with the reference alone, reads the order and finds it sent.
        assert _run(submit("S-1")) == "done"
        assert _run(submit(*run.jobs[0].args)) == "done"  # and so does a replayed first one
        created = fake.orders_for("S-1")
        assert fake.posts("/CustomerOrders") == 1
        assert len(created) == 1
        row = _row(ctx, "S-1")
        assert row.order_number == created[0].order_number
        assert row.submit_attempts == 1
        assert run.sleeps == []
        assert "orders.send" in run.steps


def test_lost_answer_is_looked_up_before_resending(tmp_path: Path, fake: ExtendFake) -> None:
    seen: list[str] = []

    def heal(_: float) -> None:
        # The POST reached Extend but its answer was lost; by the next attempt answers come back.
        seen.append(_row(ctx, "S-lost").status)
        fake.set_faults(lost_response_rate=0.0)

    fake.set_faults(lost_response_rate=1.0)
    with inline_context(tmp_path, fake, clock=HookedClock(heal)) as (ctx, run):
        accept_order(_payload("S-lost"))
        assert _run(submit("S-lost")) == "found"
        assert len(fake.orders_for("S-lost")) == 1
        assert fake.posts("/CustomerOrders") == 1  # looked up, not POSTed again
        row = _row(ctx, "S-lost")
        assert row.order_number == fake.orders_for("S-lost")[0].order_number
        assert row.submit_attempts == 2
        assert seen and seen[0] == "WaitingForExtend"
        assert run.sleeps and all(s > 0 for s in run.sleeps)


def test_5xx_backs_off_on_the_fake_clock(tmp_path: Path, fake: ExtendFake) -> None:
    waits: list[float] = []

    def heal(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 3:  # three failed attempts, then Extend answers again
            fake.set_faults(error_rate=0.0)

    clock = HookedClock(heal)
    start = clock()
    fake.set_faults(error_rate=1.0)
    with inline_context(tmp_path, fake, clock=clock) as (ctx, run):
        accept_order(_payload("S-busy"))
        assert _run(submit("S-busy")) == "created"  # a 5xx POST did not create it: no look-up
        assert len(fake.orders_for("S-busy")) == 1
        # A 5xx to a POST may have reached Extend: the first one is looked up (the look-ups fail
        # too) before the only other POST, which creates it.
        calls = [m for m, p in fake.requests if p.endswith("/CustomerOrders")]
        assert calls[0] == "POST" and calls[-1] == "POST" and calls.count("POST") == 2
        assert set(calls[1:-1]) == {"GET"}
        assert _row(ctx, "S-busy").order_number is not None
        # The waits are the workflow's durable sleeps: recorded, summed on the clock, not slept.
        assert run.sleeps == waits and len(waits) >= 3
        assert all(s > 0 for s in run.sleeps)
        assert (clock() - start).total_seconds() == pytest.approx(sum(run.sleeps))


def test_validation_rejection_parks_the_order_with_extends_reason(
    tmp_path: Path, fake: ExtendFake
) -> None:
    with inline_context(tmp_path, fake) as (ctx, run):
        # Known locally (a stale product copy) but not in Extend: Extend refuses the order.
        with ctx.db.write() as session:
            session.add(ProductRow(product_number="GONE-1", name="gone"))
        accept_order(_payload("S-bad", product="GONE-1"))
        assert _run(submit("S-bad")) == "parked"
        row = _row(ctx, "S-bad")
        assert row.status == "Parked" and row.order_number is None
        assert "GONE-1" in (row.last_error or "")
        with ctx.db.read() as session:
            reasons = session.scalars(
                sa.select(ParkedFailureRow.reason).where(ParkedFailureRow.key == "S-bad")
            ).all()
        assert list(reasons) == ["extend_rejected"]
        assert not fake.orders_for("S-bad")
        assert run.sleeps == []


def test_inline_engine_can_run_recorded_jobs(tmp_path: Path, fake: ExtendFake) -> None:
    with inline_context(tmp_path, fake, run_jobs=True) as (ctx, run):
        accept_order(_payload("S-2"))  # the submit job runs inline as it is enqueued
        assert len(fake.orders_for("S-2")) == 1
        assert _row(ctx, "S-2").order_number == fake.orders_for("S-2")[0].order_number
        assert run.jobs[0].workflow == "orders.submit"


def test_every_line_of_a_submit_job_names_the_order(tmp_path: Path, fake: ExtendFake) -> None:
    import io
    import json
    import logging

    import structlog

    from extend_connector.logs import configure_logging, reset_logging

    out = io.StringIO()
    factory = logging.getLogRecordFactory()
    configure_logging("DEBUG", stream=out)
    try:
        with inline_context(tmp_path, fake):
            accept_order(_payload("S-log"))
            assert _run(submit("S-log")) == "created"
            structlog.get_logger("t").info("after_the_job")
    finally:
        reset_logging()
        logging.setLogRecordFactory(factory)
    lines = [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]
    during = lines[[x["event"] for x in lines].index("order_received") + 1 : -1]
    created = next(x for x in during if x["event"] == "order_created_in_extend")
    number = fake.orders_for("S-log")[0].order_number
    assert created["order_number"] == number
    # The HTTP client's own per-request lines (DEBUG) carry the order too.
    http_lines = [x for x in during if str(x["event"]).startswith("HTTP Request")]
    assert http_lines and all(x["shop_ref"] == "S-log" for x in http_lines)
    # Every line while the job ran (asyncio's own "Using selector" comes from the test's loop).
    assert [x for x in during if x.get("shop_ref") != "S-log" and x["logger"] != "asyncio"] == []
    assert "shop_ref" not in lines[-1]  # bound for the job only
