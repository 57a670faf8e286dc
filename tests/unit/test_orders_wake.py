"""A waiting order goes soon after Extend answers again, not when its backoff ends (issue #12)."""

from __future__ import annotations

import asyncio

import pytest

from extend_connector.flows import orders


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    record: list[float] = []

    async def sleep(seconds: float) -> None:
        record.append(seconds)

    async def offload(fn, *args):  # type: ignore[no-untyped-def]
        return fn(*args)

    monkeypatch.setattr(orders.engine, "sleep_async", sleep)
    monkeypatch.setattr(orders.engine, "offload", offload)
    monkeypatch.setattr(orders, "_wall_clock", lambda: "2026-12-01T12:00:00+00:00")
    return record


def test_a_long_backoff_ends_at_the_first_check_after_extend_answered(
        slept: list[float], monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter([False, False, True])
    monkeypatch.setattr(orders, "_extend_answered_since", lambda since: next(answers))
    asyncio.run(orders._sleep_until_extend_answers(64.0))
    assert slept == [orders.WAKE_CHECK_SECONDS] * 3


def test_without_an_answer_the_whole_backoff_is_slept(slept: list[float], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(orders, "_extend_answered_since", lambda since: False)
    asyncio.run(orders._sleep_until_extend_answers(12.0))
    assert slept == [5.0, 5.0, 2.0]


def test_short_waits_and_waits_extend_asked_for_are_kept(slept: list[float], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(orders, "_extend_answered_since", lambda since: True)
    asyncio.run(orders._sleep_until_extend_answers(2.0))
    asyncio.run(orders._sleep_until_extend_answers(30.0, retry_after=30.0))
    assert slept == [2.0, 30.0]
