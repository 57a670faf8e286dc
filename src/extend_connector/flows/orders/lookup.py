"""Look-ups before a re-send, gathered: many orders asked about in one order-list call.

After an attempt whose answer was lost (a 5xx, a timeout, a dropped connection) the order may be
in Extend, so the next attempt asks first. Asked one by one (`find_order`, a list call filtered by
the shop reference) every such order costs a call of Extend's `heavy` group, 60 a minute at the
house contract's limits: under a storm of 5xx answers the look-ups, not the orders, set the pace
(docs/benchmarks.md, "Orders under 20% faults").

Gathered: the look-ups waiting in this process while one is on the wire go out together as one
`GET CustomerOrders?changedSince=` from the earliest of their windows, followed, when an answer
is a full page, from the last change date it held (up to `WINDOW_MAX_PAGES` answers, never more
than the orders asked about; `ExtendClient.orders_window` says why no order slips). An order
created by an attempt carries a change date at or after Extend's clock when that attempt was
sent, and the first attempt of a job records that bound (`ExtendClient.created_no_earlier_than`,
read before its POST). So an order in the answers is found; an order absent from answers that
hold every order changed since then (`OrdersWindow.complete`) was not created; an order absent
from a window left incomplete, or one whose bound is unknown (a job picking up earlier jobs'
attempts, an attempt cut off mid-call), is asked about on its own, as before.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass, field
from datetime import datetime

from extend_connector import metrics
from extend_connector.domain import OrderChange
from extend_connector.extend import ExtendClient
from extend_connector.flows.orders.base import log

# The most answers one gathered window reads (`ExtendClient.orders_window`): in a busy hour the
# orders changed since the earliest look-up's bound outgrow one page, and every order of the
# gathering was then asked alone, a `heavy` call each, queued on that group's budget (measured:
# 33 orders a minute late, benchmarks/orders.py under 20% faults, docs/benchmarks.md).
WINDOW_MAX_PAGES = 10


@dataclass(slots=True)
class _Ask:
    shop_ref: str
    since: datetime
    answer: asyncio.Future[OrderChange | None] = field(repr=False)


class Lookups:
    """The gathered look-ups of one Extend client (one event loop): `lookups(client)`."""

    def __init__(self, extend: ExtendClient) -> None:
        self._extend = extend
        self._waiting: list[_Ask] = []
        self._runner: asyncio.Task[None] | None = None

    async def find(self, shop_ref: str, since: datetime | None) -> OrderChange | None:
        """The order with this shop reference in Extend, or None when it is not there.

        `since`: a change date no order created by this order's attempts can be older than, or
        None (unknown: asked on its own)."""
        if since is None:
            metrics.ORDER_LOOKUPS.labels("one").inc()
            return await self._extend.find_order(shop_ref)
        answer: asyncio.Future[OrderChange | None] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Ask(shop_ref, since, answer))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.get_running_loop().create_task(self._run())
        return await answer

    async def _run(self) -> None:
        # Whatever arrived while a call was on the wire goes in the next one.
        while self._waiting:
            batch, self._waiting = self._waiting, []
            asks = [ask for ask in batch if not ask.answer.done()]  # a cancelled job's is done
            try:
                await self._answer(asks)
            except asyncio.CancelledError:
                for ask in asks + self._waiting:
                    ask.answer.cancel()
                raise
            except Exception as exc:  # the call failed: each job handles it as its look-up's
                for ask in asks:
                    if not ask.answer.done():
                        ask.answer.set_exception(exc)

    async def _answer(self, asks: list[_Ask]) -> None:
        if not asks:
            return
        if len(asks) == 1:  # one order: the filtered call is as cheap and cannot overflow
            metrics.ORDER_LOOKUPS.labels("one").inc()
            _settle(asks[0], await self._extend.find_order(asks[0].shop_ref))
            return
        since = min(ask.since for ask in asks)
        # Each further answer of the window costs what one order asked alone costs (a `heavy`
        # call): worth it while fewer than the orders it may answer.
        window = await self._extend.orders_window(since, max_pages=min(WINDOW_MAX_PAGES, len(asks)))
        metrics.ORDER_LOOKUPS.labels("window").inc(len(asks))
        found: dict[str, OrderChange] = {}
        for order in window.orders:
            if order.order_number_external is not None:
                found.setdefault(order.order_number_external, order)
        alone = []
        found_here = 0
        for ask in asks:
            if ask.shop_ref in found:
                found_here += 1
                _settle(ask, found[ask.shop_ref])
            elif window.complete:
                _settle(ask, None)
            else:
                alone.append(ask)
        log.info(
            "orders_looked_up_together",
            asked=len(asks),
            found=found_here,
            since=since.isoformat(),
            complete=window.complete,
            asked_alone=len(alone),
        )
        if alone:
            metrics.ORDER_LOOKUPS.labels("one").inc(len(alone))
            answers = await asyncio.gather(
                *(self._extend.find_order(ask.shop_ref) for ask in alone), return_exceptions=True
            )
            for ask, answer in zip(alone, answers, strict=True):
                if isinstance(answer, asyncio.CancelledError):
                    ask.answer.cancel()
                elif isinstance(answer, BaseException):
                    if not ask.answer.done():
                        ask.answer.set_exception(answer)
                else:
                    _settle(ask, answer)


def _settle(ask: _Ask, order: OrderChange | None) -> None:
    if not ask.answer.done():
        ask.answer.set_result(order)


_BY_CLIENT: weakref.WeakKeyDictionary[ExtendClient, Lookups] = weakref.WeakKeyDictionary()


def lookups(extend: ExtendClient) -> Lookups:
    """The gathered look-ups of this client (created on first use, gone with the client)."""
    found = _BY_CLIENT.get(extend)
    if found is None:
        found = _BY_CLIENT[extend] = Lookups(extend)
    return found
