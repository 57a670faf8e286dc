"""A 90 s outage in which Extend drops every connection, with real processes (issue #12, defect 1).

The simulator closes each /api connection unanswered (`outage_mode: drop`): no status, no
rate-limit headers, no Retry-After reach the connector. Meanwhile the shop posts 80 orders and
stock moves in the simulator (their webhooks still reach the connector). After the outage ends:
every order is in Extend exactly once and every balance equals Extend's within 60 s (the issue's
figure, the deadline of the wait), in one `all` process on SQLite and in `web` + 2 `worker`
processes on PostgreSQL. The web process (which calls Extend for nothing) says
`extendReachable: false` during the outage and `true` after it.

Before the fix the rate budget wedged: the local count reached 0 with no answer to refill it and
the process never called Extend again (0 of 80 orders after 300 s).
"""

from __future__ import annotations

import collections
import random
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2
import pytest
import sqlalchemy as sa

from support.postgres import throwaway_database
from support.processes import CLI, Proc, free_port, running, wait_for

pytestmark = pytest.mark.slow

SECRET = "sim-webhook-secret"
AUTH = {"authorization": "Bearer shop-token"}
WAREHOUSES = ("MainWarehouse", "GreenWarehouse")
PRODUCTS = 40
ORDERS = 80
OUTAGE_SECONDS = 90.0
CONVERGE_SECONDS = 60.0  # after the outage ends (the acceptance figure)


class Stack:
    def __init__(self, sim_url: str, url: str, db_url: str) -> None:
        self.sim_url, self.url, self.db_url = sim_url, url, db_url
        self.http = httpx2.Client(timeout=30)
        self.products = sorted(p["productNumber"] for p in self.sim("GET", "/state/products"))

    def sim(self, method: str, path: str, body: Any = None) -> Any:
        response = self.http.request(method, f"{self.sim_url}/_sim{path}", json=body)
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
        response = self.http.get(
            f"{self.url}/v1/stock",
            headers=AUTH,
            params={"productNumbers": ",".join(self.products), "pageSize": 500},
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

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
        data: Any = self.sim("GET", "/state/orders")
        items = data["items"] if isinstance(data, dict) else data
        return collections.Counter(str(o.get("orderNumberExternal")) for o in items)

    def mapped(self, refs: list[str]) -> int:
        engine = sa.create_engine(self.db_url, poolclass=sa.NullPool)
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    sa.text("SELECT shop_ref FROM orders WHERE order_number IS NOT NULL")
                ).all()
        finally:
            engine.dispose()
        return len({r[0] for r in rows} & set(refs))

    def post_orders(self, refs: list[str]) -> None:
        def one(i_ref: tuple[int, str]) -> int:
            i, ref = i_ref
            body = {
                "shopRef": ref,
                "lines": [
                    {
                        "productNumber": self.products[i % len(self.products)],
                        "quantity": 1,
                        "unitPrice": "12.50",
                    }
                ],
            }
            for _ in range(50):  # a shop re-posts what got no answer (idempotent on shopRef)
                try:
                    return self.http.post(
                        f"{self.url}/v1/orders", json=body, headers=AUTH
                    ).status_code
                except httpx2.TransportError:
                    time.sleep(0.2)
            raise AssertionError(f"could not post {ref}")

        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(one, enumerate(refs)))
        assert set(codes) <= {200, 202}, collections.Counter(codes)

    def move_stock(self, count: int, seed: int) -> None:
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


def _simulator(tmp: Path, port: int, sim_port: int) -> Proc:
    # Rate limits on (the default): the connector learns the groups from the headers, which is
    # what armed the wedge.
    return Proc(
        "simulator",
        [
            *CLI,
            "simulator",
            "--port",
            str(sim_port),
            "--products",
            str(PRODUCTS),
            "--customers",
            "3",
            "--warehouses",
            ",".join(WAREHOUSES),
            "--time-scale",
            "0.01",
            "--webhook-secret",
            SECRET,
            "--webhook-url",
            f"http://127.0.0.1:{port}/webhooks/extend",
        ],
        env={},
        log_dir=tmp,
        health_url=f"http://127.0.0.1:{sim_port}/_sim/health",
    )


def _env(tmp: Path, sim_port: int, port: int) -> dict[str, str]:
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


def _outage_scenario(stack: Stack) -> None:
    wait_for(
        lambda: not stack.mismatches(), 120, interval=1, what="the initial load of every balance"
    )
    wait_for(stack.reachable, 60, interval=0.5, what="extendReachable before the outage")
    refs = [f"D-{uuid.uuid4().hex[:6]}-{i:03d}" for i in range(ORDERS)]
    stack.sim("PATCH", "/faults", {"outage": True, "outage_mode": "drop"})
    started = time.monotonic()
    stack.post_orders(refs[: ORDERS // 2])
    stack.move_stock(60, seed=1)
    # The web process makes no Extend call of its own: it must still learn that Extend is down.
    unreachable_seen = False
    deadline = started + OUTAGE_SECONDS
    posted_rest = moved_again = False
    while time.monotonic() < deadline:
        elapsed = time.monotonic() - started
        if not posted_rest and elapsed > 20:
            stack.post_orders(refs[ORDERS // 2 :])
            posted_rest = True
        if not moved_again and elapsed > 40:
            stack.move_stock(60, seed=2)
            moved_again = True
        unreachable_seen = unreachable_seen or not stack.reachable()
        time.sleep(1.0)
    assert posted_rest and moved_again
    assert stack.in_extend().keys().isdisjoint(refs), "the outage let an order through"
    stack.sim("PATCH", "/faults", {"outage": False})
    ended = time.monotonic()
    try:
        wait_for(
            lambda: stack.mapped(refs) == ORDERS or None,
            CONVERGE_SECONDS,
            interval=1,
            what=f"all {ORDERS} orders in Extend after the outage",
        )
        wait_for(
            lambda: not stack.mismatches(),
            max(1.0, CONVERGE_SECONDS - (time.monotonic() - ended)),
            interval=1,
            what="every balance equal to Extend's after the outage",
        )
    except AssertionError as exc:
        counts = stack.in_extend()
        calls = stack.sim("GET", "/counters").get("endpoints", {})
        raise AssertionError(
            f"{exc}; {stack.mapped(refs)} of {ORDERS} orders mapped, "
            f"{sum(counts[r] for r in refs)} in Extend, {len(stack.mismatches())} balances differ, "
            f"Extend calls answered so far: {calls}"
        ) from None
    converged = time.monotonic() - ended
    counts = stack.in_extend()
    assert {r: counts[r] for r in refs if counts[r] != 1} == {}
    wait_for(stack.reachable, 30, interval=0.5, what="extendReachable after the outage")
    assert unreachable_seen, "extendReachable stayed true through the whole outage"
    print(
        f"\n{ORDERS} orders and every balance converged {converged:.1f}s after a "
        f"{OUTAGE_SECONDS:.0f}s "
        "drop-mode outage"
    )


def test_drop_outage_one_process_sqlite(tmp_path: Path) -> None:
    sim_port, port = free_port(), free_port()
    env = _env(tmp_path, sim_port, port)
    connector = Proc(
        "connector",
        [*CLI, "run"],
        env=env,
        log_dir=tmp_path,
        cwd=tmp_path,
        health_url=f"http://127.0.0.1:{port}/healthz",
    )
    with running(_simulator(tmp_path, port, sim_port), connector):
        _outage_scenario(
            Stack(
                f"http://127.0.0.1:{sim_port}",
                f"http://127.0.0.1:{port}",
                f"sqlite:///{tmp_path / 'data' / 'extend-connector.db'}",
            )
        )


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with throwaway_database("ec_drop") as url:
        yield url


@pytest.mark.postgres
def test_drop_outage_web_and_two_workers_postgres(tmp_path: Path, postgres_url: str) -> None:
    from extend_connector.store import migrate

    migrate(postgres_url)  # once, before the processes start (they would race on an empty database)
    sim_port, port = free_port(), free_port()
    env = {**_env(tmp_path, sim_port, port), "EXTEND_CONNECTOR_STORE__DATABASE_URL": postgres_url}
    web = Proc(
        "web",
        [*CLI, "run"],
        env={
            **env,
            "EXTEND_CONNECTOR_ENGINE__ROLE": "web",
            "EXTEND_CONNECTOR_ENGINE__EXECUTOR_ID": "web",
        },
        log_dir=tmp_path,
        cwd=tmp_path,
        health_url=f"http://127.0.0.1:{port}/healthz",
    )
    workers = [
        Proc(
            f"worker{i}",
            [*CLI, "run"],
            env={
                **env,
                "EXTEND_CONNECTOR_ENGINE__ROLE": "worker",
                "EXTEND_CONNECTOR_ENGINE__EXECUTOR_ID": f"worker-{i}",
            },
            log_dir=tmp_path,
            cwd=tmp_path,
        )
        for i in (1, 2)
    ]
    with running(_simulator(tmp_path, port, sim_port), web, *workers):
        _outage_scenario(
            Stack(
                f"http://127.0.0.1:{sim_port}",
                f"http://127.0.0.1:{port}",
                postgres_url.replace("postgresql://", "postgresql+psycopg://", 1),
            )
        )
    sys.stdout.flush()
