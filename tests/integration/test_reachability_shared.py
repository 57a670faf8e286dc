"""Reachability shared between processes through the `extend_reachability` table (issue #12):
a `web` process that calls Extend for nothing tells the shop what its workers see."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from extend_connector.api import shop
from extend_connector.api.app import create_app
from extend_connector.extend import TechnicalFailure
from extend_connector.flows import context
from extend_connector.flows.freshness import (
    LIVE_SECONDS,
    FleetReachability,
    Publisher,
    Reachability,
    reachability,
)
from extend_connector.settings import Settings, StoreSettings
from extend_connector.store import Database
from extend_connector.store import reachability as store
from extend_connector.webshop import RecordingWebshop

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
DROPPED = TechnicalFailure(
    "Server disconnected without sending a response.",
    operation="create_order",
    method="POST",
    url="http://extend/CustomerOrders",
)


class Clock:
    def __init__(self) -> None:
        self.now = T0
        self.mono = 0.0

    def __call__(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        self.mono += seconds


def test_a_web_process_sees_what_its_workers_see(db: Database) -> None:
    clock = Clock()
    worker = Reachability(clock)
    publisher = Publisher(db.engine, role="worker", source=worker, process="host:1", clock=clock)
    web = FleetReachability(
        db.engine,
        local=Reachability(clock),
        clock=clock,
        monotonic=clock.monotonic,
        exclude="host:2",
    )
    assert not publisher.publish_once()  # nothing seen yet: nothing written
    assert web.reachable

    worker.failed(DROPPED)
    assert publisher.publish_once()
    clock.advance(1)
    state = web.state()
    assert not state.reachable and "Server disconnected" in (state.last_error or "")

    worker.succeeded()
    assert publisher.publish_once()
    assert not publisher.publish_once()  # unchanged: no write until the heartbeat
    assert not web.reachable  # the rows are cached for a second
    clock.advance(1.0)
    assert web.reachable
    clock.advance(10)
    assert publisher.publish_once()  # heartbeat
    assert publisher.writes == 3 and web.reads == 3


def test_a_hanging_call_of_a_live_worker_counts_a_stopped_ones_does_not(db: Database) -> None:
    clock = Clock()
    worker = Reachability(clock)
    worker.succeeded()
    clock.advance(1)
    worker.waiting()  # a call that never ends
    publisher = Publisher(db.engine, role="worker", source=worker, process="host:1", clock=clock)
    web = FleetReachability(
        db.engine,
        local=Reachability(clock),
        clock=clock,
        monotonic=clock.monotonic,
        cache_seconds=0,
        exclude="host:2",
    )
    assert publisher.publish_once()
    assert web.reachable  # pending for 0 s
    clock.advance(25)
    assert publisher.publish_once()  # heartbeat
    assert not web.reachable  # 25 s on the wire, nothing answered since
    clock.advance(LIVE_SECONDS + 1)  # the worker stopped writing: it died with its call
    assert web.reachable


def test_the_fleet_combines_each_rate_limit_group_over_its_processes(db: Database) -> None:
    """One worker's heavy lists fail, another's single-record reads answer, a third row comes
    from a process older than the groups column: the overview gets one verdict per group."""
    clock = Clock()
    lists, records = Reachability(clock), Reachability(clock)
    lists.succeeded("heavy")
    clock.advance(1)
    lists.failed(DROPPED, "heavy")
    records.succeeded("standard")
    records.failed(DROPPED, "heavy")
    clock.advance(1)
    records.succeeded("heavy")  # the heavy group answered the other worker later: up again
    records.succeeded("standard")
    for process, source in (("host:1", lists), ("host:2", records)):
        Publisher(
            db.engine, role="worker", source=source, process=process, clock=clock
        ).publish_once()
    store.publish(
        db.engine,
        store.Seen(
            process="old:3",
            role="worker",
            last_success_at=T0,
            last_failure_at=None,
            last_error=None,
            pending_since=None,
            updated_at=clock.now,
        ),
    )
    web = FleetReachability(
        db.engine, local=Reachability(clock), clock=clock, monotonic=clock.monotonic, exclude="web"
    )
    groups = web.group_states()
    assert set(groups) == {"heavy", "standard"}
    assert groups["heavy"].reachable and groups["heavy"].last_success_at == clock.now
    assert groups["heavy"].last_failure_at == T0 + timedelta(seconds=1)

    clock.advance(1)
    lists.failed(DROPPED, "heavy")
    Publisher(db.engine, role="worker", source=lists, process="host:1", clock=clock).publish_once()
    clock.advance(1)  # past the read cache
    groups = web.group_states()
    assert not groups["heavy"].reachable and "Server disconnected" in (
        groups["heavy"].last_error or ""
    )
    assert groups["standard"].reachable


def test_old_rows_are_forgotten(db: Database) -> None:
    store.publish(
        db.engine,
        store.Seen(
            process="gone:1",
            role="worker",
            last_success_at=None,
            last_failure_at=T0 - timedelta(days=3),
            last_error="x",
            pending_since=None,
            updated_at=T0 - timedelta(days=2),
        ),
    )
    worker = Reachability(lambda: T0)
    worker.succeeded()
    Publisher(
        db.engine, role="worker", source=worker, process="host:1", clock=lambda: T0
    ).publish_once()
    assert [s.process for s in store.recent(db.engine, since=T0 - timedelta(days=30))] == ["host:1"]


@pytest.fixture
def web_client(tmp_path: Path) -> Iterator[tuple[TestClient, Database]]:
    from extend_connector.store.migrate import migrate

    settings = Settings(store=StoreSettings(database_url=f"sqlite:///{tmp_path / 'web.db'}"))
    migrate(settings.store.url)
    db = Database(settings.store.url)
    ctx = context.FlowContext(settings=settings, db=db, engine=None, webshop=RecordingWebshop())  # type: ignore[arg-type]
    context.install(ctx)
    reachability.reset()
    try:
        with TestClient(create_app(routers=[shop.router], state={"flow_context": ctx})) as client:
            yield client, db
    finally:
        reachability.reset()
        context.install(None)
        db.dispose()


def test_the_read_api_says_unreachable_when_only_a_worker_saw_it(
    web_client: tuple[TestClient, Database],
) -> None:
    client, db = web_client
    now = datetime.now(UTC)
    store.publish(
        db.engine,
        store.Seen(
            process="worker-host:99",
            role="worker",
            last_success_at=now - timedelta(seconds=30),
            last_failure_at=now,
            last_error="TechnicalFailure: dropped",
            pending_since=None,
            updated_at=now,
        ),
    )
    body = client.get("/v1/stock", headers={"authorization": "Bearer shop-token"}).json()
    assert body["extendReachable"] is False
