"""Balance freshness and economy: how soon a stock change in Extend is confirmed locally and told to
the shop, and how many GET ProductAvailability calls that costs.

The simulator runs in this process (it is Extend; a change's instant is taken when its
notifications are raised, i.e. when they leave for the webhook dispatcher); the connector runs as
`python -m extend_connector run` in its own process; the shop's webhook receiver runs here.
"Confirmed" is observed from here by polling the connector's SQLite file every 20 ms for the new
available balance (balances are written only by a fetch: balance_apply_notification_value is off).

Phases: a trickle (5 changes/s for 20 s, each on its own product), a burst (1,000 changes
within one second, on 1,000 other products: ten operations of 100 moves, 0.1 s apart) and a
flood (10,000 notifications in 10 s: 20 operations of 500 moves, 0.5 s apart, over 2,000
products, each moved five times; measured: seconds after the flood's last move until every one
of those products is confirmed at its final value).
Baselines, computed analytically from the simulator's default heavy-group limit (60 calls/60 s):
fetch per notification, and polling the whole catalogue every 60 s.
"Shop" is when the shop's webhook receiver (here) got the product's `stock.changed`; a phase
waits for every one of them within its time (the `shop told` column), not only for the first.
Targets: p99 < 1.5 s trickle, < 3 s burst; <= 20 calls per 1,000 notifications; the shop
p99 <= 2 s trickle, <= 4 s burst; the flood all equal <= 5 s after it ends (issue #13).

Run: .venv/bin/python benchmarks/balances.py [--products 3000]
"""

from __future__ import annotations

import argparse
import math
import random
import sqlite3
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    PYTHON,
    connector_env,
    free_port,
    ms,
    percentile,
    print_table,
    process,
    write_results,
)

from extend_connector.demo.observe import NotificationTap
from extend_connector.demo.receiver import ShopInbox, serve_shop_inbox
from extend_connector.simulator import (
    Notification,
    SimulatorConfig,
    WebhookRegistration,
    run_in_thread,
)

SECRET = "bench-webhook-secret"
SHOP_SECRET = "whsec_YmVuY2gtc2hvcC13ZWJob29rLXNlY3JldC0zMmI="
WAREHOUSE = "MainWarehouse"
HEAVY_LIMIT_PER_SECOND = 1.0  # the simulator's default heavy group: 60 calls / 60 s


class Watch:
    """Pending changes: product -> (raised at, expected available); confirmations seen from
    outside."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self.expected: dict[str, float] = {}
        self.raised: dict[str, float] = {}
        self.confirmed: dict[str, float] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def on_batch(self, batch: list[Notification], raised: float) -> None:
        with self.lock:
            for n in batch:
                if n.action == "AvailableBalanceChanged":
                    number = n.details["ProductNumber"]
                    if number in self.expected and number not in self.raised:
                        self.raised[number] = raised

    def poll(self) -> None:
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5)
        try:
            while not self.stop.wait(0.02):
                with self.lock:
                    waiting = [p for p in self.expected if p not in self.confirmed]
                if not waiting:
                    continue
                now = time.monotonic()
                for start in range(0, len(waiting), 500):
                    chunk = waiting[start : start + 500]
                    rows = conn.execute(
                        "SELECT product_number, available FROM balances WHERE warehouse = ? AND "
                        f"product_number IN ({','.join('?' * len(chunk))})",
                        [WAREHOUSE, *chunk],
                    ).fetchall()
                    with self.lock:
                        for number, available in rows:
                            if abs(float(available) - self.expected[number]) < 1e-9:
                                self.confirmed.setdefault(number, now)
        finally:
            conn.close()


def run_phase(
    name: str,
    sim: Any,
    tap: NotificationTap,
    watch: Watch,
    inbox: ShopInbox,
    products: list[str],
    ops: list[tuple[float, list[str]]],
    wait: float,
) -> dict[str, Any]:
    """Apply stock moves at the given offsets; wait for confirmation; figures for the phase."""
    state = sim.state
    calls_before = state.calls.get("GET /ProductAvailability", 0)
    notes_before = tap.count("AvailableBalanceChanged")
    inbox.drain()
    with watch.lock:
        watch.expected.clear()
        watch.raised.clear()
        watch.confirmed.clear()
        with state.lock:
            for _, group in ops:
                for p in group:
                    b = state.balances.get(p + "\x00" + WAREHOUSE)
                    watch.expected[p] = (b.physical - b.reserved if b else 0.0) + 7.0
    start = time.monotonic()
    for offset, group in ops:
        delay = start + offset - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        state.move_stock([{"productNumber": p, "warehouse": WAREHOUSE, "delta": 7} for p in group])
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        with watch.lock:
            if len(watch.confirmed) >= len(watch.expected):
                break
        time.sleep(0.1)
    # The shop's webhooks trail the confirmation: wait for every changed product's event (within
    # the phase's time), so the shop figures cover every change, not only the first ones told.
    time.sleep(0.2)
    shop_deadline = max(deadline, time.monotonic() + 1.0)
    while time.monotonic() < shop_deadline:
        with watch.lock:
            raised_now = dict(watch.raised)
        told = sum(1 for p, at in raised_now.items() if (inbox.arrived(f"sku:{p}") or -1.0) >= at)
        if told >= len(watch.expected):
            break
        time.sleep(0.1)
    events = inbox.drain()
    with watch.lock:
        raised, confirmed = dict(watch.raised), dict(watch.confirmed)
    to_local = [confirmed[p] - raised[p] for p in confirmed if p in raised]
    shop_first: dict[str, float] = {}
    for e in events:
        number = e.key.removeprefix("sku:")
        if number in raised and e.arrived >= raised[number]:
            shop_first.setdefault(number, e.arrived)
    to_shop = [shop_first[p] - raised[p] for p in shop_first]
    notes = tap.count("AvailableBalanceChanged") - notes_before
    calls = state.calls.get("GET /ProductAvailability", 0) - calls_before
    return {
        "phase": name,
        "changes": len(watch.expected),
        "notifications": notes,
        "availability_calls": calls,
        "calls_per_1000_notifications": 1000 * calls / notes if notes else None,
        "confirmed": len(to_local),
        "shop_told": len(to_shop),
        "local_p50": percentile(to_local, 50),
        "local_p99": percentile(to_local, 99),
        "shop_p50": percentile(to_shop, 50),
        "shop_p99": percentile(to_shop, 99),
    }


def run_flood(
    sim: Any, tap: NotificationTap, watch: Watch, products: list[str], moves: int, seconds: float
) -> dict[str, Any]:
    """`moves` stock moves spread over `seconds` (20 operations) on 2,000 products (or fewer);
    when every product was confirmed at its final value, counted from the last move."""
    state = sim.state
    chosen = products[: min(2000, len(products))]
    ops = 20
    per_op = max(1, moves // ops)
    schedule = [[chosen[(i * per_op + j) % len(chosen)] for j in range(per_op)] for i in range(ops)]
    calls_before = state.calls.get("GET /ProductAvailability", 0)
    notes_before = tap.count("AvailableBalanceChanged")
    with watch.lock:
        watch.expected.clear()
        watch.raised.clear()
        watch.confirmed.clear()
        with state.lock:
            for number in chosen:
                b = state.balances.get(number + "\x00" + WAREHOUSE)
                watch.expected[number] = b.physical - b.reserved if b else 0.0
        for group in schedule:
            for number in group:
                watch.expected[number] += 1.0
    start = time.monotonic()
    for i, group in enumerate(schedule):
        delay = start + i * seconds / ops - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        state.move_stock([{"productNumber": p, "warehouse": WAREHOUSE, "delta": 1} for p in group])
    ended = time.monotonic()
    deadline = ended + 120
    while time.monotonic() < deadline:
        with watch.lock:
            if len(watch.confirmed) >= len(watch.expected):
                break
        time.sleep(0.1)
    with watch.lock:
        confirmed = dict(watch.confirmed)
    notes = tap.count("AvailableBalanceChanged") - notes_before
    calls = state.calls.get("GET /ProductAvailability", 0) - calls_before
    all_equal = len(confirmed) >= len(chosen)
    return {
        "phase": "flood",
        "moves": per_op * ops,
        "products": len(chosen),
        "fired_seconds": ended - start,
        "notifications": notes,
        "availability_calls": calls,
        "calls_per_1000_notifications": 1000 * calls / notes if notes else None,
        "confirmed": len(confirmed),
        "all_equal_after_end": max(0.0, max(confirmed.values()) - ended) if all_equal else None,
    }


def baselines(
    trickle_count: int, trickle_rate: float, burst_count: int, catalogue: int, page_size: int
) -> dict[str, Any]:
    """Analytical: the naive strategies under the same heavy-group limit (1 call/s)."""
    # Fetch per notification: one call each; served at most 1/s, so the k-th change of a trickle
    # at r/s waits k*(1 - r_serve/r)... i.e. k/serve - k/r seconds; a burst's k-th waits k/serve.
    serve = HEAVY_LIMIT_PER_SECOND
    trickle_waits = [max(0.0, k / serve - k / trickle_rate) for k in range(trickle_count)]
    burst_waits = [k / serve for k in range(burst_count)]
    polls_per_minute = math.ceil(catalogue / page_size)  # a full catalogue read every 60 s
    pages = math.ceil(catalogue / page_size)
    return {
        "flood_fetch_per_notification_after_end": 10_000 / serve - 10.0,
        "flood_poll_every_60s_after_end": 60.0 + pages / serve,
        "method": "analytical (heavy group 60 calls/60 s; polling reads the whole catalogue "
        f"in pages of {page_size} every 60 s; a change waits uniformly 0-60 s for the next poll)",
        "fetch_per_notification": {
            "calls_per_1000_notifications": 1000.0,
            "trickle_p50": percentile(trickle_waits, 50),
            "trickle_p99": percentile(trickle_waits, 99),
            "burst_p50": percentile(burst_waits, 50),
            "burst_p99": percentile(burst_waits, 99),
        },
        "poll_every_60s": {
            "calls_per_1000_notifications_trickle": 1000 * polls_per_minute / (trickle_rate * 60),
            "calls_per_1000_notifications_burst": 1000 * polls_per_minute / burst_count,
            "p50": 30.0,
            "p99": 59.4,
        },
    }


def s_or_dash(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f} s"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--products", type=int, default=3000)
    parser.add_argument("--trickle-rate", type=float, default=5.0)
    parser.add_argument("--trickle-seconds", type=float, default=20.0)
    parser.add_argument("--burst", type=int, default=1000)
    parser.add_argument("--flood", type=int, default=10_000, help="moves in the flood phase")
    parser.add_argument("--flood-seconds", type=float, default=10.0)
    parser.add_argument(
        "--page-size",
        type=int,
        default=None,
        help="the connector's extend.dialect.page_size (default: its own, 100)",
    )
    args = parser.parse_args()
    trickle_count = int(args.trickle_rate * args.trickle_seconds)
    if trickle_count + args.burst > args.products:
        parser.error(
            "need products >= trickle changes + burst changes (each change has its own product)"
        )
    with tempfile.TemporaryDirectory(prefix="bench-balances-") as name:
        tmp = Path(name)
        port, shop_port = free_port(), free_port()
        config = SimulatorConfig(
            seed=3,
            products=args.products,
            customers=5,
            warehouses=(WAREHOUSE, "TEST"),
            time_scale=0.02,
        )
        config = replace(
            config,
            webhooks=(
                WebhookRegistration(
                    callback_url=f"http://127.0.0.1:{port}/webhooks/extend", secret=SECRET
                ),
            ),
        )
        inbox = ShopInbox(secret=SHOP_SECRET, keep_events=True)
        with run_in_thread(config) as sim, serve_shop_inbox(inbox, shop_port) as shop_url:
            watch = Watch(tmp / "data" / "extend-connector.db")
            tap = NotificationTap(sim, on_batch=watch.on_batch)
            env = connector_env(
                port=port,
                data_dir=tmp / "data",
                base_url=sim.base_url,
                token=sim.token,
                webhook_secret=SECRET,
                shop_url=shop_url,
                extra={
                    "EXTEND_CONNECTOR_WEBSHOP__WEBHOOK_SECRET": SHOP_SECRET,
                    "EXTEND_CONNECTOR_EXTEND__WAREHOUSES": WAREHOUSE,
                    "EXTEND_CONNECTOR_SCOPE__PRODUCTS": "off",
                    "EXTEND_CONNECTOR_SCOPE__PRICES": "off",
                    "EXTEND_CONNECTOR_SCOPE__CUSTOMERS": "off",
                    **(
                        {"EXTEND_CONNECTOR_EXTEND__DIALECT__PAGE_SIZE": str(args.page_size)}
                        if args.page_size
                        else {}
                    ),
                },
            )
            with process(
                "connector",
                [PYTHON, "-m", "extend_connector", "run"],
                env=env,
                log_dir=tmp,
                health_url=f"http://127.0.0.1:{port}/healthz",
            ):
                # The first start loads every balance; wait for it before measuring.
                with sim.state.lock:
                    want = sum(1 for b in sim.state.balances.values() if b.warehouse == WAREHOUSE)
                deadline = time.monotonic() + 180
                loaded = 0
                while time.monotonic() < deadline:
                    try:
                        with sqlite3.connect(f"file:{watch.db_path}?mode=ro", uri=True) as conn:
                            loaded = conn.execute(
                                "SELECT count(*) FROM balances WHERE warehouse = ?", [WAREHOUSE]
                            ).fetchone()[0]
                    except sqlite3.Error:
                        loaded = 0
                    if loaded >= want:
                        break
                    time.sleep(0.5)
                time.sleep(2.0)
                poller = threading.Thread(target=watch.poll, daemon=True)
                poller.start()
                numbers = sorted(sim.state.products)
                random.Random(5).shuffle(numbers)
                trickle = [(i / args.trickle_rate, [numbers[i]]) for i in range(trickle_count)]
                burst_products = numbers[trickle_count : trickle_count + args.burst]
                step = max(1, args.burst // 10)
                burst = [(i / 10, burst_products[i * step : (i + 1) * step]) for i in range(10)]
                phases = [
                    run_phase("trickle", sim, tap, watch, inbox, numbers, trickle, wait=30),
                    run_phase("burst", sim, tap, watch, inbox, numbers, burst, wait=60),
                ]
                # The flood's products: the ones the trickle and the burst did not move first.
                flood = run_flood(sim, tap, watch, numbers[::-1], args.flood, args.flood_seconds)
                watch.stop.set()
                poller.join(5)
    base = baselines(trickle_count, args.trickle_rate, args.burst, args.products, 100)
    rows = []
    for ph in phases:
        rows.append(
            [
                f"connector: {ph['phase']}",
                str(ph["notifications"]),
                str(ph["availability_calls"]),
                f"{ph['calls_per_1000_notifications']:.1f}"
                if ph["calls_per_1000_notifications"]
                else "-",
                f"{ph['confirmed']}/{ph['changes']}",
                f"{ph['shop_told']}/{ph['changes']}",
                ms(ph["local_p50"]),
                ms(ph["local_p99"]),
                ms(ph["shop_p50"]),
                ms(ph["shop_p99"]),
            ]
        )
    fpn = base["fetch_per_notification"]
    rows.append(
        [
            "baseline fetch/notification: trickle",
            "",
            "",
            "1000.0",
            "",
            "",
            ms(fpn["trickle_p50"]),
            ms(fpn["trickle_p99"]),
            "",
            "",
        ]
    )
    rows.append(
        [
            "baseline fetch/notification: burst",
            "",
            "",
            "1000.0",
            "",
            "",
            ms(fpn["burst_p50"]),
            ms(fpn["burst_p99"]),
            "",
            "",
        ]
    )
    poll = base["poll_every_60s"]
    rows.append(
        [
            "baseline poll every 60 s: trickle / burst",
            "",
            "",
            f"{poll['calls_per_1000_notifications_trickle']:.1f} / "
            f"{poll['calls_per_1000_notifications_burst']:.1f}",
            "",
            "",
            "30000.0 ms",
            "59400.0 ms",
            "",
            "",
        ]
    )
    rows.append(
        [
            f"connector: flood ({flood['moves']:,} moves in {flood['fired_seconds']:.1f} s)",
            str(flood["notifications"]),
            str(flood["availability_calls"]),
            f"{flood['calls_per_1000_notifications']:.1f}"
            if flood["calls_per_1000_notifications"]
            else "-",
            f"{flood['confirmed']}/{flood['products']}",
            "",
            "all equal after the end:",
            s_or_dash(flood["all_equal_after_end"]),
            "",
            "",
        ]
    )
    rows.append(
        [
            "baseline flood: fetch/notification / poll every 60 s",
            "",
            "",
            "",
            "",
            "",
            "all equal after the end:",
            f"{base['flood_fetch_per_notification_after_end']:.0f} s / "
            f"{base['flood_poll_every_60s_after_end']:.0f} s",
            "",
            "",
        ]
    )
    print_table(
        "Balance freshness and economy (baselines analytical)",
        [
            "strategy",
            "notifications",
            "ProductAvailability calls",
            "calls / 1,000",
            "confirmed",
            "shop told",
            "local p50",
            "local p99",
            "shop p50",
            "shop p99",
        ],
        rows,
    )
    trickle_p, burst_p = phases
    targets = {
        "trickle_p99<1.5s": trickle_p["local_p99"] is not None
        and trickle_p["local_p99"] < 1.5
        and trickle_p["confirmed"] == trickle_p["changes"],
        "burst_p99<3s": burst_p["local_p99"] is not None
        and burst_p["local_p99"] < 3.0
        and burst_p["confirmed"] == burst_p["changes"],
        "calls<=20/1000": all((ph["calls_per_1000_notifications"] or 0) <= 20 for ph in phases),
        "shop_trickle_p99<=2s": trickle_p["shop_p99"] is not None
        and trickle_p["shop_p99"] <= 2.0
        and trickle_p["shop_told"] == trickle_p["changes"],
        "flood_all_equal<=5s": flood["all_equal_after_end"] is not None
        and flood["all_equal_after_end"] <= 5.0,
        "shop_burst_p99<=4s": burst_p["shop_p99"] is not None
        and burst_p["shop_p99"] <= 4.0
        and burst_p["shop_told"] == burst_p["changes"],
    }
    print("targets:", ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in targets.items()))
    path = write_results(
        "balances",
        {
            "command": " ".join(["benchmarks/balances.py", *sys.argv[1:]]),
            "settings": vars(args),
            "phases": [*phases, flood],
            "baselines": base,
            "targets": targets,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
