"""Freshness after an Extend outage ends: how long after Extend answers again the shop's view of
stock (`GET /v1/stock`) equals Extend's.

The simulator runs as its own process (its default rate limits, webhooks signed and sent to the
connector); the connector is `python -m extend_connector run` (role `all`, SQLite, orders and
stock in scope) in its own process. After the first start's balance load, each cycle:

1. starts a full outage of Extend's API (`POST /_sim/outage`: every /api call answers 503);
2. moves stock in Extend during it (`POST /_sim/stock/bulk` every 2 s, each move one
   `AvailableBalanceChanged` webhook, which keeps arriving: only the API is down) and waits
   until every webhook was delivered, so the connector knows the balances are stale but cannot
   fetch them;
3. ends the outage (`DELETE /_sim/outage`) and polls `/v1/stock` every 0.1 s until every
   balance equals Extend's: the measured time runs from the DELETE's answer to that poll.

Baseline (same run, per cycle): the time the flush would wait after the outage's end if it did
not wake early: its next attempt due one observed retry interval after its last attempt during
the outage (the instants of `GET /ProductAvailability` calls, polled from the simulator's
counters every 20 ms), i.e. the backoff it had reached; the policy's cap (`flows/retry.py`
`balances.flush`) is reported beside it. Ratio baseline / measured. Target: fresh within 3 s
in every cycle (issue #13).

Run: .venv/bin/python benchmarks/outage_freshness.py [--cycles 3 --outage-seconds 12]
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from statistics import median
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx2
from common import (
    PYTHON,
    Sim,
    connector_env,
    free_port,
    print_table,
    process,
    simulator_argv,
    stock_mismatches,
    write_results,
)

SECRET = "bench-webhook-secret"
SHOP_TOKEN = "bench-shop-token"
WAREHOUSES = ("MainWarehouse", "GreenWarehouse")
ENDPOINT = "GET /ProductAvailability"
TARGET_SECONDS = 3.0


class ProbeWatch:
    """Instants of the flush's `GET /ProductAvailability` calls, from the simulator's counter."""

    def __init__(self, sim: Sim, interval: float = 0.02) -> None:
        self.sim, self.interval = sim, interval
        self.calls: list[float] = []
        self.count: int | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.lock = threading.Lock()

    def _run(self) -> None:
        while not self.stop.is_set():
            n = int(self.sim.counters()["endpoints"].get(ENDPOINT, 0))
            now = time.monotonic()
            with self.lock:
                if self.count is not None and n > self.count:
                    self.calls.extend([now] * (n - self.count))
                self.count = n
            self.stop.wait(self.interval)

    def between(self, start: float, end: float) -> list[float]:
        with self.lock:
            return [t for t in self.calls if start <= t <= end]

    def __enter__(self) -> ProbeWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)


def flush_policy() -> tuple[float | None, bool]:
    """The balance flush's backoff cap and whether it honours Extend's Retry-After, as main
    defines them (`flows/retry.py`; (None, True) when they cannot be read)."""
    try:
        from extend_connector.flows import retry

        policy = retry.DEFAULTS[retry.BALANCES_FLUSH]
        return float(policy.cap_seconds), bool(policy.honour_retry_after)
    except Exception:  # the figures are informative; the measurement does not depend on them
        return None, True


def outage_retry_after(sim: Sim) -> float | None:
    """The Retry-After Extend sends on its outage answers (one API call of our own)."""
    r = httpx2.get(
        f"{sim.api_url}/Products/none",
        headers={"Authorization": "Bearer sim-token"},
        timeout=10,
    )
    value = r.headers.get("retry-after")
    return float(value) if r.status_code == 503 and value else None


def cycle(
    n: int,
    sim: Sim,
    url: str,
    watch: ProbeWatch,
    products: list[str],
    args: argparse.Namespace,
    policy: tuple[float | None, bool],
) -> dict[str, Any]:
    rnd = random.Random(n)
    sim("POST", "/outage", {})
    began = time.monotonic()
    retry_after = outage_retry_after(sim)
    moves = 0
    while time.monotonic() - began < args.outage_seconds:
        batch = [
            {
                "productNumber": rnd.choice(products),
                "warehouse": rnd.choice(WAREHOUSES),
                "delta": rnd.choice([-3, -1, 2, 5]),
            }
            for _ in range(args.moves)
        ]
        sim("POST", "/stock/bulk", {"moves": batch})
        moves += len(batch)
        time.sleep(2.0)
    sim("GET", "/deliveries?wait=20&limit=1")  # every webhook of the moves delivered
    truth = sim.balances(WAREHOUSES)
    with httpx2.Client(timeout=30) as http:
        stale = stock_mismatches(http, url, SHOP_TOKEN, truth)
        sim("DELETE", "/outage")
        ended = time.monotonic()
        fresh_at: float | None = None
        polls = 0
        while time.monotonic() - ended < args.wait:
            polls += 1
            if stock_mismatches(http, url, SHOP_TOKEN, truth) == 0:
                fresh_at = time.monotonic()
                break
            time.sleep(0.1)
    time.sleep(0.1)  # the probe watch's last sample
    during = watch.between(began, ended)
    after = watch.between(ended, time.monotonic())
    gaps = [b - a for a, b in itertools.pairwise(during)]
    cap, honours = policy
    # The wait after the flush's last attempt in the outage, if nothing woke it early: the
    # interval it had reached (seen between its attempts), or, with one attempt only, what its
    # policy makes of the outage's answer (Retry-After when honoured, else the cap).
    if gaps:
        wait: float | None = gaps[-1]
    elif honours and retry_after:
        wait = max(retry_after, cap or 0.0)
    else:
        wait = cap
    baseline = None if wait is None or not during else max(0.0, during[-1] + wait - ended)
    measured = None if fresh_at is None else fresh_at - ended
    return {
        "cycle": n,
        "outage_seconds": ended - began,
        "moves": moves,
        "stale_at_end": stale,
        "balances": len(truth),
        "seconds_to_fresh": measured,
        "polls": polls,
        "probes_during_outage": len(during),
        "probe_gaps": [round(g, 3) for g in gaps],
        "last_probe_interval": gaps[-1] if gaps else None,
        "retry_after_in_outage": retry_after,
        "wait_after_last_attempt": wait,
        "first_attempt_after_end": after[0] - ended if after else None,
        "baseline_seconds": baseline,
        "ratio_baseline_over_measured": baseline / measured if baseline and measured else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--outage-seconds", type=float, default=12.0)
    parser.add_argument("--moves", type=int, default=20, help="Stock moves every 2 s of outage.")
    parser.add_argument("--products", type=int, default=200)
    parser.add_argument(
        "--wait", type=float, default=90.0, help="Longest wait for freshness per cycle (s)."
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-outage-") as name:
        tmp = Path(name)
        port, sim_port = free_port(), free_port()
        with process(
            "simulator",
            simulator_argv(
                sim_port,
                products=args.products,
                webhook_url=f"http://127.0.0.1:{port}/webhooks/extend",
                webhook_secret=SECRET,
                warehouses=WAREHOUSES,
            ),
            env={},
            log_dir=tmp,
            health_url=f"http://127.0.0.1:{sim_port}/_sim/health",
        ):
            sim = Sim(sim_port)
            env = connector_env(
                port=port,
                data_dir=tmp / "data",
                base_url=sim.api_url,
                token="sim-token",
                webhook_secret=SECRET,
                extra={
                    "EXTEND_CONNECTOR_WEBSHOP__API_TOKEN": SHOP_TOKEN,
                    "EXTEND_CONNECTOR_EXTEND__WAREHOUSES": ",".join(WAREHOUSES),
                    "EXTEND_CONNECTOR_SCOPE__PRODUCTS": "off",
                    "EXTEND_CONNECTOR_SCOPE__CUSTOMERS": "off",
                    "EXTEND_CONNECTOR_SCOPE__PRICES": "off",
                },
            )
            url = f"http://127.0.0.1:{port}"
            with process(
                "connector",
                [PYTHON, "-m", "extend_connector", "run"],
                env=env,
                log_dir=tmp,
                health_url=f"{url}/healthz",
            ):
                truth = sim.balances(WAREHOUSES)
                deadline = time.monotonic() + 180
                with httpx2.Client(timeout=30) as http:
                    while stock_mismatches(http, url, SHOP_TOKEN, truth):
                        if time.monotonic() > deadline:
                            raise SystemExit("the first balance load did not finish in 180 s")
                        time.sleep(0.5)
                time.sleep(2.0)
                policy = flush_policy()
                products = sorted({p for p, _ in truth})
                with ProbeWatch(sim) as watch:
                    cycles = []
                    for n in range(1, args.cycles + 1):
                        cycles.append(cycle(n, sim, url, watch, products, args, policy))
                        print(
                            f"cycle {n}: fresh {cycles[-1]['seconds_to_fresh']} s after the "
                            f"outage ended (baseline {cycles[-1]['baseline_seconds']} s)",
                            flush=True,
                        )
                        time.sleep(2.0)
            sim.close()
    cap, honours = policy
    measured = [c["seconds_to_fresh"] for c in cycles]
    worst = None if None in measured else max(measured)
    baselines = [c["baseline_seconds"] for c in cycles if c["baseline_seconds"] is not None]
    waits = [c["wait_after_last_attempt"] for c in cycles if c["wait_after_last_attempt"]]
    rows = [
        [
            str(c["cycle"]),
            f"{c['outage_seconds']:.1f} s",
            f"{c['stale_at_end']}/{c['balances']}",
            "not fresh" if c["seconds_to_fresh"] is None else f"{c['seconds_to_fresh']:.2f} s",
            str(c["probes_during_outage"]),
            "-"
            if c["wait_after_last_attempt"] is None
            else f"{c['wait_after_last_attempt']:.2f} s",
            "-"
            if c["first_attempt_after_end"] is None
            else f"{c['first_attempt_after_end']:.2f} s",
            "-" if c["baseline_seconds"] is None else f"{c['baseline_seconds']:.2f} s",
            "-"
            if c["ratio_baseline_over_measured"] is None
            else f"{c['ratio_baseline_over_measured']:.2f}",
        ]
        for c in cycles
    ]
    print_table(
        "Freshness after an Extend outage ends (/v1/stock equal to Extend's)",
        [
            "cycle",
            "outage",
            "stale at end",
            "fresh after",
            "flush attempts in outage",
            "wait after last attempt",
            "first attempt after end",
            "baseline: next backoff expiry",
            "ratio",
        ],
        rows,
    )
    print(
        f"worst {worst if worst is None else f'{worst:.2f} s'} (target <= {TARGET_SECONDS:.0f} s); "
        f"flush policy cap {cap} s, Retry-After honoured: {honours}; Extend's outage answers "
        f"carry Retry-After {cycles[0]['retry_after_in_outage'] if cycles else '-'} s; wait "
        f"after the last attempt (longest) {max(waits) if waits else '-'} s"
    )
    targets = {
        f"fresh<={TARGET_SECONDS:.0f}s": worst is not None and worst <= TARGET_SECONDS,
        "stale_before_end": all(c["stale_at_end"] > 0 for c in cycles),
    }
    print("targets:", ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in targets.items()))
    path = write_results(
        "outage_freshness",
        {
            "command": " ".join(["benchmarks/outage_freshness.py", *sys.argv[1:]]),
            "settings": vars(args),
            "cycles": cycles,
            "worst_seconds_to_fresh": worst,
            "median_seconds_to_fresh": None if worst is None else median(measured),
            "baseline_seconds_median": median(baselines) if baselines else None,
            "baseline_seconds_max": max(baselines) if baselines else None,
            "policy_cap_seconds": cap,
            "policy_honours_retry_after": honours,
            "target_seconds": TARGET_SECONDS,
            "targets": targets,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
