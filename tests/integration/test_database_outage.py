"""Database faults against one connector process (simulator + connector on loopback, SQLite).

Faults are injected where the database answers: an event on the connector's SQLAlchemy engine
makes chosen statements fail with the error a locked SQLite file, a refused PostgreSQL connection
or a broken statement gives. Shown here: an order's steps wait out transient errors; the
`/v1` API answers JSON 503 with Retry-After and `/readyz` fails while the database is down;
the watchdog resumes an order job that stopped in ERROR (exactly once into Extend, also when the
POST had gone through), queues a job for an order that has none, and parks after repeated failure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import pytest
import sqlalchemy as sa

from extend_connector import engine
from extend_connector.flows import failures, watchdog
from extend_connector.service import Connector
from extend_connector.store.models import OrderRow
from support.dbfaults import Faults, broken, locked, refused
from support.order_stack import order_stack
from support.processes import wait_for

pytestmark = pytest.mark.timeout(180)

TOKEN = {"authorization": "Bearer shop-token"}


def in_job(words: str) -> Callable[[str], bool]:
    """Statements containing `words` run by a job (not by the HTTP intake)."""
    return lambda statement: words in statement and engine.workflow_id() is not None


class Stack:
    def __init__(self, sim: Any, url: str, connector: Connector, faults: Faults) -> None:
        self.sim = sim
        self.url = url
        self.connector = connector
        self.faults = faults
        self.http = httpx2.Client(timeout=30)

    def post_order(self, ref: str) -> httpx2.Response:
        body = {
            "shopRef": ref,
            "lines": [{"productNumber": "P000001", "quantity": 2, "unitPrice": "99.50"}],
        }
        return self.http.post(f"{self.url}/v1/orders", json=body, headers=TOKEN)

    def in_extend(self, ref: str) -> int:
        data: Any = self.http.get(f"{self.sim.admin_url}/state/orders").json()
        items = data["items"] if isinstance(data, dict) else data
        return sum(1 for o in items if o.get("orderNumberExternal") == ref)

    def row(self, ref: str) -> OrderRow:
        with self.connector.db.read() as session:
            row = session.get(OrderRow, ref)
            assert row is not None
            session.expunge(row)  # a detached copy the test can read after the session ends
            return row

    def submit_job(self, ref: str) -> engine.WorkflowInfo | None:
        return self.connector.engine.get_status(f"order-{ref}")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    faults = Faults()

    def prepare(connector: Connector) -> None:
        sa.event.listen(connector.db.engine, "before_cursor_execute", faults.before)
        engine.configure_transient_retry(
            engine.TransientRetry(
                first_wait_seconds=0.05, max_wait_seconds=0.5, give_up_after_seconds=60
            )
        )

    # The tests run the watchdog themselves.
    with order_stack(tmp_path, engine_settings={"watchdog_minutes": 60}, prepare=prepare) as (
        sim,
        connector,
        url,
    ):
        try:
            yield Stack(sim, url, connector, faults)
        finally:
            faults.disarm()


def test_order_steps_wait_out_transient_database_errors(stack: Stack) -> None:
    # orders.begin reads the order first; then orders.send writes the attempt and the result.
    stack.faults.arm(4, locked, in_job("FROM orders"))
    assert stack.post_order("T-1").status_code == 202
    wait_for(lambda: stack.row("T-1").order_number, 60, what="T-1 in Extend")
    assert stack.faults.raised == 4
    stack.faults.arm(3, refused, in_job("UPDATE orders"))
    assert stack.post_order("T-2").status_code == 202
    wait_for(lambda: stack.row("T-2").order_number, 60, what="T-2 in Extend")
    assert stack.faults.raised == 3
    assert (stack.in_extend("T-1"), stack.in_extend("T-2")) == (1, 1)
    info = wait_for(
        lambda: (j := stack.submit_job("T-2")) and j.status == "SUCCESS" and j, 30, what="job done"
    )
    assert info.status == "SUCCESS"


def test_v1_answers_json_503_and_readyz_fails_while_the_database_is_down(stack: Stack) -> None:
    assert stack.http.get(f"{stack.url}/readyz").json()["checks"]["database"] == "ok"
    stack.faults.arm(
        10**9, refused, lambda s: engine.workflow_id() is None and "dbos" not in s.lower()
    )
    try:
        ready = stack.http.get(f"{stack.url}/readyz")
        alive = stack.http.get(f"{stack.url}/healthz")
        posted = stack.post_order("D-1")
        read = stack.http.get(f"{stack.url}/v1/orders/D-1", headers=TOKEN)
    finally:
        stack.faults.disarm()
    assert ready.status_code == 503 and ready.json()["failing"] == ["database"]
    assert ready.json()["checks"]["database"].startswith("unreachable")
    assert alive.status_code == 200  # the process itself is alive: restarting it would not help
    for response in (posted, read):
        assert response.status_code == 503, response.text
        assert response.headers["content-type"].startswith("application/json")
        assert response.headers["retry-after"] == "5"
        assert response.json()["error"] == "database_unavailable"
    assert stack.http.get(f"{stack.url}/readyz").status_code == 200
    assert stack.post_order("D-1").status_code == 202  # nothing was stored: the shop's retry is new
    wait_for(lambda: stack.row("D-1").order_number, 60, what="D-1 in Extend")
    assert stack.in_extend("D-1") == 1


def test_a_permanent_error_is_not_retried_and_still_answers_500(stack: Stack) -> None:
    stack.faults.arm(1, broken, lambda s: "FROM orders" in s and engine.workflow_id() is None)
    response = stack.http.get(f"{stack.url}/v1/orders/X-1", headers=TOKEN)
    assert response.status_code == 500 and stack.faults.raised == 1


def test_watchdog_resumes_a_stopped_order_job_and_it_reaches_extend_once(stack: Stack) -> None:
    # The POST goes through, then recording its answer fails for good: the job ends in ERROR (and
    # Extend's OrderCreated hook is lost, so nothing else records the order meanwhile).
    stack.http.patch(
        f"{stack.sim.admin_url}/faults", json={"webhook_drop_rate": 1.0}
    ).raise_for_status()
    stack.faults.arm(1, broken, in_job("UPDATE orders SET order_number"))
    assert stack.post_order("W-1").status_code == 202
    failed = wait_for(
        lambda: (j := stack.submit_job("W-1")) and j.failed and j, 60, what="job in ERROR"
    )
    assert failed.status == "ERROR"
    assert stack.in_extend("W-1") == 1 and stack.row("W-1").order_number is None
    assert failures.status_snapshot()["ordersNotInExtend"]["count"] == 1

    tally = watchdog.watch_once()  # a stopped job is acted on at once, not after the threshold
    assert tally.get("resumed") == 1
    wait_for(lambda: stack.row("W-1").order_number, 60, what="W-1 recorded")
    assert stack.in_extend("W-1") == 1  # looked up, not posted again
    assert stack.row("W-1").watchdog_recoveries == 1
    assert failures.status_snapshot()["ordersNotInExtend"]["count"] == 0
    assert watchdog.watch_once().get("resumed") is None


def test_watchdog_requeues_an_order_without_a_job(stack: Stack) -> None:
    old = datetime.now(UTC) - timedelta(hours=1)
    with stack.connector.db.write() as session:
        session.add(
            OrderRow(
                shop_ref="L-1",
                status="Received",
                shop_payload={
                    "shopRef": "L-1",
                    "lines": [{"productNumber": "P000001", "quantity": 1, "unitPrice": "5"}],
                },
                created_at=old,
                updated_at=old,
                submit_attempts=0,
            )
        )
    snapshot = failures.status_snapshot()["ordersNotInExtend"]
    assert snapshot["count"] == 1 and snapshot["stuck"] == 1
    assert snapshot["oldest"] == old.isoformat()
    assert watchdog.watch_once().get("requeued") == 1
    wait_for(lambda: stack.row("L-1").order_number, 60, what="L-1 in Extend")
    assert stack.in_extend("L-1") == 1


def test_watchdog_parks_an_order_whose_job_keeps_failing(stack: Stack) -> None:
    stack.faults.arm(10**9, broken, in_job("FROM orders"))
    assert stack.post_order("P-1").status_code == 202
    for round_ in range(watchdog.MAX_RECOVERIES + 1):
        wait_for(
            lambda: (j := stack.submit_job("P-1")) and j.failed,
            60,
            what=f"job failed (round {round_})",
        )
        outcome = watchdog.watch_once()
        expected = "parked" if round_ == watchdog.MAX_RECOVERIES else "resumed"
        assert outcome.get(expected) == 1, outcome
    stack.faults.disarm()
    row = stack.row("P-1")
    assert row.status == "Parked" and "failed again" in (row.last_error or "")
    parked = failures.list_failures(kind="order")
    assert [(f.key, f.reason) for f in parked] == [("P-1", "job_failed")]
    assert stack.in_extend("P-1") == 0
    # A person fixed the cause: the usual retry sends it, once.
    import asyncio

    assert "queued" in asyncio.run(failures.retry(parked[0].id))
    wait_for(lambda: stack.row("P-1").order_number, 60, what="P-1 in Extend after retry")
    assert stack.in_extend("P-1") == 1


def test_watchdog_parks_other_failed_jobs_once(stack: Stack) -> None:
    from extend_connector.flows import outbox

    stack.faults.arm(
        1, broken, lambda s: "outbox" in s and engine.workflow_id() == "shop-event-test"
    )
    job = stack.connector.engine.enqueue(
        outbox.deliver,
        999_999,
        queue=outbox.QUEUE,
        partition_key="x:1",
        workflow_id="shop-event-test",
    )
    wait_for(
        lambda: (
            (j := stack.connector.engine.get_status(job))
            and j.status != "ENQUEUED"
            and j.status != "PENDING"
        ),
        60,
        what="job ended",
    )
    assert stack.connector.engine.get_status(job).status == "ERROR", (
        stack.connector.engine.get_status(job),
        stack.faults.raised,
    )
    assert watchdog.watch_once()["jobs_parked"] == 1
    assert watchdog.watch_once()["jobs_parked"] == 0
    parked = failures.list_failures(kind=watchdog.JOB_FAILURE_KIND)
    assert [f.key for f in parked] == ["shop-event-test"]
