"""Gathered order look-ups (flows/orders/lookup.py): many orders asked about in one list call,
and what may and may not be concluded from that answer.

First with a recording stand-in for the Extend client (what is asked, what each order hears),
then through the submit flow against the simulator in process: orders whose POST answers were
lost are found, orders whose POSTs failed are sent once, with far fewer list calls than orders.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from extend_connector.domain import OrderChange, OrderStatus
from extend_connector.extend import OrdersWindow, TechnicalFailure
from extend_connector.flows.orders import accept_order, submit
from extend_connector.flows.orders.lookup import WINDOW_MAX_PAGES, Lookups
from support.extend_fake import BASE_URL, ExtendFake, extend_fake, inline_context
from support.extend_fake import run_flow as _run

T0 = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)


def _order(ref: str, number: str) -> OrderChange:
    return OrderChange(
        order_number=number,
        order_number_external=ref,
        status=OrderStatus.REGISTERED,
        changed_at=T0,
    )


class Recorder:
    """Stands in for ExtendClient: answers from `orders`, records every call; a call waits for
    one loop turn, so asks made meanwhile gather."""

    def __init__(self, orders: list[OrderChange], *, complete: bool = True) -> None:
        self.orders = orders
        self.complete = complete
        self.calls: list[tuple[str, Any]] = []
        self.max_pages: list[int] = []
        self.fail: Exception | None = None

    async def orders_window(self, since: datetime, *, max_pages: int = 1) -> OrdersWindow:
        self.calls.append(("window", since))
        self.max_pages.append(max_pages)
        await asyncio.sleep(0)
        if self.fail is not None:
            raise self.fail
        return OrdersWindow(orders=tuple(self.orders), complete=self.complete)

    async def find_order(self, ref: str) -> OrderChange | None:
        self.calls.append(("one", ref))
        await asyncio.sleep(0)
        return next((o for o in self.orders if o.order_number_external == ref), None)


def _ask_all(client: Recorder, asks: list[tuple[str, datetime | None]]) -> list[Any]:
    async def go() -> list[Any]:
        lookups = Lookups(client)  # type: ignore[arg-type]
        return await asyncio.gather(
            *(lookups.find(ref, since) for ref, since in asks), return_exceptions=True
        )

    return asyncio.run(go())


def test_waiting_look_ups_share_one_list_call_from_the_earliest_window() -> None:
    client = Recorder([_order("A", "1"), _order("C", "3")])
    asks = [("A", T0 + timedelta(seconds=3)), ("B", T0), ("C", T0 + timedelta(seconds=1))]
    answers = _ask_all(client, asks)
    assert client.calls == [("window", T0)]
    assert [a and a.order_number for a in answers] == ["1", None, "3"]
    # A window may read as many answers as orders it answers (each costs what one asked alone
    # does), at most WINDOW_MAX_PAGES.
    assert client.max_pages == [3]
    many = Recorder([])
    _ask_all(many, [(f"R{i}", T0) for i in range(WINDOW_MAX_PAGES + 5)])
    assert many.max_pages == [WINDOW_MAX_PAGES]


def test_absence_from_an_incomplete_window_is_asked_order_by_order() -> None:
    # The answer did not hold every order changed since then: "B" may be beyond it.
    client = Recorder([_order("A", "1"), _order("B", "2")], complete=False)
    client_answers_window_without_b = [_order("A", "1")]
    original = client.orders_window

    async def window(since: datetime, *, max_pages: int = 1) -> OrdersWindow:
        result = await original(since, max_pages=max_pages)
        return OrdersWindow(orders=tuple(client_answers_window_without_b), complete=result.complete)

    client.orders_window = window  # type: ignore[method-assign]
    answers = _ask_all(client, [("A", T0), ("B", T0), ("X", T0)])
    assert client.calls == [("window", T0), ("one", "B"), ("one", "X")]
    assert [a and a.order_number for a in answers] == ["1", "2", None]


def test_an_unknown_window_and_a_lone_ask_use_the_filtered_look_up() -> None:
    client = Recorder([_order("A", "1")])
    answers = _ask_all(client, [("A", None)])
    assert client.calls == [("one", "A")]
    assert answers[0].order_number == "1"
    client.calls.clear()
    assert _ask_all(client, [("Z", T0)]) == [None]
    assert client.calls == [("one", "Z")]  # one order: the filtered call cannot overflow


def test_a_failed_list_call_fails_every_look_up_that_waited_on_it() -> None:
    client = Recorder([_order("A", "1")])
    client.fail = TechnicalFailure(
        "down", operation="list_orders", method="GET", url="http://x/api/CustomerOrders"
    )
    answers = _ask_all(client, [("A", T0), ("B", T0)])
    assert [type(a) for a in answers] == [TechnicalFailure, TechnicalFailure]
    assert client.calls == [("window", T0)]


def test_asks_arriving_while_a_call_is_on_the_wire_go_in_the_next_call() -> None:
    client = Recorder([_order("A", "1"), _order("B", "2"), _order("C", "3")])

    async def go() -> list[Any]:
        lookups = Lookups(client)  # type: ignore[arg-type]
        first = asyncio.gather(lookups.find("A", T0), lookups.find("B", T0))
        await asyncio.sleep(0)  # the first window call is on the wire now
        later = asyncio.gather(lookups.find("C", T0 + timedelta(seconds=5)), lookups.find("D", T0))
        return [*(await first), *(await later)]

    answers = asyncio.run(go())
    assert [a and a.order_number for a in answers] == ["1", "2", "3", None]
    assert client.calls == [("window", T0), ("window", T0)]


# --- through the submit flow, against the simulator in process ----------------------------------


@pytest.fixture
def fake() -> Iterator[ExtendFake]:
    with extend_fake() as f:
        yield f


def _payload(ref: str) -> dict[str, Any]:
    return {
        "shopRef": ref,
        "lines": [{"productNumber": "P000001", "quantity": 1, "unitPrice": "10.00"}],
    }


def _list_calls(fake: ExtendFake) -> int:
    return sum(1 for m, p in fake.requests if m == "GET" and p.endswith("/CustomerOrders"))


def _submit_many(fake: ExtendFake, refs: list[str], **faults: Any) -> list[str]:
    """Accept `WARM` and `refs`; send WARM cleanly (the client then knows Extend's clock), then
    `refs` at once with `faults` on until their first POSTs are all out. Each order-list call
    takes 0.5 s, as when Extend's `heavy` budget (one a second) holds it back: look-ups asked
    meanwhile wait for the next call."""

    for ref in ["WARM", *refs]:
        accept_order(_payload(ref))

    async def go() -> list[str]:
        assert await submit("WARM") == "created"
        fake.slow[("GET", "/CustomerOrders")] = 0.5
        fake.set_faults(**faults)
        jobs = [asyncio.ensure_future(submit(ref)) for ref in refs]
        while fake.posts("/CustomerOrders") < 1 + len(refs):  # noqa: ASYNC110 (polls the fake)
            await asyncio.sleep(0.001)
        fake.set_faults(lost_response_rate=0.0, error_rates=())
        return list(await asyncio.gather(*jobs))

    return _run(go())  # type: ignore[no-any-return]


REFS = [f"G-{n}" for n in range(20)]


def test_lost_answers_are_found_by_shared_list_calls_and_never_sent_twice(
    tmp_path: Path, fake: ExtendFake
) -> None:
    with inline_context(tmp_path, fake):
        outcomes = _submit_many(fake, REFS, lost_response_rate=1.0)
        assert outcomes == ["found"] * len(REFS)
        assert all(len(fake.orders_for(ref)) == 1 for ref in REFS)
        assert fake.posts("/CustomerOrders") == 1 + len(REFS)  # each POSTed once, none again
        # One look-up call per order before (20); gathered, a handful.
        assert _list_calls(fake) <= 4, fake.requests


def test_orders_whose_posts_failed_are_sent_once_after_a_shared_look_up(
    tmp_path: Path, fake: ExtendFake
) -> None:
    with inline_context(tmp_path, fake):
        outcomes = _submit_many(fake, REFS, error_rates=(("POST /CustomerOrders", 1.0),))
        assert outcomes == ["created"] * len(REFS)
        assert all(len(fake.orders_for(ref)) == 1 for ref in REFS)
        failed = sum(n for status, n in fake.state.status_counts.items() if status >= 500)
        assert failed >= len(REFS) // 2
        assert fake.posts("/CustomerOrders") == 1 + len(REFS) + failed  # failed, then sent once
        assert _list_calls(fake) <= 4, fake.requests


def test_with_the_window_off_every_order_is_looked_up_on_its_own(
    tmp_path: Path, fake: ExtendFake
) -> None:
    settings = {
        "extend": {
            "base_url": BASE_URL,
            "warehouses": ["MainWarehouse", "GreenWarehouse"],
            "dialect": {"order_lookup_window": False},
        }
    }
    with inline_context(tmp_path, fake, settings=settings):
        outcomes = _submit_many(fake, REFS, lost_response_rate=1.0)
        assert outcomes == ["found"] * len(REFS)
        assert fake.posts("/CustomerOrders") == 1 + len(REFS)
        assert _list_calls(fake) == len(REFS)
