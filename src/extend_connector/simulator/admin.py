"""The /_sim driving and inspecting API: never part of Extend's API surface.

Tests, benchmarks and people use it to play the Extend side (reserve, pick, cancel, move
stock, change master data and prices, fire any event), to steer faults, the clock, rate
limits and webhook registrations, and to read the true state, call counters and deliveries.
`GET /_sim` lists every route; docs/simulator.md explains them.
"""

from __future__ import annotations

import dataclasses
import random
import re
from typing import TYPE_CHECKING, Any

from extend_connector.simulator.config import (
    EVENTS,
    RATE_LIMIT_GROUPS,
    FaultConfig,
    RateLimit,
    WebhookRegistration,
)
from extend_connector.simulator.errors import ValidationFailed

if TYPE_CHECKING:
    from extend_connector.simulator.app import Request, Simulator

BULK_CHUNK = 250
"""Moves applied as one change by POST /_sim/stock/bulk (without `separately`)."""

ROUTES: tuple[tuple[str, str, str], ...] = (
    ("GET", "/_sim", "this list"),
    ("GET", "/_sim/health", "liveness"),
    ("GET", "/_sim/config", "the configuration in use"),
    ("GET", "/_sim/state", "record counts and the clock"),
    (
        "GET",
        "/_sim/state/{products|customers|balances|orders|price-lists|discount-lists|campaigns}",
        "the true state of one entity, every record (orders in full detail)",
    ),
    ("GET", "/_sim/state/prices?customerNumber=", "every net price of one customer"),
    (
        "POST",
        "/_sim/orders/{orderNumber}/reserve",
        "Registered -> Reserved (OrderReserved, AvailableBalanceChanged)",
    ),
    (
        "POST",
        "/_sim/orders/{orderNumber}/pick",
        "{rows?:[{position,quantity}], carrier?, trackingNumber?, trackingUrl?}",
    ),
    ("POST", "/_sim/orders/{orderNumber}/cancel", "cancel (OrderCancelled; releases reservations)"),
    (
        "POST",
        "/_sim/orders/{orderNumber}/expected-delivery-date",
        "{expectedDeliveryDate} (OrderDeliveryDataChanged)",
    ),
    (
        "POST",
        "/_sim/stock",
        "{productNumber, warehouse, delta | physical} (BalanceChanged, AvailableBalanceChanged)",
    ),
    (
        "POST",
        "/_sim/stock/bulk",
        "{moves:[...]} or {random:{count, products, warehouses?, seed?, maxDelta?}}, separately?",
    ),
    ("POST", "/_sim/products", "create a product (ProductCreated)"),
    (
        "PATCH",
        "/_sim/products/{productNumber}",
        "change fields, listPrice too (ProductChanged unless only the price)",
    ),
    ("POST", "/_sim/customers", "create a customer (CustomerCreated)"),
    ("PATCH", "/_sim/customers/{customerNumber}", "change fields (CustomerChanged)"),
    ("PUT", "/_sim/price-lists/{name}/{productNumber}", "{unitPrice | null}"),
    ("PUT", "/_sim/discount-lists/{name}", "{productGroup | productNumber, percent | null}"),
    (
        "PUT",
        "/_sim/campaigns/{code}",
        "{prices:{productNumber:price}, validFrom, validTo, name?, customerGroup?}",
    ),
    (
        "POST",
        "/_sim/purchases/{orderNumber}/deliver",
        "{warehouse, rows:[{productNumber, quantity, position?, unit?}], complete}",
    ),
    ("POST", "/_sim/purchases/{orderNumber}/cancel", "{warehouse} (PurchaseCancelled)"),
    ("POST", "/_sim/offers", "{customerNumber?} (OfferCreated)"),
    ("POST", "/_sim/offers/{offerNumber}/change", "(OfferChanged)"),
    ("POST", "/_sim/invoices/{invoiceNumber}/change", "{orderNumber?} (CustomerInvoiceChanged)"),
    (
        "POST",
        "/_sim/events",
        "{action, details:{}, warehouse?}: fire any notification, unknown actions too",
    ),
    ("GET", "/_sim/counters", "API calls per endpoint, per rate-limit group, per status"),
    ("POST", "/_sim/counters/reset", "zero the counters"),
    ("GET", "/_sim/rate-limits", "limits and whether they are enforced"),
    ("PUT", "/_sim/rate-limits", "{enabled?, standard?|heavy?|write?: {limit, periodSeconds}}"),
    ("POST", "/_sim/rate-limits/reset", "refill every bucket"),
    ("GET", "/_sim/webhooks", "registrations"),
    (
        "PUT",
        "/_sim/webhooks/{name}",
        "{callbackUrl, secret?, warehouses?, active?, events?, techContactEmail?}",
    ),
    ("DELETE", "/_sim/webhooks/{name}", "remove a registration"),
    (
        "GET",
        "/_sim/deliveries",
        "?registration= &action= &outcome= &limit= &wait=seconds (wait for idle first)",
    ),
    ("DELETE", "/_sim/deliveries", "forget recorded deliveries"),
    ("GET", "/_sim/faults", "the fault switches now"),
    (
        "PATCH",
        "/_sim/faults",
        "{switch: value, ...} (names as in FaultConfig, snake_case or camelCase)",
    ),
    (
        "POST",
        "/_sim/outage",
        "{seconds?, mode?: '503' | 'drop'}: an outage window (no seconds: until DELETE)",
    ),
    ("DELETE", "/_sim/outage", "end the outage"),
    ("GET", "/_sim/clock", "now, frozen or not"),
    ("POST", "/_sim/clock", "{advanceSeconds? | set? (ISO with offset), frozen?}"),
)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _body(request: Request) -> dict[str, Any]:
    data = request.json()
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValidationFailed("InvalidBody", "expected a JSON object")
    return data


def dispatch_admin(sim: Simulator, request: Request) -> tuple[int, Any]:
    state = sim.state
    method = request.method
    seg = request.segments
    head = seg[0].lower() if seg else ""
    n = len(seg)

    if not seg and method == "GET":
        return 200, [{"method": m, "path": p, "what": w} for m, p, w in ROUTES]
    if head == "health":
        return 200, {"ok": True}
    if head == "config" and method == "GET":
        return 200, _jsonable(dataclasses.asdict(sim.config))

    if head == "state" and method == "GET":
        return 200, _state(sim, request, seg[1].lower() if n > 1 else None)

    if head == "orders" and n == 3 and method == "POST":
        number, action = seg[1], seg[2].lower()
        body = _body(request)
        if action == "reserve":
            return 200, state.reserve_order(number)
        if action == "pick":
            return 200, state.pick_order(
                number,
                body.get("rows"),
                carrier=body.get("carrier"),
                tracking_number=body.get("trackingNumber"),
                tracking_url=body.get("trackingUrl"),
            )
        if action == "cancel":
            return 200, state.cancel_order(number)
        if action == "expected-delivery-date":
            return 200, state.set_expected_delivery_date(number, str(body["expectedDeliveryDate"]))

    if head == "stock" and method == "POST":
        body = _body(request)
        if n == 1:
            balances = state.move_stock([body])
        elif seg[1].lower() == "bulk":
            balances = _bulk_stock(sim, body)
        else:
            raise ValidationFailed("NotFound", "no such /_sim route", status=404)
        return 200, {
            "moved": len(balances),
            "balances": [state.balance_json(b) for b in balances[:1000]],
        }

    if head == "products":
        if method == "POST" and n == 1:
            return 201, state.product_json(state.create_product(_body(request)))
        if method == "PATCH" and n == 2:
            return 200, state.product_json(state.update_product(seg[1], _body(request)))
    if head == "customers":
        if method == "POST" and n == 1:
            return 201, state.customer_json(state.create_customer(_body(request)))
        if method == "PATCH" and n == 2:
            return 200, state.customer_json(state.update_customer(seg[1], _body(request)))
    if head == "price-lists" and method == "PUT" and n == 3:
        body = _body(request)
        state.set_price_list_entry(seg[1], seg[2], body.get("unitPrice"))
        return 200, {
            "priceList": seg[1],
            "productNumber": seg[2],
            "unitPrice": body.get("unitPrice"),
        }
    if head == "discount-lists" and method == "PUT" and n == 2:
        body = _body(request)
        state.set_discount(
            seg[1],
            body.get("percent"),
            product_group=body.get("productGroup"),
            product_number=body.get("productNumber"),
        )
        return 200, {"discountList": seg[1], **body}
    if head == "campaigns" and method == "PUT" and n == 2:
        body = _body(request)
        camp = state.set_campaign(
            code=seg[1],
            prices=dict(body["prices"]),
            valid_from=str(body["validFrom"]),
            valid_to=str(body["validTo"]),
            name=body.get("name"),
            customer_group=body.get("customerGroup"),
        )
        return 200, {"code": camp.code, "products": len(camp.prices)}

    if head == "purchases" and method == "POST" and n == 3:
        body = _body(request)
        if seg[2].lower() == "deliver":
            state.deliver_purchase(
                seg[1],
                str(body["warehouse"]),
                list(body.get("rows") or []),
                complete=bool(body.get("complete", True)),
            )
            return 200, {"orderNumber": seg[1]}
        if seg[2].lower() == "cancel":
            state.fire(
                "PurchaseCancelled",
                {"OrderNumber": seg[1], "Warehouse": body.get("warehouse")},
                body.get("warehouse"),
            )
            return 200, {"orderNumber": seg[1]}
    if head == "offers" and method == "POST":
        if n == 1:
            return 201, {"offerNumber": state.new_offer(_body(request).get("customerNumber"))}
        if n == 3 and seg[2].lower() == "change":
            state.fire("OfferChanged", {"OfferNumber": seg[1]})
            return 200, {"offerNumber": seg[1]}
    if head == "invoices" and method == "POST" and n == 3 and seg[2].lower() == "change":
        state.fire(
            "CustomerInvoiceChanged",
            {"InvoiceNumber": seg[1], "OrderNumber": _body(request).get("orderNumber")},
        )
        return 200, {"invoiceNumber": seg[1]}
    if head == "events" and method == "POST":
        body = _body(request)
        fired = body.get("action")
        if not isinstance(fired, str) or not fired:
            raise ValidationFailed("MissingField", "action is required")
        action = fired
        state.fire(action, dict(body.get("details") or {}), body.get("warehouse"))
        return 200, {"action": action, "known": action in EVENTS}

    if head == "counters":
        if method == "GET":
            return 200, _counters(sim)
        if method == "POST" and n == 2 and seg[1].lower() == "reset":
            with state.lock:
                state.calls.clear()
                state.group_calls.clear()
                state.status_counts.clear()
                state.admin_calls.clear()
            return 200, _counters(sim)

    if head == "rate-limits":
        if method == "GET":
            return 200, _rate_limits(sim)
        if method == "PUT" and n == 1:
            body = _body(request)
            if "enabled" in body:
                sim.limiter.enabled = bool(body["enabled"])
            for group in RATE_LIMIT_GROUPS:
                if group in body:
                    spec = body[group]
                    sim.limiter.set_limit(
                        group,
                        RateLimit(
                            limit=int(spec["limit"]), period_seconds=float(spec["periodSeconds"])
                        ),
                    )
            return 200, _rate_limits(sim)
        if method == "POST" and n == 2 and seg[1].lower() == "reset":
            sim.limiter.reset()
            return 200, _rate_limits(sim)

    if head == "webhooks":
        if method == "GET" and n == 1:
            with state.lock:
                return 200, [_registration_json(r) for r in state.registrations.values()]
        if method == "PUT" and n == 2:
            body = _body(request)
            events = tuple(body.get("events") or EVENTS)
            unknown = [e for e in events if e not in EVENTS]
            if unknown:
                raise ValidationFailed(
                    "UnknownEvent", f"unknown events {unknown}; known: {list(EVENTS)}"
                )
            reg = WebhookRegistration(
                name=seg[1],
                callback_url=str(body["callbackUrl"]),
                secret=str(body.get("secret", "sim-webhook-secret")),
                tech_contact_email=str(body.get("techContactEmail", "tech@example.com")),
                warehouses=tuple(body.get("warehouses") or ()),
                active=bool(body.get("active", True)),
                events=events,
            )
            state.put_registration(reg)
            return 200, _registration_json(reg)
        if method == "DELETE" and n == 2:
            with state.lock:
                state.registrations.pop(seg[1], None)
            return 200, {"deleted": seg[1]}

    if head == "deliveries":
        if method == "GET":
            wait = request.query.get("wait")
            idle = sim.dispatcher.wait_idle(float(wait)) if wait else None
            records = sim.dispatcher.snapshot()
            registration, wanted, outcome = (
                request.query.get(k) for k in ("registration", "action", "outcome")
            )
            out = [
                r.as_json()
                for r in records
                if (registration is None or r.registration == registration)
                and (wanted is None or wanted in r.actions)
                and (outcome is None or r.outcome == outcome)
            ]
            limit = int(request.query.get("limit", "0") or 0)
            if limit:
                out = out[-limit:]
            return 200, {"idle": idle, "outcomes": dict(sim.dispatcher.outcomes), "deliveries": out}
        if method == "DELETE":
            sim.dispatcher.clear()
            return 200, {"cleared": True}

    if head == "faults":
        if method == "GET":
            return 200, _jsonable(dataclasses.asdict(state.faults))
        if method in ("PATCH", "PUT"):
            return 200, _jsonable(
                dataclasses.asdict(state.set_faults(**_fault_changes(_body(request))))
            )
    if head == "outage":
        if method == "POST":
            body = _body(request)
            seconds = body.get("seconds")
            state.start_outage(
                None if seconds is None else float(seconds), str(body.get("mode", "503"))
            )
            return 200, _jsonable(dataclasses.asdict(state.faults))
        if method == "DELETE":
            state.set_faults(outage=False)
            return 200, _jsonable(dataclasses.asdict(state.faults))

    if head == "clock":
        if method == "POST":
            body = _body(request)
            if "frozen" in body:
                (state.clock.freeze if body["frozen"] else state.clock.unfreeze)()
            if "advanceSeconds" in body:
                state.clock.advance(float(body["advanceSeconds"]))
            if "set" in body:
                from extend_connector.simulator.state import parse_instant

                state.clock.set(parse_instant(str(body["set"]), "set"))
        return 200, {
            "now": state.clock.now().isoformat(timespec="milliseconds"),
            "frozen": state.clock.frozen,
            "timezone": str(state.clock.tz),
        }

    raise ValidationFailed(
        "NotFound", f"no /_sim route {method} {request.path}; GET /_sim lists them", status=404
    )


def _bulk_stock(sim: Simulator, body: dict[str, Any]) -> list[Any]:
    """Many stock moves fast. `separately`: one operation (so one webhook POST per registration) per
    move."""
    state = sim.state
    moves = body.get("moves")
    spec = body.get("random")
    if moves is None and isinstance(spec, dict):
        rnd = random.Random(int(spec.get("seed", 1)))
        count = int(spec["count"])
        numbers = list(state.products)[: int(spec.get("products", len(state.products)))]
        warehouses = list(spec.get("warehouses") or [sim.config.warehouses[0]])
        max_delta = int(spec.get("maxDelta", 5))
        if not numbers:
            raise ValidationFailed("NoProducts", "there are no products to move")
        moves = []
        for i in range(count):
            delta = rnd.randint(1, max_delta) * (1 if rnd.random() < 0.5 else -1)
            # Cycle through the products so every one of them moves.
            moves.append(
                {
                    "productNumber": numbers[i % len(numbers)],
                    "warehouse": warehouses[i % len(warehouses)],
                    "delta": delta,
                }
            )
    if not isinstance(moves, list):
        raise ValidationFailed("InvalidBody", "give moves:[...] or random:{count, products}")
    # One change per move, or per BULK_CHUNK moves: the state lock is released in between so the
    # API keeps answering during a large burst (notifications are still sent in full batches).
    step = 1 if body.get("separately") else BULK_CHUNK
    out = []
    for start in range(0, len(moves), step):
        out.extend(state.move_stock(moves[start : start + step]))
    return out


def _state(sim: Simulator, request: Request, entity: str | None) -> Any:
    state = sim.state
    with state.lock:
        if entity is None:
            return {
                "counts": state.snapshot_counts(),
                "now": state.clock.now().isoformat(timespec="milliseconds"),
                "warehouses": list(sim.config.warehouses),
            }
        if entity == "products":
            return [
                state.product_json(p) | {"listPrice": p.list_price} for p in state.products.values()
            ]
        if entity == "customers":
            return [state.customer_json(c) for c in state.customers.values()]
        if entity == "balances":
            return [state.balance_json(b) for b in state.balances.values()]
        if entity == "orders":
            return [state.order_json(o) for o in state.orders.values()]
        if entity == "price-lists":
            return [
                {"name": pl.name, "currency": pl.currency, "entries": pl.entries}
                for pl in state.price_lists.values()
            ]
        if entity == "discount-lists":
            return [
                {"name": d.name, "byGroup": d.by_group, "byProduct": d.by_product}
                for d in state.discount_lists.values()
            ]
        if entity == "campaigns":
            fmt = state.clock.fmt
            return [
                {
                    "code": c.code,
                    "name": c.name,
                    "prices": c.prices,
                    "validFrom": fmt(c.valid_from_ms),
                    "validTo": fmt(c.valid_to_ms),
                    "customerGroup": c.customer_group,
                }
                for c in state.campaigns.values()
            ]
        if entity == "prices":
            number = request.query.get("customernumber")
            if not number:
                raise ValidationFailed("MissingParameter", "customerNumber is required")
            customer = state.customer(number)
            _ix, quotes, changed = state.price_index(number)
            return [state.price_json(customer, k, q, changed[k]) for k, q in quotes.items()]
    raise ValidationFailed("NotFound", f"no state entity {entity!r}", status=404)


def _counters(sim: Simulator) -> dict[str, Any]:
    state = sim.state
    with state.lock:
        return {
            "endpoints": dict(state.calls),
            "groups": {g: state.group_calls.get(g, 0) for g in RATE_LIMIT_GROUPS},
            "statuses": {str(k): v for k, v in state.status_counts.items()},
            "total": sum(state.calls.values()),
            "admin": dict(state.admin_calls),
            "webhooks": dict(sim.dispatcher.outcomes),
        }


def _rate_limits(sim: Simulator) -> dict[str, Any]:
    return {
        "enabled": sim.limiter.enabled,
        **{
            g: {"limit": r.limit, "periodSeconds": r.period_seconds}
            for g, r in sim.limiter.limits.items()
        },
    }


def _registration_json(r: WebhookRegistration) -> dict[str, Any]:
    return {
        "name": r.name,
        "callbackUrl": r.callback_url,
        "secret": r.secret,
        "techContactEmail": r.tech_contact_email,
        "warehouses": list(r.warehouses),
        "active": r.active,
        "events": list(r.events),
    }


def _fault_changes(body: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(FaultConfig)}
    changes: dict[str, Any] = {}
    for key, value in body.items():
        name = key if key in names else _snake(key)
        if name not in names:
            raise ValidationFailed(
                "UnknownFault", f"unknown fault switch {key!r}; known: {sorted(names)}"
            )
        if name == "error_rates":
            value = tuple((str(k), float(v)) for k, v in dict(value).items())
        elif name == "error_statuses":
            value = tuple(int(v) for v in value)
        changes[name] = value
    return changes


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        if value and all(
            isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str) for v in value
        ):
            return {k: _jsonable(v) for k, v in value}
        return [_jsonable(v) for v in value]
    return value
