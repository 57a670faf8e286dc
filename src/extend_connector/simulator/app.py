"""The simulator's ASGI app: the real-API surface under /api and the driving API under /_sim.

A hand-rolled ASGI router rather than FastAPI/Starlette routing: the simulator must never be
the bottleneck of a benchmark, and the house contract wants case-insensitive resource names
(the KB writes both `CustomerOrders` and `customerorders/{id}`), which a dict lookup on the
lower-cased first segment gives for free.

Every /api request goes: request id -> counters -> outage -> auth (401) -> latency ->
throttling storm / token bucket (429) -> random 5xx -> handler -> (lost response) -> JSON.
Every response carries `x-request-id` and the `x-ratelimit-*` headers of its group.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl

from extend_connector.simulator.config import RATE_LIMIT_GROUPS, SimulatorConfig
from extend_connector.simulator.errors import SimError, TechnicalFailure, ValidationFailed
from extend_connector.simulator.ratelimit import RateLimiter, Verdict
from extend_connector.simulator.shapes import reshape_reply
from extend_connector.simulator.state import SEP, SimState, parse_instant
from extend_connector.simulator.webhooks import EXTRA_FIELD, WebhookDispatcher

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

TRANSPORTS: dict[Any, asyncio.Transport] = {}
"""Open server connections by client address, filled by `server.SimHttpProtocol`: lets a fault
drop the connection without answering (outage `drop`, lost write responses)."""


class SimulatedConnectionDrop(ConnectionResetError):
    """Raised instead of dropping a socket when the app runs without a real server (ASGI
    transport)."""


@dataclass(slots=True)
class Request:
    method: str
    path: str
    segments: list[str]
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    scope: Scope

    def json(self) -> Any:
        if not self.body:
            return None
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise ValidationFailed("InvalidJson", f"the body is not JSON: {exc}") from exc


@dataclass(slots=True)
class Reply:
    status: int
    payload: Any
    headers: list[tuple[bytes, bytes]]


Handler = Callable[["Simulator", Request], Reply]

JSON_HEADERS = [(b"content-type", b"application/json; charset=utf-8")]


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _with_extra_fields(value: Any) -> Any:
    """A copy with an unknown field appended at the END of every object (Extend adds fields at the
    end)."""
    if isinstance(value, dict):
        out = {k: _with_extra_fields(v) for k, v in value.items()}
        out[EXTRA_FIELD] = "added by the simulator's extra-fields fault"
        return out
    if isinstance(value, list):
        return [_with_extra_fields(v) for v in value]
    return value


class Simulator:
    """One simulator: its config, state, rate limiter, webhook dispatcher and ASGI entry point."""

    def __init__(self, config: SimulatorConfig, *, state: SimState | None = None) -> None:
        self.config = config
        self.state = state or SimState(config)
        self.limiter = RateLimiter(
            self.state.clock,
            {g: config.rate_limit(g) for g in RATE_LIMIT_GROUPS},
            enabled=config.rate_limits_enabled,
        )
        self.dispatcher = WebhookDispatcher(self.state)
        scheme = config.auth_scheme.strip()
        self._expected_auth = f"{scheme} {config.token}" if scheme else config.token
        self._auth_header = config.auth_header.lower()
        self._renames = config.renames()

    def close(self) -> None:
        self.dispatcher.close()

    # ---------------------------------------------------------------- ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            return
        path: str = scope["path"]
        body = b""
        if scope["method"] in ("POST", "PUT", "PATCH", "DELETE"):
            more = True
            chunks = []
            while more:
                message = await receive()
                chunks.append(message.get("body", b""))
                more = message.get("more_body", False)
            body = b"".join(chunks)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = {
            k.lower(): v
            for k, v in parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
        }
        lowered = path.lower()
        request_id = headers.get("x-request-id") or uuid.uuid4().hex
        if lowered == "/api" or lowered.startswith("/api/"):
            segments = [s for s in path[4:].split("/") if s]
            request = Request(scope["method"], path, segments, query, headers, body, scope)
            await self._api(request, request_id, send)
        elif lowered == "/_sim" or lowered.startswith("/_sim/"):
            segments = [s for s in path[5:].split("/") if s]
            request = Request(scope["method"], path, segments, query, headers, body, scope)
            await self._admin(request, request_id, send)
        else:
            await self._send(
                send,
                404,
                {
                    "errorType": "Validation",
                    "code": "NotFound",
                    "message": f"no such path {path}; the API is under /api",
                    "details": [],
                },
                [],
                request_id,
            )

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _send(
        self,
        send: Send,
        status: int,
        payload: Any,
        headers: list[tuple[bytes, bytes]],
        request_id: str,
        *,
        extra_fields: bool = False,
    ) -> None:
        if extra_fields:
            payload = _with_extra_fields(payload)
        data = _dumps(payload)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    *JSON_HEADERS,
                    (b"x-request-id", request_id.encode("latin-1")),
                    (b"content-length", str(len(data)).encode()),
                    *headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": data})

    def _drop(self, request: Request) -> None:
        transport = TRANSPORTS.get(request.scope.get("client"))
        if transport is None:
            raise SimulatedConnectionDrop("the simulator dropped the connection (fault injection)")
        transport.abort()

    # ---------------------------------------------------------------- /api

    async def _api(self, request: Request, request_id: str, send: Send) -> None:
        state = self.state
        depth = len(request.segments)
        route = API_ROUTES.get(
            (
                request.method,
                request.segments[0].lower() if request.segments else "",
                depth if depth <= 2 else 0,
            )
        )
        endpoint, group, handler = (
            route if route else (f"{request.method} {request.path[4:]}", "standard", None)
        )
        state.calls[endpoint] += 1
        state.group_calls[group] += 1
        faults = state.faults
        credential = request.headers.get(self._auth_header, "")
        if state.in_outage():
            if faults.outage_mode == "drop":
                state.status_counts[0] += 1
                self._drop(request)
                return
            error: SimError = TechnicalFailure(
                "Maintenance", "Extend Commerce is unavailable (simulated outage)"
            )
            state.status_counts[503] += 1
            peek = self.limiter.check(credential, group, consume=False)
            await self._send(
                send, 503, error.body(), [*peek.headers(), (b"retry-after", b"30")], request_id
            )
            return
        if credential != self._expected_auth:
            verdict = self.limiter.check("", group, consume=False)
            state.status_counts[401] += 1
            await self._send(
                send,
                401,
                {
                    "errorType": "Validation",
                    "code": "Unauthorized",
                    "message": f"missing or wrong credential in {self.config.auth_header}",
                    "details": [],
                },
                verdict.headers(),
                request_id,
            )
            return
        if faults.latency_seconds or faults.latency_jitter_seconds:
            await asyncio.sleep(
                faults.latency_seconds + state.fault_rng.random() * faults.latency_jitter_seconds
            )
        verdict = self.limiter.check(
            credential, group, force_deny=state.chance(faults.throttle_storm)
        )
        if not verdict.allowed:
            state.status_counts[429] += 1
            await self._send(
                send,
                429,
                {
                    "errorType": "Technical",
                    "code": "TooManyRequests",
                    "message": f"rate limit of the {group} group reached",
                    "details": [],
                },
                verdict.headers(),
                request_id,
            )
            return
        reply = self._run(handler, request, verdict, endpoint)
        if (
            group == "write"
            and 200 <= reply.status < 300
            and state.chance(faults.lost_response_rate)
        ):
            state.status_counts[0] += 1
            self._drop(request)
            return
        state.status_counts[reply.status] += 1
        payload = reply.payload
        if self._renames or self.config.null_empty_lists:
            if 200 <= reply.status < 300:
                payload = reshape_reply(
                    endpoint, payload, self._renames, self.config.null_empty_lists
                )
        await self._send(
            send,
            reply.status,
            payload,
            reply.headers,
            request_id,
            extra_fields=faults.extra_fields,
        )

    def _run(
        self, handler: Handler | None, request: Request, verdict: Verdict, endpoint: str
    ) -> Reply:
        state = self.state
        try:
            if handler is None:
                raise ValidationFailed("NotFound", f"no API method {endpoint}", status=404)
            if state.chance(state.faults.rate_for(endpoint)):
                status = state.faults.error_statuses[
                    state.fault_rng.randrange(len(state.faults.error_statuses))
                ]
                raise TechnicalFailure(
                    "SimulatedFailure",
                    f"simulated technical failure (HTTP {status})",
                    status=status,
                )
            reply = handler(self, request)
        except SimError as exc:
            reply = Reply(exc.status, exc.body(), [])
        reply.headers.extend(verdict.headers())
        return reply

    # paging helpers --------------------------------------------------

    def page_args(self, request: Request) -> tuple[int, int]:
        cfg = self.config
        raw_page = request.query.get(cfg.page_param.lower(), "1")
        raw_size = request.query.get(cfg.page_size_param.lower(), str(cfg.default_page_size))
        try:
            page, size = int(raw_page), int(raw_size)
        except ValueError as exc:
            raise ValidationFailed(
                "InvalidPaging",
                f"{cfg.page_param} and {cfg.page_size_param} must be integers",
                details=[{"field": cfg.page_param, "message": "integer >= 1"}],
            ) from exc
        if page < 1 or size < 1:
            raise ValidationFailed(
                "InvalidPaging", f"{cfg.page_param} and {cfg.page_size_param} must be >= 1"
            )
        return page, min(size, cfg.max_page_size)

    def since(self, request: Request) -> int | None:
        name = self.config.changed_since_param
        raw = request.query.get(name.lower())
        if raw is None or raw == "":
            return None
        instant = parse_instant(raw, name)
        if self.config.changed_since_format == "utc" and instant.utcoffset() != timedelta(0):
            raise ValidationFailed(
                "InvalidDateTime",
                f"{name} must be a UTC date-time: {raw!r}",
                details=[{"field": name, "message": "expected e.g. 2024-10-15T13:00:00Z"}],
            )
        return int(instant.timestamp() * 1000)

    def envelope(self, items: list[Any], page: int, size: int, total: int) -> Reply:
        pages = (total + size - 1) // size
        if self.config.envelope == "headers":
            return Reply(
                200,
                items,
                [
                    (b"x-total-count", str(total).encode()),
                    (b"x-total-pages", str(pages).encode()),
                    (b"x-page", str(page).encode()),
                    (b"x-page-size", str(size).encode()),
                ],
            )
        return Reply(
            200,
            {
                "items": items,
                "page": page,
                "pageSize": size,
                "totalCount": total,
                "totalPages": pages,
            },
            [],
        )

    def csv(self, request: Request, name: str) -> list[str] | None:
        raw = request.query.get(name.lower())
        if raw is None or raw.strip() == "":
            return None
        return [part.strip() for part in raw.split(",") if part.strip()]

    # ---------------------------------------------------------------- /_sim

    async def _admin(self, request: Request, request_id: str, send: Send) -> None:
        from extend_connector.simulator.admin import dispatch_admin

        key = "/".join(s.lower() for s in request.segments[:1]) or "/"
        self.state.admin_calls[f"{request.method} {key}"] += 1
        try:
            status, payload = (
                await asyncio.to_thread(dispatch_admin, self, request)
                if _slow_admin(request)
                else dispatch_admin(self, request)
            )
        except SimError as exc:
            status, payload = exc.status, exc.body()
        except (TypeError, ValueError, KeyError) as exc:
            status, payload = (
                400,
                {
                    "errorType": "Validation",
                    "code": "InvalidAdminRequest",
                    "message": str(exc),
                    "details": [],
                },
            )
        await self._send(send, status, payload, [], request_id)


def _slow_admin(request: Request) -> bool:
    # Bulk work and waiting run off the event loop so /api keeps answering meanwhile.
    return (
        bool(request.segments)
        and request.segments[0].lower() in ("stock", "deliveries", "state")
        and (request.method == "POST" or "wait" in request.query or len(request.segments) > 1)
    )


# ------------------------------------------------------------------------ /api handlers


def _orders_list(sim: Simulator, request: Request) -> Reply:
    state = sim.state
    page, size = sim.page_args(request)
    since = sim.since(request)
    statuses = sim.csv(request, sim.config.status_param)
    wanted_status = {s.lower() for s in statuses} if statuses else None
    external = request.query.get(sim.config.order_number_external_param.lower())
    customer = request.query.get(sim.config.customer_number_param.lower())
    with state.lock:
        if external is not None:
            number = state.orders_by_external.get(external)
            found = [state.orders[number]] if number else []
            found = [
                o
                for o in found
                if (since is None or o.changed_ms >= since)
                and (wanted_status is None or o.status.lower() in wanted_status)
                and (customer is None or o.customer_number == customer)
            ]
            items = [state.order_light_json(o) for o in found[(page - 1) * size : page * size]]
            return sim.envelope(items, page, size, len(found))
        keep = None
        if wanted_status is not None or customer is not None:
            orders = state.orders

            def keep(key: str) -> bool:
                o = orders[key]
                return (wanted_status is None or o.status.lower() in wanted_status) and (
                    customer is None or o.customer_number == customer
                )

        total, keys = state.orders_ix.query(since, (page - 1) * size, size, keep)
        items = [state.order_light_json(state.orders[k]) for k in keys]
    return sim.envelope(items, page, size, total)


def _order_get(sim: Simulator, request: Request) -> Reply:
    with sim.state.lock:
        return Reply(200, sim.state.order_json(sim.state.order(request.segments[1])), [])


def _order_post(sim: Simulator, request: Request) -> Reply:
    return Reply(201, sim.state.create_order(request.json()), [])


def _order_put(sim: Simulator, request: Request) -> Reply:
    return Reply(200, sim.state.update_order(request.segments[1], request.json()), [])


def _order_delete(sim: Simulator, request: Request) -> Reply:
    return Reply(200, sim.state.withdraw_order(request.segments[1]), [])


def _availability(sim: Simulator, request: Request) -> Reply:
    state = sim.state
    cfg = sim.config
    page, size = sim.page_args(request)
    since = sim.since(request)
    numbers = sim.csv(request, cfg.product_numbers_param)
    warehouses = sim.csv(request, cfg.warehouse_param)
    if warehouses:
        unknown = [w for w in warehouses if w not in cfg.warehouses]
        if unknown:
            raise ValidationFailed(
                "UnknownWarehouse",
                f"unknown warehouse(s) {unknown}",
                status=422,
                details=[{"field": cfg.warehouse_param, "message": w} for w in unknown],
            )
    wanted = set(warehouses) if warehouses and set(warehouses) != set(cfg.warehouses) else None
    with state.lock:
        if numbers is not None:
            found = [
                b
                for n in dict.fromkeys(numbers)
                for b in state.balances_by_product.get(n, ())
                if (wanted is None or b.warehouse in wanted)
                and (since is None or b.changed_ms >= since)
            ]
            found.sort(key=lambda b: (b.changed_ms, b.product_number, b.warehouse))
            items = [state.balance_json(b) for b in found[(page - 1) * size : page * size]]
            return sim.envelope(items, page, size, len(found))
        keep = None
        if wanted is not None:

            def keep(key: str) -> bool:
                return key.partition(SEP)[2] in wanted

        total, keys = state.balances_ix.query(since, (page - 1) * size, size, keep)
        items = [state.balance_json(state.balances[k]) for k in keys]
    return sim.envelope(items, page, size, total)


def _products_list(sim: Simulator, request: Request) -> Reply:
    state = sim.state
    page, size = sim.page_args(request)
    since = sim.since(request)
    numbers = sim.csv(request, sim.config.product_numbers_param)
    with state.lock:
        if numbers is not None:
            found = [state.products[n] for n in dict.fromkeys(numbers) if n in state.products]
            found = [p for p in found if since is None or p.changed_ms >= since]
            found.sort(key=lambda p: (p.changed_ms, p.product_number))
            return sim.envelope(
                [state.product_json(p) for p in found[(page - 1) * size : page * size]],
                page,
                size,
                len(found),
            )
        total, keys = state.products_ix.query(since, (page - 1) * size, size)
        items = [state.product_json(state.products[k]) for k in keys]
    return sim.envelope(items, page, size, total)


def _product_get(sim: Simulator, request: Request) -> Reply:
    with sim.state.lock:
        return Reply(200, sim.state.product_json(sim.state.product(request.segments[1])), [])


def _customers_list(sim: Simulator, request: Request) -> Reply:
    state = sim.state
    page, size = sim.page_args(request)
    since = sim.since(request)
    with state.lock:
        total, keys = state.customers_ix.query(since, (page - 1) * size, size)
        items = [state.customer_json(state.customers[k]) for k in keys]
    return sim.envelope(items, page, size, total)


def _customer_get(sim: Simulator, request: Request) -> Reply:
    with sim.state.lock:
        return Reply(200, sim.state.customer_json(sim.state.customer(request.segments[1])), [])


def _customer_post(sim: Simulator, request: Request) -> Reply:
    state = sim.state
    customer = state.create_customer(request.json())
    with state.lock:
        return Reply(201, state.customer_json(customer), [])


def _prices(sim: Simulator, request: Request) -> Reply:
    state = sim.state
    number = request.query.get(sim.config.customer_number_param.lower())
    if not number:
        raise ValidationFailed(
            "MissingParameter",
            f"{sim.config.customer_number_param} is required",
            details=[{"field": sim.config.customer_number_param, "message": "required"}],
        )
    page, size = sim.page_args(request)
    since = sim.since(request)
    numbers = sim.csv(request, sim.config.product_numbers_param)
    with state.lock:
        customer = state.customer(number)
        if numbers is not None:
            now = state.clock.now_ms()
            quoted = []
            for n in dict.fromkeys(numbers):
                product = state.products.get(n)
                if product is None:
                    continue
                quote, changed = state.quote(customer, product, now)
                if since is None or changed >= since:
                    quoted.append((changed, n, quote))
            quoted.sort(key=lambda t: (t[0], t[1]))
            items = [
                state.price_json(customer, n, q, c)
                for c, n, q in quoted[(page - 1) * size : page * size]
            ]
            return sim.envelope(items, page, size, len(quoted))
        ix, quotes, changed_at = state.price_index(number)
        total, keys = ix.query(since, (page - 1) * size, size)
        items = [state.price_json(customer, k, quotes[k], changed_at[k]) for k in keys]
    return sim.envelope(items, page, size, total)


API_ROUTES: dict[tuple[str, str, int], tuple[str, str, Handler]] = {
    ("GET", "customerorders", 1): ("GET /CustomerOrders", "heavy", _orders_list),
    ("GET", "customerorders", 2): ("GET /CustomerOrders/{orderNumber}", "standard", _order_get),
    ("POST", "customerorders", 1): ("POST /CustomerOrders", "write", _order_post),
    ("PUT", "customerorders", 2): ("PUT /CustomerOrders/{orderNumber}", "write", _order_put),
    ("DELETE", "customerorders", 2): (
        "DELETE /CustomerOrders/{orderNumber}",
        "write",
        _order_delete,
    ),
    ("GET", "productavailability", 1): ("GET /ProductAvailability", "heavy", _availability),
    ("GET", "products", 1): ("GET /Products", "heavy", _products_list),
    ("GET", "products", 2): ("GET /Products/{productNumber}", "standard", _product_get),
    ("GET", "customers", 1): ("GET /Customers", "heavy", _customers_list),
    ("GET", "customers", 2): ("GET /Customers/{customerNumber}", "standard", _customer_get),
    ("POST", "customers", 1): ("POST /Customers", "write", _customer_post),
    ("GET", "productprices", 1): ("GET /ProductPrices", "heavy", _prices),
}
"""(method, lower-cased resource, 1 = collection / 2 = one record) ->
(endpoint key, rate-limit group, handler)."""

ENDPOINTS: tuple[str, ...] = tuple(v[0] for v in API_ROUTES.values())
