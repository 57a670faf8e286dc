"""The simulator's whole world and every way it changes, each change firing Extend's webhooks.

`SimState` is thread-safe (one re-entrant lock): the API handlers, the `/_sim` handlers and
tests calling it directly from their own thread all go through the same methods. Each
public mutation is one operation: its notifications are handed to the webhook sink together
when it ends, so "notifications raised together" can be batched per registration.
"""

from __future__ import annotations

import random
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, ClassVar

from extend_connector.simulator.clock import SimClock
from extend_connector.simulator.config import FaultConfig, SimulatorConfig, WebhookRegistration
from extend_connector.simulator.errors import BusinessConflict, ValidationFailed
from extend_connector.simulator.generator import generate
from extend_connector.simulator.index import ChangeIndex
from extend_connector.simulator.pricing import CampaignOffer, PriceQuote, best_price
from extend_connector.simulator.records import (
    Balance,
    Campaign,
    Customer,
    DiscountList,
    Order,
    OrderRow,
    PriceList,
    Product,
    Shipment,
)

_LOST_PLUS = re.compile(r"\d \d\d:\d\d$")
# Joins product number and warehouse in the availability index; sorts before any character.
SEP = "\x00"


@dataclass(frozen=True, kw_only=True, slots=True)
class Notification:
    """One webhook notification: Action, Details (all strings) and the warehouse it concerns."""

    action: str
    details: dict[str, str]
    warehouse: str | None = None


NotificationSink = Callable[[list[Notification]], None]


def parse_instant(text: str, field: str) -> datetime:
    """An ISO-8601 instant with offset, or a Validation error naming the field."""
    if isinstance(text, str) and _LOST_PLUS.search(text):
        # An unencoded "+02:00" in a query string arrives as " 02:00".
        text = text[:-6] + "+" + text[-5:]
    try:
        value = datetime.fromisoformat(text)
    except (TypeError, ValueError) as exc:
        raise ValidationFailed(
            "InvalidDateTime",
            f"{field} is not an ISO-8601 date-time: {text!r}",
            details=[{"field": field, "message": "expected e.g. 2024-10-15T15:00:00+02:00"}],
        ) from exc
    if value.utcoffset() is None:
        raise ValidationFailed(
            "InvalidDateTime",
            f"{field} must carry a UTC offset: {text!r}",
            details=[{"field": field, "message": "add an offset such as +02:00"}],
        )
    return value


class SimState:
    """Products, customers, balances, prices, orders, registrations, faults and counters."""

    def __init__(self, config: SimulatorConfig, *, clock: SimClock | None = None) -> None:
        self.config = config
        start = (
            None if config.start_time is None else parse_instant(config.start_time, "start_time")
        )
        self.clock = clock or SimClock(config.timezone, start=start, frozen=config.frozen_clock)
        self.lock = threading.RLock()
        self.faults: FaultConfig = config.faults
        self.outage_until: float | None = None  # clock.elapsed() deadline of an outage window
        self.fault_rng = random.Random(config.seed * 7919 + 1)
        self.registrations: dict[str, WebhookRegistration] = {r.name: r for r in config.webhooks}
        self.sink: NotificationSink | None = None
        self._pending: list[Notification] | None = None
        self._last_ms = 0
        self.calls: Counter[str] = Counter()
        self.group_calls: Counter[str] = Counter()
        self.status_counts: Counter[int] = Counter()
        self.admin_calls: Counter[str] = Counter()

        self.products: dict[str, Product] = {}
        self.customers: dict[str, Customer] = {}
        self.balances: dict[str, Balance] = {}  # key: product SEP warehouse
        self.balances_by_product: dict[str, list[Balance]] = {}
        self.price_lists: dict[str, PriceList] = {}
        self.discount_lists: dict[str, DiscountList] = {}
        self.campaigns: dict[str, Campaign] = {}
        self.campaigns_by_product: dict[str, list[Campaign]] = {}
        self.orders: dict[str, Order] = {}
        self.orders_by_external: dict[str, str] = {}
        self.products_ix = ChangeIndex()
        self.customers_ix = ChangeIndex()
        self.balances_ix = ChangeIndex()
        self.orders_ix = ChangeIndex()
        self.pricing_version = 0
        self._price_cache: dict[
            str, tuple[int, int, ChangeIndex, dict[str, PriceQuote], dict[str, int]]
        ] = {}
        self._next_order = 100001
        self._next_customer = 10001 + config.customers
        self._next_shipment = 1
        self._next_invoice = 500001
        self._next_offer = 1
        self._load()

    # ------------------------------------------------------------------ set-up

    def _load(self) -> None:
        cfg = self.config
        start_ms = self.clock.now_ms()
        ds = generate(
            seed=cfg.seed,
            products=cfg.products,
            customers=cfg.customers,
            b2b_share=cfg.b2b_share,
            warehouses=cfg.warehouses,
            price_lists=cfg.price_lists,
            discount_lists=cfg.discount_lists,
            campaigns=cfg.campaigns,
            start_ms=start_ms,
        )
        fmt = self.clock.fmt
        for p in ds.products:
            p.changed = fmt(p.changed_ms)
            self.products[p.product_number] = p
        for c in ds.customers:
            c.changed = fmt(c.changed_ms)
            self.customers[c.customer_number] = c
        for b in ds.balances:
            b.changed = fmt(b.changed_ms)
            self.balances[b.product_number + SEP + b.warehouse] = b
            self.balances_by_product.setdefault(b.product_number, []).append(b)
        self.price_lists = {pl.name: pl for pl in ds.price_lists}
        self.discount_lists = {dl.name: dl for dl in ds.discount_lists}
        for camp in ds.campaigns:
            self._add_campaign(camp)
        self.products_ix.load((p.changed_ms, k) for k, p in self.products.items())
        self.customers_ix.load((c.changed_ms, k) for k, c in self.customers.items())
        self.balances_ix.load((b.changed_ms, k) for k, b in self.balances.items())
        self._last_ms = start_ms
        if cfg.orders:
            self._seed_orders(cfg.orders)

    def _seed_orders(self, count: int) -> None:
        rnd = random.Random(self.config.seed + 17)
        customers = list(self.customers)
        products = [p for p in self.products.values() if not p.phase_out]
        if not products or not customers:
            return
        for i in range(count):
            rows = []
            for _ in range(rnd.randint(1, 3)):
                product = products[rnd.randrange(len(products))]
                stocked = self.balances_by_product.get(product.product_number) or []
                warehouse = stocked[0].warehouse if stocked else self.config.warehouses[0]
                rows.append(
                    {
                        "product": {"productNumber": product.product_number},
                        "salesData": {"quantity": float(rnd.randint(1, 5))},
                        "warehouse": warehouse,
                    }
                )
            order = self.create_order(
                {
                    "orderHeader": {
                        "orderType": "Normal",
                        "orderNumberExternal": f"SEED-{self.config.seed}-{i + 1}",
                        "customerNumber": customers[rnd.randrange(len(customers))],
                    },
                    "orderRows": rows,
                }
            )
            step = i % 4  # a quarter each: Registered, Reserved, Picked, Cancelled
            if step >= 1 and step != 3:
                self.reserve_order(order["orderNumber"])
            if step == 2:
                self.pick_order(
                    order["orderNumber"],
                    carrier="PostNord",
                    tracking_number=f"SE{rnd.randrange(10**9)}",
                )
            if step == 3:
                self.cancel_order(order["orderNumber"])

    # ------------------------------------------------------------------ operations and events

    @contextmanager
    def operation(self) -> Iterator[int]:
        """One change: holds the lock, yields its timestamp (ms), hands its notifications on at the
        end."""
        with self.lock:
            outer = self._pending is None
            if outer:
                self._pending = []
            now = max(self.clock.now_ms(), self._last_ms)
            self._last_ms = now
            try:
                yield now
            finally:
                if outer:
                    batch, self._pending = self._pending, None
        if outer and batch and self.sink is not None:
            self.sink(batch)

    def emit(self, action: str, warehouse: str | None = None, **details: Any) -> None:
        """Raise a notification inside the current operation; Details values become strings."""
        if self._pending is None:
            raise RuntimeError("emit() outside an operation")
        self._pending.append(
            Notification(
                action=action,
                warehouse=warehouse,
                details={k: self.fmt_value(v) for k, v in details.items() if v is not None},
            )
        )

    def fmt_value(self, value: Any) -> str:
        """Strings, as Extend sends them; Swedish number formatting when switched on."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return str(value)
        number = float(value)
        integral = number == int(number)
        if not self.config.swedish_numbers:
            return str(int(number)) if integral else repr(number)
        if integral:
            return f"{int(number):,}".replace(",", " ")
        whole, _, frac = repr(abs(number)).partition(".")
        sign = "-" if number < 0 else ""
        return f"{sign}{int(whole):,}".replace(",", " ") + "," + frac

    def _stamp(self, record: Product | Customer | Balance | Order, now_ms: int) -> None:
        record.changed_ms = now_ms
        record.changed = self.clock.fmt(now_ms)

    # ------------------------------------------------------------------ products

    def product(self, number: str) -> Product:
        p = self.products.get(number)
        if p is None:
            raise ValidationFailed("NotFound", f"product {number!r} does not exist", status=404)
        return p

    def create_product(self, data: dict[str, Any]) -> Product:
        number = str(data.get("productNumber") or "")
        if not number:
            raise ValidationFailed(
                "MissingField",
                "productNumber is required",
                details=[{"field": "productNumber", "message": "required"}],
            )
        with self.operation() as now:
            if number in self.products:
                raise BusinessConflict("DuplicateProduct", f"product {number} exists")
            p = Product(
                product_number=number,
                product_name=str(data.get("productName") or number),
                product_notes=data.get("productNotes"),
                unit=str(data.get("unit") or "ST"),
                ean=str(data.get("ean") or ""),
                vat_percent=float(data.get("vatPercent", 25.0)),
                customs_commodity_code=data.get("customsCommodityCode"),
                supply_mode=str(data.get("supplyMode") or "Warehouse"),
                phase_out=bool(data.get("phaseOut", False)),
                product_group=str(data.get("productGroup") or "HEM"),
                list_price=float(data.get("listPrice", 100.0)),
                price_changed_ms=now,
            )
            self._stamp(p, now)
            self.products[number] = p
            self.products_ix.touch(number, now)
            self.pricing_version += 1
            self.emit("ProductCreated", ProductNumber=number)
            return p

    _PRODUCT_FIELDS: ClassVar[dict[str, str]] = {
        "productName": "product_name",
        "productNotes": "product_notes",
        "unit": "unit",
        "ean": "ean",
        "vatPercent": "vat_percent",
        "customsCommodityCode": "customs_commodity_code",
        "supplyMode": "supply_mode",
        "phaseOut": "phase_out",
        "productGroup": "product_group",
        "listPrice": "list_price",
    }

    def update_product(self, number: str, changes: dict[str, Any]) -> Product:
        unknown = set(changes) - set(self._PRODUCT_FIELDS)
        if unknown:
            raise ValidationFailed("UnknownField", f"cannot change {sorted(unknown)}")
        with self.operation() as now:
            p = self.product(number)
            for key, value in changes.items():
                setattr(
                    p,
                    self._PRODUCT_FIELDS[key],
                    float(value) if key in ("vatPercent", "listPrice") else value,
                )
            if "listPrice" in changes or "productGroup" in changes:
                p.price_changed_ms = now
                self.pricing_version += 1
            # A price-only change fires no webhook: Extend has no price event (S3).
            if set(changes) - {"listPrice"}:
                self._stamp(p, now)
                self.products_ix.touch(number, now)
                self.emit("ProductChanged", ProductNumber=number)
            return p

    # ------------------------------------------------------------------ customers

    def customer(self, number: str) -> Customer:
        c = self.customers.get(number)
        if c is None:
            raise ValidationFailed("NotFound", f"customer {number!r} does not exist", status=404)
        return c

    def create_customer(self, data: dict[str, Any]) -> Customer:
        """POST Customers: Extend assigns the number. Duplicates: same organisation number, or
        (no organisation number) the same e-mail, case-insensitive -> 409 Business. [ASSUMPTION]"""
        if not isinstance(data, dict):
            raise ValidationFailed("InvalidBody", "expected a JSON object")
        name = data.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ValidationFailed(
                "MissingField",
                "name is required",
                details=[{"field": "name", "message": "required"}],
            )
        orgno = data.get("organizationNumber")
        email = data.get("email")
        problems = []
        for field in ("priceList", "discountList"):
            value = data.get(field)
            known = self.price_lists if field == "priceList" else self.discount_lists
            if value is not None and value not in known:
                problems.append({"field": field, "message": f"unknown {field} {value!r}"})
        addresses = data.get("addresses") or []
        if not isinstance(addresses, list) or not all(isinstance(a, dict) for a in addresses):
            problems.append({"field": "addresses", "message": "expected a list of address objects"})
        if problems:
            raise ValidationFailed(
                "InvalidCustomer", "the customer cannot be created", status=422, details=problems
            )
        with self.operation() as now:
            digits = "".join(ch for ch in str(orgno or "") if ch.isdigit())
            for other in self.customers.values():
                if (
                    digits
                    and other.organization_number
                    and "".join(ch for ch in other.organization_number if ch.isdigit()) == digits
                ):
                    raise BusinessConflict(
                        "DuplicateCustomer",
                        f"organisation number {orgno} belongs to customer {other.customer_number}",
                        details=[{"field": "organizationNumber", "message": other.customer_number}],
                    )
                if (
                    not digits
                    and email
                    and other.email
                    and other.email.lower() == str(email).lower()
                ):
                    raise BusinessConflict(
                        "DuplicateCustomer",
                        f"e-mail {email} belongs to customer {other.customer_number}",
                        details=[{"field": "email", "message": other.customer_number}],
                    )
            number = str(self._next_customer)
            self._next_customer += 1
            c = Customer(
                customer_number=number,
                customer_type="B2B" if orgno else "B2C",
                name=name.strip(),
                last_name=data.get("lastName"),
                organization_number=orgno,
                customer_group=data.get("customerGroup"),
                price_list=data.get("priceList"),
                discount_list=data.get("discountList"),
                salesperson=data.get("salesperson"),
                email=email,
                phone=data.get("phone"),
                addresses=[dict(a) for a in addresses],
                currency=str(data.get("currency") or "SEK"),
                pricing_changed_ms=now,
            )
            self._stamp(c, now)
            self.customers[number] = c
            self.customers_ix.touch(number, now)
            self.emit("CustomerCreated", CustomerNumber=number)
            return c

    _CUSTOMER_FIELDS: ClassVar[dict[str, str]] = {
        "name": "name",
        "lastName": "last_name",
        "organizationNumber": "organization_number",
        "customerGroup": "customer_group",
        "priceList": "price_list",
        "discountList": "discount_list",
        "salesperson": "salesperson",
        "email": "email",
        "phone": "phone",
        "addresses": "addresses",
        "currency": "currency",
    }

    def update_customer(self, number: str, changes: dict[str, Any]) -> Customer:
        unknown = set(changes) - set(self._CUSTOMER_FIELDS)
        if unknown:
            raise ValidationFailed("UnknownField", f"cannot change {sorted(unknown)}")
        with self.operation() as now:
            c = self.customer(number)
            for key, value in changes.items():
                setattr(c, self._CUSTOMER_FIELDS[key], value)
            if {"customerGroup", "priceList", "discountList"} & set(changes):
                c.pricing_changed_ms = now
                self.pricing_version += 1
            self._stamp(c, now)
            self.customers_ix.touch(number, now)
            self.emit("CustomerChanged", CustomerNumber=number)
            return c

    # ------------------------------------------------------------------ prices

    def _add_campaign(self, camp: Campaign) -> None:
        self.campaigns[camp.code] = camp
        for number in camp.prices:
            self.campaigns_by_product.setdefault(number, []).append(camp)

    def set_price_list_entry(
        self, price_list: str, product_number: str, unit_price: float | None
    ) -> None:
        """Set (or with None remove) a price-list price. Fires no webhook: Extend has no price
        event."""
        with self.operation() as now:
            self.product(product_number)
            pl = self.price_lists.setdefault(price_list, PriceList(name=price_list))
            if unit_price is None:
                pl.entries.pop(product_number, None)
            else:
                pl.entries[product_number] = float(unit_price)
            pl.entry_changed_ms[product_number] = now
            self.pricing_version += 1

    def set_discount(
        self,
        discount_list: str,
        percent: float | None,
        *,
        product_group: str | None = None,
        product_number: str | None = None,
    ) -> None:
        if (product_group is None) == (product_number is None):
            raise ValidationFailed(
                "InvalidDiscount", "give exactly one of productGroup and productNumber"
            )
        if percent is not None and not 0 <= percent <= 100:
            raise ValidationFailed("InvalidDiscount", "percent must be within 0..100")
        with self.operation() as now:
            dl = self.discount_lists.setdefault(discount_list, DiscountList(name=discount_list))
            table = dl.by_group if product_group is not None else dl.by_product
            key = product_group if product_group is not None else str(product_number)
            if percent is None:
                table.pop(key, None)
            else:
                table[key] = float(percent)
            dl.changed_ms = now
            self.pricing_version += 1

    def set_campaign(
        self,
        *,
        code: str,
        prices: dict[str, float],
        valid_from: str,
        valid_to: str,
        name: str | None = None,
        customer_group: str | None = None,
    ) -> Campaign:
        start = int(parse_instant(valid_from, "validFrom").timestamp() * 1000)
        end = int(parse_instant(valid_to, "validTo").timestamp() * 1000)
        if end <= start:
            raise ValidationFailed("InvalidCampaign", "validTo must be after validFrom")
        for number in prices:
            self.product(number)
        with self.operation() as now:
            old = self.campaigns.pop(code, None)
            if old is not None:
                for number in old.prices:
                    self.campaigns_by_product[number].remove(old)
            camp = Campaign(
                code=code,
                name=name or code,
                prices={k: float(v) for k, v in prices.items()},
                valid_from_ms=start,
                valid_to_ms=end,
                customer_group=customer_group,
                changed_ms=now,
            )
            self._add_campaign(camp)
            self.pricing_version += 1
            return camp

    def quote(self, customer: Customer, product: Product, now_ms: int) -> tuple[PriceQuote, int]:
        """The net best price now, and when it last changed (epoch ms)."""
        changed = max(product.price_changed_ms, customer.pricing_changed_ms)
        pl_price = None
        if customer.price_list is not None:
            pl = self.price_lists.get(customer.price_list)
            if pl is not None:
                pl_price = pl.entries.get(product.product_number)
                changed = max(changed, pl.entry_changed_ms.get(product.product_number, 0))
        percent = None
        if customer.discount_list is not None:
            dl = self.discount_lists.get(customer.discount_list)
            if dl is not None:
                percent = dl.by_product.get(
                    product.product_number, dl.by_group.get(product.product_group)
                )
                changed = max(changed, dl.changed_ms)
        offers = []
        for camp in self.campaigns_by_product.get(product.product_number, ()):
            if camp.customer_group is not None and camp.customer_group != customer.customer_group:
                continue
            # A campaign that started or ended has changed the price at that instant.
            changed = max(changed, camp.changed_ms)
            if camp.valid_from_ms <= now_ms:
                changed = max(changed, camp.valid_from_ms)
            if camp.valid_to_ms <= now_ms:
                changed = max(changed, camp.valid_to_ms)
            if camp.active(now_ms):
                offers.append(
                    CampaignOffer(
                        code=camp.code,
                        price=camp.prices[product.product_number],
                        valid_from_ms=camp.valid_from_ms,
                        valid_to_ms=camp.valid_to_ms,
                    )
                )
        quote = best_price(
            list_price=product.list_price,
            price_list_price=pl_price,
            discount_percent=percent,
            campaigns=offers,
        )
        return quote, min(changed, now_ms)

    def price_index(
        self, customer_number: str
    ) -> tuple[ChangeIndex, dict[str, PriceQuote], dict[str, int]]:
        """Every price of one customer, indexed by change date; cached until prices or a campaign
        boundary change."""
        customer = self.customer(customer_number)
        now = self.clock.now_ms()
        cached = self._price_cache.get(customer_number)
        if cached is not None and cached[0] == self.pricing_version and now < cached[1]:
            return cached[2], cached[3], cached[4]
        quotes: dict[str, PriceQuote] = {}
        changed: dict[str, int] = {}
        for number, product in self.products.items():
            quotes[number], changed[number] = self.quote(customer, product, now)
        ix = ChangeIndex()
        ix.load((ms, k) for k, ms in changed.items())
        boundaries = [
            b
            for camp in self.campaigns.values()
            for b in (camp.valid_from_ms, camp.valid_to_ms)
            if b > now
        ]
        expires = min(boundaries, default=2**62)
        if len(self._price_cache) >= 16:
            self._price_cache.pop(next(iter(self._price_cache)))
        self._price_cache[customer_number] = (self.pricing_version, expires, ix, quotes, changed)
        return ix, quotes, changed

    # ------------------------------------------------------------------ stock

    def _balance(self, product_number: str, warehouse: str) -> Balance:
        key = product_number + SEP + warehouse
        b = self.balances.get(key)
        if b is None:
            self.product(product_number)
            if warehouse not in self.config.warehouses:
                raise ValidationFailed(
                    "UnknownWarehouse", f"warehouse {warehouse!r} does not exist", status=422
                )
            b = Balance(product_number=product_number, warehouse=warehouse, physical=0.0)
            self.balances[key] = b
            self.balances_by_product.setdefault(product_number, []).append(b)
        return b

    def _change_balance(
        self, b: Balance, now: int, *, physical_delta: float = 0.0, reserved_delta: float = 0.0
    ) -> None:
        before_physical, before_available = b.physical, b.available
        b.physical += physical_delta
        b.reserved += reserved_delta
        if b.physical == before_physical and b.available == before_available:
            return
        self._stamp(b, now)
        self.balances_ix.touch(b.product_number + SEP + b.warehouse, now)
        if b.physical != before_physical:
            self.emit(
                "BalanceChanged",
                b.warehouse,
                ProductNumber=b.product_number,
                Warehouse=b.warehouse,
                Balance=b.physical,
            )
        if b.available != before_available:
            self.emit(
                "AvailableBalanceChanged",
                b.warehouse,
                ProductNumber=b.product_number,
                Warehouse=b.warehouse,
                AvailableBalance=b.available,
            )

    def move_stock(self, moves: list[dict[str, Any]]) -> list[Balance]:
        """Receive/adjust stock in one operation. Each move: productNumber, warehouse and either
        `delta` (received > 0, removed < 0) or `physical` (a stock count that sets the balance)."""
        checked = []
        for i, move in enumerate(moves):
            number, warehouse = move.get("productNumber"), move.get("warehouse")
            if not isinstance(number, str) or not isinstance(warehouse, str):
                raise ValidationFailed(
                    "InvalidMove", f"move {i}: productNumber and warehouse are required"
                )
            if ("delta" in move) == ("physical" in move):
                raise ValidationFailed(
                    "InvalidMove", f"move {i}: give exactly one of delta and physical"
                )
            checked.append((number, warehouse, move.get("delta"), move.get("physical")))
        with self.operation() as now:
            out = []
            for number, warehouse, delta, physical in checked:
                b = self._balance(number, warehouse)
                change = float(delta) if delta is not None else float(physical or 0) - b.physical
                self._change_balance(b, now, physical_delta=change)
                out.append(b)
            return out

    # ------------------------------------------------------------------ orders

    def order(self, number: str) -> Order:
        o = self.orders.get(number)
        if o is None:
            raise ValidationFailed(
                "NotFound", f"customer order {number!r} does not exist", status=404
            )
        return o

    def _expected_dates(self, header: dict[str, Any], now_ms: int) -> tuple[str, str]:
        today = datetime.fromtimestamp(now_ms / 1000, self.clock.tz).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        expected = today + timedelta(days=2)
        asked = header.get("askedDeliveryDate")
        if isinstance(asked, str):
            asked_dt = parse_instant(asked, "orderHeader.askedDeliveryDate").astimezone(
                self.clock.tz
            )
            expected = max(expected, asked_dt.replace(hour=0, minute=0, second=0, microsecond=0))
        ship = expected - timedelta(days=1)
        return expected.isoformat(timespec="seconds"), ship.isoformat(timespec="seconds")

    def _check_row(
        self,
        i: int,
        row: Any,
        problems: list[dict[str, str]],
        structural: list[dict[str, str]],
        *,
        need_warehouse: bool = True,
    ) -> None:
        where = f"orderRows[{i}]"
        if not isinstance(row, dict):
            structural.append({"field": where, "message": "expected an object"})
            return
        product = row.get("product")
        number = product.get("productNumber") if isinstance(product, dict) else None
        if not isinstance(number, str) or not number:
            structural.append({"field": f"{where}.product.productNumber", "message": "required"})
        elif number not in self.products:
            problems.append(
                {
                    "field": f"{where}.product.productNumber",
                    "message": f"unknown product {number!r}",
                }
            )
        sales = row.get("salesData")
        quantity = sales.get("quantity") if isinstance(sales, dict) else None
        if isinstance(quantity, bool) or not isinstance(quantity, int | float) or quantity <= 0:
            structural.append(
                {"field": f"{where}.salesData.quantity", "message": "a positive number is required"}
            )
        if (
            isinstance(sales, dict)
            and sales.get("unitPrice") is not None
            and (
                isinstance(sales["unitPrice"], bool)
                or not isinstance(sales["unitPrice"], int | float)
            )
        ):
            structural.append(
                {"field": f"{where}.salesData.unitPrice", "message": "must be a number"}
            )
        warehouse = row.get("warehouse")
        if warehouse is None or warehouse == "":
            if need_warehouse:
                problems.append(
                    {"field": f"{where}.warehouse", "message": "every row needs a warehouse"}
                )
        elif warehouse not in self.config.warehouses:
            problems.append(
                {"field": f"{where}.warehouse", "message": f"unknown warehouse {warehouse!r}"}
            )

    def _new_row(
        self,
        position: int,
        row: dict[str, Any],
        customer: Customer,
        currency: str,
        expected: str,
        ship: str,
        now: int,
    ) -> OrderRow:
        product = self.products[row["product"]["productNumber"]]
        sent = row.get("salesData") or {}
        unit_price = sent.get("unitPrice")
        list_price = product.list_price
        if unit_price is None:
            # "Minimum order using ... prices from Extend Commerce": Extend prices the row (S4).
            unit_price = self.quote(customer, product, now)[0].unit_price
        sales = {
            "quantity": float(sent["quantity"]),
            "unit": sent.get("unit") or product.unit,
            "unitPrice": float(unit_price),
            "vatPercent": float(sent.get("vatPercent", product.vat_percent)),
            "currency": sent.get("currency") or currency,
            "unitExplicitCost": sent.get("unitExplicitCost"),
            "listPrice": float(sent.get("listPrice", list_price)),
        }
        sent_product = row["product"]
        product_block = {
            "productNumber": product.product_number,
            "productName": sent_product.get("productName") or product.product_name,
            "productNotes": sent_product.get("productNotes", product.product_notes),
            "customerProductNumber": sent_product.get("customerProductNumber"),
            "customsCommodityCode": product.customs_commodity_code,
        }
        known = {
            "position",
            "rowOperation",
            "product",
            "salesData",
            "warehouse",
            "supplyMode",
            "batchNumber",
            "shipDate",
            "expectedDeliveryDate",
            "deliveryData",
        }
        return OrderRow(
            position=position,
            product=product_block,
            sales_data=sales,
            warehouse=row.get("warehouse") or None,
            row_operation=row.get("rowOperation")
            if row.get("rowOperation") == "Inactive"
            else None,
            supply_mode=product.supply_mode,
            batch_number=row.get("batchNumber"),
            ship_date=ship,
            expected_delivery_date=expected,
            extra={k: v for k, v in row.items() if k not in known},
        )

    def create_order(self, body: Any) -> dict[str, Any]:
        """POST CustomerOrders: the documented orderHeader / orderRows shape (S4)."""
        if not isinstance(body, dict) or not isinstance(body.get("orderHeader"), dict):
            raise ValidationFailed(
                "InvalidBody",
                'expected {"orderHeader": {...}, "orderRows": [...]}',
                details=[{"field": "orderHeader", "message": "required"}],
            )
        header = dict(body["orderHeader"])
        # Extend assigns order numbers: one sent by the caller is ignored, not echoed.
        header.pop("orderNumber", None)
        rows = body.get("orderRows")
        structural: list[dict[str, str]] = []
        problems: list[dict[str, str]] = []
        if not isinstance(rows, list) or not rows:
            structural.append({"field": "orderRows", "message": "at least one row is required"})
            rows = []
        customer_number = header.get("customerNumber")
        if not isinstance(customer_number, str) or not customer_number:
            structural.append({"field": "orderHeader.customerNumber", "message": "required"})
        elif customer_number not in self.customers:
            problems.append(
                {
                    "field": "orderHeader.customerNumber",
                    "message": f"unknown customer {customer_number!r}",
                }
            )
        external = header.get("orderNumberExternal")
        if external is not None and not isinstance(external, str | int):
            structural.append(
                {"field": "orderHeader.orderNumberExternal", "message": "must be a string"}
            )
        asked = header.get("askedDeliveryDate")
        if asked is not None:
            try:
                if not isinstance(asked, str):
                    raise ValidationFailed("InvalidDateTime", "not a string")
                parse_instant(asked, "orderHeader.askedDeliveryDate")
            except ValidationFailed:
                structural.append(
                    {
                        "field": "orderHeader.askedDeliveryDate",
                        "message": "expected ISO-8601 with offset, e.g. 2019-12-25T00:00:00+02:00",
                    }
                )
        for i, row in enumerate(rows):
            self._check_row(i, row, problems, structural)
        if structural:
            raise ValidationFailed(
                "InvalidOrder", "the order is not well-formed", status=400, details=structural
            )
        if problems:
            raise ValidationFailed(
                "InvalidOrder",
                "the order refers to unknown or missing data",
                status=422,
                details=problems,
            )
        phased = [
            r["product"]["productNumber"]
            for r in rows
            if self.products[r["product"]["productNumber"]].phase_out
        ]
        with self.operation() as now:
            if external is not None and str(external) in self.orders_by_external:
                existing = self.orders_by_external[str(external)]
                raise BusinessConflict(
                    "DuplicateOrderNumberExternal",
                    f"orderNumberExternal {external} is already used by order {existing}",
                    details=[{"field": "orderHeader.orderNumberExternal", "message": existing}],
                )
            if phased:
                raise BusinessConflict(
                    "ProductPhasedOut",
                    f"phased-out products cannot be ordered: {phased}",
                    details=[{"field": "orderRows", "message": n} for n in phased],
                )
            customer = self.customers[str(customer_number)]
            number = str(self._next_order)
            self._next_order += 1
            expected, ship = self._expected_dates(header, now)
            currency = str(header.get("currency") or customer.currency)
            delivery = next((a for a in customer.addresses if a.get("type") == "Delivery"), None)
            invoice = next((a for a in customer.addresses if a.get("type") == "Invoice"), delivery)
            defaults = {
                "orderType": "Normal",
                "orderNumberExternal": None,
                "askedDeliveryDate": None,
                "partialDelivery": False,
                "freightFree": False,
                "deliveryAddress": _strip_type(delivery),
                "invoiceAddress": _strip_type(invoice),
                "paymentType": None,
                "yourReference": None,
                "ourReference": customer.salesperson,
                "orderEmail": customer.email,
                "currency": currency,
                "notes": None,
            }
            for key, value in defaults.items():
                if header.get(key) is None:
                    header[key] = value
            if external is not None:
                header["orderNumberExternal"] = str(external)
            order = Order(
                order_number=number,
                header=header,
                rows=[],
                order_date=self.clock.fmt(now),
                expected_delivery_date=expected,
            )
            for i, row in enumerate(rows):
                order.rows.append(
                    self._new_row((i + 1) * 10, row, customer, currency, expected, ship, now)
                )
            self._stamp(order, now)
            self.orders[number] = order
            if external is not None:
                self.orders_by_external[str(external)] = number
            self.orders_ix.touch(number, now)
            self._emit_order("OrderCreated", order)
            return self.order_json(order)

    def _emit_order(self, action: str, order: Order, rows: list[OrderRow] | None = None) -> None:
        """One notification per warehouse the order (or the rows concerned) ships from."""
        warehouses: list[str | None] = []
        for row in rows if rows is not None else order.rows:
            if row.warehouse and row.warehouse not in warehouses:
                warehouses.append(row.warehouse)
        for warehouse in warehouses or [None]:
            self.emit(
                action,
                warehouse,
                OrderNumber=order.order_number,
                OrderNumberExternal=order.order_number_external,
                Warehouse=warehouse,
            )

    def update_order(self, number: str, body: Any) -> dict[str, Any]:
        """PUT CustomerOrders/{orderNumber}: change a Registered order. [ASSUMPTION: verb and shape]

        Rows are matched by `position`. `rowOperation: "Inactive"` with the row's `warehouse`
        cancels that row; without `warehouse` Extend's documented quirk happens: a NEW cancelled
        row is appended and the original stays active (S4). A row without `position` is added.
        Header fields sent replace the stored ones. When no active row is left the order is
        Cancelled (OrderCancelled fires). Any change once Reserved (or later) -> 409 Business.
        """
        if not isinstance(body, dict):
            raise ValidationFailed(
                "InvalidBody", 'expected {"orderHeader"?: {...}, "orderRows"?: [...]}'
            )
        rows = body.get("orderRows") or []
        header = body.get("orderHeader") or {}
        if not isinstance(rows, list) or not isinstance(header, dict):
            raise ValidationFailed(
                "InvalidBody", "orderRows must be a list and orderHeader an object"
            )
        with self.operation() as now:
            order = self.order(number)
            if order.status != "Registered":
                raise BusinessConflict(
                    "OrderLocked",
                    f"order {number} is {order.status}; it can no longer be changed",
                    details=[{"field": "status", "message": order.status}],
                )
            for key in ("customerNumber", "orderNumberExternal"):
                if key in header and header[key] != order.header.get(key):
                    raise BusinessConflict(
                        "ImmutableField", f"{key} cannot be changed on an existing order"
                    )
            by_position = {r.position: r for r in order.rows}
            structural: list[dict[str, str]] = []
            problems: list[dict[str, str]] = []
            for i, row in enumerate(rows):
                if not isinstance(row, dict):
                    structural.append({"field": f"orderRows[{i}]", "message": "expected an object"})
                    continue
                position = row.get("position")
                if position is None:
                    self._check_row(i, row, problems, structural)
                elif position not in by_position:
                    problems.append(
                        {"field": f"orderRows[{i}].position", "message": f"no row {position}"}
                    )
                elif row.get("warehouse") and row["warehouse"] not in self.config.warehouses:
                    problems.append(
                        {"field": f"orderRows[{i}].warehouse", "message": "unknown warehouse"}
                    )
            if structural:
                raise ValidationFailed(
                    "InvalidOrder", "the change is not well-formed", details=structural
                )
            if problems:
                raise ValidationFailed(
                    "InvalidOrder",
                    "the change refers to unknown data",
                    status=422,
                    details=problems,
                )
            customer = self.customers[order.customer_number]
            currency = str(order.header.get("currency") or "SEK")
            first = order.rows[0] if order.rows else None
            expected = order.expected_delivery_date or ""
            ship = first.ship_date if first and first.ship_date else expected
            for row in rows:
                position = row.get("position")
                if position is None:
                    order.rows.append(
                        self._new_row(
                            order.next_position(), row, customer, currency, expected, ship, now
                        )
                    )
                    continue
                target = by_position[position]
                if row.get("rowOperation") == "Inactive":
                    if row.get("warehouse"):
                        target.row_operation = "Inactive"
                    else:
                        # Extend's documented quirk: without the warehouse a new, cancelled row is
                        # added.
                        quirk = dict(row)
                        quirk.setdefault("product", {"productNumber": target.product_number})
                        if (
                            not isinstance(quirk.get("salesData"), dict)
                            or "quantity" not in quirk["salesData"]
                        ):
                            quirk["salesData"] = {**target.sales_data}
                        if quirk["product"].get("productNumber") not in self.products:
                            quirk["product"] = {"productNumber": target.product_number}
                        new = self._new_row(
                            order.next_position(), quirk, customer, currency, expected, ship, now
                        )
                        new.row_operation = "Inactive"
                        new.warehouse = None
                        order.rows.append(new)
                    continue
                sales = row.get("salesData")
                if isinstance(sales, dict):
                    for key in (
                        "quantity",
                        "unitPrice",
                        "vatPercent",
                        "unit",
                        "listPrice",
                        "unitExplicitCost",
                    ):
                        if key in sales:
                            target.sales_data[key] = sales[key]
                if row.get("warehouse"):
                    target.warehouse = row["warehouse"]
            for key, value in header.items():
                if key != "orderNumber":  # the number is Extend's own and never changes
                    order.header[key] = value
            if "askedDeliveryDate" in header:
                order.expected_delivery_date = self._expected_dates(order.header, now)[0]
            self._stamp(order, now)
            self.orders_ix.touch(number, now)
            if not any(r.active for r in order.rows):
                order.status = "Cancelled"
                self._emit_order("OrderCancelled", order)
            return self.order_json(order)

    def withdraw_order(self, number: str) -> dict[str, Any]:
        """DELETE CustomerOrders/{orderNumber}: the shop cancels a whole order. [ASSUMPTION: verb]

        Only while Registered, like every other change from the API; later -> 409 Business.
        """
        with self.operation() as now:
            order = self.order(number)
            if order.status != "Registered":
                raise BusinessConflict(
                    "OrderLocked",
                    f"order {number} is {order.status}; it can no longer be changed",
                    details=[{"field": "status", "message": order.status}],
                )
            order.status = "Cancelled"
            self._stamp(order, now)
            self.orders_ix.touch(number, now)
            self._emit_order("OrderCancelled", order)
            return self.order_json(order)

    def reserve_order(self, number: str) -> dict[str, Any]:
        """Registered -> Reserved: picking starts; available balance drops by the active rows."""
        with self.operation() as now:
            order = self.order(number)
            if order.status != "Registered":
                raise BusinessConflict(
                    "InvalidTransition", f"order {number} is {order.status}, not Registered"
                )
            order.status = "Reserved"
            for row in order.rows:
                if row.active and row.warehouse:
                    self._change_balance(
                        self._balance(row.product_number, row.warehouse),
                        now,
                        reserved_delta=row.quantity,
                    )
            self._stamp(order, now)
            self.orders_ix.touch(number, now)
            self._emit_order("OrderReserved", order)
            return self.order_json(order)

    def pick_order(
        self,
        number: str,
        rows: list[dict[str, Any]] | None = None,
        *,
        carrier: str | None = None,
        tracking_number: str | None = None,
        tracking_url: str | None = None,
    ) -> dict[str, Any]:
        """Reserved/PartiallyPicked -> Picked or PartiallyPicked, with one shipment.

        `rows` = [{position, quantity}] picks part; None picks everything left. Picking lowers the
        physical balance and the reservation alike, so only BalanceChanged fires for it.
        """
        with self.operation() as now:
            order = self.order(number)
            if order.status not in ("Reserved", "PartiallyPicked"):
                raise BusinessConflict(
                    "InvalidTransition", f"order {number} is {order.status}; reserve it first"
                )
            by_position = {r.position: r for r in order.rows if r.active}
            wanted: list[tuple[OrderRow, float]] = []
            if rows is None:
                wanted = [
                    (r, r.quantity - r.delivered)
                    for r in by_position.values()
                    if r.quantity > r.delivered
                ]
            else:
                for item in rows:
                    row = by_position.get(item.get("position"))  # type: ignore[arg-type]
                    if row is None:
                        raise ValidationFailed(
                            "InvalidPick", f"no active row {item.get('position')}"
                        )
                    quantity = float(item.get("quantity", row.quantity - row.delivered))
                    if quantity <= 0 or quantity > row.quantity - row.delivered + 1e-9:
                        raise ValidationFailed(
                            "InvalidPick", f"row {row.position}: cannot pick {quantity}"
                        )
                    wanted.append((row, quantity))
            if not wanted:
                raise BusinessConflict("NothingToPick", f"order {number} has nothing left to pick")
            ship_date = self.clock.fmt(now)
            shipment_rows = []
            for row, quantity in wanted:
                row.delivered += quantity
                row.ship_date = ship_date
                if row.warehouse:
                    self._change_balance(
                        self._balance(row.product_number, row.warehouse),
                        now,
                        physical_delta=-quantity,
                        reserved_delta=-quantity,
                    )
                shipment_rows.append(
                    {
                        "position": row.position,
                        "productNumber": row.product_number,
                        "quantity": quantity,
                    }
                )
            shipment_number = f"SH{self._next_shipment:07d}"
            self._next_shipment += 1
            if tracking_number and not tracking_url:
                tracking_url = (
                    f"https://tracking.example.se/{carrier or 'carrier'}/{tracking_number}".replace(
                        " ", ""
                    )
                )
            order.shipments.append(
                Shipment(
                    shipment_number=shipment_number,
                    carrier=carrier,
                    tracking_number=tracking_number,
                    tracking_url=tracking_url,
                    ship_date=ship_date,
                    rows=shipment_rows,
                )
            )
            done = all(r.delivered >= r.quantity - 1e-9 for r in order.rows if r.active)
            order.status = "Picked" if done else "PartiallyPicked"
            self._stamp(order, now)
            self.orders_ix.touch(number, now)
            self._emit_order("OrderPicked", order, [r for r, _ in wanted])
            if done:
                invoice = str(self._next_invoice)
                self._next_invoice += 1
                self.emit("CustomerInvoiceCreated", InvoiceNumber=invoice, OrderNumber=number)
            return self.order_json(order)

    def cancel_order(self, number: str) -> dict[str, Any]:
        """Cancel in Extend (a person in the Backend): allowed until anything is picked."""
        with self.operation() as now:
            order = self.order(number)
            if order.status not in ("Registered", "Reserved"):
                raise BusinessConflict(
                    "InvalidTransition", f"order {number} is {order.status}; it cannot be cancelled"
                )
            if order.status == "Reserved":
                for row in order.rows:
                    if row.active and row.warehouse:
                        self._change_balance(
                            self._balance(row.product_number, row.warehouse),
                            now,
                            reserved_delta=-row.quantity,
                        )
            order.status = "Cancelled"
            self._stamp(order, now)
            self.orders_ix.touch(number, now)
            self._emit_order("OrderCancelled", order)
            return self.order_json(order)

    def set_expected_delivery_date(self, number: str, date: str) -> dict[str, Any]:
        when = parse_instant(date, "expectedDeliveryDate").astimezone(self.clock.tz)
        with self.operation() as now:
            order = self.order(number)
            if order.status in ("Cancelled", "Picked"):
                raise BusinessConflict("InvalidTransition", f"order {number} is {order.status}")
            text = when.isoformat(timespec="seconds")
            order.expected_delivery_date = text
            for row in order.rows:
                if row.active and row.delivered < row.quantity:
                    row.expected_delivery_date = text
                    row.ship_date = (when - timedelta(days=1)).isoformat(timespec="seconds")
            self._stamp(order, now)
            self.orders_ix.touch(number, now)
            self._emit_order("OrderDeliveryDataChanged", order)
            return self.order_json(order)

    # ------------------------------------------------------------------ purchases, offers,
    # invoices, any event

    def deliver_purchase(
        self, number: str, warehouse: str, rows: list[dict[str, Any]], *, complete: bool
    ) -> None:
        """A purchase order (e.g. RP-15) arrives: stock goes up, Purchase(Partially)Delivered fires
        per row."""
        if warehouse not in self.config.warehouses:
            raise ValidationFailed(
                "UnknownWarehouse", f"warehouse {warehouse!r} does not exist", status=422
            )
        with self.operation() as now:
            action = "PurchaseDelivered" if complete else "PurchasePartiallyDelivered"
            for i, row in enumerate(rows):
                product = self.product(str(row.get("productNumber")))
                quantity = float(row.get("quantity") or 0)
                self._change_balance(
                    self._balance(product.product_number, warehouse), now, physical_delta=quantity
                )
                self.emit(
                    action,
                    warehouse,
                    OrderNumber=number,
                    ProductNumber=product.product_number,
                    Warehouse=warehouse,
                    Quantity=quantity,
                    Position=row.get("position", (i + 1) * 10),
                    Unit=row.get("unit", product.unit),
                )

    def fire(self, action: str, details: dict[str, Any], warehouse: str | None = None) -> None:
        """Raise any notification as is (offers, invoices, purchase cancellations, unknown
        actions)."""
        with self.operation():
            self.emit(action, warehouse, **details)

    def new_offer(self, customer_number: str | None = None) -> str:
        with self.operation():
            number = f"OF-{self._next_offer}"
            self._next_offer += 1
            self.emit("OfferCreated", OfferNumber=number, CustomerNumber=customer_number)
            return number

    # ------------------------------------------------------------------ faults and webhooks at run
    # time

    def set_faults(self, **changes: Any) -> FaultConfig:
        with self.lock:
            self.faults = replace(self.faults, **changes)
            if "outage" in changes and not changes["outage"]:
                self.outage_until = None
            return self.faults

    def start_outage(self, seconds: float | None, mode: str = "503") -> None:
        """An outage window: `seconds` from now (None: until switched off)."""
        with self.lock:
            self.faults = replace(self.faults, outage=True, outage_mode=mode)  # type: ignore[arg-type]
            self.outage_until = None if seconds is None else self.clock.elapsed() + seconds

    def in_outage(self) -> bool:
        faults = self.faults
        if not faults.outage:
            return False
        if self.outage_until is not None and self.clock.elapsed() >= self.outage_until:
            with self.lock:
                self.faults = replace(self.faults, outage=False)
                self.outage_until = None
            return False
        return True

    def chance(self, probability: float) -> bool:
        return probability > 0 and (probability >= 1 or self.fault_rng.random() < probability)

    def put_registration(self, registration: WebhookRegistration) -> None:
        with self.lock:
            self.registrations[registration.name] = registration

    def deactivate_registration(self, name: str) -> None:
        with self.lock:
            reg = self.registrations.get(name)
            if reg is not None:
                self.registrations[name] = replace(reg, active=False)

    # ------------------------------------------------------------------ wire shapes (camelCase
    # JSON)

    def product_json(self, p: Product) -> dict[str, Any]:
        return {
            "productNumber": p.product_number,
            "productName": p.product_name,
            "productNotes": p.product_notes,
            "unit": p.unit,
            "ean": p.ean,
            "vatPercent": p.vat_percent,
            "customsCommodityCode": p.customs_commodity_code,
            "supplyMode": p.supply_mode,
            "phaseOut": p.phase_out,
            "productGroup": p.product_group,
            "changedDate": p.changed,
        }

    def customer_json(self, c: Customer) -> dict[str, Any]:
        return {
            "customerNumber": c.customer_number,
            "customerType": c.customer_type,
            "name": c.name,
            "lastName": c.last_name,
            "organizationNumber": c.organization_number,
            "customerGroup": c.customer_group,
            "priceList": c.price_list,
            "discountList": c.discount_list,
            "salesperson": c.salesperson,
            "email": c.email,
            "phone": c.phone,
            "currency": c.currency,
            "addresses": c.addresses,
            "changedDate": c.changed,
        }

    @staticmethod
    def balance_json(b: Balance) -> dict[str, Any]:
        return {
            "productNumber": b.product_number,
            "warehouse": b.warehouse,
            "physicalBalance": b.physical,
            "reservedQuantity": b.reserved,
            "availableBalance": b.physical - b.reserved,
            "changedDate": b.changed,
        }

    @staticmethod
    def order_light_json(o: Order) -> dict[str, Any]:
        return {
            "orderNumber": o.order_number,
            "orderNumberExternal": o.order_number_external,
            "status": o.status,
            "changedDate": o.changed,
        }

    def order_json(self, o: Order) -> dict[str, Any]:
        header = {
            **o.header,
            "orderNumber": o.order_number,
            "status": o.status,
            "orderDate": o.order_date,
            "expectedDeliveryDate": o.expected_delivery_date,
            "changedDate": o.changed,
        }
        rows = []
        for r in o.rows:
            delivery = {
                "quantity": r.delivered,
                "unit": r.sales_data.get("unit"),
                "unitPrice": r.sales_data.get("unitPrice"),
                "vatPercent": r.sales_data.get("vatPercent"),
                "currency": r.sales_data.get("currency"),
                "unitExplicitCost": r.sales_data.get("unitExplicitCost"),
                "listPrice": r.sales_data.get("listPrice"),
            }
            rows.append(
                {
                    "position": r.position,
                    "rowOperation": r.row_operation,
                    "product": dict(r.product),
                    "salesData": dict(r.sales_data),
                    "supplyMode": r.supply_mode,
                    "batchNumber": r.batch_number,
                    "warehouse": r.warehouse,
                    "shipDate": r.ship_date,
                    "expectedDeliveryDate": r.expected_delivery_date,
                    "deliveryData": delivery,
                    **r.extra,
                }
            )
        shipments = [
            {
                "shipmentNumber": s.shipment_number,
                "carrier": s.carrier,
                "trackingNumber": s.tracking_number,
                "trackingUrl": s.tracking_url,
                "shipDate": s.ship_date,
                "rows": [dict(x) for x in s.rows],
            }
            for s in o.shipments
        ]
        return {
            **self.order_light_json(o),
            "expectedDeliveryDate": o.expected_delivery_date,
            "orderHeader": header,
            "orderRows": rows,
            "shipments": shipments,
        }

    def price_json(
        self, customer: Customer, number: str, quote: PriceQuote, changed_ms: int
    ) -> dict[str, Any]:
        product = self.products[number]
        camp = quote.campaign
        fmt = self.clock.fmt
        return {
            "productNumber": number,
            "customerNumber": customer.customer_number,
            "priceList": customer.price_list,
            "unitPrice": quote.unit_price,
            "listPrice": quote.list_price,
            "discountPercent": quote.discount_percent,
            "campaignPrice": camp.price if camp else None,
            "campaignFrom": fmt(camp.valid_from_ms) if camp else None,
            "campaignTo": fmt(camp.valid_to_ms) if camp else None,
            "currency": customer.currency,
            "vatPercent": product.vat_percent,
            "priceSource": quote.source,
            "validFrom": fmt(camp.valid_from_ms)
            if camp and quote.source == "Campaign"
            else fmt(changed_ms),
            "validTo": fmt(camp.valid_to_ms) if camp and quote.source == "Campaign" else None,
            "changedDate": fmt(changed_ms),
        }

    def snapshot_counts(self) -> dict[str, int]:
        with self.lock:
            return {
                "products": len(self.products),
                "customers": len(self.customers),
                "balances": len(self.balances),
                "orders": len(self.orders),
                "priceLists": len(self.price_lists),
                "discountLists": len(self.discount_lists),
                "campaigns": len(self.campaigns),
            }


def _strip_type(address: dict[str, Any] | None) -> dict[str, Any] | None:
    if address is None:
        return None
    return {k: v for k, v in address.items() if k != "type"}
