"""Typed step outcomes read and write exactly the JSON shape DBOS recorded before them."""

from __future__ import annotations

from extend_connector.flows import retry
from extend_connector.flows.customers import (
    NotPosted,
    Parked,
    Posted,
    Stored,
    creation_from_json,
    post_from_json,
)
from extend_connector.flows.orders.changes import Changed, change_from_json
from extend_connector.flows.orders.progress import Refreshed, refresh_from_json
from extend_connector.flows.orders.submit import Invalid, Sent, Settled, send_from_json
from extend_connector.flows.outbox import Delivered, Refused, attempt_from_json
from extend_connector.flows.passes import PassDone, PassFailed, pass_from_json


def test_outbox_delivered_shape() -> None:
    assert Delivered().as_json() == {"outcome": "delivered"}
    assert attempt_from_json({"outcome": "delivered"}) == Delivered()


def test_outbox_refused_round_trip() -> None:
    refused = Refused(error="400 bad event", status=400, body="nope")
    assert attempt_from_json(refused.as_json()) == refused


def test_outbox_refused_reads_recorded_shape() -> None:
    recorded = {"outcome": "refused", "error": "400 bad event", "status": 400, "body": "nope"}
    outcome = attempt_from_json(recorded)
    assert outcome == Refused(error="400 bad event", status=400, body="nope")
    assert outcome.as_json() == recorded


def test_outbox_retry_is_a_failure() -> None:
    recorded = {
        "outcome": "retry",
        "reason": "ShopUnavailable",
        "error": "503",
        "retry_after": 2.0,
        "ambiguous": False,
        "lost_answer": False,
        "status": 503,
        "body": "",
    }
    outcome = attempt_from_json(recorded)
    assert isinstance(outcome, retry.Failure)
    assert outcome.retryable and outcome.retry_after == 2.0
    assert outcome.as_json() == recorded


def test_refresh_round_trip() -> None:
    for refreshed in (Refreshed(result="applied", status="open"), Refreshed(result="not_found")):
        assert refresh_from_json(refreshed.as_json()) == refreshed


def test_refresh_reads_recorded_shapes() -> None:
    applied = {"outcome": "applied", "status": "delivered"}
    assert refresh_from_json(applied) == Refreshed(result="applied", status="delivered")
    assert Refreshed(result="applied", status="delivered").as_json() == applied
    assert refresh_from_json({"outcome": "not_found"}) == Refreshed(result="not_found")
    assert Refreshed(result="not_found").as_json() == {"outcome": "not_found"}


def test_refresh_retry_is_a_failure() -> None:
    failure = retry.Failure(verdict=retry.Verdict.RETRY, reason="TechnicalFailure", error="500")
    assert refresh_from_json(failure.as_json()) == failure


def test_change_round_trip() -> None:
    for changed in (
        Changed(result="nothing"),
        Changed(result="refused", message="already shipped"),
        Changed(result="invalid", message="bad line", error="422 bad line"),
        Changed(result="applied"),
    ):
        assert change_from_json(changed.as_json()) == changed


def test_change_reads_recorded_shapes() -> None:
    shapes = [
        ({"outcome": "nothing"}, Changed(result="nothing")),
        ({"outcome": "refused", "message": "m"}, Changed(result="refused", message="m")),
        (
            {"outcome": "invalid", "message": "m", "error": "e"},
            Changed(result="invalid", message="m", error="e"),
        ),
        ({"outcome": "unchanged"}, Changed(result="unchanged")),
    ]
    for recorded, changed in shapes:
        assert change_from_json(recorded) == changed
        assert changed.as_json() == recorded


def test_change_retry_is_a_failure() -> None:
    failure = retry.Failure(verdict=retry.Verdict.RETRY, reason="Throttled", error="429")
    assert change_from_json(failure.as_json()) == failure


def test_send_round_trip() -> None:
    outcomes = (
        Sent(outcome="created", order_number="O-1", result="applied", pending_change=False),
        Sent(outcome="found", order_number="O-1", result="unchanged", pending_change=True),
        Settled(outcome="done", order_number="O-1"),
        Settled(outcome="missing"),
        Invalid(
            reason="extend_rejected",
            error="422",
            message="unknown SKU (sku: X)",
            details=({"field": "sku", "message": "X"},),
        ),
    )
    for outcome in outcomes:
        assert send_from_json(outcome.as_json()) == outcome


def test_send_reads_recorded_shapes() -> None:
    shapes = [
        (
            {
                "outcome": "created",
                "orderNumber": "O-1",
                "result": "applied",
                "pendingChange": False,
            },
            Sent(outcome="created", order_number="O-1", result="applied", pending_change=False),
        ),
        (
            {"outcome": "found", "orderNumber": "O-2", "result": "stale", "pendingChange": True},
            Sent(outcome="found", order_number="O-2", result="stale", pending_change=True),
        ),
        ({"outcome": "done", "orderNumber": "O-3"}, Settled(outcome="done", order_number="O-3")),
        ({"outcome": "cancelled", "orderNumber": None}, Settled(outcome="cancelled")),
        (
            {
                "outcome": "invalid",
                "reason": "extend_conflict",
                "error": "409",
                "message": "taken",
                "details": [{"field": None, "message": "taken"}],
            },
            Invalid(
                reason="extend_conflict",
                error="409",
                message="taken",
                details=({"field": None, "message": "taken"},),
            ),
        ),
    ]
    for recorded, outcome in shapes:
        assert send_from_json(recorded) == outcome
        assert outcome.as_json() == recorded


def test_send_retry_is_a_failure() -> None:
    failure = retry.Failure(
        verdict=retry.Verdict.RETRY, reason="OutcomeUnknown", error="lost", ambiguous=True
    )
    assert send_from_json(failure.as_json()) == failure


def test_customer_post_round_trip() -> None:
    for posted in (
        Posted(customer={"customer_number": "10042", "name": "Ab", "changed_at": None}),
        NotPosted(result="unknown", error="timeout"),
        NotPosted(result="conflict", error="409 duplicate"),
        NotPosted(result="invalid", error="422 name"),
    ):
        assert post_from_json(posted.as_json()) == posted


def test_customer_post_reads_recorded_shapes() -> None:
    document = {"customer_number": "10042", "name": "Ab", "changed_at": "2026-01-02T03:04:05"}
    created = {"outcome": "created", "customer": document}
    posted = post_from_json(created)
    assert posted == Posted(customer=document)
    assert isinstance(posted, Posted) and posted.customer_number == "10042"
    assert posted.as_json() == created
    for result in ("unknown", "conflict", "invalid"):
        recorded = {"outcome": result, "error": "e"}
        assert post_from_json(recorded) == NotPosted(result=result, error="e")
        assert NotPosted(result=result, error="e").as_json() == recorded


def test_customer_post_retry_is_a_failure() -> None:
    failure = retry.Failure(verdict=retry.Verdict.RETRY, reason="Throttled", error="429")
    assert post_from_json(failure.as_json()) == failure


def test_customer_creation_round_trip() -> None:
    for done in (
        Stored(result="created", customer_number="10042"),
        Stored(result="found", customer_number="10043"),
        Parked(reason="validation"),
    ):
        assert creation_from_json(done.as_json()) == done


def test_customer_creation_reads_recorded_shapes() -> None:
    shapes = [
        (
            {"outcome": "created", "customer_number": "10042"},
            Stored(result="created", customer_number="10042"),
        ),
        (
            {"outcome": "found", "customer_number": "10043"},
            Stored(result="found", customer_number="10043"),
        ),
        ({"outcome": "parked", "reason": "outcome_unknown"}, Parked(reason="outcome_unknown")),
    ]
    for recorded, typed in shapes:
        assert creation_from_json(recorded) == typed
        assert typed.as_json() == recorded


def test_pass_round_trip() -> None:
    for outcome in (
        PassDone(more=True, counts={"pairs": 3, "calls": 1, "created": 2}),
        PassDone(more=False),
        PassFailed(retryable=True, error="503", kind="TechnicalFailure", pairs=7),
        PassFailed(retryable=False, error="unknown warehouse", kind="ValidationFailed", pairs=2),
        PassFailed(retryable=True, error="down"),
    ):
        assert pass_from_json(outcome.as_json()) == outcome


def test_balance_pass_reads_recorded_shapes() -> None:
    done = {
        "outcome": "done",
        "pairs": 4,
        "cleared": 4,
        "calls": 1,
        "created": 1,
        "updated": 2,
        "unchanged": 1,
        "skipped": 0,
        "more": False,
    }
    typed = pass_from_json(done)
    assert isinstance(typed, PassDone) and not typed.more
    assert typed.count("updated") == 2 and typed.count("absent") == 0
    assert typed.as_json() == done
    empty = {"outcome": "done", "pairs": 0, "calls": 0, "more": False}
    assert pass_from_json(empty) == PassDone(more=False, counts={"pairs": 0, "calls": 0})
    assert PassDone(more=False, counts={"pairs": 0, "calls": 0}).as_json() == empty
    for verdict, retryable in (("retry", True), ("failed", False)):
        recorded = {"outcome": verdict, "error": "e", "kind": "TechnicalFailure", "pairs": 5}
        failed = PassFailed(retryable=retryable, error="e", kind="TechnicalFailure", pairs=5)
        assert pass_from_json(recorded) == failed
        assert failed.as_json() == recorded


def test_price_pass_reads_recorded_shapes() -> None:
    done = {
        "outcome": "done",
        "products": 2,
        "customers": 3,
        "whole_lists": False,
        "more": True,
        "data_point": "prices",
        "outcomes": {"updated": 4},
        "api_calls": 3,
        "waited_seconds": 0.0,
        "cursor": None,
    }
    typed = pass_from_json(done)
    assert isinstance(typed, PassDone) and typed.more and typed.count("products") == 2
    assert typed.as_json() == done
    recorded = {"outcome": "retry", "error": "503"}
    assert pass_from_json(recorded) == PassFailed(retryable=True, error="503")
    assert PassFailed(retryable=True, error="503").as_json() == recorded
