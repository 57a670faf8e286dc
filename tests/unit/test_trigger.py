"""The trigger that starts the balance flush and the record drains (flows/passes.Trigger): a
call that fails (the database is down) is made again until it goes through, since no further
hook may come to ask again; requests during the outage are served by that one call."""

from __future__ import annotations

import threading

from extend_connector.flows.passes import Trigger


def test_a_failed_call_is_made_again_until_it_goes_through() -> None:
    outcomes = [RuntimeError("database down")] * 3 + [None]
    made: list[object] = []
    lock = threading.Lock()

    def action() -> None:
        with lock:
            outcome = outcomes.pop(0) if outcomes else None
            made.append(outcome)
        if outcome is not None:
            raise outcome

    trigger = Trigger(
        action,
        name="test-trigger",
        min_interval=0.0,
        retry_first_seconds=0.01,
        retry_cap_seconds=0.02,
    )
    trigger.request()
    assert trigger.wait_idle(5)
    assert (trigger.failures, trigger.calls) == (3, 1)
    assert made[-1] is None and len(made) == 4


def test_a_request_is_not_served_while_the_calls_fail() -> None:
    gate = threading.Event()

    def action() -> None:
        if not gate.is_set():
            raise RuntimeError("database down")

    trigger = Trigger(
        action,
        name="test-trigger",
        min_interval=0.0,
        retry_first_seconds=0.01,
        retry_cap_seconds=0.01,
    )
    trigger.request()
    assert not trigger.wait_idle(0.3)  # still owed: failing calls do not count as served
    assert trigger.failures >= 3 and trigger.calls == 0
    gate.set()
    assert trigger.wait_idle(5)
    assert trigger.calls == 1
