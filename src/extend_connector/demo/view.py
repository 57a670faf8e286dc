"""The demo's terminal view: a rich live panel on a terminal, plain periodic lines otherwise."""

from __future__ import annotations

from typing import TextIO

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from extend_connector.demo.observe import Snapshot


def _age(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.1f} s ago"
    return f"{value / 60:.1f} min ago"


def _status(s: Snapshot) -> Text:
    if s.extend_down:
        return Text(
            "Extend DOWN (orders wait, the shop keeps reading the local copy)",
            style="bold white on red",
        )
    if s.phase:
        return Text(f"chaos: {s.phase}", style="bold black on yellow")
    return Text("Extend up, no faults", style="bold green")


def render(s: Snapshot, *, title: str) -> Panel:
    """The live panel for one snapshot."""
    orders = Table(title="Orders", show_header=True, expand=True)
    for col in (
        "placed by shop",
        "waiting/parked",
        "in Extend (local)",
        "in Extend (Extend)",
        "shipped",
    ):
        orders.add_column(col, justify="right")
    waiting = sum(
        v for k, v in s.local_status.items() if k in ("Received", "WaitingForExtend", "Parked")
    )
    shipped_local = s.local_status.get("Picked", 0) + s.local_status.get("PartiallyPicked", 0)
    orders.add_row(
        f"{s.orders_placed} (+{s.orders_unacknowledged} retrying)",
        str(waiting),
        str(s.local_in_extend),
        str(s.sim_orders),
        f"{shipped_local} local / {s.sim_shipped} Extend",
    )

    stock = Table(title="Stock", show_header=True, expand=True)
    for col in (
        "balance notifications",
        "ProductAvailability calls",
        "calls / 1,000 notif.",
        "local balances",
        "dirty (to fetch)",
    ):
        stock.add_column(col, justify="right")
    per_k = (
        f"{1000 * s.availability_calls / s.balance_notifications:.1f}"
        if s.balance_notifications
        else "-"
    )
    stock.add_row(
        str(s.balance_notifications),
        str(s.availability_calls),
        per_k,
        str(s.local_balances),
        str(s.dirty_balances),
    )

    fresh = Table(
        title="Freshness (newest confirmation from Extend)", show_header=True, expand=True
    )
    points = list(s.freshness)
    for p in points:
        fresh.add_column(p, justify="right")
    fresh.add_row(*[_age(s.freshness[p]) for p in points])
    if s.stock_read:
        fresh.caption = "last /v1/stock answer: " + ", ".join(
            f"{k}={v}" for k, v in s.stock_read.items()
        )

    hooks = Table(title="Webhooks and failures", show_header=True, expand=True)
    for col in (
        "Extend -> connector",
        "inbox rows",
        "connector -> shop",
        "shop outbox pending",
        "parked failures",
    ):
        hooks.add_column(col, justify="right")
    out = ", ".join(f"{k} {v}" for k, v in sorted(s.deliveries.items())) or "-"
    shop = ", ".join(f"{k} {v}" for k, v in sorted(s.shop_received.items())) or "-"
    parked = str(s.parked) + (
        " (" + ", ".join(f"{k} {v}" for k, v in s.parked_reasons.items()) + ")"
        if s.parked_reasons
        else ""
    )
    hooks.add_row(out, str(s.inbox_rows), shop, str(s.outbox_pending), parked)

    errors = sum(v for k, v in s.extend_statuses.items() if k.startswith("5") or k == "0")
    footer = Text(
        f"t={s.elapsed:5.1f} s   Extend API calls {s.extend_calls} "
        f"(5xx/dropped {errors}, 429 {s.extend_statuses.get('429', 0)})   "
        f"driver: reserved {s.driver.get('reserved', 0)}, picked {s.driver.get('picked', 0)}, "
        f"stock moves {s.driver.get('stock_moves', 0)}"
    )
    return Panel(Group(_status(s), orders, stock, fresh, hooks, footer), title=title)


def plain_line(s: Snapshot) -> str:
    """One line per period when stdout is not a terminal (logs, CI)."""
    state = "Extend DOWN" if s.extend_down else (f"chaos: {s.phase}" if s.phase else "calm")
    per_k = (
        f"{1000 * s.availability_calls / s.balance_notifications:.1f}"
        if s.balance_notifications
        else "-"
    )
    fresh = s.freshness.get("balances")
    return (
        f"t={s.elapsed:5.1f}s [{state}] orders placed={s.orders_placed} "
        f"retrying={s.orders_unacknowledged} in_extend_local={s.local_in_extend} "
        f"in_extend={s.sim_orders} shipped={s.sim_shipped} | balance "
        f"notif={s.balance_notifications} availability_calls={s.availability_calls} "
        f"(per 1000: {per_k}) balances={s.local_balances} dirty={s.dirty_balances} "
        f"fresh={'-' if fresh is None else f'{fresh:.1f}s'} | parked={s.parked} "
        f"hooks={dict(sorted(s.deliveries.items()))} shop_events={sum(s.shop_received.values())}"
    )


def console_for(stream: TextIO | None = None) -> Console:
    return Console(file=stream, highlight=False)
