"""A waiting order goes soon after Extend answers again, not when its backoff ends (issue #12).

The early wake lives in `flows.retry.pause` since issue #17; these tests run it with the
orders' own policy.
"""

from __future__ import annotations

import asyncio

import pytest

from extend_connector.flows import retry


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    record: list[float] = []

    async def sleep(seconds: float) -> None:
        record.append(seconds)

    async def offload(fn, *args):  # type: ignore[no-untyped-def]
        return fn(*args)

    monkeypatch.setattr(retry.engine, "sleep_async", sleep)
    monkeypatch.setattr(retry.engine, "offload", offload)
    monkeypatch.setattr(retry, "_wall_clock", lambda: "2026-12-01T12:00:00+00:00")
    return record


def _pause(seconds: float, retry_after: float | None = None) -> float:
    return asyncio.run(
        retry.pause(seconds, policy=retry.policy(retry.ORDERS), retry_after=retry_after)
    )


def test_a_long_backoff_ends_at_the_first_check_after_extend_answered(
    slept: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = iter([False, False, True])
    monkeypatch.setattr(retry, "_extend_answered_since", lambda since: next(answers))
    assert _pause(64.0) == 3 * retry.WAKE_CHECK_SECONDS
    assert slept == [retry.WAKE_CHECK_SECONDS] * 3


def test_without_an_answer_the_whole_backoff_is_slept(
    slept: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retry, "_extend_answered_since", lambda since: False)
    assert _pause(12.0) == 12.0
    assert slept == [5.0, 5.0, 2.0]


def test_short_waits_and_waits_extend_asked_for_are_kept(
    slept: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retry, "_extend_answered_since", lambda since: True)
    _pause(2.0)
    _pause(30.0, retry_after=30.0)
    assert slept == [2.0, 30.0]
