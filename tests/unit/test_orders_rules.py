"""Order flow rules that need no database: backoff, payload -> domain, when to look up first."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from extend_connector.extend import (
    AccessDenied,
    BusinessConflict,
    OutcomeUnknown,
    TechnicalFailure,
    Throttled,
)
from extend_connector.extend.mapping import order_body
from extend_connector.flows.orders import (
    _outcome_of,
    active_line_numbers,
    backoff_seconds,
    canonical,
    order_from_payload,
)
from extend_connector.flows.retry import Failure, Verdict

CALL = {"operation": "create_order", "method": "POST", "url": "http://x/CustomerOrders"}
PAYLOAD = {
    "shopRef": "S-9",
    "currency": "SEK",
    "placedAt": "2024-10-15T15:00:00+02:00",
    "lines": [
        {"productNumber": "A", "quantity": "2", "unitPrice": "10.678"},
        {"productNumber": "B", "quantity": "1", "warehouse": "GreenWarehouse"},
        {"productNumber": "C", "quantity": "3", "unitPrice": "0.10"},
    ],
}


def test_backoff_is_capped_and_honours_retry_after() -> None:
    assert [backoff_seconds(n) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert backoff_seconds(40) == 300.0  # capped, never an overflow
    assert backoff_seconds(1, retry_after=30) == 30.0


def test_payload_to_order_keeps_shop_prices_and_drops_cancelled_lines() -> None:
    lines = active_line_numbers(PAYLOAD, {"lines": [2]})
    assert lines == [1, 3]
    order = order_from_payload(
        PAYLOAD, customer_number="WEB", line_numbers=lines, placed_fallback=datetime.now(UTC)
    )
    assert [line.product_number for line in order.lines] == ["A", "C"]
    assert order.lines[0].unit_price == Decimal("10.678")
    body = order_body(order, customer_number="WEB", default_warehouse="MainWarehouse")
    assert body["orderHeader"]["orderNumberExternal"] == "S-9"
    assert [r["salesData"].get("unitPrice") for r in body["orderRows"]] == [10.678, 0.1]
    assert order.placed_at.utcoffset() is not None


def test_whole_cancel_leaves_no_line() -> None:
    assert active_line_numbers(PAYLOAD, None) == [1, 2, 3]
    assert active_line_numbers(PAYLOAD, {"lines": [1, 2, 3]}) == []


def test_canonical_ignores_key_order_only() -> None:
    assert canonical({"a": 1, "b": [1, 2]}) == canonical({"b": [1, 2], "a": 1})
    assert canonical({"a": 1}) != canonical({"a": "1"})


@pytest.mark.parametrize(
    ("error", "ambiguous"),
    [
        (OutcomeUnknown("lost", **CALL), True),  # sent, answer lost: Extend may have the order
        (TechnicalFailure("boom", status=500, **CALL), True),  # a 5xx may come after the insert
        (TechnicalFailure("refused", **CALL), False),  # not sent (connect error)
        (
            Throttled("slow down", status=429, retry_after=3.0, **CALL),
            False,
        ),  # refused before processing
        (AccessDenied("who", status=401, **CALL), False),
    ],
)
def test_which_failures_make_the_next_attempt_look_up_first(
    error: Exception, ambiguous: bool
) -> None:
    outcome = _outcome_of(error, looked_up=False)  # type: ignore[arg-type]
    assert outcome["outcome"] == "retry"
    assert outcome["ambiguous"] is ambiguous
    assert _outcome_of(error, looked_up=True)["ambiguous"] is True  # type: ignore[arg-type]


def test_throttled_waits_as_told() -> None:
    outcome = _outcome_of(Throttled("slow", status=429, retry_after=7.0, **CALL), looked_up=False)
    assert Failure.from_json(outcome).retry_after == 7.0
    assert backoff_seconds(1, Failure.from_json(outcome).retry_after) == 7.0


def test_a_conflict_answering_the_look_up_keeps_the_order_queued() -> None:
    # `retry.decide` parks a BusinessConflict; a submit only parks one answering its POST (after
    # a look-up found nothing). Anywhere else the order stays queued and is looked up again.
    failure = Failure.from_json(
        _outcome_of(BusinessConflict("busy", status=409, **CALL), looked_up=True)
    )
    assert failure.verdict is Verdict.RETRY
    assert failure.ambiguous is True


def test_a_lost_answer_is_retried_almost_at_once_then_by_backoff() -> None:
    from extend_connector.flows import retry

    failure = Failure.from_json(_outcome_of(OutcomeUnknown("lost", **CALL), looked_up=False))
    policy = retry.policy(retry.ORDERS)
    assert policy.next(failure, attempt=1) == retry.RetryAfter(seconds=0.2)
    assert policy.next(failure, attempt=2) == retry.RetryAfter(seconds=2.0)
