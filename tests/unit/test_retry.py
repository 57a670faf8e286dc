"""flows.retry: the one decision from an error, the policies' math, and a loop on a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from extend_connector.extend import (
    AccessDenied,
    BusinessConflict,
    ExtendError,
    NotFound,
    OutcomeUnknown,
    TechnicalFailure,
    Throttled,
    UnexpectedResponse,
    ValidationFailed,
)
from extend_connector.flows import passes, retry
from extend_connector.flows.retry import Backoff, Failure, GiveUp, Park, RetryAfter, Verdict
from extend_connector.webshop import DeliveryRefused, ShopUnavailable, WebshopError

CALL = {"operation": "create_order", "method": "POST", "url": "http://x/CustomerOrders"}


class FakeClock:
    """Durable sleeps that return at once and only move this clock."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> Iterator[FakeClock]:
    fake = FakeClock()
    with retry.override(sleep=fake.sleep):
        yield fake


# --- the decision table -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "verdict", "reason", "ambiguous", "lost_answer"),
    [
        (
            ValidationFailed("bad", status=422, **CALL),
            Verdict.PARK,
            "extend_rejected",
            False,
            False,
        ),
        (NotFound("gone", status=404, **CALL), Verdict.PARK, "extend_rejected", False, False),
        (
            BusinessConflict("dup", status=409, **CALL),
            Verdict.PARK,
            "extend_conflict",
            False,
            False,
        ),
        (OutcomeUnknown("lost", **CALL), Verdict.RETRY, "OutcomeUnknown", True, True),
        (
            Throttled("slow", status=429, retry_after=3.0, **CALL),
            Verdict.RETRY,
            "Throttled",
            False,
            False,
        ),
        (AccessDenied("who", status=401, **CALL), Verdict.RETRY, "AccessDenied", False, False),
        (
            TechnicalFailure("boom", status=500, **CALL),
            Verdict.RETRY,
            "TechnicalFailure",
            True,
            False,
        ),
        (TechnicalFailure("refused", **CALL), Verdict.RETRY, "TechnicalFailure", False, False),
        (
            UnexpectedResponse("garbled", status=200, **CALL),
            Verdict.RETRY,
            "UnexpectedResponse",
            True,
            False,
        ),
        (ExtendError("odd", **CALL), Verdict.RETRY, "ExtendError", True, False),
        (
            ShopUnavailable("down", status=503, retry_after=9.0),
            Verdict.RETRY,
            "ShopUnavailable",
            False,
            False,
        ),
        (WebshopError("odd"), Verdict.RETRY, "WebshopError", False, False),
        (
            DeliveryRefused("no", status=400, body_excerpt="{}"),
            Verdict.PARK,
            "shop_refused",
            False,
            False,
        ),
    ],
)
def test_every_error_class_has_one_decision(
    error: ExtendError | WebshopError,
    verdict: Verdict,
    reason: str,
    ambiguous: bool,
    lost_answer: bool,
) -> None:
    failure = retry.decide(error)
    assert (failure.verdict, failure.reason, failure.ambiguous, failure.lost_answer) == (
        verdict,
        reason,
        ambiguous,
        lost_answer,
    )
    assert failure.error == str(error)
    assert failure.status == error.status


def test_the_servers_retry_after_is_carried() -> None:
    assert retry.decide(Throttled("slow", status=429, retry_after=3.0, **CALL)).retry_after == 3.0
    assert (
        retry.decide(TechnicalFailure("503", status=503, retry_after=4.0, **CALL)).retry_after
        == 4.0
    )
    assert retry.decide(ShopUnavailable("down", retry_after=9.0)).retry_after == 9.0
    assert retry.decide(TechnicalFailure("boom", status=500, **CALL)).retry_after is None


def test_a_failure_survives_its_json_record() -> None:
    failure = retry.decide(DeliveryRefused("no", status=400, body_excerpt="why"))
    assert Failure.from_json(failure.as_json()) == failure
    failure = retry.decide(Throttled("slow", status=429, retry_after=3.0, **CALL))
    assert Failure.from_json(failure.as_json()) == failure


def test_step_results_recorded_before_the_module_are_read() -> None:
    # Orders' steps wrote `retryAfter` and `immediate`; a workflow in flight replays them.
    old = {
        "outcome": "retry",
        "ambiguous": True,
        "error": "lost",
        "retryAfter": 7.0,
        "immediate": True,
    }
    failure = Failure.from_json(old)
    assert (failure.verdict, failure.retry_after, failure.ambiguous, failure.lost_answer) == (
        Verdict.RETRY,
        7.0,
        True,
        True,
    )
    shop = Failure.from_json({"outcome": "retry", "error": "down", "retry_after": None})
    assert (shop.retry_after, shop.ambiguous, shop.lost_answer) == (None, False, False)


# --- the policy ---------------------------------------------------------------------------------


def test_backoff_doubles_from_base_to_cap() -> None:
    policy = Backoff(base_seconds=1.0, cap_seconds=300.0)
    assert [policy.delay(n) for n in range(1, 11)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]
    assert policy.delay(10_000) == 300.0  # never an overflow
    assert policy.delay(0) == 1.0


def test_factor_and_base_shape_the_curve() -> None:
    assert [
        Backoff(base_seconds=0.5, factor=3.0, cap_seconds=10.0).delay(n) for n in (1, 2, 3, 4)
    ] == [0.5, 1.5, 4.5, 10.0]


def test_retry_after_wins_only_when_longer_and_when_honoured() -> None:
    policy = Backoff(base_seconds=1.0, cap_seconds=300.0)
    assert policy.delay(1, retry_after=30.0) == 30.0
    assert policy.delay(5, retry_after=3.0) == 16.0
    assert policy.delay(1, retry_after=900.0) == 900.0  # the server's figure is not capped
    assert Backoff(honour_retry_after=False).delay(1, retry_after=30.0) == 1.0


def test_jitter_stays_within_its_fraction() -> None:
    low = Backoff(base_seconds=2.0, cap_seconds=10.0, jitter=0.5, random=lambda: 0.0)
    high = Backoff(base_seconds=2.0, cap_seconds=10.0, jitter=0.5, random=lambda: 1.0)
    assert (low.delay(1), high.delay(1), high.delay(9)) == (2.0, 3.0, 15.0)


def test_a_policy_refuses_a_shape_that_cannot_work() -> None:
    for bad in (
        {"base_seconds": 0.0},
        {"base_seconds": 5.0, "cap_seconds": 1.0},
        {"factor": 0.5},
        {"jitter": -1.0},
    ):
        with pytest.raises(ValueError):
            Backoff(**bad)  # type: ignore[arg-type]


def test_next_turns_a_failure_into_an_action() -> None:
    policy = Backoff(
        base_seconds=1.0, cap_seconds=300.0, give_up_seconds=10.0, lost_answer_first_seconds=0.2
    )
    technical = retry.decide(TechnicalFailure("boom", status=500, **CALL))
    assert policy.next(technical, attempt=3, waited=0.0) == RetryAfter(seconds=4.0)
    assert policy.next(technical, attempt=3, waited=6.0) == RetryAfter(seconds=4.0)
    assert policy.next(technical, attempt=3, waited=6.5) == GiveUp(error=technical.error)
    lost = retry.decide(OutcomeUnknown("lost", **CALL))
    assert policy.next(lost, attempt=1) == RetryAfter(seconds=0.2)
    refused = retry.decide(ValidationFailed("bad", status=422, **CALL))
    assert policy.next(refused, attempt=1) == Park(reason="extend_rejected", error=refused.error)
    assert retry.action_for(ValidationFailed("bad", status=422, **CALL), policy, attempt=1) == Park(
        reason="extend_rejected", error=refused.error
    )


def test_the_flows_keep_their_documented_ranges() -> None:
    # docs/orders.md, docs/balances.md, docs/masterdata.md, docs/webhooks.md
    expected = {
        retry.ORDERS: (1.0, 300.0, None),
        retry.ORDERS_CUSTOMER_WAIT: (1.0, 300.0, 24 * 3600.0),
        retry.ORDERS_REFRESH: (1.0, 300.0, 1800.0),
        retry.SHOP_DELIVERY: (1.0, 300.0, 72 * 3600.0),
        retry.CUSTOMERS_CREATE: (1.0, 300.0, 72 * 3600.0),
        retry.BALANCES_FLUSH: (1.0, 2.0, 3600.0),
        retry.PRICES_FLUSH: (1.0, 60.0, 6 * 3600.0),
    }
    for name, (base, cap, give_up) in expected.items():
        policy = retry.policy(name)
        assert (
            policy.base_seconds,
            policy.factor,
            policy.cap_seconds,
            policy.give_up_seconds,
            policy.jitter,
        ) == (base, 2.0, cap, give_up, 0.0), name
    woken = {name for name, p in retry.DEFAULTS.items() if p.wake_check_seconds is not None}
    assert retry.SHOP_DELIVERY not in woken  # it waits for the shop, not for Extend
    assert retry.ORDERS in woken


def test_override_is_scoped_and_refuses_unknown_names() -> None:
    fast = Backoff(base_seconds=0.01, cap_seconds=0.02)
    with retry.override({retry.ORDERS: fast}):
        assert retry.policy(retry.ORDERS) is fast
    assert retry.policy(retry.ORDERS) == retry.DEFAULTS[retry.ORDERS]
    with pytest.raises(KeyError), retry.override({"orders.typo": fast}):
        pass


def test_fast_keeps_a_policys_shape() -> None:
    quick = retry.fast(retry.SHOP_DELIVERY, cap_seconds=0.3)
    assert (quick.base_seconds, quick.cap_seconds) == (0.3, 0.3)
    assert quick.give_up_seconds == pytest.approx(72 * 3600.0 * 0.001)
    assert retry.fast(retry.ORDERS).give_up_seconds is None


# --- a flow's loop on the fake clock -----------------------------------------------------------


def _passes(results: list[dict[str, Any]]) -> Any:
    answers = iter(results)

    async def one_pass() -> dict[str, Any]:
        return next(answers)

    return one_pass


def test_a_flush_waits_out_an_outage_by_its_policy(clock: FakeClock) -> None:
    # Before flows.retry a unit test could only wait these out in real time (1 + 2 + 2 + 2 s).
    one_pass = _passes(
        [{"outcome": "retry", "error": "down"}] * 4
        + [
            {"outcome": "done", "more": True, "pairs": 3},
            {"outcome": "retry", "error": "down"},
            {"outcome": "done", "more": False, "pairs": 2},
        ]
    )
    result = asyncio.run(passes.run_passes(one_pass, add=("pairs",), policy=retry.BALANCES_FLUSH))
    assert result == {"outcome": "done", "passes": 2, "retries": 5, "pairs": 5}
    assert clock.slept == [1.0, 2.0, 2.0, 2.0, 1.0]  # a done pass starts the backoff again


def test_a_flush_gives_up_when_its_budget_is_spent(clock: FakeClock) -> None:
    # An hour of 5 s waits: a test could never have waited for this in real time.
    one_pass = _passes([{"outcome": "retry", "error": "down"}] * 10_000)
    result = asyncio.run(passes.run_passes(one_pass, add=("pairs",), policy=retry.BALANCES_FLUSH))
    assert result["outcome"] == "gave_up"
    assert clock.now <= 3600.0 < clock.now + 5.0
    assert result["retries"] == len(clock.slept)


def test_a_refused_pass_is_not_retried(clock: FakeClock) -> None:
    one_pass = _passes([{"outcome": "failed", "error": "unknown warehouse"}])
    result = asyncio.run(passes.run_passes(one_pass, add=("pairs",), policy=retry.PRICES_FLUSH))
    assert (result["outcome"], result["error"], clock.slept) == ("failed", "unknown warehouse", [])
