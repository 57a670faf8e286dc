"""engine/_due.py: the wake-up that moves a debounced job onto its queue when it is due."""

from __future__ import annotations

import threading

from extend_connector.engine._due import DueWaker


def test_each_armed_instant_runs_the_move_once_and_close_instants_share_one() -> None:
    moved = threading.Semaphore(0)
    calls: list[str] = []

    def move(ring: set[str]) -> None:
        calls.append("move")
        moved.release()

    waker = DueWaker(move)
    try:
        waker.arm(0.05)
        waker.arm(0.05)  # the same instant (a trigger firing twice): one move
        assert moved.acquire(timeout=10)
        waker.arm(0.0)
        assert moved.acquire(timeout=10)
        assert not moved.acquire(timeout=0.3)
        assert calls == ["move", "move"]
        assert waker.moves == 2
    finally:
        waker.stop()


def test_a_failing_move_is_logged_and_the_waker_goes_on() -> None:
    moved = threading.Semaphore(0)
    calls: list[int] = []

    def move(ring: set[str]) -> None:
        calls.append(1)
        moved.release()
        if len(calls) == 1:
            raise RuntimeError("database gone")

    waker = DueWaker(move)
    try:
        waker.arm(0.0)
        assert moved.acquire(timeout=10)
        waker.arm(0.05)
        assert moved.acquire(timeout=10)
        assert len(calls) == 2
    finally:
        waker.stop()


def test_stop_ends_the_thread_and_later_arms_do_nothing() -> None:
    calls: list[int] = []
    waker = DueWaker(lambda ring: calls.append(1))
    waker.arm(60.0)
    thread = waker._thread
    assert thread is not None and thread.is_alive()
    waker.stop()
    assert not thread.is_alive()
    waker.arm(0.0)
    assert waker._thread is thread  # no new thread
    assert calls == []


def test_an_instant_armed_to_ring_passes_its_queue_even_beside_a_plain_instant() -> None:
    rung: list[set[str]] = []
    moved = threading.Semaphore(0)

    def move(ring: set[str]) -> None:
        rung.append(ring)
        moved.release()

    waker = DueWaker(move)
    try:
        waker.arm(0.05)
        waker.arm(0.05, ring="q")  # not swallowed by the plain wake at the same instant
        assert moved.acquire(timeout=10)
        assert not moved.acquire(timeout=0.3)
        assert rung == [{"q"}]
    finally:
        waker.stop()
