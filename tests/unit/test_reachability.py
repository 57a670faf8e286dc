"""Reachability learnt from every Extend call, including calls that hang (issue #12)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx2
import pytest

from extend_connector.extend import ExtendClient, RateBudget, RetryPolicy, TechnicalFailure
from extend_connector.extend.errors import NotFound
from extend_connector.flows.freshness import Reachability, View, combine
from support.mock_extend import mock_client

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def test_a_call_hanging_on_the_wire_turns_reachability_false_until_an_answer() -> None:
    clock = Clock()
    r = Reachability(clock, stalled_after=20)
    r.succeeded()
    clock.advance(1)
    token = r.waiting()
    clock.advance(19)
    assert r.reachable  # not long enough yet
    clock.advance(2)
    state = r.state()
    assert not state.reachable and state.pending_since == T0 + timedelta(seconds=1)
    assert "no answer from Extend for 21 s" in (state.last_error or "")
    r.succeeded()  # another call got an answer: Extend is up, the hanging one is its own problem
    assert r.reachable
    r.done(token)
    assert r.state().pending_since is None


def test_the_latest_outcome_of_any_process_decides() -> None:
    up = View(
        last_success_at=T0 + timedelta(seconds=5),
        last_failure_at=T0,
        last_error="old",
        pending_since=None,
    )
    down = View(
        last_success_at=T0,
        last_failure_at=T0 + timedelta(seconds=6),
        last_error="dropped",
        pending_since=None,
    )
    assert combine([up], now=T0 + timedelta(seconds=7)).reachable
    state = combine([up, down], now=T0 + timedelta(seconds=7))
    assert not state.reachable and state.last_error == "dropped"
    idle = View(last_success_at=None, last_failure_at=None, last_error=None, pending_since=None)
    assert combine([idle], now=T0).reachable  # nothing known: no reason to say down


def test_a_stopped_process_pending_call_is_ignored() -> None:
    now = T0 + timedelta(seconds=100)
    hung = View(last_success_at=None, last_failure_at=None, last_error=None, pending_since=T0)
    assert not combine([hung], now=now).reachable
    assert combine(
        [
            View(
                last_success_at=None,
                last_failure_at=None,
                last_error=None,
                pending_since=T0,
                live=False,
            )
        ],
        now=now,
    ).reachable


def _client(handler: httpx2.MockTransport, observer: Reachability) -> ExtendClient:
    return mock_client(
        handler, budget=RateBudget(), retry=RetryPolicy(max_attempts=1), observer=observer
    )


def test_every_client_call_feeds_reachability() -> None:
    answers: list[httpx2.Response | Exception] = [
        httpx2.RemoteProtocolError("Server disconnected without sending a response."),
        httpx2.Response(404, json={"errorType": "Validation", "code": "NotFound"}),
        httpx2.Response(503, json={"errorType": "Technical", "code": "Maintenance"}),
        httpx2.Response(
            200,
            json={"productNumber": "P1", "productName": "x", "changedDate": "2024-10-15T15:00:00Z"},
        ),
    ]

    def handler(request: httpx2.Request) -> httpx2.Response:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    r = Reachability()
    seen: list[bool] = []

    async def run() -> None:
        async with _client(httpx2.MockTransport(handler), r) as client:
            for expected in (TechnicalFailure, NotFound, TechnicalFailure, None):
                if expected is None:
                    await client.get_product("P1")
                else:
                    with pytest.raises(expected):
                        await client.get_product("P1")
                seen.append(r.reachable)
                assert r.state().pending_since is None  # every call ended

    asyncio.run(run())
    # dropped: down; a 404 is an answer: up; 503: down; 200: up.
    assert seen == [False, True, False, True]


def test_a_hanging_call_is_pending_while_it_hangs() -> None:
    r = Reachability()
    release = asyncio.Event()

    async def hang(request: httpx2.Request) -> httpx2.Response:
        await release.wait()
        return httpx2.Response(
            200,
            json={"productNumber": "P1", "productName": "x", "changedDate": "2024-10-15T15:00:00Z"},
        )

    async def run() -> None:
        async with _client(httpx2.MockTransport(hang), r) as client:
            call = asyncio.create_task(client.get_product("P1"))
            await asyncio.sleep(0.05)
            assert r.state().pending_since is not None
            release.set()
            await call
        assert r.state().pending_since is None and r.reachable

    asyncio.run(run())


def test_reachability_is_kept_per_rate_limit_group() -> None:
    """Extend fails the heavy lists (503) while single records answer: the overview shows the
    heavy group down and the standard group up; the overall verdict is the latest outcome."""

    def handler(request: httpx2.Request) -> httpx2.Response:
        if request.url.path.endswith("/Products"):
            return httpx2.Response(503, json={"errorType": "Technical", "code": "Overloaded"})
        return httpx2.Response(
            200,
            json={"productNumber": "P1", "productName": "x", "changedDate": "2024-10-15T15:00:00Z"},
        )

    clock = Clock()
    r = Reachability(clock)

    async def run() -> None:
        async with _client(httpx2.MockTransport(handler), r) as client:
            with pytest.raises(TechnicalFailure):
                async for _ in client.products_changed_since(T0):
                    pass
            clock.advance(1)
            await client.get_product("P1")

    asyncio.run(run())
    groups = r.group_states()
    assert set(groups) == {"heavy", "standard"}
    assert not groups["heavy"].reachable and "Overloaded" in (groups["heavy"].last_error or "")
    assert groups["heavy"].last_success_at is None
    assert groups["standard"].reachable and groups["standard"].last_success_at == clock.now
    assert r.reachable  # the latest call anywhere was answered
    assert r.view().group_json()["standard"]["last_success_at"] == clock.now.isoformat()


def test_a_call_hanging_in_one_group_stalls_that_group_only() -> None:
    clock = Clock()
    r = Reachability(clock, stalled_after=20)
    r.succeeded("standard")
    r.succeeded("heavy")
    clock.advance(1)
    r.waiting("heavy")
    clock.advance(30)
    groups = r.group_states()
    assert not groups["heavy"].reachable and groups["standard"].reachable
    assert groups["heavy"].pending_since == T0 + timedelta(seconds=1)
