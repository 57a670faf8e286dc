"""The shop's delivery job on a fast retry policy: a shop that stays down is given up on and the
event parked once; a shop that refuses an event gets it parked at the first answer.

Before `flows.retry` the delivery budget (72 h) was a module constant: only the refusal could be
tested. Real connector (HTTP + engine in a thread) against a real simulator.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx2
import pytest

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
