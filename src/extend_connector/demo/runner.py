"""`extend-connector demo`: start the world, run the shop and the driver, show it live, settle,
self-check."""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx2
from rich.live import Live

from extend_connector.demo.check import (
    CheckResult,
    balance_mismatches,
    local_balances,
    order_problems,
    run_sweeps,
    settle_until_consistent,
)
from extend_connector.demo.driver import ExtendDriver
from extend_connector.demo.observe import (
    BALANCE_ACTIONS,
    NotificationTap,
    Snapshot,
    db_figures,
    sim_calls,
    sim_orders,
)
from extend_connector.demo.shop import Features, ScriptedShop
from extend_connector.demo.stack import SELL_FROM, SHOP_TOKEN, Stack, running_stack
from extend_connector.demo.view import console_for, plain_line, render

Say = Callable[[str], None]

EXIT_PASSED = 0
EXIT_CHECK_FAILED = 1
EXIT_INTERRUPTED = 130


@dataclass(frozen=True, kw_only=True, slots=True)
class DemoOptions:
    duration: float = 60.0
    seed: int = 1
    products: int = 200
    orders_per_second: float = 2.0
    chaos: bool = False
    data_dir: Path | None = None
    settle_seconds: float = 90.0
    heavy_limit: tuple[int, float] = (60, 60.0)  # Extend's list group: LIMIT calls per SECONDS
    live: bool | None = None  # None: a live view when stdout is a terminal

    def __post_init__(self) -> None:
        if (
            self.duration <= 0
            or self.products < 10
            or self.orders_per_second < 0
            or self.settle_seconds <= 0
        ):
            raise ValueError(
                "need duration > 0, products >= 10, orders_per_second >= 0, settle_seconds > 0"
            )


class _Demo:
    def __init__(self, stack: Stack, options: DemoOptions, features: Features) -> None:
        self.stack = stack
        self.options = options
        self.features = features
        self.ref_prefix = f"DEMO-{options.seed}-"
        self.tap = NotificationTap(stack.sim)
        with stack.sim.state.lock:
            catalogue = [
                p.product_number for p in stack.sim.state.products.values() if not p.phase_out
            ]
        self.shop = ScriptedShop(
            base_url=stack.connector_url,
            token=SHOP_TOKEN,
            products=catalogue[:50],
            warehouses=SELL_FROM,
            orders_per_second=options.orders_per_second,
            seed=options.seed,
            features=features,
        )
        self.driver = ExtendDriver(
            stack.sim,
            ref_prefix=self.ref_prefix,
            warehouses=SELL_FROM,
            products=options.products,
            chaos=options.chaos,
            duration=options.duration,
            seed=options.seed,
        )
        self.started = time.monotonic()

    def snapshot(self) -> Snapshot:
        db = db_figures(self.stack.connector.db, ref_prefix=self.ref_prefix)
        in_sim, shipped = sim_orders(self.stack.sim, self.ref_prefix)
        calls, statuses = sim_calls(self.stack.sim)
        received, refused, _dups = self.stack.shop_inbox.snapshot()
        stats = self.shop.stats
        with stats.lock:
            placed, refused_orders, last_stock = (
                len(stats.placed),
                len(stats.refused),
                dict(stats.last_stock),
            )
        phase = self.driver.phase
        return Snapshot(
            elapsed=time.monotonic() - self.started,
            phase=phase.name if phase else None,
            extend_down=self.stack.sim.state.in_outage(),
            orders_placed=placed,
            orders_unacknowledged=len(self.shop.unacknowledged),
            orders_refused=refused_orders,
            local_status=db["status"],
            local_in_extend=db["in_extend"],
            sim_orders=in_sim,
            sim_shipped=shipped,
            balance_notifications=self.tap.count(*BALANCE_ACTIONS),
            availability_calls=calls.get("GET /ProductAvailability", 0),
            local_balances=db["balances"],
            dirty_balances=db["dirty"],
            freshness=db["freshness"],
            sweeps=db["sweeps"],
            parked=sum(db["parked"].values()),
            parked_reasons=db["parked"],
            deliveries=dict(self.stack.sim.dispatcher.outcomes),
            inbox_rows=db["inbox"],
            outbox_pending=db["outbox_pending"],
            shop_received=received,
            shop_refused=refused,
            extend_calls=sum(calls.values()),
            extend_statuses=statuses,
            stock_read=last_stock,
            driver={
                "reserved": self.driver.reserved,
                "picked": self.driver.picked,
                "stock_moves": self.driver.stock_moves,
            },
        )


def _features(url: str) -> Features:
    doc = httpx2.get(f"{url}/openapi.json", timeout=10.0).json()
    return Features.from_openapi(doc)


def run_demo(options: DemoOptions) -> int:
    """Run the demo; the exit code is 0 only when the self-check passed."""
    live = sys.stdout.isatty() if options.live is None else options.live
    console = console_for()

    def say(text: str) -> None:
        if live:
            console.print(text)
        else:
            print(text, flush=True)

    if options.data_dir is None:
        holder = tempfile.TemporaryDirectory(prefix="extend-connector-demo-")
        data_dir = Path(holder.name)
    else:
        holder = None
        data_dir = options.data_dir
    try:
        with running_stack(
            seed=options.seed,
            products=options.products,
            orders_per_second=options.orders_per_second,
            data_dir=data_dir,
            heavy_limit=options.heavy_limit,
        ) as stack:
            features = _features(stack.connector_url)
            say(
                f"connector  {stack.connector_url}  read API docs: {stack.connector_url}/docs  "
                f"(bearer token {SHOP_TOKEN})"
            )
            say(
                f"webhooks   Extend -> {stack.connector_url}/webhooks/extend   connector -> shop: "
                f"{stack.shop_inbox_url}"
            )
            say(
                f"simulator  {stack.sim.base_url}  driving API "
                f"{stack.sim.admin_url}   data + log: {data_dir}"
            )
            if features.missing():
                say(f"not in this build (skipped): {', '.join(features.missing())}")
            return _run(stack, options, features, live=live, log=say)
    finally:
        if holder is not None:
            holder.cleanup()


def _run(stack: Stack, options: DemoOptions, features: Features, *, live: bool, log: Say) -> int:
    demo = _Demo(stack, options, features)
    interrupted = False
    demo.shop.start()
    demo.driver.start()
    title = (
        f"extend-connector demo  seed {options.seed}, {options.products} products, "
        f"{options.orders_per_second:g} "
        f"orders/s{', chaos' if options.chaos else ''}  (Ctrl-C ends the run)"
    )
    end = demo.started + options.duration
    try:
        if live:
            with Live(
                render(demo.snapshot(), title=title),
                console=console_for(),
                refresh_per_second=4,
                transient=False,
            ) as view:
                while time.monotonic() < end:
                    time.sleep(0.5)
                    view.update(render(demo.snapshot(), title=title))
        else:
            next_line = 0.0
            while time.monotonic() < end:
                if time.monotonic() >= next_line:
                    log(plain_line(demo.snapshot()))
                    next_line = time.monotonic() + 5.0
                time.sleep(0.25)
    except KeyboardInterrupt:
        interrupted = True
        log(
            "interrupted: stopping the shop and the driver, "
            "then settling and checking (Ctrl-C again aborts)"
        )
    try:
        result = _settle_and_check(demo, options, log)
    except KeyboardInterrupt:
        log("aborted before the self-check finished")
        return EXIT_INTERRUPTED
    log(plain_line(demo.snapshot()))
    for line in result.problems[:50]:
        log(f"  - {line}")
    if len(result.problems) > 50:
        log(f"  ... and {len(result.problems) - 50} more")
    log(result.summary())
    if not result.passed:
        return EXIT_CHECK_FAILED
    return EXIT_INTERRUPTED if interrupted else EXIT_PASSED


def _settle_and_check(demo: _Demo, options: DemoOptions, log: Say) -> CheckResult:
    stack = demo.stack
    log("settle: chaos off, shop and driver stopped; waiting for Extend's webhooks and the sweeps")
    stop_shop = threading.Thread(target=demo.shop.stop, kwargs={"finish_pending_seconds": 30.0})
    stop_shop.start()
    demo.driver.stop()
    stop_shop.join()
    stack.sim.dispatcher.wait_idle(15.0)
    run_sweeps(log)
    skipped: list[str] = []
    checks: list[Callable[[], list[str]]] = []
    db = stack.connector.db
    if demo.features.orders:
        stats = demo.shop.stats
        with stats.lock:
            placed, refused = set(stats.placed), dict(stats.refused)
        checks.append(lambda: order_problems(stack.sim, db, placed, refused, demo.ref_prefix))
    else:
        skipped.append("orders (no POST /v1/orders)")
        placed = set()
    checks.append(lambda: balance_mismatches(stack.sim, db, SELL_FROM))

    def everything() -> list[str]:
        return [p for check in checks for p in check()]

    problems = settle_until_consistent(everything, timeout=options.settle_seconds / 2, log=log)
    if problems:
        # Whatever webhooks chaos dropped is the sweeps' job: run them again, then judge.
        run_sweeps(log)
        problems = settle_until_consistent(everything, timeout=options.settle_seconds / 2, log=log)
    unplaced = demo.shop.unacknowledged
    if unplaced:
        problems.append(
            f"{len(unplaced)} order(s) never acknowledged by the connector: {unplaced[:5]}"
        )
    balances = len(local_balances(db, SELL_FROM))
    return CheckResult(
        orders_checked=len(placed), balances_checked=balances, problems=problems, skipped=skipped
    )
