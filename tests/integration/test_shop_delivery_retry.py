"""The shop's delivery job on a fast retry policy: a shop that stays down is given up on and the
event parked once; a shop that refuses an event gets it parked at the first answer.

Before `flows.retry` the delivery budget (72 h) was a module constant: only the refusal could be
tested. Real connector (HTTP + engine in a thread) against a real simulator.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import pytest
import sqlalchemy as sa
import structlog.testing

from extend_connector.flows import customers, failures, outbox, retry
from extend_connector.service import Connector
from extend_connector.settings import Settings
from extend_connector.simulator import SimulatorConfig, run_in_thread
from extend_connector.simulator.server import RunningSimulator
from extend_connector.store.models import OutboxRow
from extend_connector.webshop import (
    DeliveryRefused,
    EventType,
    RecordingWebshop,
    ShopEvent,
    ShopUnavailable,
    WebshopError,
)
from support.processes import free_port
from support.settle import wait_settled

TOKEN = "shop-token"


@pytest.fixture()
def sim() -> Iterator[RunningSimulator]:
    with run_in_thread(
        SimulatorConfig(seed=7, products=5, customers=2, rate_limits_enabled=False, webhooks=())
    ) as running:
        yield running


@pytest.fixture()
def fast_delivery() -> Iterator[None]:
    quick = retry.Backoff(base_seconds=0.05, cap_seconds=0.2, give_up_seconds=1.0)
    with retry.override({retry.SHOP_DELIVERY: quick}):
        yield


def _customer_failures() -> list[failures.Failure]:
    return [
        f for f in failures.list_failures(kind="shop_delivery") if f.key.startswith("customer:")
    ]


def _run(
    sim: RunningSimulator,
    db_url: str,
    fail_with: Callable[[ShopEvent], WebshopError | None],
    shop_ref: str,
) -> tuple[list[failures.Failure], list[OutboxRow], RecordingWebshop]:
    settings = Settings(
        extend={"base_url": sim.base_url, "api_token": sim.token},
        store={"database_url": db_url},
        scope={"customers": "to_extend", "products": "off", "prices": "off"},
    )
    # Only the customer's event fails: the stock events of the initial balance load go through.
    shop = RecordingWebshop(
        fail_with=lambda event: fail_with(event) if event.key.startswith("customer:") else None
    )
    connector = Connector(settings, webshop=shop, scheduler_poll_seconds=0.2)
    try:
        with connector.serve_in_thread(port=free_port()) as base:
            body = {"shopRef": shop_ref, "name": "Eva Lund", "email": f"{shop_ref}@example.com"}
            response = httpx2.post(
                f"{base}/v1/customers", json=body, headers={"authorization": f"Bearer {TOKEN}"}
            )
            assert response.status_code == 202
            deadline = time.monotonic() + 60
            parked: list[failures.Failure] = []
            while time.monotonic() < deadline and not parked:
                parked = _customer_failures()
                time.sleep(0.1)
            # A second parking of the same event, were there one, would show once both are idle.
            wait_settled(connector.engine, customers.QUEUE, outbox.QUEUE)
            parked = _customer_failures()
            with connector.db.read() as session:
                rows = list(session.query(OutboxRow).filter(OutboxRow.key.like("customer:%")))
                session.expunge_all()
    finally:
        connector.close()
    return parked, rows, shop


def test_a_shop_that_stays_down_gets_the_event_parked_once(
    fast_delivery: None, sim: RunningSimulator, db_url: str
) -> None:
    parked, rows, shop = _run(
        sim, db_url, lambda event: ShopUnavailable("shop down", status=503), "shop-down-1"
    )
    assert [(f.reason, f.key) for f in parked] == [("shop_unreachable", rows[0].key)]
    assert len(rows) == 1
    assert rows[0].delivered_at is None
    assert rows[0].attempts > 2  # it was retried on the policy before it was given up
    assert parked[0].detail["attempts"] == rows[0].attempts
    assert [e for e in shop.events if e.key.startswith("customer:")] == []


def test_a_shop_that_refuses_gets_the_event_parked_at_once(
    fast_delivery: None, sim: RunningSimulator, db_url: str
) -> None:
    parked, rows, _ = _run(
        sim,
        db_url,
        lambda event: DeliveryRefused("no such customer", status=422, body_excerpt="{}"),
        "shop-refuses-1",
    )
    assert [(f.reason, f.key) for f in parked] == [("shop_refused", rows[0].key)]
    assert [row.attempts for row in rows] == [1]


def test_events_about_one_record_arrive_in_order_while_it_waits_others_pass(
    fast_delivery: None, sim: RunningSimulator, db_url: str
) -> None:
    """The drainer's per-key order: a key whose oldest event waits for a retry holds its later
    events back (they arrive after it, in order) and holds nobody else up."""
    settings = Settings(
        extend={"base_url": sim.base_url, "api_token": sim.token},
        store={"database_url": db_url},
        scope={"customers": "off", "products": "off", "prices": "off"},
    )
    slow, other = "sku:ORDER-TEST", "sku:OTHER-TEST"
    shop = RecordingWebshop(
        fail_with=lambda event: (
            ShopUnavailable("busy", status=503)
            if event.key == slow and event.data["n"] == 1 and event.attempt <= 2
            else None
        )
    )
    connector = Connector(settings, webshop=shop, scheduler_poll_seconds=0.2)
    try:
        with connector.serve_in_thread(port=free_port()):
            for key, n in ((slow, 1), (other, 1), (slow, 2), (slow, 3)):
                with connector.db.write() as session:
                    outbox.publish(session, EventType.STOCK_CHANGED, key, {"n": n})
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if len([e for e in shop.events if e.key in (slow, other)]) >= 4:
                    break
                time.sleep(0.05)
            wait_settled(connector.engine, outbox.QUEUE)
            with connector.db.read() as session:
                rows = list(session.query(OutboxRow).filter(OutboxRow.key.in_((slow, other))))
                session.expunge_all()
    finally:
        connector.close()
    told = [(e.key, e.data["n"]) for e in shop.events if e.key in (slow, other)]
    assert [n for key, n in told if key == slow] == [1, 2, 3]
    assert told.index((other, 1)) < told.index((slow, 1))
    assert all(row.delivered_at is not None for row in rows)
    assert sorted((row.key, row.payload["n"], row.attempts) for row in rows) == [
        (slow, 1, 3),
        (slow, 2, 1),
        (slow, 3, 1),
        (other, 1, 1),
    ]


def _deliver_published_together(
    sim: RunningSimulator, db_url: str, shop: RecordingWebshop, events: list[tuple[str, str, int]]
) -> tuple[list[OutboxRow], list[failures.Failure]]:
    """Publish `events` (type, key, n) in one transaction, as a backlog a shop that was down
    would find, and wait until the drainer has nothing left to do; the rows and what was
    parked."""
    settings = Settings(
        extend={"base_url": sim.base_url, "api_token": sim.token},
        store={"database_url": db_url},
        scope={"customers": "off", "products": "off", "prices": "off"},
    )
    connector = Connector(settings, webshop=shop, scheduler_poll_seconds=0.2)
    keys = {key for _, key, _ in events}
    try:
        with connector.serve_in_thread(port=free_port()):
            with connector.db.write() as session:
                for type_, key, n in events:
                    outbox.publish(session, EventType(type_), key, {"n": n})
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with connector.db.read() as session:
                    owed = session.scalar(
                        sa.select(sa.func.count())
                        .select_from(OutboxRow)
                        .where(OutboxRow.key.in_(keys), outbox.owed())
                    )
                if owed == 0:
                    break
                time.sleep(0.05)
            wait_settled(connector.engine, outbox.QUEUE)
            with connector.db.read() as session:
                rows = list(session.scalars(sa.select(OutboxRow).where(OutboxRow.key.in_(keys))))
                session.expunge_all()
            parked = [f for f in failures.list_failures(kind="shop_delivery") if f.key in keys]
    finally:
        connector.close()
    return rows, parked


BACKLOG = [
    ("product.changed", "sku:RUN-A", 1),
    ("product.changed", "sku:RUN-A", 2),
    ("stock.changed", "sku:RUN-A", 3),
    ("stock.changed", "sku:RUN-A", 4),
    ("product.changed", "sku:RUN-A", 5),
    ("stock.changed", "sku:RUN-A", 6),
    ("price.changed", "prices:RUN-B", 7),
    ("price.changed", "prices:RUN-B", 8),
    ("stock.changed", "sku:RUN-C", 9),
    ("stock.changed", "sku:RUN-C", 10),
]


def test_a_shop_that_applies_state_gets_the_newest_of_each_run_in_order(
    sim: RunningSimulator, db_url: str
) -> None:
    """A backlog about one record (a shop that was down, a slow shop under a burst): an adapter
    that makes the shop show each event's state (Vendure) is given the newest event of each run
    of one type, in the key's order, not every one; events that are not whole states (a batch
    of price changes) are each delivered. Every row ends delivered."""
    shop = RecordingWebshop(latest_state_types=frozenset(EventType) - {EventType.PRICE_CHANGED})
    rows, _ = _deliver_published_together(sim, db_url, shop, BACKLOG)
    told = [
        (e.key, e.type.value, e.data["n"])
        for e in shop.events
        if e.key.endswith(("-A", "-B", "-C"))
    ]
    assert [t for t in told if t[0] == "sku:RUN-A"] == [
        ("sku:RUN-A", "product.changed", 2),
        ("sku:RUN-A", "stock.changed", 4),
        ("sku:RUN-A", "product.changed", 5),
        ("sku:RUN-A", "stock.changed", 6),
    ]
    assert [t[2] for t in told if t[0] == "prices:RUN-B"] == [7, 8]
    assert [t[2] for t in told if t[0] == "sku:RUN-C"] == [10]
    assert len(rows) == len(BACKLOG)
    assert all(row.delivered_at is not None and row.next_attempt_at is None for row in rows)


def test_a_shop_that_takes_events_gets_every_one(sim: RunningSimulator, db_url: str) -> None:
    shop = RecordingWebshop()
    _deliver_published_together(sim, db_url, shop, BACKLOG)
    told = [(e.key, e.data["n"]) for e in shop.events if e.key.endswith(("-A", "-B", "-C"))]
    assert [n for key, n in told if key == "sku:RUN-A"] == [1, 2, 3, 4, 5, 6]
    assert sorted(n for _, n in told) == list(range(1, 11))


STATES = frozenset({EventType.STOCK_CHANGED})


def test_a_run_that_fails_is_retried_as_one_and_its_newest_delivered(
    fast_delivery: None, sim: RunningSimulator, db_url: str
) -> None:
    shop = RecordingWebshop(
        fail_with=lambda e: (
            ShopUnavailable("busy", status=503) if e.key == "sku:RUN-D" and e.attempt == 1 else None
        ),
        latest_state_types=STATES,
    )
    events = [("stock.changed", "sku:RUN-D", n) for n in (1, 2, 3)]
    with structlog.testing.capture_logs() as logs:
        rows, _ = _deliver_published_together(sim, db_url, shop, events)
    # The operator reads why the shop is behind: one line per pass that failed, not per event.
    failed = [entry for entry in logs if entry["event"] == "shop_delivery_failed"]
    assert [(e["failed"], e["retrying"], e["first_key"], e["status"]) for e in failed] == [
        (1, 1, "sku:RUN-D", 503)
    ]
    assert [(e.data["n"], e.attempt) for e in shop.events if e.key == "sku:RUN-D"] == [(3, 2)]
    assert sorted((r.payload["n"], r.attempts, r.delivered_at is not None) for r in rows) == [
        (1, 2, True),
        (2, 2, True),
        (3, 2, True),
    ]


def test_a_run_the_shop_refuses_is_parked_once_with_its_newest_event(
    sim: RunningSimulator, db_url: str
) -> None:
    shop = RecordingWebshop(
        fail_with=lambda e: DeliveryRefused("no", status=422) if e.key == "sku:RUN-E" else None,
        latest_state_types=STATES,
    )
    events = [("stock.changed", "sku:RUN-E", n) for n in (1, 2)]
    rows, parked = _deliver_published_together(sim, db_url, shop, events)
    newest = max(rows, key=lambda r: r.id)
    assert [f.payload["outbox_id"] for f in parked] == [newest.id]
    assert all(r.delivered_at is None and r.next_attempt_at is None for r in rows)


def test_status_says_why_the_shop_is_behind(sim: RunningSimulator, db_url: str) -> None:
    settings = Settings(
        extend={"base_url": sim.base_url, "api_token": sim.token},
        store={"database_url": db_url},
        scope={"customers": "off", "products": "off", "prices": "off"},
    )
    shop = RecordingWebshop(
        fail_with=lambda e: (
            ShopUnavailable("Vendure answered 502", status=502) if e.key == "sku:DOWN" else None
        )
    )
    connector = Connector(settings, webshop=shop, scheduler_poll_seconds=0.2)
    try:
        with connector.serve_in_thread(port=free_port()):
            assert failures.status_snapshot()["outbox"]["lastError"] is None
            with connector.db.write() as session:
                outbox.publish(session, EventType.STOCK_CHANGED, "sku:DOWN", {"n": 1})
            deadline = time.monotonic() + 30
            last = None
            while time.monotonic() < deadline and last is None:
                last = failures.status_snapshot()["outbox"]["lastError"]
                time.sleep(0.05)
    finally:
        connector.close()
    assert last == {"key": "sku:DOWN", "attempts": 1, "error": "Vendure answered 502"}


def _replay_after_a_newer_event(
    sim: RunningSimulator, db_url: str, shop: RecordingWebshop
) -> tuple[bool, bool, list[int]]:
    """Event 1 of `sku:OLD` is refused and parked, event 2 goes through, then the operator
    retries the failure: (whether the replay was queued, whether the failure is resolved, the
    figures the shop was given)."""
    settings = Settings(
        extend={"base_url": sim.base_url, "api_token": sim.token},
        store={"database_url": db_url},
        scope={"customers": "off", "products": "off", "prices": "off"},
    )
    connector = Connector(settings, webshop=shop, scheduler_poll_seconds=0.2)
    try:
        with connector.serve_in_thread(port=free_port()):
            with connector.db.write() as session:
                outbox.publish(session, EventType.STOCK_CHANGED, "sku:OLD", {"n": 1})
            parked = _wait_for(lambda: _parked("sku:OLD"))
            with connector.db.write() as session:
                outbox.publish(session, EventType.STOCK_CHANGED, "sku:OLD", {"n": 2})
            _wait_for(lambda: [e for e in shop.events if e.key == "sku:OLD"])
            answer = asyncio.run(failures.retry(parked[0].id))
            wait_settled(connector.engine, outbox.QUEUE)
            resolved = failures.get(parked[0].id).resolved_at is not None
    finally:
        connector.close()
    figures = [e.data["n"] for e in shop.events if e.key == "sku:OLD"]
    return isinstance(answer, failures.Queued), resolved, figures


def _refuse_the_first(event: ShopEvent) -> WebshopError | None:
    if event.key == "sku:OLD" and event.data["n"] == 1:
        return DeliveryRefused("no", status=422)
    return None


def test_a_replay_never_gives_a_state_shop_an_older_state_than_it_has(
    sim: RunningSimulator, db_url: str
) -> None:
    """A stock figure Vendure refused is parked; a newer figure of the same SKU goes through
    later. Replaying the parked one would set the older figure: the replay resolves the failure
    instead, naming the newer event."""
    shop = RecordingWebshop(fail_with=_refuse_the_first, latest_state_types=STATES)
    assert _replay_after_a_newer_event(sim, db_url, shop) == (False, True, [2])


def test_a_replay_to_a_shop_that_takes_every_event_is_sent(
    sim: RunningSimulator, db_url: str
) -> None:
    shop = RecordingWebshop(fail_with=_refuse_the_first)
    queued, _, _ = _replay_after_a_newer_event(sim, db_url, shop)
    assert queued


def _parked(key: str) -> list[failures.Failure]:
    return [f for f in failures.list_failures(kind="shop_delivery") if f.key == key]


def _wait_for(probe: Callable[[], list[Any]]) -> list[Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("not reached in 30 s")
