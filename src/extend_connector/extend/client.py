"""The async Extend Commerce client: one method per operation the flows need.

Flows get domain objects and classified errors (`errors.py`), never HTTP. The client owns one
`httpx2.AsyncClient` (transport injectable), applies the dialect, waits for the shared rate
budget before every call, retries what may be retried (`retry.py`), and streams lists page by
page.

    async with ExtendClient.from_settings(settings) as extend:
        state = await extend.create_order(order)
        async for balance in extend.availability_changed_since(cursor):
            ...
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Hashable,
    Iterable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol, TypeVar
from urllib.parse import quote_plus

import httpx2
from pydantic import BaseModel, ValidationError

from extend_connector import metrics
from extend_connector.domain import (
    Balance,
    Customer,
    Order,
    OrderChange,
    OrderLine,
    OrderState,
    Price,
    Product,
)
from extend_connector.redact import redact_url
from extend_connector.settings import Settings

from . import mapping
from .dialect import AuthHeaders, Dialect, Endpoint
from .errors import (
    CallContext,
    ExtendError,
    OutcomeUnknown,
    Throttled,
    UnexpectedResponse,
    classify_exception,
    classify_response,
    request_not_sent,
)
from .paging import (
    ChangeDateWalk,
    Envelope,
    EnvelopeError,
    Page,
    PageNumberWalk,
    is_last,
)
from .ratelimit import RateBudget, Sleep, shared_budget
from .retry import RetryPolicy
from .wire import (
    DriftRegistry,
    WireAvailability,
    WireCustomer,
    WireOrder,
    WireOrderLight,
    WirePrice,
    WireProduct,
    default_drift,
)

M = TypeVar("M", bound=BaseModel)
W = TypeVar("W")
T = TypeVar("T")


# --- stats ---------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class GroupStats:
    calls: int = 0  # requests sent (retries included)
    retries: int = 0
    throttled: int = 0  # 429 answers
    failures: int = 0  # errors raised to the caller
    waits: int = 0  # times the budget made a call wait
    waited_seconds: float = 0.0

    def __sub__(self, other: GroupStats) -> GroupStats:
        return GroupStats(
            calls=self.calls - other.calls,
            retries=self.retries - other.retries,
            throttled=self.throttled - other.throttled,
            failures=self.failures - other.failures,
            waits=self.waits - other.waits,
            waited_seconds=self.waited_seconds - other.waited_seconds,
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class ClientStats:
    """Counters since the client opened; `after - before` gives the cost of one piece of work."""

    groups: Mapping[str, GroupStats] = field(default_factory=dict)
    operations: Mapping[str, int] = field(default_factory=dict)  # requests per operation

    def __sub__(self, other: ClientStats) -> ClientStats:
        zero = GroupStats()
        return ClientStats(
            groups={g: s - other.groups.get(g, zero) for g, s in self.groups.items()},
            operations={o: n - other.operations.get(o, 0) for o, n in self.operations.items()},
        )

    @property
    def calls(self) -> int:
        return sum(s.calls for s in self.groups.values())


class CallObserver(Protocol):
    """Told about every call the client makes, so reachability is learnt from all of them.

    `waiting(group)` when an attempt goes to the wire (after the rate budget let it; returns a
    token), `done(token)` when it ends however it ends: a call that hangs is visible while it
    does. Each attempt then reports `succeeded(group)` (a 2xx) or `failed(error, group)` (the
    classified error; the observer decides which errors still prove Extend answered). `group` is
    the endpoint's rate-limit group (Extend may answer one and not another). `flows.freshness`
    implements it.
    """

    def waiting(self, group: str) -> int: ...

    def done(self, token: int) -> None: ...

    def succeeded(self, group: str) -> None: ...

    def failed(self, error: BaseException, group: str) -> None: ...


PageProgress = Callable[[int, int | None], None]
"""Called after each page of a list: (items yielded so far, total count if Extend said)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class OrdersWindow:
    """The orders changed since a moment, read in one answer (`ExtendClient.orders_window`)."""

    orders: tuple[OrderChange, ...]
    complete: bool  # every order changed since then is here: an absent one was not created


# --- the client ----------------------------------------------------------------------------------


class ExtendClient:
    def __init__(
        self,
        *,
        dialect: Dialect,
        default_warehouse: str,
        default_customer_number: str,
        transport: httpx2.AsyncBaseTransport | None = None,
        timeout: httpx2.Timeout | None = None,
        max_in_flight: int = 4,
        budget: RateBudget | None = None,
        retry: RetryPolicy | None = None,
        drift: DriftRegistry | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        observer: CallObserver | None = None,
    ) -> None:
        self.dialect = dialect
        self.observer = observer
        self.default_warehouse = default_warehouse
        self.default_customer_number = default_customer_number
        self.budget = budget or RateBudget()
        self.retry = retry or RetryPolicy()
        self.drift = drift or default_drift
        self._sleep = sleep
        self._clock = clock
        self._http = httpx2.AsyncClient(
            transport=transport,
            timeout=timeout or httpx2.Timeout(60.0, connect=10.0),
            follow_redirects=False,
        )
        self._in_flight = max_in_flight
        self._semaphore: asyncio.Semaphore | None = None
        self._groups: dict[str, GroupStats] = {}
        self._operations: dict[str, int] = {}
        self._envelope: Envelope = dialect.page_envelope()
        # The latest change date Extend itself stamped on an order this client read (never a
        # fallback of ours): Extend's clock had passed it, so an order created by a call sent
        # after that answer carries at least this date (`created_no_earlier_than`).
        self._extend_time: datetime | None = None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        transport: httpx2.AsyncBaseTransport | None = None,
        auth: AuthHeaders | None = None,
        retry: RetryPolicy | None = None,
        budget: RateBudget | None = None,
        drift: DriftRegistry | None = None,
        sleep: Sleep = asyncio.sleep,
        observer: CallObserver | None = None,
    ) -> ExtendClient:
        extend = settings.extend
        dialect = Dialect.from_settings(extend, auth=auth)
        if budget is None:
            # One budget per Extend credential per process, whoever builds the client.
            budget = shared_budget(budget_key(settings))
            budget.set_periods(extend.dialect.parsed_rate_limits)
        return cls(
            dialect=dialect,
            default_warehouse=extend.warehouses[0],
            default_customer_number=settings.scope.default_customer_number,
            transport=transport,
            timeout=httpx2.Timeout(
                extend.read_timeout_seconds, connect=extend.connect_timeout_seconds
            ),
            max_in_flight=extend.max_in_flight,
            budget=budget,
            retry=retry,
            drift=drift,
            sleep=sleep,
            observer=observer,
        )

    async def __aenter__(self) -> ExtendClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- stats ---------------------------------------------------------------------------------

    def stats(self) -> ClientStats:
        return ClientStats(groups=dict(self._groups), operations=dict(self._operations))

    def _count(self, group: str, **delta: float) -> None:
        current = self._groups.get(group, GroupStats())
        self._groups[group] = replace(
            current, **{k: getattr(current, k) + v for k, v in delta.items()}
        )

    # --- one call --------------------------------------------------------------------------------

    def _url(self, endpoint: Endpoint, path_values: Mapping[str, str]) -> str:
        return self.dialect.base_url + endpoint.render(**path_values)

    async def _call(
        self,
        operation: str,
        *,
        path_values: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        body: Any = None,
    ) -> httpx2.Response:
        """Send one request (with retries); return the 2xx response or raise an ExtendError."""
        endpoint = self.dialect.endpoint(operation)
        url = self._url(endpoint, path_values or {})
        ctx = CallContext(
            operation=operation, method=endpoint.method, url=url, is_write=endpoint.is_write
        )
        content = None if body is None else json.dumps(body, ensure_ascii=False).encode("utf-8")
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self._in_flight)
        group = endpoint.group
        started = self._clock()
        attempt = 0
        while True:
            attempt += 1
            waited, ticket = await self.budget.acquire_ticket(group)
            if waited > 0:
                self._count(group, waits=1, waited_seconds=waited)
                metrics.EXTEND_RATE_LIMIT_WAITS.labels(group).inc()
                metrics.EXTEND_RATE_LIMIT_WAIT_SECONDS.labels(group).inc(waited)
            headers = {"accept": "application/json", **self.dialect.auth()}
            if content is not None:
                headers["content-type"] = "application/json; charset=utf-8"
            self._count(group, calls=1)
            self._operations[operation] = self._operations.get(operation, 0) + 1
            # Watched from here (not while the budget holds the call back: that wait is Extend's
            # own figure): a call that sits on the wire for long is visible while it does.
            token = self.observer.waiting(group) if self.observer is not None else 0
            try:
                async with self._semaphore:
                    sent_at = time.perf_counter()
                    try:
                        response = await self._http.request(
                            endpoint.method, url, params=params, content=content, headers=headers
                        )
                    except (httpx2.TransportError, OSError) as exc:
                        # OSError: the process's own resources (out of file descriptors) failed
                        # inside the HTTP stack; no answer, like a transport error.
                        _observe_call(group, operation, _no_answer(exc), sent_at)
                        error = classify_exception(exc, ctx)
                        sent = not request_not_sent(exc)
                        # No answer: most likely never counted by Extend's limiter (a timeout may
                        # well be, it was being processed), so the budget gets the unit back.
                        uncounted = not sent or not isinstance(exc, httpx2.TimeoutException)
                    else:
                        _observe_call(group, operation, str(response.status_code), sent_at)
                        self.budget.observe(
                            group,
                            response.headers,
                            limit_header=self.dialect.rate_limit_limit_header,
                            remaining_header=self.dialect.rate_limit_remaining_header,
                            reset_header=self.dialect.rate_limit_reset_header,
                            ticket=ticket,
                        )
                        if response.is_success:
                            if self.observer is not None:
                                self.observer.succeeded(group)
                            return response
                        error = classify_response(
                            response,
                            ctx,
                            parse_body=self.dialect.parse_error,
                            request_id_header=self.dialect.request_id_header,
                            reset_header=self.dialect.rate_limit_reset_header,
                        )
                        sent = True
                        uncounted = False
            finally:
                if self.observer is not None:
                    self.observer.done(token)
            if uncounted:
                await self.budget.release(group)
            if self.observer is not None:
                self.observer.failed(error, group)
            if isinstance(error, Throttled):
                self._count(group, throttled=1)
                metrics.EXTEND_THROTTLED.labels(group).inc()
                await self.budget.report_throttled(group, error.retry_after)
            if not self.retry.retryable(error, is_write=endpoint.is_write, sent=sent) or (
                attempt >= self.retry.max_attempts
            ):
                self._count(group, failures=1)
                raise error
            # A throttled call waits in the budget (with everybody else in the group), not here.
            delay = 0.0 if isinstance(error, Throttled) else self.retry.delay(attempt, error)
            expected = (
                error.retry_after if isinstance(error, Throttled) and error.retry_after else delay
            )
            if self._clock() - started + expected > self.retry.max_total_seconds:
                self._count(group, failures=1)
                raise error
            self._count(group, retries=1)
            if delay > 0:
                await self._sleep(delay)

    async def probe_get(
        self,
        operation: str,
        *,
        path_values: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        auth: Mapping[str, str] | None = None,
    ) -> httpx2.Response:
        """One read for `extend-connector probe`: within the rate budget, no retries, any status
        returned as is; `auth` replaces the dialect's credential headers (trying a scheme)."""
        endpoint = self.dialect.endpoint(operation)
        if endpoint.is_write:
            raise ValueError(f"probe_get reads only; {operation} is a write")
        _, ticket = await self.budget.acquire_ticket(endpoint.group)
        self._count(endpoint.group, calls=1)
        headers = {"accept": "application/json", **(auth or self.dialect.auth())}
        response = await self._http.request(
            endpoint.method,
            self._url(endpoint, path_values or {}),
            params=params,
            headers=headers,
        )
        self.budget.observe(
            endpoint.group,
            response.headers,
            limit_header=self.dialect.rate_limit_limit_header,
            remaining_header=self.dialect.rate_limit_remaining_header,
            reset_header=self.dialect.rate_limit_reset_header,
            ticket=ticket,
        )
        return response

    def _json(self, response: httpx2.Response, operation: str) -> Any:
        try:
            # Decimal, not float: prices and quantities keep every digit Extend sent.
            return json.loads(response.content, parse_float=Decimal)
        except (ValueError, UnicodeDecodeError) as exc:
            raise self._unreadable(response, operation, f"body is not JSON: {exc}") from exc

    def _unreadable(self, response: httpx2.Response, operation: str, why: str) -> ExtendError:
        endpoint = self.dialect.endpoint(operation)
        cls: type[ExtendError] = OutcomeUnknown if endpoint.is_write else UnexpectedResponse
        if endpoint.is_write:
            why = f"write answered {response.status_code} but {why}; look it up before re-sending"
        return cls(
            why,
            operation=operation,
            method=endpoint.method,
            url=str(response.request.url),
            status=response.status_code,
            body_excerpt=response.content[:500].decode("utf-8", "replace"),
            request_id=response.headers.get(self.dialect.request_id_header),
        )

    def _parse(self, model: type[M], data: Any, response: httpx2.Response, operation: str) -> M:
        try:
            return model.model_validate(
                data, context={"drift": self.drift, "renames": self.dialect.field_renames}
            )
        except ValidationError as exc:
            raise self._unreadable(
                response, operation, f"{model.__name__}: {exc.errors()[:3]}"
            ) from exc

    def _convert(
        self, build: Callable[[W], T], wire: W, response: httpx2.Response, operation: str
    ) -> T:
        try:
            return build(wire)
        except (ValueError, TypeError) as exc:  # unknown status, naive dates, ...
            raise self._unreadable(response, operation, str(exc)) from exc

    def _now(self) -> datetime:
        return datetime.now(UTC)

    # --- lists -----------------------------------------------------------------------------------

    async def _fetch_page(
        self, operation: str, params: dict[str, str], number: int, holder: list[httpx2.Response]
    ) -> Page:
        query = {
            **params,
            self.dialect.page_param: str(number),
            self.dialect.page_size_param: str(self.dialect.page_size),
        }
        response = await self._call(operation, params=query)
        holder[:] = [response]
        try:
            return self._envelope.parse(
                self._json(response, operation), response.headers, requested_page=number
            )
        except EnvelopeError as exc:
            raise self._unreadable(response, operation, str(exc)) from exc

    async def _items(
        self,
        operation: str,
        model: type[M],
        params: dict[str, str],
        *,
        since: datetime | None = None,
        key: Callable[[M], Any] | None = None,
        changed: Callable[[M], datetime | None] | None = None,
        progress: PageProgress | None = None,
    ) -> AsyncIterator[tuple[M, httpx2.Response]]:
        """Every item of a list, page by page, parsed; change-date lists re-anchor (paging.py)."""
        holder: list[httpx2.Response] = []
        total: list[int | None] = [None]

        async def fetch(query: dict[str, str], number: int) -> Page:
            page = await self._fetch_page(operation, query, number, holder)
            if total[0] is None:
                total[0] = page.total_count
            # Parsed once per page, so the walk and the caller see the same models.
            items = [self._parse(model, raw, holder[0], operation) for raw in page.items]
            return replace(page, items=items)

        pages: AsyncIterator[list[Any]]
        # Every list Extend sorts by change date is walked by change date, full listings too
        # (`since` None): under plain page numbers a record changing mid-listing moves to the end
        # and the one behind the page boundary slides onto a page already read, unseen.
        if key is not None and changed is not None:
            walk = ChangeDateWalk(
                page_size=self.dialect.page_size,
                since_param=self.dialect.changed_since_param,
                format_since=self.dialect.format_datetime,
                key=key,
                changed=lambda item: _aware_or_none(self.dialect, changed(item)),
                ordered=self.dialect.ordered_by_change_date,
            )
            pages = walk.pages(fetch, params, since)
        else:
            pages = PageNumberWalk(page_size=self.dialect.page_size).pages(fetch, params)
        count = 0
        async for items in pages:
            response = holder[0]
            for item in items:
                yield item, response
                count += 1
            if progress is not None:
                progress(count, total[0])

    # --- orders ----------------------------------------------------------------------------------

    async def create_order(self, order: Order) -> OrderState:
        """POST CustomerOrders. Returns Extend's order (number, status, rows with positions).

        Raises ValidationFailed (fix the order), BusinessConflict (e.g. duplicate external number:
        look it up), TechnicalFailure, Throttled, or OutcomeUnknown (look it up before re-sending).
        """
        body = mapping.order_body(
            order,
            customer_number=order.customer_number or self.default_customer_number,
            default_warehouse=self.default_warehouse,
        )
        return await self._order_call("create_order", body=body)

    async def _order_call(
        self, operation: str, *, path_values: Mapping[str, str] | None = None, body: Any = None
    ) -> OrderState:
        response = await self._call(operation, path_values=path_values, body=body)
        wire = self._parse(WireOrder, self._json(response, operation), response, operation)
        if wire.changed_date is not None:
            self._saw_extend_time(self.dialect.aware(wire.changed_date))
        return self._convert(
            lambda w: mapping.order_state(w, self.dialect.aware, fallback_changed=self._now()),
            wire,
            response,
            operation,
        )

    async def get_order(self, order_number: str) -> OrderState:
        """GET CustomerOrders/{orderNumber}: status, rows, shipments, expected delivery date."""
        return await self._order_call("get_order", path_values={"orderNumber": order_number})

    async def find_order(self, order_number_external: str) -> OrderChange | None:
        """The order with this shop reference, or None (the look-up before re-sending a create)."""
        params = {self.dialect.order_number_external_param: order_number_external}
        # Compared here as well: a server that ignores the filter must not make us pick a stranger.
        async for wire, response in self._items("list_orders", WireOrderLight, params):
            if wire.order_number_external == order_number_external:
                return self._order_change(wire, response)
        return None

    def created_no_earlier_than(self) -> datetime | None:
        """The earliest change date an order created by a call sent from now on can carry, by
        Extend's own clock; None when this client has read no order yet, or the dialect's
        `order_lookup_window` is off.

        It is the latest change date Extend stamped on an order this client has read (Extend's
        clock had reached it when that answer was made) less `clock_spread_seconds`, the
        allowance for Extend's servers stamping out of step. An order look-up can then list the
        orders changed since the first attempt's value instead of asking order by order.
        """
        if self._extend_time is None or not self.dialect.order_lookup_window:
            return None
        return self._extend_time - timedelta(seconds=self.dialect.clock_spread_seconds)

    def _saw_extend_time(self, stamp: datetime) -> None:
        if self._extend_time is None or stamp > self._extend_time:
            self._extend_time = stamp

    async def orders_window(self, since: datetime, *, max_pages: int = 1) -> OrdersWindow:
        """`GET CustomerOrders?changedSince=since`, first page of `page_size`; with `max_pages` > 1
        a full page is followed by the next answer from the last change date it held, up to
        `max_pages` answers.

        `complete` only when an answer shows it holds every order changed since what it was asked
        (its totals say one page, or, without totals, it is short): then an order absent from
        every answer was not changed, so not created, since `since`. Going on needs lists sorted
        by change date then number (`ordered_by_change_date`) and `changedSince` inclusive: an
        order not in an answer changed at or after that answer's last change date, then or
        later, so the next answer, asked from there, holds it; one that changes between answers
        only moves later. Page numbers would not do: an order read already that changes moves
        behind the rest, and the one behind the page boundary slides onto the page read, unseen.
        The window stops incomplete, left to per-order look-ups, at `max_pages`, at a full page
        of one change date (a tie: the next answer, from that date, would be the same page), or at
        an answer not sorted as promised. It re-anchors as `paging.ChangeDateWalk` does but stops
        where that walk steps through a tie by page number or falls back to page numbers: a
        listing may repair such steps on its next sweep, a look-up that calls an order absent
        would POST it twice.
        """
        holder: list[httpx2.Response] = []
        orders: dict[tuple[str, datetime], OrderChange] = {}
        anchor = since
        for _ in range(max(1, max_pages)):
            query = {self.dialect.changed_since_param: self.dialect.format_datetime(anchor)}
            page = await self._fetch_page("list_orders", query, 1, holder)
            stamps: list[datetime | None] = []
            for raw in page.items:
                wire = self._parse(WireOrderLight, raw, holder[0], "list_orders")
                change = self._order_change(wire, holder[0])
                orders.setdefault((change.order_number, change.changed_at), change)
                stamps.append(_aware_or_none(self.dialect, wire.changed_date))
            if is_last(page, self.dialect.page_size) and (
                page.total_count is None or len(page.items) >= page.total_count
            ):
                return OrdersWindow(orders=tuple(orders.values()), complete=True)
            last = stamps[-1] if stamps else None
            if (
                not self.dialect.ordered_by_change_date
                or last is None
                or any(a is None or b is None or a > b for a, b in itertools.pairwise(stamps))
                or last <= anchor
                or stamps[0] == last
            ):
                break
            anchor = last
        return OrdersWindow(orders=tuple(orders.values()), complete=False)

    async def orders_changed_since(
        self, since: datetime, *, status: str | None = None, progress: PageProgress | None = None
    ) -> AsyncIterator[OrderChange]:
        """GET CustomerOrders?changedSince=…: light items, every page (inclusive; may repeat)."""
        params = {self.dialect.status_param: status} if status else {}
        async for wire, response in self._items(
            "list_orders",
            WireOrderLight,
            params,
            since=since,
            key=lambda w: w.order_number,
            changed=lambda w: w.changed_date,
            progress=progress,
        ):
            yield self._order_change(wire, response)

    def _order_change(self, wire: WireOrderLight, response: httpx2.Response) -> OrderChange:
        change = self._convert(
            lambda w: mapping.order_change(w, self.dialect.aware), wire, response, "list_orders"
        )
        self._saw_extend_time(change.changed_at)
        return change

    async def update_order_rows(self, order_number: str, lines: Sequence[OrderLine]) -> OrderState:
        """Send changed rows (by `position`); a line with `cancelled=True` goes as rowOperation
        Inactive.

        Only while the order is Registered; later Extend answers 409 (BusinessConflict).
        """
        rows = [
            mapping.row_body(line, default_warehouse=self.default_warehouse, currency=None)
            for line in lines
        ]
        return await self._order_call(
            "update_order", path_values={"orderNumber": order_number}, body={"orderRows": rows}
        )

    async def cancel_order_rows(self, order_number: str, lines: Sequence[OrderLine]) -> OrderState:
        """Cancel rows: each sent with its position, `rowOperation: Inactive` and its warehouse."""
        missing = [line.product_number for line in lines if line.position is None]
        if missing:
            raise ValueError(f"rows to cancel need Extend's position: {missing}")
        return await self.update_order_rows(
            order_number, [replace(line, cancelled=True) for line in lines]
        )

    async def cancel_order(self, order_number: str) -> OrderState:
        """Cancel a whole order (Registered only; 409 BusinessConflict after reservation)."""
        return await self._order_call("cancel_order", path_values={"orderNumber": order_number})

    # --- availability -----------------------------------------------------------------------------

    def _balances(
        self, params: dict[str, str], since: datetime | None, progress: PageProgress | None
    ) -> AsyncIterator[tuple[WireAvailability, httpx2.Response]]:
        return self._items(
            "list_availability",
            WireAvailability,
            params,
            since=since,
            key=lambda w: (w.product_number, w.warehouse),
            changed=lambda w: w.changed_date,
            progress=progress,
        )

    async def _warehouse_params(self, warehouses: Iterable[str] | None) -> list[dict[str, str]]:
        if not warehouses:
            return [{}]
        return [{self.dialect.warehouse_param: w} for w in dict.fromkeys(warehouses)]

    async def availability_changed_since(
        self,
        since: datetime,
        *,
        warehouses: Iterable[str] | None = None,
        progress: PageProgress | None = None,
    ) -> AsyncGenerator[Balance, None]:
        """GET ProductAvailability?changedSince=… (per warehouse when given), every page."""
        for params in await self._warehouse_params(warehouses):
            async for wire, response in self._balances(params, since, progress):
                yield self._convert(
                    lambda w: mapping.balance(w, self.dialect.aware),
                    wire,
                    response,
                    "list_availability",
                )

    async def availability_for_products(
        self, product_numbers: Iterable[str], *, warehouses: Iterable[str] | None = None
    ) -> AsyncIterator[Balance]:
        """GET ProductAvailability?productNumbers=… in chunks that keep every URL short enough."""
        endpoint = self.dialect.endpoint("list_availability")
        for params in await self._warehouse_params(warehouses):
            for chunk in self.chunk_numbers(endpoint, params, product_numbers):
                query = {
                    **params,
                    self.dialect.product_numbers_param: self.dialect.join_numbers(chunk),
                }
                async for wire, response in self._balances(query, None, None):
                    yield self._convert(
                        lambda w: mapping.balance(w, self.dialect.aware),
                        wire,
                        response,
                        "list_availability",
                    )

    def availability_calls(
        self, product_numbers: Iterable[str], *, warehouses: Sequence[str] | None = None
    ) -> int:
        """How many calls `availability_for_products` makes for these numbers (one page each)."""
        chosen = list(dict.fromkeys(warehouses or ()))
        params = {self.dialect.warehouse_param: chosen[0]} if chosen else {}
        endpoint = self.dialect.endpoint("list_availability")
        return len(self.chunk_numbers(endpoint, params, product_numbers)) * max(1, len(chosen))

    async def availability_for_warehouses(
        self, warehouses: Iterable[str]
    ) -> AsyncIterator[Balance]:
        """Every balance of the given warehouses (full refresh)."""
        for params in await self._warehouse_params(list(warehouses) or None):
            async for wire, response in self._balances(params, None, None):
                yield self._convert(
                    lambda w: mapping.balance(w, self.dialect.aware),
                    wire,
                    response,
                    "list_availability",
                )

    def chunk_numbers(
        self, endpoint: Endpoint, params: Mapping[str, str], numbers: Iterable[str]
    ) -> list[list[str]]:
        """Split product numbers so each URL (with paging parameters) stays within
        max_url_length."""
        probe = {
            **params,
            self.dialect.page_param: "99999",
            self.dialect.page_size_param: "99999",
            self.dialect.product_numbers_param: "",
        }
        fixed = len(str(httpx2.URL(self._url(endpoint, {}), params=probe)))
        room = self.dialect.max_url_length - fixed
        chunks: list[list[str]] = []
        current: list[str] = []
        used = 0
        for number in dict.fromkeys(numbers):
            cost = len(quote_plus(number)) + (len(quote_plus(",")) if current else 0)
            if current and used + cost > room:
                chunks.append(current)
                current, used = [], 0
                cost = len(quote_plus(number))
            current.append(number)  # a single number longer than the room still goes, alone
            used += cost
        if current:
            chunks.append(current)
        return chunks

    # --- products ---------------------------------------------------------------------------------

    async def products_changed_since(
        self, since: datetime | None = None, *, progress: PageProgress | None = None
    ) -> AsyncIterator[Product]:
        """GET Products?changedSince=… (all products when `since` is None), every page."""
        async for wire, response in self._items(
            "list_products",
            WireProduct,
            {},
            since=since,
            key=lambda w: w.product_number,
            changed=lambda w: w.changed_date,
            progress=progress,
        ):
            yield self._convert(
                lambda w: mapping.product(w, self.dialect.aware, fallback_changed=self._now()),
                wire,
                response,
                "list_products",
            )

    async def get_product(self, product_number: str) -> Product:
        response = await self._call("get_product", path_values={"productNumber": product_number})
        wire = self._parse(
            WireProduct, self._json(response, "get_product"), response, "get_product"
        )
        return self._convert(
            lambda w: mapping.product(w, self.dialect.aware, fallback_changed=self._now()),
            wire,
            response,
            "get_product",
        )

    # --- customers --------------------------------------------------------------------------------

    async def customers_changed_since(
        self, since: datetime | None = None, *, progress: PageProgress | None = None
    ) -> AsyncIterator[Customer]:
        """GET Customers?changedSince=… (all customers when `since` is None), every page."""
        async for wire, response in self._items(
            "list_customers",
            WireCustomer,
            {},
            since=since,
            key=lambda w: w.customer_number,
            changed=lambda w: w.changed_date,
            progress=progress,
        ):
            yield self._convert(
                lambda w: mapping.customer(w, self.dialect.aware), wire, response, "list_customers"
            )

    async def get_customer(self, customer_number: str) -> Customer:
        response = await self._call("get_customer", path_values={"customerNumber": customer_number})
        return self._customer(response, "get_customer")

    def _customer(self, response: httpx2.Response, operation: str) -> Customer:
        wire = self._parse(WireCustomer, self._json(response, operation), response, operation)
        return self._convert(
            lambda w: mapping.customer(w, self.dialect.aware), wire, response, operation
        )

    async def create_customer(self, customer: Customer) -> Customer:
        """POST Customers (shop is master). A lost answer raises OutcomeUnknown: look it up
        first."""
        response = await self._call("create_customer", body=mapping.customer_body(customer))
        created = self._customer(response, "create_customer")
        return replace(created, shop_ref=customer.shop_ref)

    # --- prices -----------------------------------------------------------------------------------

    async def prices_for_customer(
        self,
        customer_number: str,
        product_numbers: Iterable[str] | None = None,
        *,
        progress: PageProgress | None = None,
    ) -> AsyncIterator[Price]:
        """GET ProductPrices?customerNumber=…[&productNumbers=…] (chunked), every page."""
        endpoint = self.dialect.endpoint("list_prices")
        params = {self.dialect.customer_number_param: customer_number}
        queries: list[dict[str, str]]
        if product_numbers is None:
            queries = [params]
        else:
            queries = [
                {**params, self.dialect.product_numbers_param: self.dialect.join_numbers(chunk)}
                for chunk in self.chunk_numbers(endpoint, params, product_numbers)
            ]
        for query in queries:
            async for wire, response in self._items(
                "list_prices",
                WirePrice,
                query,
                progress=progress,
                key=_price_key,
                changed=lambda w: w.changed_date,
            ):
                yield self._convert(
                    lambda w: mapping.price(w, self.dialect.aware, customer_number=customer_number),
                    wire,
                    response,
                    "list_prices",
                )


def _no_answer(exc: BaseException) -> str:
    return "timeout" if isinstance(exc, httpx2.TimeoutException) else "no_answer"


def _observe_call(group: str, operation: str, status: str, sent_at: float) -> None:
    metrics.EXTEND_CALLS.labels(group, operation, status).inc()
    metrics.EXTEND_CALL_SECONDS.labels(group).observe(time.perf_counter() - sent_at)


def _price_key(wire: WirePrice) -> Hashable:
    # A customer's list may hold a product more than once (a campaign row beside the list price).
    return (wire.product_number, wire.currency, wire.price_list, wire.valid_from)


def budget_key(settings: Settings) -> str:
    """The key of one Extend credential's rate budget: base URL + a fingerprint of the token.

    Shared by `ExtendClient.from_settings` (the process-wide budget) and the fleet limiter (its
    rows), so every process using the same credential draws from the same buckets.
    """
    base_url = str(settings.extend.base_url).rstrip("/")  # as Dialect.base_url
    credential = settings.extend.api_token.get_secret_value()
    shown = redact_url(base_url)
    if shown != base_url:
        # The key is stored in a table and shown by `status`: a password in the URL stays out of
        # it, yet still tells two credentials apart through the fingerprint.
        credential = f"{credential}\0{base_url}"
    fingerprint = hashlib.sha256(credential.encode()).hexdigest()[:16]
    return f"{shown}#{fingerprint}"


def _aware_or_none(dialect: Dialect, value: datetime | None) -> datetime | None:
    return None if value is None else dialect.aware(value)
