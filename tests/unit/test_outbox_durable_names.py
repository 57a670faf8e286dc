"""The outbox's durable identities, pinned, and the drainer's retry budget.

`shop-event-<id>` jobs recorded by a version that delivered one job per event (and replays of
parked events, which still use that workflow) must find their workflow and steps by these
names after an upgrade; the drainer that replaced them has names of its own.
"""

from __future__ import annotations

import pytest

from extend_connector import engine
from extend_connector.engine._declare import declared_queues
from extend_connector.flows import outbox, retry

WORKFLOWS = {"shop.deliver_event", "shop.drain_outbox"}
STEPS = {"outbox._load", "outbox._attempt", "outbox._record", "outbox.drain_pass"}


def test_the_outbox_workflows_and_steps_keep_their_names() -> None:
    declared = {n for n, m in engine.declared_workflows().items() if m == outbox.__name__}
    assert declared == WORKFLOWS
    assert engine.workflow_name(outbox.deliver) == "shop.deliver_event"
    assert engine.workflow_name(outbox.drain) == "shop.drain_outbox"
    assert {n for n, m in engine.declared_steps().items() if m == outbox.__name__} == STEPS


def test_the_delivery_queue_is_unchanged_and_serialises_the_drainer() -> None:
    assert declared_queues()[outbox.QUEUE] == engine.QueueSpec(
        name="shop-delivery", partition_concurrency=1, worker_concurrency=32, poll_seconds=0.2
    )


def _waited_as_the_job_did(policy: retry.Backoff, attempt: int) -> float:
    """What `deliver` had slept before attempt `attempt` (no Retry-After): its own loop."""
    waited = 0.0
    for earlier in range(1, attempt):
        action = policy.next(
            retry.Failure(verdict=retry.Verdict.RETRY, reason="ShopUnavailable", error="down"),
            attempt=earlier,
            waited=waited,
        )
        assert isinstance(action, retry.RetryAfter)
        waited += action.seconds
    return waited


def test_the_drainer_counts_the_same_budget_as_the_job_per_event() -> None:
    for policy in (
        retry.DEFAULTS[retry.SHOP_DELIVERY],
        retry.Backoff(base_seconds=0.05, cap_seconds=0.2, give_up_seconds=1.0),
    ):
        for attempt in (1, 2, 3, 6, 7):
            if policy.give_up_seconds == 1.0 and attempt > 6:
                continue  # that policy gives up after attempt 6
            assert outbox._waited_before(policy, attempt) == pytest.approx(
                _waited_as_the_job_did(policy, attempt)
            )
    # 72 h at a 5 min cap: the budget runs out after the same number of attempts.
    policy = retry.DEFAULTS[retry.SHOP_DELIVERY]
    assert outbox._waited_before(policy, 500) == pytest.approx(_waited_as_the_job_did(policy, 500))
