"""The simulator and the connector as real processes for the acceptance scenarios: the simulator
(its own process, webhooks signed and sent to the connector), the connector as one `all` process
or as one `web` + N `worker` processes on PostgreSQL, and `Stack`, what the scenarios do to them
and read back (orders posted by the shop, stock moved in Extend, balances compared, orders
counted in Extend, parked failures).
"""

from __future__ import annotations

import collections
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2
import sqlalchemy as sa

from support.processes import CLI, Proc

SECRET = "sim-webhook-secret"
AUTH = {"authorization": "Bearer shop-token"}
WAREHOUSES = ("MainWarehouse", "GreenWarehouse")


class Stack:
    """The running simulator (`sim_url`) and connector (`url`, its database `db_url` as a
    SQLAlchemy URL)."""

    def __init__(self, sim_url: str, url: str, db_url: str) -> None:
        self.sim_url, self.url, self.db_url = sim_url, url, db_url
        self.http = httpx2.Client(timeout=30)
        products = self.sim("GET", "/state/products")
        self.products = sorted(p["productNumber"] for p in products)
        # What the shop sells: the simulator phases a few products out, and Extend refuses
        # (409, parked) an order for one of those.
        self.orderable = sorted(p["productNumber"] for p in products if not p.get("phaseOut"))

    def sim(self, method: str, path: str, body: Any = None) -> Any:
        response = self.http.request(method, f"{self.sim_url}/_sim{path}", json=body, timeout=60)
        assert response.status_code < 300, response.text
        return response.json() if response.content else None

    def truth(self) -> dict[tuple[str, str], float]:
        found = {
            (b["productNumber"], b["warehouse"]): float(b["availableBalance"])
            for b in self.sim("GET", "/state/balances")
            if b["warehouse"] in WAREHOUSES
        }
        return {(p, w): found.get((p, w), 0.0) for p in self.products for w in WAREHOUSES}

    def stock(self) -> dict[str, Any]:
        """The connector's `/v1/stock` for every product (pages of 500 merged)."""
        merged: dict[str, Any] = {"items": []}
        for i in range(0, len(self.products), 500):
            response = self.http.get(
                f"{self.url}/v1/stock",
                headers=AUTH,
                params={"productNumbers": ",".join(self.products[i : i + 500]), "pageSize": 500},
            )
            assert response.status_code == 200, response.text
            page = dict(response.json())
            merged = {**page, "items": merged["items"] + page["items"]}
        return merged

    def reachable(self) -> bool:
        return bool(self.stock()["extendReachable"])

    def mismatches(self) -> dict[tuple[str, str], tuple[float | None, float]]:
        local = {
            (item["productNumber"], w["warehouse"]): float(w["available"])
            for item in self.stock()["items"]
            for w in item["warehouses"]
        }
        return {k: (local.get(k), v) for k, v in self.truth().items() if local.get(k) != v}

    def in_extend(self) -> collections.Counter[str]:
        """How many times each shop reference is in Extend (its `orderNumberExternal`)."""
        data: Any = self.sim("GET", "/state/orders")
        items = data["items"] if isinstance(data, dict) else data
        return collections.Counter(str(o.get("orderNumberExternal")) for o in items)

    def counters(self) -> dict[str, Any]:
        """The simulator's /_sim/counters: API calls per endpoint, group and status; webhooks."""
        return dict(self.sim("GET", "/counters"))

    def _query(self, sql: str) -> list[Any]:
        engine = sa.create_engine(self.db_url, poolclass=sa.NullPool)
        try:
            with engine.connect() as conn:
                return list(conn.execute(sa.text(sql)).all())
        finally:
            engine.dispose()

    def mapped(self, refs: list[str]) -> int:
        """How many of `refs` the connector has recorded with an Extend order number."""
        rows = self._query("SELECT shop_ref FROM orders WHERE order_number IS NOT NULL")
        return len({r[0] for r in rows} & set(refs))

    def failures(self) -> list[tuple[str, str, str]]:
        """Open parked failures as (kind, key, reason)."""
        rows = self._query(
            "SELECT kind, key, reason FROM parked_failures WHERE resolved_at IS NULL ORDER BY id"
        )
        return [(str(k), str(key), str(reason)) for k, key, reason in rows]

    def post_orders(self, refs: list[str], threads: int = 8) -> None:
        """The shop posts one single-line order per reference to `/v1/orders`, re-posting what
        got no answer (idempotent on shopRef)."""

        def one(i_ref: tuple[int, str]) -> int:
            i, ref = i_ref
            body = {
                "shopRef": ref,
                "lines": [
                    {
                        "productNumber": self.orderable[i % len(self.orderable)],
                        "quantity": 1,
                        "unitPrice": "12.50",
                    }
                ],
            }
            for _ in range(50):
                try:
                    return self.http.post(
                        f"{self.url}/v1/orders", json=body, headers=AUTH
                    ).status_code
                except httpx2.TransportError:
                    time.sleep(0.2)
            raise AssertionError(f"could not post {ref}")

        with ThreadPoolExecutor(threads) as pool:
            codes = list(pool.map(one, enumerate(refs)))
        assert set(codes) <= {200, 202}, collections.Counter(codes)

    def move_stock(self, count: int, seed: int) -> None:
        """`count` stock moves in Extend in one bulk call: one `AvailableBalanceChanged` each."""
        rnd = random.Random(seed)
        moves = [
            {
                "productNumber": rnd.choice(self.products),
                "warehouse": rnd.choice(WAREHOUSES),
                "delta": rnd.choice([-3, -1, 2, 5, 37]),
            }
            for _ in range(count)
        ]
        self.sim("POST", "/stock/bulk", {"moves": moves})


def simulator(
    tmp: Path,
    port: int,
    sim_port: int,
    *,
    products: int,
    extra: tuple[str, ...] = (),
    warehouses: tuple[str, ...] | None = WAREHOUSES,
) -> Proc:
    """The bundled simulator as Extend, sending its webhooks to the connector on `port`
    (`warehouses` None: the simulator's own default list)."""
    return Proc(
        "simulator",
        [
            *CLI,
            "simulator",
            "--port",
            str(sim_port),
            "--products",
            str(products),
            "--customers",
            "3",
            *(("--warehouses", ",".join(warehouses)) if warehouses is not None else ()),
            "--time-scale",
            "0.01",
            "--webhook-secret",
            SECRET,
            "--webhook-url",
            f"http://127.0.0.1:{port}/webhooks/extend",
            *extra,
        ],
        env={},
        log_dir=tmp,
        health_url=f"http://127.0.0.1:{sim_port}/_sim/health",
    )


def connector_env(tmp: Path, sim_port: int, port: int) -> dict[str, str]:
    """Settings of a connector on `port` against the simulator on `sim_port` (orders and stock;
    products, customers and prices out of scope)."""
    return {
        "EXTEND_CONNECTOR_EXTEND__BASE_URL": f"http://127.0.0.1:{sim_port}/api",
        "EXTEND_CONNECTOR_EXTEND__WEBHOOK_SECRET": SECRET,
        "EXTEND_CONNECTOR_EXTEND__WAREHOUSES": ",".join(WAREHOUSES),
        "EXTEND_CONNECTOR_SERVER__PORT": str(port),
        "EXTEND_CONNECTOR_STORE__DATA_DIR": str(tmp / "data"),
        "EXTEND_CONNECTOR_SCOPE__PRODUCTS": "off",
        "EXTEND_CONNECTOR_SCOPE__CUSTOMERS": "off",
        "EXTEND_CONNECTOR_SCOPE__PRICES": "off",
    }


def web_and_workers(
    tmp: Path, env: dict[str, str], port: int, postgres_url: str, workers: int = 2
) -> tuple[Proc, list[Proc]]:
    """One `web` process (healthy on `port`) and `workers` `worker` processes on one PostgreSQL
    database, each with a stable executor id (`worker-1`, ...) so a restarted worker recovers
    its own jobs. The database must be migrated before they start (they would race on an empty
    one)."""
    shared = {**env, "EXTEND_CONNECTOR_STORE__DATABASE_URL": postgres_url}
    web = Proc(
        "web",
        [*CLI, "run"],
        env={
            **shared,
            "EXTEND_CONNECTOR_ENGINE__ROLE": "web",
            "EXTEND_CONNECTOR_ENGINE__EXECUTOR_ID": "web",
        },
        log_dir=tmp,
        cwd=tmp,
        health_url=f"http://127.0.0.1:{port}/healthz",
    )
    procs = [
        Proc(
            f"worker{i}",
            [*CLI, "run"],
            env={
                **shared,
                "EXTEND_CONNECTOR_ENGINE__ROLE": "worker",
                "EXTEND_CONNECTOR_ENGINE__EXECUTOR_ID": f"worker-{i}",
            },
            log_dir=tmp,
            cwd=tmp,
        )
        for i in range(1, workers + 1)
    ]
    return web, procs
