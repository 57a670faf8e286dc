"""Balances end to end, real processes on loopback: the simulator fires notifications at the
connector's webhook inbox, the connector coalesces them into few ProductAvailability calls,
and the shop reads /v1/stock.

One simulator and one connector serve the whole module; the tests run in file order and each
leaves both converged for the next.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from support.dialects import DIALECTS, configure_connector, simulator_args
from support.processes import CLI, Proc, free_port, running, wait_for

pytestmark = pytest.mark.slow

PRODUCTS = 2000
SELL_FROM = "MainWarehouse"
AUTH = {"authorization": "Bearer shop-token"}


class Pair:
    def __init__(
        self, sim: Proc, connector: Proc, sim_url: str, url: str, env: dict[str, str], tmp: Path
    ) -> None:
        self.sim, self.connector, self.sim_url, self.url, self.env, self.tmp = (
            sim,
            connector,
            sim_url,
            url,
            env,
            tmp,
        )
        self.http = httpx2.Client(timeout=60)
        self.products: list[str] = sorted(
            p["productNumber"] for p in self.admin("GET", "/state/products")
        )

    def admin(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        response = self.http.request(
            method, f"{self.sim_url}/_sim{path}", json=body, params=params, timeout=60
        )
        assert response.status_code < 300, response.text
        return response.json() if response.content else None

    def truth(self) -> dict[str, float]:
        found = {
            b["productNumber"]: float(b["availableBalance"])
            for b in self.admin("GET", "/state/balances")
            if b["warehouse"] == SELL_FROM
        }
        return {p: found.get(p, 0.0) for p in self.products}

    def stock(self, numbers: list[str] | None = None) -> dict[str, dict[str, Any]]:
        items: dict[str, dict[str, Any]] = {}
        wanted = numbers or self.products
        for i in range(0, len(wanted), 500):
            response = self.http.get(
                f"{self.url}/v1/stock",
                headers=AUTH,
                params={"productNumbers": ",".join(wanted[i : i + 500]), "pageSize": 500},
            )
            assert response.status_code == 200, response.text
            items.update({item["productNumber"]: item for item in response.json()["items"]})
        return items

    def local(self, numbers: list[str] | None = None) -> dict[str, float]:
        return {p: item["available"] for p, item in self.stock(numbers).items()}

    def mismatches(self, numbers: list[str] | None = None) -> dict[str, tuple[float, float]]:
        truth = self.truth()
        local = self.local(numbers)
        return {p: (local[p], truth[p]) for p in (numbers or self.products) if local[p] != truth[p]}

    def availability_calls(self) -> int:
        return int(self.admin("GET", "/counters")["endpoints"].get("GET /ProductAvailability", 0))

    def deliveries_settled(self) -> None:
        """Wait until the simulator has nothing queued, in flight or waiting for a retry."""
        wait_for(
            lambda: self.admin("GET", "/deliveries", wait=10, limit=1)["idle"],
            timeout=180,
            interval=0.1,
            what="the simulator's webhook deliveries to finish",
        )

    def moves(self, count: int, seed: int, start: int = 0) -> list[dict[str, Any]]:
        rnd = random.Random(seed)
        return [
            {
                "productNumber": self.products[(start + i) % len(self.products)],
                "warehouse": SELL_FROM,
                "delta": rnd.choice([-3, -2, -1, 1, 2, 3, 4]),
            }
            for i in range(count)
        ]


@pytest.fixture(scope="module", params=DIALECTS)
def pair(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Pair]:
    """The whole module runs in the house contract and again in a second dialect."""
    dialect: str = request.param
    tmp = tmp_path_factory.mktemp(f"balances-{dialect}")
    configure_connector(dialect, tmp)
    sim_port, port = free_port(), free_port()
    sim = Proc(
        "simulator",
        [
            *CLI,
            "simulator",
            "--port",
            str(sim_port),
            "--products",
            str(PRODUCTS),
            "--customers",
            "2",
            "--warehouses",
            f"{SELL_FROM},GreenWarehouse",
            "--webhook-url",
            f"http://127.0.0.1:{port}/webhooks/extend",
            "--webhook-batch-size",
            "20",
            "--time-scale",
            "0.01",
            *simulator_args(dialect),
        ],
        env={},
        log_dir=tmp,
        health_url=f"http://127.0.0.1:{sim_port}/_sim/health",
    )
    env = {
        "EXTEND_CONNECTOR_EXTEND__BASE_URL": f"http://127.0.0.1:{sim_port}/api",
        "EXTEND_CONNECTOR_EXTEND__WAREHOUSES": SELL_FROM,
        "EXTEND_CONNECTOR_EXTEND__DIALECT__PAGE_SIZE": "500",
        "EXTEND_CONNECTOR_STORE__DATA_DIR": str(tmp / "data"),
        "EXTEND_CONNECTOR_SERVER__PORT": str(port),
        "EXTEND_CONNECTOR_SCOPE__PRODUCTS": "off",
        "EXTEND_CONNECTOR_SCOPE__CUSTOMERS": "off",
        "EXTEND_CONNECTOR_SCOPE__PRICES": "off",
        # The scheduled sweep stays out of the way; test 2 runs one sweep by hand.
        "EXTEND_CONNECTOR_SYNC__BALANCES_SWEEP_MINUTES": "60",
    }
    connector = Proc(
        "connector",
        [*CLI, "run"],
        env=env,
        log_dir=tmp,
        cwd=tmp,
        health_url=f"http://127.0.0.1:{port}/healthz",
    )
    with running(sim, connector):
        p = Pair(
            sim, connector, f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{port}", env, tmp
        )
        # Only the notifications under test; the first start loads every balance.
        p.admin(
            "PUT",
            "/webhooks/connector",
            {"callbackUrl": f"{p.url}/webhooks/extend", "events": ["AvailableBalanceChanged"]},
        )
        wait_for(
            lambda: not p.mismatches(),
            timeout=90,
            interval=1,
            what="the initial load of every balance",
        )
        try:
            yield p
        finally:
            p.http.close()


def test_a_burst_of_10000_notifications_costs_at_most_one_call_per_50(pair: Pair) -> None:
    pair.admin("POST", "/counters/reset")
    started = time.monotonic()
    for burst in range(
        20
    ):  # 20 x 500 moves within 10 s: 10,000 AvailableBalanceChanged over 2,000 products
        pair.admin("POST", "/stock/bulk", {"moves": pair.moves(500, seed=burst, start=burst * 500)})
        time.sleep(max(0.0, started + (burst + 1) * 0.45 - time.monotonic()))
    fired = time.monotonic() - started
    assert fired < 10
    pair.deliveries_settled()
    wait_for(
        lambda: not pair.mismatches(),
        timeout=120,
        interval=1,
        what="every balance equal to the simulator's",
    )
    converged = time.monotonic() - started
    delivered = pair.admin("GET", "/counters")["webhooks"]
    calls = pair.availability_calls()
    print(
        f"\n10,000 notifications fired in {fired:.1f}s, converged after {converged:.1f}s, "
        f"{calls} ProductAvailability calls ({calls / 10:.1f} per 1,000), deliveries {delivered}"
    )
    assert calls <= 10_000 // 50


def test_dropped_notifications_are_repaired_by_one_sweep(pair: Pair) -> None:
    pair.admin("PATCH", "/faults", {"webhookDropRate": 0.1})
    try:
        pair.admin("POST", "/stock/bulk", {"moves": pair.moves(2000, seed=99)})
        pair.deliveries_settled()
    finally:
        pair.admin("PATCH", "/faults", {"webhookDropRate": 0.0})
    time.sleep(3)  # let the flushes of what did arrive finish
    dropped = pair.admin("GET", "/deliveries", outcome="dropped", limit=1000)["deliveries"]
    assert dropped, "the fault dropped nothing; the test would prove nothing"
    assert pair.mismatches(), "every balance is right without the sweep; the drop hit nothing"
    sweep = Proc(
        "sync", [*CLI, "sync", "balances"], env=pair.env, log_dir=pair.tmp, cwd=pair.tmp
    ).start()
    assert sweep.popen is not None and sweep.popen.wait(120) == 0, sweep.tail()
    assert pair.mismatches() == {}


def test_out_of_order_and_duplicated_notifications_never_leave_an_older_value(pair: Pair) -> None:
    pair.admin("PATCH", "/faults", {"webhookReorder": True, "webhookDuplicateRate": 0.5})
    few = pair.products[:20]
    try:
        for step in range(
            10
        ):  # separate operations: each is its own burst of deliveries, sent in reverse
            pair.admin(
                "POST",
                "/stock/bulk",
                {
                    "moves": [
                        {"productNumber": p, "warehouse": SELL_FROM, "delta": (step % 3) - 1 or 5}
                        for p in few
                    ]
                },
            )
        pair.deliveries_settled()
    finally:
        pair.admin("PATCH", "/faults", {"webhookReorder": False, "webhookDuplicateRate": 0.0})
    wait_for(lambda: not pair.mismatches(few), timeout=30, interval=0.5, what="the newest values")
    time.sleep(2)  # late duplicates and reordered deliveries must not move anything back
    assert pair.mismatches(few) == {}


def test_extend_down_keeps_answering_stale_then_converges(pair: Pair) -> None:
    few = pair.products[100:110]
    before = pair.local(few)
    pair.admin("POST", "/outage", {"mode": "drop"})
    try:
        pair.admin(
            "POST",
            "/stock/bulk",
            {"moves": [{"productNumber": p, "warehouse": SELL_FROM, "delta": 7} for p in few]},
        )
        pair.deliveries_settled()

        def stale_answer() -> bool:
            response = pair.http.get(
                f"{pair.url}/v1/stock", headers=AUTH, params={"productNumbers": ",".join(few)}
            )
            body = response.json()
            return (
                response.status_code == 200
                and body["extendReachable"] is False
                and all(item["freshness"]["stale"] for item in body["items"])
            )

        wait_for(stale_answer, timeout=60, interval=0.5, what="stale answers while Extend is down")
        assert pair.local(few) == before  # the last values, still served
    finally:
        pair.admin("DELETE", "/outage")
    wait_for(
        lambda: not pair.mismatches(few),
        timeout=90,
        interval=0.5,
        what="convergence after the outage",
    )
    assert not any(item["freshness"]["stale"] for item in pair.stock(few).values())
