"""A queue poller's wait that the process cuts short (engine/_bells.py)."""

from __future__ import annotations

import threading
import time

import pytest

from extend_connector.engine import _bells
from extend_connector.engine._bells import Bell, Bells


def _wait_in_thread(bell: Bell, timeout: float) -> tuple[threading.Thread, list[bool]]:
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(bell.wait(timeout)), daemon=True)
    thread.start()
    return thread, result


def test_a_ring_ends_a_wait_and_a_ring_before_the_wait_is_not_lost() -> None:
    bell = Bell()
    thread, result = _wait_in_thread(bell, 60)
    time.sleep(0.05)
    assert thread.is_alive()
    bell.ring()
    thread.join(5)
    assert result == [False]
    bell.ring()  # while the poller polls: the next wait returns at once
    time.sleep(_bells.MIN_GAP_SECONDS)
    thread, result = _wait_in_thread(bell, 60)
    thread.join(5)
    assert result == [False]


def test_rings_coalesce_into_one_poll() -> None:
    bell = Bell()
    for _ in range(5):
        bell.ring()
    assert bell.wait(60) is False
    thread, result = _wait_in_thread(bell, 0.2)
    thread.join(5)
    assert result == [False]  # the timeout, not a left-over ring
    assert bell.rings == 5


def test_polls_driven_by_rings_keep_a_minimum_gap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_bells, "MIN_GAP_SECONDS", 0.3)
    bell = Bell()
    bell.ring()
    bell.wait(60)
    bell.ring()
    thread, result = _wait_in_thread(bell, 60)
    time.sleep(0.1)
    assert thread.is_alive()  # rung, but the last poll was under 0.3 s ago
    thread.join(5)
    assert result == [False]


def test_set_stops_the_poller_like_dbos_stop_event() -> None:
    bell = Bell()
    thread, result = _wait_in_thread(bell, 60)
    bell.set()
    thread.join(5)
    assert result == [True]
    assert bell.is_set()
    assert bell.wait(60) is True


def test_a_wait_ends_at_its_timeout_unrung() -> None:
    assert Bell().wait(0.05) is False


def test_ringing_a_queue_this_process_does_not_serve_does_nothing() -> None:
    bells = Bells()
    bells.ring("not-served")
    served = bells.add("served")
    bells.ring("served")
    assert served.rings == 1
    bells.stop()
    assert served.is_set()
