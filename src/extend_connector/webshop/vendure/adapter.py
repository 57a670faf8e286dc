"""The Vendure adapter: what the connector tells the shop, applied through Vendure's Admin API;
and the shop's paid orders, read back from it.

Events (docs/webshops/vendure.md, "What flows where"):

- `stock.changed` → `updateProductVariants(stockLevels)` per stock location, batched: every stock
  event of one delivery pass becomes one variant lookup and one mutation per 100 variants.
  Vendure's saleable stock is `stockOnHand - stockAllocated` (its own orders not yet shipped, which
  Extend already counts as reserved), so the adapter sets `stockOnHand = Extend's available +
  stockAllocated`: the shop sells exactly what Extend has available.
- `order.updated` → a fulfilment per Extend shipment (`manual-fulfillment`, carrier and tracking
  code), moved to Shipped; Delivered when Extend says so; the order cancelled when Extend
  cancelled it. Idempotent: what the Vendure order already shows is not done again. The orders
  of one delivery pass are looked up together, one query per 100.
- `product.changed` → product and variant created or updated by SKU (name, description,
  enabled); `price.changed` for `scope.default_customer_number` → the variants' list prices;
  for another customer → the plugin's `setExtendCustomerPrices`.
- `customer.changed` → a Vendure customer with `customFields.extendCustomerNumber`.

A SKU Vendure does not sell is skipped (the event counts as delivered: the shop has nothing to
show), not parked: a merchant sells a part of Extend's assortment.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import httpx2

from extend_connector.webshop.events import EventType, ShopEvent
from extend_connector.webshop.port import (
    DeliveryRefused,
    ShopCustomerChange,
    ShopOrderChange,
    WebshopError,
)
from extend_connector.webshop.vendure.admin import VendureAdmin
from extend_connector.webshop.vendure.orders import (
    cancelled_lines,
    customer_registration,
    order_payload,
    placed,
)

log = logging.getLogger(__name__)

CHUNK = 100  # variants (or orders) per lookup, variants per stock mutation
CONCURRENCY = 8  # other events applied at once
PAGE = 100  # orders per page when reading them back
# Orders the connector takes: paid, or further along (a connector that was down finds them there).
PAID_STATES = (
    "PaymentSettled",
    "PartiallyShipped",
    "Shipped",
    "PartiallyDelivered",
    "Delivered",
)
CANCELLED = "Cancelled"

_VARIANTS = """
query($skus: [String!]!, $take: Int!) {
  productVariants(options: {filter: {sku: {in: $skus}}, take: $take}) {
    items { id sku price enabled productId customFields { extendPhaseOut }
            stockLevels { stockLocationId stockOnHand stockAllocated } }
  }
}"""
_UPDATE_VARIANTS = """
mutation($input: [UpdateProductVariantInput!]!) {
  updateProductVariants(input: $input) { id }
}"""
_ORDER_FIELDS = """
  id code state updatedAt orderPlacedAt currencyCode
  customFields { extendOrderNumber extendStatus }
  customer { id emailAddress customFields { extendCustomerNumber } }
  shippingAddress { fullName company streetLine1 streetLine2 city postalCode countryCode
                    phoneNumber }
  billingAddress { fullName company streetLine1 streetLine2 city postalCode countryCode
                   phoneNumber }
  lines { id quantity orderPlacedQuantity unitPrice taxRate productVariant { sku } }
  fulfillments { id state method trackingCode lines { orderLineId quantity } }
"""
_ORDERS = (
    """
query($after: DateTime, $states: [String!]!, $skip: Int!, $take: Int!) {
  orders(options: {filter: {updatedAt: {after: $after}, state: {in: $states}},
                   sort: {updatedAt: ASC}, skip: $skip, take: $take}) {
    totalItems items { """
    + _ORDER_FIELDS
    + """ }
  }
}"""
)
_CUSTOMERS = """
query($after: DateTime, $skip: Int!, $take: Int!) {
  customers(options: {filter: {updatedAt: {after: $after}}, sort: {updatedAt: ASC},
                      skip: $skip, take: $take}) {
    items { id updatedAt firstName lastName emailAddress phoneNumber user { id }
            customFields { extendCustomerNumber }
            addresses { fullName company streetLine1 streetLine2 city postalCode phoneNumber
                        country { code } defaultShippingAddress defaultBillingAddress } }
  }
}"""
_ORDERS_BY_CODE = (
    """
query($codes: [String!]!, $take: Int!) {
  orders(options: {filter: {code: {in: $codes}}, take: $take}) { items { """
    + _ORDER_FIELDS
    + """ } }
}"""
)


def _instant(value: str) -> datetime:
    """A Vendure DateTime (ISO 8601, `Z` for UTC)."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def minor_units(value: Any) -> int:
    """A price (string or number, major units) in Vendure's minor units."""
    return int((Decimal(str(value)) * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _stock_number(value: Any) -> int:
    """Vendure keeps whole units: a fractional balance is rounded down (never oversell)."""
    return max(0, int(Decimal(str(value))))


def slug_of(sku: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", sku.lower()).strip("-") or "product"


class VendureWebshop:
    """The webshop port on a Vendure server (`webshop.adapter = "vendure"`)."""

    # Stock figures, order views, products and customers are applied as whole states (what the
    # shop already shows is not done again), so a backlog about one record needs only its
    # newest event; a `price.changed` is one batch of changes and is applied each time.
    latest_state_types = frozenset(
        {
            EventType.STOCK_CHANGED,
            EventType.ORDER_UPDATED,
            EventType.PRODUCT_CHANGED,
            EventType.CUSTOMER_CHANGED,
        }
    )

    def __init__(
        self,
        *,
        admin_api_url: str,
        username: str,
        password: str,
        channel_token: str | None = None,
        stock_locations: dict[str, str] | None = None,
        sum_location: str | None = None,
        default_customer_number: str = "WEB",
        customers_to_extend: bool = False,
        language_code: str = "en",
        timeout: float = 30.0,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        self.admin = VendureAdmin(
            admin_api_url,
            username,
            password,
            channel_token=channel_token,
            timeout=timeout,
            transport=transport,
        )
        self._warehouse_locations = dict(stock_locations or {})
        self._sum_location = sum_location
        self._default_customer = default_customer_number
        self._customers_to_extend = customers_to_extend
        self._language = language_code
        self._location_ids: dict[str, str] | None = None  # location name -> id
        self._tax_categories: dict[Decimal, str] | None = None

    async def aclose(self) -> None:
        await self.admin.aclose()

    # --- what `check` verifies -----------------------------------------------------------------

    async def check(self) -> list[str]:
        """Problems with the configuration, as one line each naming the setting (empty: fine).
        Logs in and looks up the stock locations it is told to use."""
        try:
            await self.admin.login()
            names = await self._locations()
        except WebshopError as exc:
            return [f"webshop.vendure.admin_api_url / username / password: {exc}"]
        problems = []
        for warehouse, name in self._warehouse_locations.items():
            if name not in names:
                problems.append(
                    f"webshop.vendure.stock_locations: warehouse {warehouse!r} maps to stock "
                    f"location {name!r}, which Vendure does not have (it has: "
                    f"{', '.join(sorted(names)) or 'none'})"
                )
        if self._sum_location and self._sum_location not in names:
            problems.append(
                f"webshop.vendure.sum_location: Vendure has no stock location "
                f"{self._sum_location!r} (it has: {', '.join(sorted(names)) or 'none'})"
            )
        return problems

    async def _locations(self, *, refresh: bool = False) -> dict[str, str]:
        if self._location_ids is None or refresh:
            data = await self.admin(
                "{ stockLocations(options: {take: 1000}) { items { id name } } }"
            )
            self._location_ids = {
                item["name"]: str(item["id"]) for item in data["stockLocations"]["items"]
            }
        return self._location_ids

    # --- delivery ------------------------------------------------------------------------------

    async def deliver(self, event: ShopEvent) -> None:
        error = (await self.deliver_batch([event]))[0]
        if error is not None:
            raise error

    async def deliver_batch(self, events: Sequence[ShopEvent]) -> list[WebshopError | None]:
        """Apply `events` (at most one per key); the error of each, None where it went through."""
        results: list[WebshopError | None] = [None] * len(events)
        stock = [i for i, e in enumerate(events) if e.type is EventType.STOCK_CHANGED]
        if stock:
            errors = await self._stock([events[i] for i in stock])
            for i, error in zip(stock, errors, strict=True):
                results[i] = error
        # Every order of the batch in one lookup per 100, not one each.
        orders: dict[str, dict[str, Any]] = {}
        order_events = [i for i, e in enumerate(events) if e.type is EventType.ORDER_UPDATED]
        if order_events:
            try:
                orders = await self._orders_by_code(
                    [str(events[i].data.get("shopRef")) for i in order_events]
                )
            except WebshopError as exc:
                for i in order_events:
                    results[i] = exc
        limit = asyncio.Semaphore(CONCURRENCY)

        async def one(i: int) -> None:
            async with limit:
                try:
                    await self._apply(events[i], orders)
                except WebshopError as exc:
                    results[i] = exc
                except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
                    # An event this adapter cannot read: parked with the reason, never a
                    # crash of the whole delivery pass.
                    results[i] = _unreadable(events[i], exc)

        await asyncio.gather(
            *(
                one(i)
                for i, e in enumerate(events)
                if e.type is not EventType.STOCK_CHANGED and results[i] is None
            )
        )
        return results

    async def _apply(self, event: ShopEvent, orders: dict[str, dict[str, Any]]) -> None:
        match event.type:
            case EventType.ORDER_UPDATED:
                await self._order(event.data, orders.get(str(event.data["shopRef"])))
            case EventType.PRODUCT_CHANGED:
                await self._product(event.data)
            case EventType.PRICE_CHANGED:
                await self._prices(event.data)
            case EventType.CUSTOMER_CHANGED:
                await self._customer(event.data)
            case _:
                log.info("vendure: no use for %s %s", event.type.value, event.key)

    async def _lookup(
        self, query: str, field: str, key: str, values: Sequence[str]
    ) -> dict[str, dict[str, Any]]:
        """The `field` items whose `key` is one of `values` (by that key), one query per
        `CHUNK` values; the query takes them as `$<key>s`."""
        found: dict[str, dict[str, Any]] = {}
        unique = list(dict.fromkeys(values))
        for start in range(0, len(unique), CHUNK):
            chunk = unique[start : start + CHUNK]
            data = await self.admin(query, {f"{key}s": chunk, "take": len(chunk)})
            for item in data[field]["items"]:
                found[str(item[key])] = item
        return found

    async def _variants(self, skus: Sequence[str]) -> dict[str, dict[str, Any]]:
        return await self._lookup(_VARIANTS, "productVariants", "sku", skus)

    async def _stock(self, events: Sequence[ShopEvent]) -> list[WebshopError | None]:
        try:
            locations = await self._locations()
            wanted = set(self._warehouse_locations.values()) | {self._sum_location or ""}
            if not (wanted - {""}) <= set(locations):
                locations = await self._locations(refresh=True)  # created since we looked
            variants = await self._variants(
                [str(e.data.get("productNumber") or "") for e in events]
            )
        except WebshopError as exc:
            return [exc] * len(events)
        results: list[WebshopError | None] = [None] * len(events)
        updates: list[tuple[int, dict[str, Any]]] = []
        for i, event in enumerate(events):
            variant = variants.get(str(event.data["productNumber"]))
            if variant is None:
                continue  # not sold in this shop
            try:
                levels = self._levels(event.data, locations)
            except DeliveryRefused as exc:
                results[i] = exc
                continue
            except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
                results[i] = _unreadable(event, exc)
                continue
            allocated = {
                str(level["stockLocationId"]): int(level["stockAllocated"] or 0)
                for level in variant.get("stockLevels") or []
            }
            stock_levels = [
                {"stockLocationId": loc, "stockOnHand": on_hand + allocated.get(loc, 0)}
                for loc, on_hand in levels.items()
            ]
            updates.append((i, {"id": variant["id"], "stockLevels": stock_levels}))
        for start in range(0, len(updates), CHUNK):
            chunk = updates[start : start + CHUNK]
            try:
                await self._update_variants([u for _, u in chunk])
            except WebshopError as exc:
                for i, _ in chunk:
                    results[i] = exc
        return results

    async def _update_variants(self, inputs: list[dict[str, Any]]) -> None:
        """`updateProductVariants`, at most CHUNK variants per call."""
        for start in range(0, len(inputs), CHUNK):
            await self.admin(_UPDATE_VARIANTS, {"input": inputs[start : start + CHUNK]})

    def _levels(self, data: dict[str, Any], locations: dict[str, str]) -> dict[str, int]:
        """Stock location id -> Extend's available figure, from a `stock.changed` payload."""
        if "warehouses" in data:
            levels: dict[str, int] = {}
            for entry in data["warehouses"]:
                name = self._warehouse_locations.get(str(entry["warehouse"]), self._sum_location)
                if name is None or name not in locations:
                    raise DeliveryRefused(
                        f"warehouse {entry['warehouse']!r} has no Vendure stock location "
                        "(webshop.vendure.stock_locations)"
                    )
                loc = locations[name]
                levels[loc] = levels.get(loc, 0) + _stock_number(entry["available"])
            return levels
        name = self._sum_location or next(iter(locations), None)
        if name is None or name not in locations:
            raise DeliveryRefused(f"Vendure has no stock location {name!r}")
        return {locations[name]: _stock_number(data["available"])}

    # --- orders --------------------------------------------------------------------------------

    async def _orders_by_code(self, codes: Sequence[str]) -> dict[str, dict[str, Any]]:
        return await self._lookup(_ORDERS_BY_CODE, "orders", "code", codes)

    async def _order(self, view: dict[str, Any], order: dict[str, Any] | None) -> None:
        """Apply Extend's view of an order to the Vendure `order` (looked up by the batch)."""
        code = str(view["shopRef"])
        if order is None:
            raise DeliveryRefused(f"Vendure has no order {code!r}")
        status = view.get("status")
        shown = order.get("customFields") or {}
        number = view.get("orderNumber")
        if (shown.get("extendStatus"), shown.get("extendOrderNumber")) != (status, number):
            # Extend's status on the order (Registered, Reserved, Picked, ...): Vendure has no
            # order state for most of them; the plugin's custom fields show them.
            await self.admin(
                """mutation($input: UpdateOrderInput!) { setOrderCustomFields(input: $input) {
                   ... on Order { id } } }""",
                {
                    "input": {
                        "id": order["id"],
                        "customFields": {"extendStatus": status, "extendOrderNumber": number},
                    }
                },
            )
        if status == "Cancelled":
            if order["state"] != CANCELLED:
                await self._mutate(
                    """mutation($id: ID!) { cancelOrder(input: {orderId: $id, cancelShipping: true,
                       reason: "Cancelled in Extend"}) {
                       ... on Order { id } ... on ErrorResult { errorCode message } } }""",
                    {"id": order["id"]},
                    "cancelOrder",
                )
            return
        lines_by_sku: dict[str, list[dict[str, Any]]] = {}
        for line in order["lines"]:
            lines_by_sku.setdefault(line["productVariant"]["sku"], []).append(line)
        await self._cancel_lines(order, view, lines_by_sku)
        fulfilled: dict[str, int] = {}
        for f in order["fulfillments"] or []:
            if f["state"] == "Cancelled":
                continue
            for fl in f["lines"]:
                fulfilled[str(fl["orderLineId"])] = fulfilled.get(str(fl["orderLineId"]), 0) + int(
                    fl["quantity"]
                )
        known = {
            f["trackingCode"]: f for f in order["fulfillments"] or [] if f["state"] != "Cancelled"
        }
        delivered = status == "Delivered"  # Extend's life cycle ends at Picked today
        for shipment in view.get("shipments") or []:
            tracking = str(shipment.get("trackingNumber") or shipment["shipmentNumber"])
            fulfilment = known.get(tracking)
            if fulfilment is None:
                lines = self._fulfilment_lines(shipment, lines_by_sku, fulfilled)
                if not lines:
                    continue  # nothing of it left to fulfil (or not lines of this order)
                carrier = shipment.get("carrier") or "Extend"
                made = await self._mutate(
                    """mutation($input: FulfillOrderInput!) { addFulfillmentToOrder(input: $input) {
                       ... on Fulfillment { id state trackingCode }
                       ... on ErrorResult { errorCode message } } }""",
                    {
                        "input": {
                            "lines": lines,
                            "handler": {
                                "code": "manual-fulfillment",
                                "arguments": [
                                    {"name": "method", "value": str(carrier)},
                                    {"name": "trackingCode", "value": tracking},
                                ],
                            },
                        }
                    },
                    "addFulfillmentToOrder",
                )
                fulfilment = {"id": made["id"], "state": made["state"]}
            await self._advance(fulfilment, "Delivered" if delivered else "Shipped")

    async def _cancel_lines(
        self,
        order: dict[str, Any],
        view: dict[str, Any],
        lines_by_sku: dict[str, list[dict[str, Any]]],
    ) -> None:
        """Extend's cancelled rows, cancelled on the Vendure order too (what Vendure shows as
        cancelled already is not cancelled again)."""
        wanted: dict[str, int] = {}
        for line in view.get("lines") or []:
            if line.get("cancelled"):
                sku = str(line["productNumber"])
                wanted[sku] = wanted.get(sku, 0) + int(Decimal(str(line["quantity"])))
        cancel = []
        for sku, quantity in wanted.items():
            lines = lines_by_sku.get(sku, [])
            left = quantity - sum(placed(x) - int(x["quantity"]) for x in lines)
            for line in lines:
                take = min(left, int(line["quantity"]))
                if take > 0:
                    cancel.append({"orderLineId": line["id"], "quantity": take})
                    left -= take
        if cancel:
            await self._mutate(
                """mutation($input: CancelOrderInput!) { cancelOrder(input: $input) {
                   ... on Order { id } ... on ErrorResult { errorCode message } } }""",
                {
                    "input": {
                        "orderId": order["id"],
                        "lines": cancel,
                        "reason": "Rows cancelled in Extend",
                        "cancelShipping": False,
                    }
                },
                "cancelOrder",
            )

    def _fulfilment_lines(
        self,
        shipment: dict[str, Any],
        lines_by_sku: dict[str, list[dict[str, Any]]],
        fulfilled: dict[str, int],
    ) -> list[dict[str, Any]]:
        out = []
        for item in shipment.get("lines") or []:
            wanted = int(Decimal(str(item.get("quantity") or 0)))
            for line in lines_by_sku.get(str(item.get("productNumber")), []):
                left = int(line["quantity"]) - fulfilled.get(str(line["id"]), 0)
                take = min(left, wanted)
                if take > 0:
                    out.append({"orderLineId": line["id"], "quantity": take})
                    fulfilled[str(line["id"])] = fulfilled.get(str(line["id"]), 0) + take
                    wanted -= take
        return out

    async def _advance(self, fulfilment: dict[str, Any], target: str) -> None:
        path = ["Pending", "Shipped", "Delivered"]
        state = fulfilment["state"]
        if state not in path:
            return
        for step in path[path.index(state) + 1 : path.index(target) + 1]:
            await self._mutate(
                """mutation($id: ID!, $state: String!) {
                   transitionFulfillmentToState(id: $id, state: $state) {
                   ... on Fulfillment { id state } ... on ErrorResult { errorCode message } } }""",
                {"id": fulfilment["id"], "state": step},
                "transitionFulfillmentToState",
            )

    async def _mutate(self, query: str, variables: dict[str, Any], name: str) -> dict[str, Any]:
        data = await self.admin(query, variables)
        result: dict[str, Any] = data[name]
        if "errorCode" in result:
            raise DeliveryRefused(f"Vendure {name}: {result['errorCode']}: {result['message']}")
        return result

    async def _changed_since(
        self, query: str, field: str, since: datetime | None, **variables: Any
    ) -> AsyncIterator[dict[str, Any]]:
        """Every item of the `field` list changed after `since`, oldest change first, each
        version once; pages of `PAGE` sorted by `updatedAt`.

        Paged by change date, not by offset: an item updated while the list is read (the
        connector applies Extend's answer to an order it has just taken) moves to the end, and
        with skip/take the item behind the page boundary slid onto a page already read, never
        seen. Each page asks for changes at or after the last one read (`after` is strict: one
        millisecond earlier), leaving out what this read yielded already; a tie longer than a
        page is walked by offset."""
        after = since
        skip = 0
        seen: set[tuple[str, str]] = set()
        while True:
            data = await self.admin(
                query,
                {
                    **variables,
                    "after": None if after is None else after.isoformat(),
                    "skip": skip,
                    "take": PAGE,
                },
            )
            items = data[field]["items"]
            for item in items:
                version = (str(item["id"]), str(item["updatedAt"]))
                if version not in seen:
                    seen.add(version)
                    yield item
            if len(items) < PAGE:
                return
            last = _instant(items[-1]["updatedAt"]) - timedelta(milliseconds=1)
            if after is not None and last <= after:
                skip += len(items)  # one instant fills the page: walk the tie by offset
            else:
                after, skip = last, 0

    async def orders_changed_since(self, since: datetime | None) -> AsyncIterator[ShopOrderChange]:
        """Paid and cancelled orders updated after `since`, oldest change first."""
        async for order in self._changed_since(
            _ORDERS, "orders", since, states=[*PAID_STATES, CANCELLED]
        ):
            yield ShopOrderChange(
                shop_ref=str(order["code"]),
                updated_at=_instant(order["updatedAt"]),
                cancelled=order["state"] == CANCELLED,
                payload=order_payload(order, customers_to_extend=self._customers_to_extend),
                cancelled_lines=cancelled_lines(order),
            )

    async def customers_changed_since(
        self, since: datetime | None
    ) -> AsyncIterator[ShopCustomerChange]:
        """Registered customers (with a login; guests are not) changed after `since`, without
        an Extend customer number yet, oldest change first."""
        async for customer in self._changed_since(_CUSTOMERS, "customers", since):
            fields = customer.get("customFields") or {}
            if customer.get("user") is None or fields.get("extendCustomerNumber"):
                continue
            yield ShopCustomerChange(
                shop_ref=f"vendure:{customer['id']}",
                updated_at=_instant(customer["updatedAt"]),
                data=customer_registration(customer),
            )

    # --- products, prices, customers -----------------------------------------------------------

    async def _tax_category(self, vat_percent: Any) -> str | None:
        if self._tax_categories is None:
            data = await self.admin(
                "{ taxRates(options: {take: 1000}) { items { value enabled category { id } } } }"
            )
            self._tax_categories = {}
            for rate in data["taxRates"]["items"]:
                if rate["enabled"]:
                    self._tax_categories.setdefault(
                        Decimal(str(rate["value"])), rate["category"]["id"]
                    )
        if vat_percent is not None and Decimal(str(vat_percent)) in self._tax_categories:
            return self._tax_categories[Decimal(str(vat_percent))]
        return next(iter(self._tax_categories.values()), None)

    async def _product(self, doc: dict[str, Any]) -> None:
        sku = str(doc["product_number"])
        name = str(doc.get("name") or sku)
        phase_out = bool(doc.get("phase_out"))
        translations = [{"languageCode": self._language, "name": name}]
        variant = (await self._variants([sku])).get(sku)
        if variant is None:
            product = await self.admin(
                """mutation($input: CreateProductInput!) { createProduct(input: $input) { id } }""",
                {
                    "input": {
                        "enabled": not phase_out,
                        "translations": [
                            {
                                **translations[0],
                                "slug": slug_of(sku),
                                "description": str(doc.get("notes") or ""),
                            }
                        ],
                    }
                },
            )
            tax = await self._tax_category(doc.get("vat_percent"))
            # A new product arrives with its stock (a stock event before it found no variant).
            levels = self._levels(doc["stock"], await self._locations()) if doc.get("stock") else {}
            # No list price yet (it comes with the default customer's prices): not for sale
            # until it has one.
            await self.admin(
                """mutation($input: [CreateProductVariantInput!]!) {
                   createProductVariants(input: $input) { id } }""",
                {
                    "input": [
                        {
                            "productId": product["createProduct"]["id"],
                            "sku": sku,
                            "price": 0,
                            "enabled": False,
                            **({"taxCategoryId": tax} if tax else {}),
                            "translations": translations,
                            "customFields": {"extendPhaseOut": phase_out},
                            "stockLevels": [
                                {"stockLocationId": loc, "stockOnHand": on_hand}
                                for loc, on_hand in levels.items()
                            ],
                        }
                    ]
                },
            )
            return
        await self.admin(
            """mutation($input: UpdateProductInput!) { updateProduct(input: $input) { id } }""",
            {
                "input": {
                    "id": variant["productId"],
                    "translations": [
                        {**translations[0], "description": str(doc.get("notes") or "")}
                    ],
                }
            },
        )
        await self._update_variants(
            [
                {
                    "id": variant["id"],
                    "translations": translations,
                    "enabled": not phase_out and int(variant["price"]) > 0,
                    "customFields": {"extendPhaseOut": phase_out},
                }
            ]
        )

    async def _prices(self, data: dict[str, Any]) -> None:
        customer = str(data["customer_number"])
        prices = data.get("prices") or []
        deleted = [str(d) for d in data.get("deleted") or []]
        if customer == self._default_customer:
            await self._list_prices(prices)
            return
        entries = [
            {
                "sku": str(p["product_number"]),
                "price": minor_units(p["unit_price"]),
                **({"currencyCode": p["currency"]} if p.get("currency") else {}),
            }
            for p in prices
        ]
        await self.admin(
            """mutation($c: String!, $p: [ExtendCustomerPriceInput!]!, $d: [String!]) {
               setExtendCustomerPrices(customerNumber: $c, prices: $p, deleted: $d) }""",
            {"c": customer, "p": entries, "d": deleted},
        )

    async def _list_prices(self, prices: list[dict[str, Any]]) -> None:
        by_sku = {str(p["product_number"]): p for p in prices}
        variants = await self._variants(list(by_sku))
        updates = []
        for sku, variant in variants.items():
            price = minor_units(by_sku[sku]["unit_price"])
            phase_out = bool((variant.get("customFields") or {}).get("extendPhaseOut"))
            updates.append(
                {"id": variant["id"], "price": price, "enabled": price > 0 and not phase_out}
            )
        await self._update_variants(updates)

    async def _customer(self, doc: dict[str, Any]) -> None:
        number = str(doc["customer_number"])
        email = doc.get("email") or (doc.get("delivery_address") or {}).get("email")
        if not email:
            log.info("vendure: customer %s has no e-mail address; Vendure needs one", number)
            return
        found = await self.admin(
            """query($n: String!, $e: String!) {
               byNumber: customers(options: {filter: {extendCustomerNumber: {eq: $n}}, take: 1}) {
                 items { id } }
               byEmail: customers(options: {filter: {emailAddress: {eq: $e}}, take: 1}) {
                 items { id } } }""",
            {"n": number, "e": email},
        )
        existing = (found["byNumber"]["items"] or found["byEmail"]["items"] or [None])[0]
        first, last = _split_name(str(doc.get("name") or number), doc.get("last_name"))
        fields = {
            "firstName": first,
            "lastName": last,
            "emailAddress": email,
            "phoneNumber": doc.get("phone"),
            "customFields": {"extendCustomerNumber": number},
        }
        if existing is None:
            await self._mutate(
                """mutation($input: CreateCustomerInput!) { createCustomer(input: $input) {
                   ... on Customer { id } ... on ErrorResult { errorCode message } } }""",
                {"input": fields},
                "createCustomer",
            )
        else:
            await self._mutate(
                """mutation($input: UpdateCustomerInput!) { updateCustomer(input: $input) {
                   ... on Customer { id } ... on ErrorResult { errorCode message } } }""",
                {"input": {"id": existing["id"], **fields}},
                "updateCustomer",
            )


def _unreadable(event: ShopEvent, exc: Exception) -> DeliveryRefused:
    return DeliveryRefused(
        f"the Vendure adapter cannot apply {event.type.value} {event.key}: {exc!r}"
    )


def _split_name(name: str, last_name: Any) -> tuple[str, str]:
    if last_name:
        return name, str(last_name)
    first, _, rest = name.partition(" ")
    return first, rest or "-"


def overlap(since: datetime | None, seconds: float = 2.0) -> datetime | None:
    """A cursor read back a little early: an order updated in the same instant is not missed."""
    return None if since is None else since - timedelta(seconds=seconds)
