"""Settle the system after the run and check it: every order in Extend exactly once, every balance
equal.

Settling means what an operator would wait for: the simulator has delivered (or given up on)
every webhook, the reconciliation sweeps have run once after the last change, and the
connector's local copy stops moving. The check then compares the connector's database with
the simulator's true state and says exactly what differs.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

import sqlalchemy as sa

from extend_connector.simulator import RunningSimulator
from extend_connector.store.database import Database
from extend_connector.store.models import BalanceRow, OrderRow

SWEPT = ("orders", "balances")


@dataclass(frozen=True, kw_only=True)
class CheckResult:
    """The verdict, with one line per problem (empty = passed)."""

    orders_checked: int
    balances_checked: int
    problems: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.passed:
            text = (
                f"self-check: PASSED - {self.orders_checked} orders in Extend exactly once, "
                f"{self.balances_checked} balances equal to Extend's"
            )
        else:
            text = f"self-check: FAILED - {len(self.problems)} problem(s)"
        if self.skipped:
            text += f" (not checked in this build: {', '.join(self.skipped)})"
        return text


def run_sweeps(log: Callable[[str], None]) -> None:
    """Run the orders and balances reconciliation sweeps once, now."""
    # Imported when used: it pulls in DBOS and every flow.
    from extend_connector.service import SWEEPS

    for name in SWEPT:
        try:
            result = asyncio.run(SWEEPS[name](False, False, None))
            log(f"settle: {name} sweep read {result.records} changed record(s)")
        except Exception as exc:  # the sweep's own error is reported; the check decides
            log(f"settle: {name} sweep failed: {exc!r}")


def sim_balances(
    sim: RunningSimulator, warehouses: tuple[str, ...]
) -> dict[tuple[str, str], float]:
    state = sim.state
    with state.lock:
        return {
            (b.product_number, b.warehouse): b.physical - b.reserved
            for b in state.balances.values()
            if b.warehouse in warehouses
        }


def local_balances(db: Database, warehouses: tuple[str, ...]) -> dict[tuple[str, str], Decimal]:
    with db.read() as s:
        rows = s.execute(
            sa.select(BalanceRow.product_number, BalanceRow.warehouse, BalanceRow.available).where(
                BalanceRow.warehouse.in_(warehouses)
            )
        ).all()
    return {(p, w): a for p, w, a in rows}


def balance_mismatches(
    sim: RunningSimulator, db: Database, warehouses: tuple[str, ...]
) -> list[str]:
    truth = sim_balances(sim, warehouses)
    local = local_balances(db, warehouses)
    problems = []
    for key, value in sorted(local.items()):
        want = truth.get(key)
        if want is None:
            problems.append(f"balance {key[0]}@{key[1]}: local {value}, Extend has no such balance")
        elif abs(float(value) - want) > 1e-6:
            problems.append(f"balance {key[0]}@{key[1]}: local {value}, Extend {want:g}")
    for key, want in sorted(truth.items()):
        if key not in local and want != 0:
            problems.append(f"balance {key[0]}@{key[1]}: missing locally, Extend {want:g}")
    return problems


def order_problems(
    sim: RunningSimulator, db: Database, placed: set[str], refused: dict[str, str], ref_prefix: str
) -> list[str]:
    state = sim.state
    with state.lock:
        in_extend = Counter(
            o.order_number_external
            for o in state.orders.values()
            if (o.order_number_external or "").startswith(ref_prefix)
        )
        numbers = {
            o.order_number_external: o.order_number
            for o in state.orders.values()
            if (o.order_number_external or "").startswith(ref_prefix)
        }
    with db.read() as s:
        mapped = dict(
            s.execute(
                sa.select(OrderRow.shop_ref, OrderRow.order_number).where(
                    OrderRow.shop_ref.like(f"{ref_prefix}%")
                )
            ).all()
        )
    problems = []
    for ref in sorted(placed):
        count = in_extend.get(ref, 0)
        if count == 0:
            problems.append(f"order {ref}: acknowledged to the shop but not in Extend")
        elif count > 1:
            problems.append(f"order {ref}: in Extend {count} times")
        elif mapped.get(ref) != numbers.get(ref):
            problems.append(
                f"order {ref}: local mapping {mapped.get(ref)!r}, Extend order {numbers.get(ref)!r}"
            )
    for ref in sorted({r for r in in_extend if r} - placed):
        problems.append(f"order {ref}: in Extend but the shop was never told it was accepted")
    for ref, why in sorted(refused.items()):
        problems.append(f"order {ref}: refused at intake ({why})")
    return problems


def settle_until_consistent(
    check: Callable[[], list[str]], *, timeout: float, log: Callable[[str], None]
) -> list[str]:
    """Re-check until nothing differs or the time is up; the last problems found."""
    deadline = time.monotonic() + timeout
    problems = check()
    while problems and time.monotonic() < deadline:
        time.sleep(1.0)
        problems = check()
    if problems:
        log(f"settle: still {len(problems)} difference(s) after {timeout:.0f} s")
    return problems
