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


# --- retrying, resolving, dismissing, filtering ----------------------------------------------


def _queued_replay(failure: failures.Failure) -> str:
    return failures.Queued(f"queued {failure.key}")


failures.register_replay("test.queued", _queued_replay)


def _park(ctx: FlowContext, kind: str, key: str, reason: str, message: str) -> int:
    with ctx.db.write() as session:
        return failures.park(session, kind=kind, key=key, reason=reason, message=message)


def test_a_queued_replay_leaves_the_failure_retrying_until_the_item_is_through(
    ctx: FlowContext,
) -> None:
    import asyncio

    fid = _park(ctx, "test.queued", "A-1", "invalid", "no such product P9")
    assert asyncio.run(failures.retry(fid)) == "queued A-1"
    f = failures.get(fid)
    assert (f.state, f.resolved_at, f.retry_count) == ("retrying", None, 1)
    # The flow parks it again: the same failure, open again with the new reason.
    assert _park(ctx, "test.queued", "A-1", "invalid", "no such product P10") == fid
    f = failures.get(fid)
    assert (f.state, f.message, f.retry_count) == ("open", "no such product P10", 1)
    # Retried again and this time through: the flow resolves it.
    asyncio.run(failures.retry(fid))
    with ctx.db.write() as session:
        assert failures.resolve_open(session, kind="test.queued", key="A-1", now=NOW) == 1
    f = failures.get(fid)
    assert (f.state, f.resolved_at, f.retry_count) == ("resolved", NOW, 2)
    with pytest.raises(failures.AlreadyResolved):
        asyncio.run(failures.retry(fid))


def test_a_retried_shop_event_resolves_when_delivered_and_reparks_itself_when_refused(
    ctx: FlowContext,
) -> None:
    first, second = _outbox_event(ctx.db, "sku:P1"), _outbox_event(ctx.db, "sku:P1")
    _refuse(first)
    _refuse(second)
    ids = {f.payload["outbox_id"]: f.id for f in failures.list_failures(kind="shop_delivery")}
    for fid in ids.values():
        failures._note_retry(ctx, fid, {"retryingSince": NOW.isoformat()}, resolved=False)
    _refuse(first)  # refused again: the same failure, open again; no third row
    outbox._record(second, {"outcome": "delivered"}, 2, None)  # the other one got through
    now = {f.payload["outbox_id"]: f for f in failures.list_failures(kind="shop_delivery")}
    assert list(now) == [first] and now[first].id == ids[first]
    assert now[first].state == "open"
    assert failures.get(ids[second]).state == "resolved"


def test_dismiss_needs_a_reason_closes_and_keeps_it(ctx: FlowContext) -> None:
    fid = _park(ctx, "order", "S-9", "invalid_order", "no such product P9")
    with pytest.raises(failures.FailureError, match="reason"):
        failures.dismiss(fid, "  ")
    with pytest.raises(failures.UnknownFailure):
        failures.dismiss(fid + 1000, "gone")
    f = failures.dismiss(fid, "entered in Extend by hand as 1234")
    assert f.state == "dismissed" and f.resolved_at == NOW
    assert f.detail["dismissed"] == {
        "reason": "entered in Extend by hand as 1234",
        "at": NOW.isoformat(),
    }
    with pytest.raises(failures.AlreadyResolved):
        failures.dismiss(fid, "again")
    assert failures.list_failures() == []
    assert [x.id for x in failures.list_failures(include_resolved=True)] == [fid]


def test_filters_by_kind_reason_text_and_age(ctx: FlowContext) -> None:
    from datetime import timedelta

    with ctx.db.write() as session:
        old = failures.park(
            session,
            kind="order",
            key="S-1",
            reason="invalid_order",
            message="no such product P9",
            now=NOW - timedelta(days=3),
        )
        young = failures.park(
            session, kind="order", key="S-2", reason="extend_rejected", message="Customer blocked"
        )
        other = failures.park(
            session,
            kind="customer_create",
            key="C-1",
            reason="validation",
            message="zip is missing",
        )

    def ids(**kwargs: Any) -> list[int]:
        return [f.id for f in failures.list_failures(where=failures.Filter(**kwargs))]

    assert ids() == [other, young, old]
    assert ids(kind="order") == [young, old]
    assert ids(reason="PRODUCT") == [old]  # the message, any case
    assert ids(reason="extend_rej") == [young]  # the reason code
    assert ids(older_than=timedelta(days=1)) == [old]
    assert ids(kind="order", reason="blocked", older_than=timedelta(days=1)) == []


def test_bulk_retry_takes_what_the_filter_takes_oldest_first(ctx: FlowContext) -> None:
    import asyncio

    a = _park(ctx, "test.queued", "B-1", "invalid", "bad sku")
    b = _park(ctx, "test.queued", "B-2", "invalid", "bad sku")
    _park(ctx, "test.queued", "B-3", "invalid", "bad customer")
    result = asyncio.run(failures.retry_matching(failures.Filter(reason="sku")))
    assert result.replayed == [(a, "queued B-1"), (b, "queued B-2")] and result.refused == []
    with pytest.raises(failures.FailureError, match="open failures only"):
        asyncio.run(failures.retry_matching(failures.Filter(include_resolved=True)))


def _parked_order(ctx: FlowContext, ref: str, *, order_number: str | None = None) -> None:
    from extend_connector.store.models import OrderRow

    with ctx.db.write() as session:
        session.add(
            OrderRow(
                shop_ref=ref,
                order_number=order_number,
                status="Parked" if order_number is None else "Reserved",
                shop_payload={
                    "shopRef": ref,
                    "customerNumber": "C-OLD",
                    "lines": [
                        {"productNumber": "BAD-SKU", "quantity": "2"},
                        {"productNumber": "P2", "quantity": "1"},
                    ],
                    "deliveryAddress": {"name": "Ada", "city": "Lund", "zipCode": "22100"},
                },
                created_at=NOW,
                updated_at=NOW,
            )
        )


def test_a_parked_order_is_amended_with_its_original_values_kept(ctx: FlowContext) -> None:
    from extend_connector.flows import orders
    from extend_connector.store.models import OrderRow

    _parked_order(ctx, "S-1")
    changes = orders.amend_parked_order(
        "S-1", products={1: "P1"}, customer_number="C-NEW", delivery_address={"city": "Malmö"}
    )
    assert changes == {
        "lines[1].productNumber": {"from": "BAD-SKU", "to": "P1"},
        "customerNumber": {"from": "C-OLD", "to": "C-NEW"},
        "deliveryAddress.city": {"from": "Lund", "to": "Malmö"},
    }
    with ctx.db.read() as session:
        payload = session.get(OrderRow, "S-1").shop_payload  # type: ignore[union-attr]
    assert [line["productNumber"] for line in payload["lines"]] == ["P1", "P2"]
    assert payload["deliveryAddress"] == {"name": "Ada", "city": "Malmö", "zipCode": "22100"}
    assert payload["amendments"] == [{"at": NOW.isoformat(), "changes": changes}]
    assert orders.amend_parked_order("S-1", products={1: "P1"}) == {}  # nothing new


def test_the_shop_sending_an_amended_order_again_is_a_repeat_not_a_conflict(
    ctx: FlowContext,
) -> None:
    # A shop retrying POST /v1/orders, or the Vendure adapter reading the order again, sends what
    # the shop has: the values before the operator's fix. Compared with the amended payload that
    # was "the same reference with other content" (409, and the Vendure pull logged a conflict
    # on every poll).
    from extend_connector.flows import orders
    from extend_connector.store.models import OrderRow

    _parked_order(ctx, "S-1")
    with ctx.db.read() as session:
        sent = dict(session.get(OrderRow, "S-1").shop_payload)  # type: ignore[union-attr]
    orders.amend_parked_order(
        "S-1", products={1: "P1"}, customer_number="C-NEW", delivery_address={"city": "Malmö"}
    )
    orders.amend_parked_order("S-1", delivery_address={"city": "Ystad", "careOf": "Bo"})
    intake = orders.accept_order(sent)
    assert (intake.created, intake.status) == (False, "Parked")
    with pytest.raises(orders.OrderConflict):
        orders.accept_order({**sent, "lines": sent["lines"][:1]})


def test_an_amendment_is_refused_with_the_reason(ctx: FlowContext) -> None:
    from extend_connector.flows import orders

    _parked_order(ctx, "S-1")
    _parked_order(ctx, "S-2", order_number="1001")
    cases = [
        ("S-1", {"products": {3: "P1"}}, "no line 3"),
        ("S-1", {"products": {1: " "}}, "empty product number"),
        ("S-1", {"delivery_address": {"town": "X"}}, "unknown address field"),
        ("S-1", {}, "nothing to amend"),
        ("S-2", {"products": {1: "P1"}}, "in Extend as 1001"),
        ("S-9", {"products": {1: "P1"}}, "not stored"),
    ]
    for ref, kwargs, message in cases:
        with pytest.raises(orders.AmendError, match=message):
            orders.amend_parked_order(ref, **kwargs)  # type: ignore[arg-type]


def test_events_never_for_delivery_are_not_counted_as_owed_to_the_shop(ctx: FlowContext) -> None:
    # Written while no shop webhook is configured: kept, never delivered, never owed. Counting
    # them as owed showed a backlog that only grows and raised the outbox-backlog alert.
    from extend_connector.flows import monitor

    owed = _outbox_event(ctx.db, "sku:P1")
    with ctx.db.write() as session:
        session.get(OutboxRow, owed).next_attempt_at = NOW  # type: ignore[union-attr]
        session.add(
            OutboxRow(
                event_id=outbox.new_event_id(),
                event_type="stock.changed",
                key="sku:P2",
                payload={},
                created_at=NOW,
                next_attempt_at=None,
            )
        )
    assert monitor.read(ctx).outbox_pending == 1
    with ctx.db.read() as session:
        assert outbox.owed_counts(session) == (1, NOW)
