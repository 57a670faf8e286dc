"""The scripted shop: places orders, registers customers, reads stock and prices through `/v1`.

It behaves like a webshop backend would: every order has its own reference and is re-posted
with the same reference until the connector acknowledges it (intake is idempotent on it), so
"placed" means "the connector said it has it". Reads record how fresh the answers said they were.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx2


@dataclass(frozen=True, kw_only=True, slots=True)
class Features:
    """Which parts of the read API this build serves (from its OpenAPI document)."""

    orders: bool
    customers: bool
    stock: bool
    prices: bool
    products: bool

    @classmethod
    def from_openapi(cls, doc: dict[str, Any]) -> Features:
        paths = doc.get("paths") or {}
        return cls(
            orders="post" in (paths.get("/v1/orders") or {}),
            customers="post" in (paths.get("/v1/customers") or {}),
            stock="/v1/stock" in paths,
            prices="/v1/prices" in paths,
            products="/v1/products" in paths,
        )

    def missing(self) -> list[str]:
        names = {
            "orders": "POST /v1/orders",
            "customers": "POST /v1/customers",
            "stock": "GET /v1/stock",
            "prices": "GET /v1/prices",
            "products": "GET /v1/products",
        }
        return [names[k] for k in names if not getattr(self, k)]


@dataclass(kw_only=True)
class ShopStats:
    """What the shop did and saw (read by the view and the self-check)."""

    placed: dict[str, float] = field(
        default_factory=dict
    )  # shop ref -> monotonic time acknowledged
    attempts: int = 0
    rejected: Counter[str] = field(
        default_factory=Counter
    )  # HTTP status -> count (not acknowledged)
    refused: dict[str, str] = field(
        default_factory=dict
    )  # shop ref -> why the connector refused it
    customers_registered: list[str] = field(default_factory=list)
    stock_reads: int = 0
    price_reads: int = 0
    read_errors: int = 0
    last_stock: dict[str, Any] = field(
        default_factory=dict
    )  # freshness fields of the last stock answer
    last_price: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def order_body(
    ref: str, lines: list[tuple[str, int, str]], *, customer_ref: str | None
) -> dict[str, Any]:
    """A shop order as `POST /v1/orders` takes it."""
    body: dict[str, Any] = {
        "shopRef": ref,
        "currency": "SEK",
        "lines": [{"productNumber": p, "quantity": q, "warehouse": w} for p, q, w in lines],
    }
    if customer_ref is not None:
        body["shopCustomerRef"] = customer_ref
    return body


def _freshness(answer: Any) -> dict[str, Any]:
    """The freshness fields of a read answer, wherever the API puts them."""
    item = answer
    if isinstance(answer, dict):
        for key in ("items", "stock", "prices", "data"):
            if isinstance(answer.get(key), list) and answer[key]:
                item = answer[key][0]
                break
    if isinstance(item, list) and item:
        item = item[0]
    if not isinstance(item, dict):
        return {}
    return {k: item[k] for k in ("confirmedAt", "ageSeconds", "age", "stale") if k in item}


class ScriptedShop:
    """Runs in its own thread with its own event loop until `stop()`."""

    def __init__(
        self,
        *,
        base_url: str,
        token: str,
        products: list[str],
        warehouses: tuple[str, ...],
        orders_per_second: float,
        seed: int,
        features: Features,
    ) -> None:
        self.base_url = base_url
        self.headers = {"Authorization": f"Bearer {token}"}
        self.products = products
        self.warehouses = warehouses
        self.rate = orders_per_second
        self.rnd = random.Random(seed)
        self.seed = seed
        self.features = features
        self.stats = ShopStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending: list[
            tuple[str, dict[str, Any]]
        ] = []  # not yet acknowledged: re-posted as is

    # ------------------------------------------------------------------ control

    def start(self) -> None:
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._main()), name="demo-shop", daemon=True
        )
        self._thread.start()

    def stop(self, *, finish_pending_seconds: float = 30.0) -> None:
        """Stop placing new orders; keep re-posting unacknowledged ones for a while, then return."""
        self._finish_by = time.monotonic() + finish_pending_seconds
        self._stop.set()
        if self._thread is not None:
            self._thread.join(finish_pending_seconds + 15)

    @property
    def unacknowledged(self) -> list[str]:
        return [ref for ref, _ in self._pending]

    # ------------------------------------------------------------------ the loop

    async def _main(self) -> None:
        limits = httpx2.Limits(max_connections=32, max_keepalive_connections=32)
        async with httpx2.AsyncClient(
            base_url=self.base_url, headers=self.headers, timeout=10.0, limits=limits
        ) as http:
            tasks = [asyncio.create_task(self._reads(http))]
            if self.features.customers:
                tasks.append(asyncio.create_task(self._customers(http)))
            if self.features.orders:
                await self._orders(http)
            else:
                await asyncio.to_thread(self._stop.wait)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _orders(self, http: httpx2.AsyncClient) -> None:
        interval = 1.0 / self.rate if self.rate > 0 else None
        next_at = time.monotonic()
        n = 0
        in_flight: set[asyncio.Task[None]] = set()
        while not self._stop.is_set():
            if interval is None:
                await asyncio.sleep(0.2)
                continue
            now = time.monotonic()
            if now < next_at:
                await asyncio.sleep(min(next_at - now, 0.2))
                continue
            next_at += interval
            n += 1
            ref = f"DEMO-{self.seed}-{n:05d}"
            task = asyncio.create_task(self._place(http, ref, self._new_order(ref)))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        await asyncio.gather(*in_flight, return_exceptions=True)
        # Orders the connector did not acknowledge yet are re-posted with the same reference.
        while self._pending and time.monotonic() < self._finish_by:
            ref, body = self._pending[0]
            if await self._post(http, ref, body):
                self._pending.pop(0)
            else:
                await asyncio.sleep(0.5)

    def _new_order(self, ref: str) -> dict[str, Any]:
        lines = []
        for product in self.rnd.sample(
            self.products, k=min(len(self.products), self.rnd.randint(1, 3))
        ):
            lines.append((product, self.rnd.randint(1, 3), self.warehouses[0]))
        customer = None
        with self.stats.lock:
            if self.stats.customers_registered and self.rnd.random() < 0.3:
                customer = self.rnd.choice(self.stats.customers_registered)
        return order_body(ref, lines, customer_ref=customer)

    async def _place(self, http: httpx2.AsyncClient, ref: str, body: dict[str, Any]) -> None:
        if not await self._post(http, ref, body):
            self._pending.append((ref, body))

    async def _post(self, http: httpx2.AsyncClient, ref: str, body: dict[str, Any]) -> bool:
        with self.stats.lock:
            self.stats.attempts += 1
        try:
            response = await http.post("/v1/orders", json=body)
        except httpx2.HTTPError:
            with self.stats.lock:
                self.stats.rejected["network"] += 1
            return False
        if response.status_code in (200, 201, 202):
            with self.stats.lock:
                self.stats.placed.setdefault(ref, time.monotonic())
            return True
        with self.stats.lock:
            self.stats.rejected[str(response.status_code)] += 1
            # Another 4xx means the shop sent something wrong: re-posting cannot help, so the
            # order is recorded as refused (the self-check reports it) instead of retried.
            if response.status_code < 500 and response.status_code not in (408, 409, 425, 429):
                self.stats.refused[ref] = f"{response.status_code} {response.text[:200]}"
                return True
        return False

    async def _customers(self, http: httpx2.AsyncClient) -> None:
        n = 0
        while not self._stop.is_set() and n < 10:
            n += 1
            ref = f"DEMO-CUST-{self.seed}-{n}"
            body = {
                "shopRef": ref,
                "name": f"Demo Customer {n}",
                "email": f"demo{n}@example.com",
                "deliveryAddress": {
                    "name": f"Demo Customer {n}",
                    "addressLine1": f"Storgatan {n}",
                    "zipCode": "11122",
                    "city": "Stockholm",
                    "countryCode": "SE",
                },
            }
            try:
                response = await http.post("/v1/customers", json=body)
                if response.status_code in (200, 201, 202):
                    with self.stats.lock:
                        self.stats.customers_registered.append(ref)
            except httpx2.HTTPError:
                pass
            await asyncio.sleep(3.0)

    async def _reads(self, http: httpx2.AsyncClient) -> None:
        while not self._stop.is_set():
            sample = self.rnd.sample(self.products, k=min(5, len(self.products)))
            if self.features.stock:
                await self._read(http, "/v1/stock", {"productNumbers": ",".join(sample)}, "stock")
            if self.features.prices:
                await self._read(http, "/v1/prices", {"productNumbers": ",".join(sample)}, "price")
            await asyncio.sleep(1.0)

    async def _read(
        self, http: httpx2.AsyncClient, path: str, params: dict[str, str], what: str
    ) -> None:
        try:
            response = await http.get(path, params=params)
            ok = response.status_code == 200
            answer = response.json() if ok else None
        except (httpx2.HTTPError, ValueError):
            ok, answer = False, None
        with self.stats.lock:
            if not ok:
                self.stats.read_errors += 1
                return
            if what == "stock":
                self.stats.stock_reads += 1
                self.stats.last_stock = _freshness(answer)
            else:
                self.stats.price_reads += 1
                self.stats.last_price = _freshness(answer)
