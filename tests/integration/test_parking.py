"""Every flow parks a failure through `failures.park`: the rows look alike to `failures list/show`
whichever flow parked them (SQLite, and PostgreSQL when configured)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from extend_connector.flows import customers, failures, outbox, watchdog
from extend_connector.flows.context import FlowContext, install
from extend_connector.settings import Settings, StoreSettings
from extend_connector.store import Database
from extend_connector.store.models import OutboxRow, ParkedFailureRow

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def ctx(db: Database) -> Iterator[FlowContext]:
    # Parking needs the database and the clock only; nothing here may reach an engine or a shop.
    context = FlowContext(
        settings=Settings(store=StoreSettings(database_url=db.url)),
        db=db,
        engine=None,
        webshop=None,
        clock=lambda: NOW,
    )  # type: ignore[arg-type]
    install(context)
    try:
        yield context
    finally:
        install(None)


def _outbox_event(db: Database, key: str) -> int:
    with db.write() as session:
        row = OutboxRow(
            event_id=outbox.new_event_id(),
            event_type="stock.changed",
            key=key,
            payload={"available": "5"},
            created_at=NOW,
        )
        session.add(row)
        session.flush()
        return row.id


def _refuse(outbox_id: int) -> None:
    refusal = {
        "outcome": "refused",
        "error": "shop answered 422: unknown sku",
        "status": 422,
        "body": "unknown sku",
    }
    outbox._record(outbox_id, refusal, 1, None)


def _park_from_each_flow(ctx: FlowContext) -> dict[str, int]:
    """One failure parked by each flow's own parking code; their ids by flow."""
    _refuse(_outbox_event(ctx.db, "sku:P1"))
    customers._customers_park(
        {"shop_ref": "C-1", "name": "Ada"}, "validation", "Extend refused: zip is missing"
    )
    with ctx.db.write() as session:
        failures.park(
            session,
            kind="order",
            key="S-1",
            reason="invalid_order",
            message="no such product P9",
            payload={"shopRef": "S-1"},
        )
        failures.park(
            session,
            kind=watchdog.JOB_FAILURE_KIND,
            key="wf-1",
            reason="ERROR",
            message="job orders.submit stopped (ERROR): boom",
            payload={"workflowId": "wf-1"},
        )
    with ctx.db.read() as session:
        rows = session.query(ParkedFailureRow).all()
        return {row.kind: row.id for row in rows}


def test_a_park_from_each_flow_yields_the_same_row_shape(ctx: FlowContext) -> None:
    ids = _park_from_each_flow(ctx)
    assert sorted(ids) == ["customer_create", "job", "order", "shop_delivery"]
    shown: dict[str, Any] = {
        kind: failures.get(failure_id).as_json() for kind, failure_id in ids.items()
    }
    for kind, failure in shown.items():
        assert failure["detail"]["message"] == failure["message"], kind
        assert failure["createdAt"] == NOW.isoformat() and failure["resolvedAt"] is None, kind
        assert failure["retryCount"] == 0 and failure["payload"], kind
    assert shown["shop_delivery"]["message"] == "shop answered 422: unknown sku"
    assert shown["shop_delivery"]["reason"] == "shop_refused"
    assert shown["customer_create"]["message"] == "Extend refused: zip is missing"
    assert shown["customer_create"]["key"] == "customer:C-1"
    assert shown["customer_create"]["payload"] == {"shop_ref": "C-1", "name": "Ada"}
    listed = {f.kind: f.as_json() for f in failures.list_failures()}
    assert listed == shown


def test_each_refused_shop_event_stays_its_own_failure(ctx: FlowContext) -> None:
    # Two events about one record, both refused: each must stay replayable on its own.
    first, second = _outbox_event(ctx.db, "sku:P1"), _outbox_event(ctx.db, "sku:P1")
    _refuse(first)
    _refuse(second)
    parked = failures.list_failures(kind="shop_delivery")
    assert sorted(f.payload["outbox_id"] for f in parked) == [first, second]
    assert all(f.detail["outbox_id"] == f.payload["outbox_id"] for f in parked)


def test_an_open_failure_of_the_same_item_is_updated_not_duplicated(ctx: FlowContext) -> None:
    customers._customers_park({"shop_ref": "C-1", "name": "Ada"}, "extend_unavailable", "503")
    customers._customers_park({"shop_ref": "C-1", "name": "Ada"}, "validation", "zip is missing")
    parked = failures.list_failures(kind="customer_create")
    assert [(f.reason, f.message) for f in parked] == [("validation", "zip is missing")]
