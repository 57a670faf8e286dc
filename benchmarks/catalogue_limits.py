"""Catalogue sync against binding rate limits: how close a first products sync comes to the
shortest time Extend's rate limits allow.

The simulator runs as its own process with its REAL default limits (standard 300/60 s for
single GETs, heavy 60/60 s for lists, write 120/60 s; token buckets that start full), products
and nothing else in scope. The connector is `python -m extend_connector sync products` on a fresh
SQLite file, its settings at their defaults (page size, pacing), run as its own process. This
process polls the simulator's call counters every 20 ms: the measured time is from the first API
call to the last one (the process's own start-up, about 2-3 s of imports, is reported apart).

The floor, from the simulator's own counters and configured limits: for each group, the calls
the sync made (less any refused with 429, which it did not need), less the bucket's full start
(`limit` calls can go at once), at the group's refill rate:

    floor = max over groups of max(0, calls - limit) / (limit / period)

No client can finish sooner. Efficiency = floor / measured (target >= 0.9, issue #13).
Baseline (analytical, the issue's "calls needed / limit"): a client that paces every call at the
group's average rate (calls / (limit / period)), not using the burst; ratio baseline / measured.

Run: .venv/bin/python benchmarks/catalogue_limits.py [--products 600]
(600 products: 600 single GETs, so (600 - 300) / 5 per s = a 60 s floor.)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    PYTHON,
    Sim,
    connector_env,
    free_port,
    print_table,
    process,
    simulator_argv,
    write_results,
)

TARGET = 0.9


class CallWatch:
    """Polls the simulator's API call total: instants of the first and the last call seen."""

    def __init__(self, sim: Sim, interval: float = 0.02) -> None:
        self.sim, self.interval = sim, interval
        self.first: float | None = None
        self.last: float | None = None
        self.total = 0
        self.samples: list[tuple[float, int]] = []  # (instant, total) at every change
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            total = int(self.sim.counters()["total"])
            now = time.monotonic()
            if total != self.total:
                if self.first is None:
                    self.first = now
                self.last, self.total = now, total
                self.samples.append((now, total))
            self.stop.wait(self.interval)

    def rate_between(self, low: int, high: int | None = None) -> float | None:
        """Calls per second while the total went from `low` to `high` (None: the last call)."""
        span = [(t, n) for t, n in self.samples if n >= low and (high is None or n <= high)]
        if len(span) < 2 or span[-1][0] <= span[0][0]:
            return None
        return (span[-1][1] - span[0][1]) / (span[-1][0] - span[0][0])

    def timeline(self) -> list[tuple[float, int]]:
        """(seconds since the first call, calls so far) about once a second."""
        out: list[tuple[float, int]] = []
        for t, n in self.samples:
            at = t - (self.first or t)
            if not out or at - out[-1][0] >= 1.0 or (t, n) == self.samples[-1]:
                out.append((round(at, 2), n))
        return out

    def __enter__(self) -> CallWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)


def floors(
    groups: dict[str, int], throttled: int, limits: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """Per group: calls made and needed, the token-bucket floor and the paced baseline."""
    # 429s are not work the sync needed; they are charged to the busiest group (the one the
    # refusals come from when one group binds; the figure says how many there were).
    busiest = max(groups, key=lambda g: groups[g] / limits[g]["limit"]) if groups else None
    out: dict[str, dict[str, Any]] = {}
    for group, made in groups.items():
        if not made:
            continue
        limit, period = int(limits[group]["limit"]), float(limits[group]["periodSeconds"])
        needed = made - (throttled if group == busiest else 0)
        rate = limit / period
        out[group] = {
            "calls": made,
            "needed": needed,
            "limit": limit,
            "period_seconds": period,
            "floor_seconds": max(0, needed - limit) / rate,
            "paced_seconds": needed / rate,
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--products", type=int, default=600)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-catalogue-limits-") as name:
        tmp = Path(name)
        sim_port = free_port()
        with process(
            "simulator",
            simulator_argv(sim_port, products=args.products, webhook_url=None, webhook_secret="x"),
            env={},
            log_dir=tmp,
            health_url=f"http://127.0.0.1:{sim_port}/_sim/health",
        ):
            sim = Sim(sim_port)
            limits = sim("GET", "/rate-limits")
            env = connector_env(
                port=free_port(),
                data_dir=tmp / "data",
                base_url=sim.api_url,
                token="sim-token",
                webhook_secret="x",
                extra={
                    "EXTEND_CONNECTOR_SCOPE__CUSTOMERS": "off",
                    "EXTEND_CONNECTOR_SCOPE__PRICES": "off",
                },
            )
            # The connector's own default pacing (connector_env switches the fleet bucket off for
            # the capacity benchmarks; on SQLite its default `auto` is off as well).
            env.pop("EXTEND_CONNECTOR_EXTEND__SHARED_RATE_LIMIT")
            sim("POST", "/counters/reset")
            with CallWatch(sim) as watch, (tmp / "sync.log").open("wb") as log:
                started = time.monotonic()
                done = subprocess.run(
                    [PYTHON, "-m", "extend_connector", "sync", "products"],
                    env={**os.environ, **env},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=tmp,
                    timeout=900,
                )
                wall = time.monotonic() - started
                time.sleep(0.1)
            if done.returncode != 0:
                print((tmp / "sync.log").read_text(errors="replace")[-3000:])
                raise SystemExit(f"extend-connector sync products exited {done.returncode}")
            counters = sim.counters()
            held = len(sim("GET", "/state/products"))
            sim.close()
    groups = {g: int(n) for g, n in counters["groups"].items()}
    throttled = int(counters["statuses"].get("429", 0))
    per_group = floors(groups, throttled, limits)
    floor = max(g["floor_seconds"] for g in per_group.values())
    paced = max(g["paced_seconds"] for g in per_group.values())
    assert watch.first is not None and watch.last is not None
    measured = watch.last - watch.first
    efficiency = floor / measured if measured else None
    binding = max(per_group, key=lambda g: per_group[g]["floor_seconds"])
    b = per_group[binding]
    others = sum(v["calls"] for k, v in per_group.items() if k != binding)
    burst = watch.rate_between(0, b["limit"] + others)
    steady = watch.rate_between(
        b["limit"] + sum(v["calls"] for k, v in per_group.items() if k != binding)
    )
    refill = b["limit"] / b["period_seconds"]
    rows = [
        [
            group,
            str(g["calls"]),
            str(g["needed"]),
            f"{g['limit']}/{g['period_seconds']:.0f} s",
            f"{g['floor_seconds']:.1f} s",
            f"{g['paced_seconds']:.1f} s",
        ]
        for group, g in per_group.items()
    ]
    print_table(
        f"Catalogue sync at the simulator's default limits: first sync of {args.products} "
        "products (`extend-connector sync products`)",
        ["group", "calls", "needed (less 429)", "limit", "floor", "paced baseline"],
        rows,
    )
    print(
        f"measured (first to last API call) {measured:.1f} s; process wall {wall:.1f} s; "
        f"429 refusals {throttled}; floor {floor:.1f} s -> efficiency floor / measured "
        f"{efficiency:.2f} (target >= {TARGET}); paced baseline {paced:.1f} s -> ratio "
        f"baseline / measured {paced / measured:.2f}"
    )
    if steady is not None and burst is not None:
        print(
            f"pace while the {binding} bucket's first {b['limit']} calls last: {burst:.2f} "
            f"calls/s; pace once the {binding} bucket's first {b['limit']} calls are spent: "
            f"{steady:.2f} calls/s (refill rate {refill:.2f}/s)"
        )
    targets = {f"efficiency>={TARGET}": efficiency is not None and efficiency >= TARGET}
    print("targets:", ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in targets.items()))
    path = write_results(
        "catalogue_limits",
        {
            "command": " ".join(["benchmarks/catalogue_limits.py", *sys.argv[1:]]),
            "settings": vars(args),
            "limits": limits,
            "counters": counters,
            "products_in_extend": held,
            "groups": per_group,
            "throttled_429": throttled,
            "measured_seconds": measured,
            "process_wall_seconds": wall,
            "floor_seconds": floor,
            "binding_group": binding,
            "burst_calls_per_second": burst,
            "calls_timeline": watch.timeline(),
            "steady_calls_per_second": steady,
            "refill_per_second": refill,
            "efficiency": efficiency,
            "paced_baseline_seconds": paced,
            "baseline_over_measured": paced / measured if measured else None,
            "target_efficiency": TARGET,
            "targets": targets,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
