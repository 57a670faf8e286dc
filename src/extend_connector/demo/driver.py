"""The Extend side of the demo: warehouse staff reserving and picking orders, stock moving, and
chaos.

The driver acts only through the simulator's `/_sim` driving API (as a person in Extend's
back office would cause the change); it reads the simulator's state to see which orders exist.
The chaos schedule switches the simulator's faults at run time, in phases the view names.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx2

from extend_connector.simulator import RunningSimulator


@dataclass(frozen=True, kw_only=True, slots=True)
class ChaosPhase:
    """Faults switched on from `start` to `end` (fractions of the run)."""

    name: str
    start: float
    end: float
    faults: dict[str, Any]
    outage: bool = False


CHAOS: tuple[ChaosPhase, ...] = (
    ChaosPhase(
        name="5xx storm: 20% of Extend calls fail, 20% of hooks duplicated",
        start=0.12,
        end=0.32,
        faults={"error_rate": 0.2, "webhook_duplicate_rate": 0.2},
    ),
    ChaosPhase(
        name="Extend DOWN: every call answers 503", start=0.38, end=0.56, faults={}, outage=True
    ),
    ChaosPhase(
        name="hooks: 25% dropped, 10% duplicated, bursts reordered",
        start=0.62,
        end=0.80,
        faults={"webhook_drop_rate": 0.25, "webhook_duplicate_rate": 0.1, "webhook_reorder": True},
    ),
)
CALM: dict[str, Any] = {
    "error_rate": 0.0,
    "webhook_duplicate_rate": 0.0,
    "webhook_drop_rate": 0.0,
    "webhook_reorder": False,
}


class ExtendDriver:
    """A thread moving orders Registered -> Reserved -> Picked and stock up and down."""

    def __init__(
        self,
        sim: RunningSimulator,
        *,
        ref_prefix: str,
        warehouses: tuple[str, ...],
        products: int,
        chaos: bool,
        duration: float,
        seed: int,
    ) -> None:
        self.sim = sim
        self.ref_prefix = ref_prefix
        self.warehouses = warehouses
        with sim.state.lock:
            self.catalogue = list(sim.state.products)[:products]
        self.rnd = random.Random(seed)
        self.chaos = chaos
        self.duration = duration
        self.phase: ChaosPhase | None = None
        self.reserved = 0
        self.picked = 0
        self.stock_moves = 0
        self.errors = 0
        self._seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = 0.0

    def start(self) -> None:
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="demo-extend-driver", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop moving things and switch every fault off (the system may then settle)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)
        with httpx2.Client(base_url=self.sim.admin_url, timeout=10.0) as http:
            self._calm(http)

    def _calm(self, http: httpx2.Client) -> None:
        http.patch("/faults", json=CALM).raise_for_status()
        http.delete("/outage").raise_for_status()
        self.phase = None

    def _run(self) -> None:
        tick = 0
        with httpx2.Client(base_url=self.sim.admin_url, timeout=10.0) as http:
            while not self._stop.wait(0.5):
                tick += 1
                try:
                    if self.chaos:
                        self._steer(http)
                    self._move_orders(http)
                    if tick % 2 == 0:
                        self._move_stock(http, tick)
                except httpx2.HTTPError:
                    self.errors += 1

    def _steer(self, http: httpx2.Client) -> None:
        at = (time.monotonic() - self._started) / self.duration
        wanted = next((p for p in CHAOS if p.start <= at < p.end), None)
        if wanted is self.phase:
            return
        self._calm(http)
        if wanted is not None:
            if wanted.faults:
                http.patch("/faults", json=wanted.faults).raise_for_status()
            if wanted.outage:
                http.post("/outage", json={"mode": "503"}).raise_for_status()
        self.phase = wanted

    def _move_orders(self, http: httpx2.Client) -> None:
        now = time.monotonic()
        state = self.sim.state
        with state.lock:
            mine = [
                (o.order_number, o.status)
                for o in state.orders.values()
                if (o.order_number_external or "").startswith(self.ref_prefix)
            ]
        for number, status in mine:
            since = self._seen.setdefault(f"{number}:{status}", now)
            # Staff need a moment: reserve a second after the order arrives, pick two after that.
            if status == "Registered" and now - since >= 1.0:
                if http.post(f"/orders/{number}/reserve").status_code == 200:
                    self.reserved += 1
            elif status == "Reserved" and now - since >= 2.0:
                body = {"carrier": "PostNord", "trackingNumber": f"PN{number}SE"}
                if http.post(f"/orders/{number}/pick", json=body).status_code == 200:
                    self.picked += 1

    def _move_stock(self, http: httpx2.Client, tick: int) -> None:
        moves = [
            {
                "productNumber": self.rnd.choice(self.catalogue),
                "warehouse": self.rnd.choice(self.warehouses),
                "delta": self.rnd.choice((-3, -2, -1, 2, 5, 10)),
            }
            for _ in range(4)
        ]
        body = {"moves": moves, "separately": True}
        response = http.post("/stock/bulk", json=body)
        if response.status_code == 200:
            self.stock_moves += int(response.json().get("moved", 0))
