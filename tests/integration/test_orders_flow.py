"""Orders end to end in one process: simulator + connector (real HTTP on loopback, real SQLite).

Submit exactly once (also through faults and a lost answer), progress by webhooks, the sweep
repairing dropped hooks, parking and `failures.retry`, cancellations before/after Reserved.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import sqlalchemy as sa

from extend_connector.flows import failures
from extend_connector.service import Connector
from extend_connector.store.models import IdMappingRow, OrderRow, OutboxRow
from support.order_stack import order_stack
from support.processes import wait_for
from support.settle import wait_drained

TOKEN = {"authorization": "Bearer shop-token"}


def _run(coro: Any) -> Any:
    """Run a coroutine on a fresh loop and close that loop's Extend client (as the CLI does)."""
    from extend_connector.flows.context import current

    async def go() -> Any:
        try:
            return await coro
        finally:
            await current().aclose()

    return asyncio.run(go())


class Stack:
    def __init__(self, sim: Any, url: str, connector: Connector) -> None:
        self.sim = sim
        self.url = url
        self.connector = connector
        self.http = httpx2.Client(timeout=30)

    def post_order(
        self, ref: str, lines: list[dict[str, Any]] | None = None, **extra: Any
    ) -> httpx2.Response:
        body = {
            "shopRef": ref,
            "lines": lines or [{"productNumber": "P000001", "quantity": 2, "unitPrice": "99.50"}],
            **extra,
        }
        return self.http.post(f"{self.url}/v1/orders", json=body, headers=TOKEN)

    def order(self, ref: str) -> dict[str, Any]:
        response = self.http.get(f"{self.url}/v1/orders/{ref}", headers=TOKEN)
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    def sim_orders(self) -> list[dict[str, Any]]:
        data: Any = self.http.get(f"{self.sim.admin_url}/state/orders").json()
        return list(data["items"] if isinstance(data, dict) else data)

    def admin(self, method: str, path: str, **kw: Any) -> Any:
        response = self.http.request(method, f"{self.sim.admin_url}{path}", **kw)
        assert response.status_code < 300, response.text
        return response.json() if response.content else None

    def wait_status(self, ref: str, status: str, timeout: float = 30.0) -> dict[str, Any]:
        return wait_for(
            lambda: (o := self.order(ref))["status"] == status and o,
            timeout,
            what=f"{ref} {status}",
        )  # type: ignore[no-any-return]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with order_stack(tmp_path) as (sim, connector, url):
        yield Stack(sim, url, connector)


def _extend_orders_for(stack: Stack, ref: str) -> list[dict[str, Any]]:
    return [o for o in stack.sim_orders() if o.get("orderNumberExternal") == ref]


def test_order_goes_to_extend_once_and_progress_comes_back(stack: Stack) -> None:
    assert stack.post_order("S-1").status_code == 202
    again = stack.post_order("S-1")
    assert again.status_code == 200 and again.json()["created"] is False
    conflict = stack.post_order("S-1", [{"productNumber": "P000002", "quantity": 1}])
    assert conflict.status_code == 409 and "different content" in conflict.json()["message"]
    order = stack.wait_status("S-1", "Registered")
    assert len(_extend_orders_for(stack, "S-1")) == 1
    number = order["orderNumber"]
    extend_row = _extend_orders_for(stack, "S-1")[0]
    assert (
        extend_row["orderRows"][0]["salesData"]["unitPrice"] == 99.5
    )  # the shop's price, unchanged
    with stack.connector.db.read() as s:
        assert s.get(IdMappingRow, ("order", "S-1")).extend_id == number  # type: ignore[union-attr]
    stack.admin("POST", f"/orders/{number}/reserve")
    stack.wait_status("S-1", "Reserved")
    stack.admin(
        "POST", f"/orders/{number}/pick", json={"carrier": "PostNord", "trackingNumber": "TR123"}
    )
    picked = stack.wait_status("S-1", "Picked")
    assert picked["shipments"][0]["trackingNumber"] == "TR123"
    assert picked["shipments"][0]["carrier"] == "PostNord"
    # After Reserved the shop cannot cancel.
    refused = stack.http.post(f"{stack.url}/v1/orders/S-1/cancel", headers=TOKEN)
    assert refused.status_code == 409 and "reserved" in refused.json()["message"]
    with stack.connector.db.read() as s:
        events = s.scalars(sa.select(OutboxRow).where(OutboxRow.key == "order:S-1")).all()
        payloads = [e.payload for e in events]
    statuses = [p["status"] for p in payloads]
    assert statuses[-1] == "Picked" and "Registered" in statuses
    # Duplicate hooks and refetches tell the shop nothing new: consecutive events always differ.
    assert all(a != b for a, b in itertools.pairwise(payloads))


def test_a_new_orders_job_starts_from_what_the_intake_knew(stack: Stack) -> None:
    """The intake hands the job its start (no attempt yet, the customer), so the job's first
    checkpoint is its first attempt; a job enqueued with the reference alone (the watchdog's, a
    replay's, one recorded by the previous version) reads it in `orders.begin`."""
    from extend_connector.flows import orders

    assert stack.post_order("S-start").status_code == 202
    stack.wait_status("S-start", "Registered")
    eng = stack.connector.engine
    steps = [step.name for step in eng.list_steps("order-S-start")]
    assert steps[0] == "orders.send" and "orders.begin" not in steps
    # The reference alone: the order is in Extend already, so the job ends at `orders.begin`.
    again = eng.enqueue(orders.submit, "S-start", queue=orders.SUBMIT_QUEUE)
    assert eng.wait(again, timeout_seconds=30) == "done"
    assert [step.name for step in eng.list_steps(again)] == ["orders.begin"]
    assert len(_extend_orders_for(stack, "S-start")) == 1


def test_a_repeat_post_is_answered_while_the_write_lock_is_held(
    stack: Stack, tmp_path: Path
) -> None:
    """The shop re-posts an order it is unsure of (timeouts, restarts); the answer needs no
    write, so it comes while another writer (a `db upgrade`, a `sync` command, a long batch)
    holds SQLite's one write lock. The intake read the order inside its write transaction and
    such a re-post waited out the busy timeout (30 s). New orders still wait for the lock."""
    import sqlite3

    assert stack.post_order("S-repeat").status_code == 202
    holder = sqlite3.connect(tmp_path / "c.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        again = stack.http.post(
            f"{stack.url}/v1/orders",
            json={
                "shopRef": "S-repeat",
                "lines": [{"productNumber": "P000001", "quantity": 2, "unitPrice": "99.50"}],
            },
            headers=TOKEN,
            timeout=5,
        )
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert again.status_code == 200 and again.json()["created"] is False
    stack.wait_status("S-repeat", "Registered")
    assert len(_extend_orders_for(stack, "S-repeat")) == 1


def test_an_accepted_order_is_on_disk_before_the_shop_is_answered(stack: Stack) -> None:
    """The embedded SQLite runs `synchronous=NORMAL`: a power cut (or OS crash) after the
    shop's 202 could take the order with it. The intake's transaction commits with FULL."""
    seen: list[int] = []

    def on_insert(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("INSERT INTO ORDERS "):
            check = conn.connection.driver_connection.cursor()
            seen.append(int(check.execute("PRAGMA synchronous").fetchone()[0]))
            check.close()

    engine = stack.connector.db.engine
    sa.event.listen(engine, "before_cursor_execute", on_insert)
    try:
        assert stack.post_order("S-durable").status_code == 202
    finally:
        sa.event.remove(engine, "before_cursor_execute", on_insert)
    assert seen == [2]  # FULL


def test_order_created_for_an_order_we_created_costs_no_fetch(stack: Stack) -> None:
    """`OrderCreated` says only that the order exists: for an order the connector created and
    recorded from Extend's answer to its POST it brings nothing new (each later change has its
    own action), so it is stored and acknowledged without a `GET CustomerOrders/{id}`: one call
    fewer per order against Extend's standard limit. Any other order action is still fetched,
    and so is `OrderCreated` for an order not recorded here (created elsewhere, or its POST's
    answer not recorded yet)."""
    from extend_connector.store.models import InboxRow

    def inbox() -> int:
        with stack.connector.db.read() as s:
            return int(s.scalar(sa.select(sa.func.count()).select_from(InboxRow)) or 0)

    def fire_and_settle(action: str, number: str) -> int:
        before = inbox()
        stack.admin(
            "POST",
            "/events",
            json={"action": action, "details": {"OrderNumber": number}, "warehouse": None},
        )
        wait_for(lambda: inbox() > before, 30, what=f"{action} stored")
        wait_drained(stack.connector.engine, stack.connector.db, "order")
        calls: dict[str, Any] = stack.admin("GET", "/counters")
        return int(calls["endpoints"].get("GET /CustomerOrders/{orderNumber}", 0))

    assert stack.post_order("S-created").status_code == 202
    number = stack.wait_status("S-created", "Registered")["orderNumber"]
    wait_drained(stack.connector.engine, stack.connector.db, "order")
    stack.admin("POST", "/counters/reset")
    assert fire_and_settle("OrderCreated", number) == 0
    assert fire_and_settle("OrderReserved", number) == 1
    with stack.connector.db.write() as s:  # as if the POST's answer had not been recorded yet
        s.execute(
            sa.update(OrderRow).where(OrderRow.shop_ref == "S-created").values(order_number=None)
        )
    assert fire_and_settle("OrderCreated", number) == 2


def test_lost_answer_and_outage_still_once(stack: Stack) -> None:
    stack.admin("PATCH", "/faults", json={"lostResponseRate": 1.0})
    assert stack.post_order("S-lost").status_code == 202
    wait_for(lambda: _extend_orders_for(stack, "S-lost"), 20, what="order created in Extend")
    stack.admin("PATCH", "/faults", json={"lostResponseRate": 0.0})
    order = stack.wait_status("S-lost", "Registered", timeout=40)
    assert len(_extend_orders_for(stack, "S-lost")) == 1
    assert order["orderNumber"] == _extend_orders_for(stack, "S-lost")[0]["orderNumber"]

    stack.admin("POST", "/outage", json={})
    assert stack.post_order("S-down").status_code == 202
    stack.wait_status("S-down", "WaitingForExtend", timeout=20)
    assert "waiting for Extend" in (stack.order("S-down")["lastError"] or "")
    stack.admin("DELETE", "/outage")
    stack.wait_status("S-down", "Registered", timeout=40)
    assert len(_extend_orders_for(stack, "S-down")) == 1


def test_invalid_order_parked_then_retried_once(stack: Stack) -> None:
    response = stack.post_order(
        "S-bad", [{"productNumber": "NEW-1", "quantity": 1, "unitPrice": 10}]
    )
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "order_parked" and "NEW-1" in body["details"][0]["message"]
    assert stack.order("S-bad")["status"] == "Parked"
    assert not _extend_orders_for(stack, "S-bad")
    open_failures = failures.list_failures(kind="order")
    assert [f.key for f in open_failures] == ["S-bad"]
    with pytest.raises(failures.StillFailing):
        _run(failures.retry(open_failures[0].id))
    stack.admin(
        "POST", "/products", json={"productNumber": "NEW-1", "productName": "New", "listPrice": 10}
    )
    message = _run(failures.retry(open_failures[0].id))
    assert "queued" in message
    stack.wait_status("S-bad", "Registered", timeout=30)
    assert len(_extend_orders_for(stack, "S-bad")) == 1
    assert failures.list_failures(kind="order") == []
    with pytest.raises(failures.AlreadyResolved):
        _run(failures.retry(open_failures[0].id))


def test_cancel_before_reserved_and_lines(stack: Stack) -> None:
    lines = [
        {"productNumber": "P000001", "quantity": 1},
        {"productNumber": "P000002", "quantity": 1, "warehouse": "GreenWarehouse"},
    ]
    stack.post_order("S-c1", lines)
    stack.post_order("S-c2", lines)
    stack.wait_status("S-c1", "Registered")
    stack.wait_status("S-c2", "Registered")
    assert stack.http.post(f"{stack.url}/v1/orders/S-c1/cancel", headers=TOKEN).status_code == 202
    stack.wait_status("S-c1", "Cancelled")
    assert _extend_orders_for(stack, "S-c1")[0]["status"] == "Cancelled"
    r = stack.http.post(
        f"{stack.url}/v1/orders/S-c2/lines/cancel", json={"lines": [2]}, headers=TOKEN
    )
    assert r.status_code == 202
    wait_for(lambda: stack.order("S-c2")["pendingChange"] is None, 20, what="row cancel confirmed")
    rows = _extend_orders_for(stack, "S-c2")[0]["orderRows"]
    assert [r["rowOperation"] for r in rows] == [None, "Inactive"]
    assert len(rows) == 2  # sent with its warehouse: no extra cancelled row (Extend's quirk)
    assert stack.order("S-c2")["status"] == "Registered"


def test_sweep_repairs_dropped_webhooks(stack: Stack) -> None:
    from extend_connector.flows.orders import sweep_orders

    stack.post_order("S-sw")
    order = stack.wait_status("S-sw", "Registered")
    # The OrderCreated refresh finishes first (it would fetch the reservation too): its webhook
    # delivered (the connector marked the order before answering it), then the mark drained. The
    # order is Registered by the submit itself, often before that webhook arrives.
    assert stack.admin("GET", "/deliveries", params={"wait": "20"})["idle"] is True
    wait_drained(stack.connector.engine, stack.connector.db, "order")
    stack.admin("PATCH", "/faults", json={"webhookDropRate": 1.0})
    stack.admin("POST", f"/orders/{order['orderNumber']}/reserve")
    wait_for(
        lambda: stack.admin("GET", "/deliveries", params={"outcome": "dropped"})["deliveries"],
        20,
        interval=0.05,
        what="the reservation's webhook dropped",
    )
    wait_drained(stack.connector.engine, stack.connector.db, "order")
    assert stack.order("S-sw")["status"] == "Registered"  # the hook was dropped
    stats = _run(sweep_orders())
    assert stats.outcomes["updated"] >= 1
    assert stack.order("S-sw")["status"] == "Reserved"
    again = _run(sweep_orders())
    assert (
        again.outcomes.get("updated", 0) == again.outcomes.get("unchanged", 0) == 0
    )  # nothing fetched twice
    assert again.outcomes["skipped"] >= 1


def test_orders_api_needs_the_token(stack: Stack) -> None:
    r = stack.http.post(f"{stack.url}/v1/orders", json={"shopRef": "X", "lines": []})
    assert r.status_code == 401
    with stack.connector.db.read() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(OrderRow)) == 0


def test_the_timeline_shows_extends_webhooks_about_the_order(stack: Stack) -> None:
    from extend_connector.flows.orders.timeline import timeline

    assert stack.post_order("S-t").status_code == 202
    number = stack.wait_status("S-t", "Registered")["orderNumber"]
    assert stack.post_order("S-other").status_code == 202  # another order's hooks stay out
    other = stack.wait_status("S-other", "Registered")["orderNumber"]
    stack.admin("POST", f"/orders/{other}/reserve")
    stack.admin("POST", f"/orders/{number}/reserve")
    stack.admin(
        "POST", f"/orders/{number}/pick", json={"carrier": "PostNord", "trackingNumber": "TR9"}
    )
    stack.wait_status("S-t", "Picked")

    def hooks() -> list[str] | None:
        story = timeline("S-t")
        assert story is not None
        titles = [e.title for e in story.entries if e.title.startswith("webhook ")]
        return titles if {"webhook OrderReserved", "webhook OrderPicked"} <= set(titles) else None

    titles = wait_for(hooks, 20, what="the order's webhooks in its timeline")
    assert titles.count("webhook OrderReserved") == 1  # not the other order's
    story = timeline("S-t")
    assert story is not None
    reserved = next(e for e in story.entries if e.title == "webhook OrderReserved")
    assert reserved.source == "extend" and "delivery " in reserved.detail
