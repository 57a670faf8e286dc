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

import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.fleet import Stack, connector_env, simulator, web_and_workers
from support.postgres import throwaway_database
from support.processes import CLI, Proc, free_port, running, wait_for

# The PostgreSQL variant may first wait its turn for the server's fleet slot (support.postgres).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

PRODUCTS = 40
ORDERS = 80
OUTAGE_SECONDS = 90.0
CONVERGE_SECONDS = 60.0  # after the outage ends (the acceptance figure)


def _simulator(tmp: Path, port: int, sim_port: int) -> Proc:
    # Rate limits on (the default): the connector learns the groups from the headers, which is
    # what armed the wedge.
    return simulator(tmp, port, sim_port, products=PRODUCTS)


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
    env = connector_env(tmp_path, sim_port, port)
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
    with throwaway_database("ec_drop", fleet=True) as url:
        yield url


@pytest.mark.postgres
def test_drop_outage_web_and_two_workers_postgres(tmp_path: Path, postgres_url: str) -> None:
    from extend_connector.store import migrate

    migrate(postgres_url)  # once, before the processes start (they would race on an empty database)
    sim_port, port = free_port(), free_port()
    env = connector_env(tmp_path, sim_port, port)
    web, workers = web_and_workers(tmp_path, env, port, postgres_url)
    with running(_simulator(tmp_path, port, sim_port), web, *workers):
        _outage_scenario(
            Stack(
                f"http://127.0.0.1:{sim_port}",
                f"http://127.0.0.1:{port}",
                postgres_url.replace("postgresql://", "postgresql+psycopg://", 1),
            )
        )
    sys.stdout.flush()
