"""Scale-out on PostgreSQL: one connector process (`engine.role = all`) against one `web` + 2
`worker` processes on the same kind of database, same machine, same run.

Each configuration gets its own fresh database (created and dropped here, migrated once with
`extend-connector db upgrade` before its processes start) and its own simulator process (Extend,
rate limits off so the connector's capacity is measured, webhooks signed and sent to the
connector's HTTP port). The connector processes are `python -m extend_connector run`, started
as tests/support/fleet.py starts the fleet (roles `web` / `worker`, stable executor ids
`web`, `worker-1`, `worker-2`). Everything is measured from this process over HTTP:

* orders into Extend: the shop posts `--orders` orders to `POST /v1/orders` (16 at a time,
  re-posting what got no answer); orders/s = orders / (the instant the simulator holds them all
  - the first POST). Exactly once: the simulator's state holds each shop reference once and its
  counter of `POST /CustomerOrders` equals the number of orders (no faults, so any other count
  is a resend);
* webhook ingest: accepted signed deliveries/s on `/webhooks/extend` in a closed loop of
  `--connections` connections for `--ingest-seconds` (the deliveries of benchmarks/ingest.py:
  one notification each, half AvailableBalanceChanged, half ProductChanged).

The same-run baseline is the single process; the ratio printed is fleet / single (target >= 1.7
for both, issue #13). On a 2-core machine three connector processes, the simulator and this
load generator share two cores: the ratio measures what the split gains on this machine, not
what it gains with a core per process.

Needs PostgreSQL (EXTEND_CONNECTOR_TEST_POSTGRES_URL or --postgres URL); without it, prints why
and writes a results file saying it was skipped.

Run: .venv/bin/python benchmarks/scale_out.py [--orders 300] [--ingest-seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx2
from common import (
    PYTHON,
    Sim,
    connector_env,
    fleet_slot,
    free_port,
    migrate_database,
    postgres_database,
    postgres_server,
    print_table,
    process,
    ratio,
    simulator_argv,
    stock_mismatches,
    write_results,
)
from ingest import SECRET, bodies, closed_loop

SHOP_TOKEN = "bench-shop-token"
WAREHOUSES = ("MainWarehouse", "GreenWarehouse")
TARGET = 1.7
# Per process, for both configurations: three processes at the defaults (20 + 10) would hold 90
# of a default server's 100 connections while other tests share it.
POOL = {"EXTEND_CONNECTOR_STORE__POOL_SIZE": "10", "EXTEND_CONNECTOR_STORE__MAX_OVERFLOW": "5"}


def settings_env(port: int, sim: Sim, database_url: str, tmp: Path) -> dict[str, str]:
    return connector_env(
        port=port,
        data_dir=tmp / "data",
        base_url=sim.api_url,
        token="sim-token",
        webhook_secret=SECRET,
        database_url=database_url,
        extra={
            **POOL,
            "EXTEND_CONNECTOR_WEBSHOP__API_TOKEN": SHOP_TOKEN,
            "EXTEND_CONNECTOR_EXTEND__WAREHOUSES": ",".join(WAREHOUSES),
            "EXTEND_CONNECTOR_SCOPE__CUSTOMERS": "off",
            "EXTEND_CONNECTOR_SCOPE__PRICES": "off",
        },
    )


@contextlib.contextmanager
def connectors(layout: str, env: dict[str, str], port: int, tmp: Path) -> Iterator[None]:
    """`single`: one `all` process; `fleet`: one `web` + 2 `worker` processes."""
    health = f"http://127.0.0.1:{port}/healthz"
    argv = [PYTHON, "-m", "extend_connector", "run"]
    with contextlib.ExitStack() as stack:
        if layout == "single":
            stack.enter_context(
                process(
                    "single",
                    argv,
                    env={**env, "EXTEND_CONNECTOR_ENGINE__ROLE": "all"},
                    log_dir=tmp,
                    health_url=health,
                )
            )
        else:
            for i in (1, 2):
                stack.enter_context(
                    process(
                        f"worker{i}",
                        argv,
                        env={
                            **env,
                            "EXTEND_CONNECTOR_ENGINE__ROLE": "worker",
                            "EXTEND_CONNECTOR_ENGINE__EXECUTOR_ID": f"worker-{i}",
                        },
                        log_dir=tmp,
                        health_url=None,
                    )
                )
            stack.enter_context(
                process(
                    "web",
                    argv,
                    env={
                        **env,
                        "EXTEND_CONNECTOR_ENGINE__ROLE": "web",
                        "EXTEND_CONNECTOR_ENGINE__EXECUTOR_ID": "web",
                    },
                    log_dir=tmp,
                    health_url=health,
                )
            )
        yield


def order_body(ref: str, i: int, products: list[str]) -> dict[str, Any]:
    return {
        "shopRef": ref,
        "lines": [{"productNumber": products[i % len(products)], "quantity": 1, "unitPrice": 100}],
    }


async def orders_phase(url: str, sim: Sim, refs: list[str], products: list[str]) -> dict[str, Any]:
    """Post every order (16 at a time) while watching the simulator's order count."""
    before = int(sim("GET", "/state")["counts"]["orders"])
    want = before + len(refs)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(refs)):
        queue.put_nowait(i)
    codes: Counter[int] = Counter()
    first_post: list[float] = []
    async with httpx2.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {SHOP_TOKEN}"}, timeout=60
    ) as http:

        async def poster() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                body = order_body(refs[i], i, products)
                for _ in range(100):
                    if not first_post:
                        first_post.append(time.monotonic())
                    try:
                        r = await http.post("/v1/orders", json=body)
                    except httpx2.HTTPError:
                        await asyncio.sleep(0.2)
                        continue
                    if r.status_code < 500:
                        codes[r.status_code] += 1
                        break
                    await asyncio.sleep(0.2)

        posters = [asyncio.create_task(poster()) for _ in range(16)]
        await asyncio.gather(*posters)
        posted = time.monotonic()
    # All posted: now wait (bounded) for the simulator to hold them all.
    deadline = posted + max(120.0, 0.5 * len(refs))
    done_at: float | None = None
    seen = before
    while time.monotonic() < deadline:
        seen = int(sim("GET", "/state")["counts"]["orders"])
        if seen >= want:
            done_at = time.monotonic()
            break
        await asyncio.sleep(0.1)
    start = first_post[0]
    return {
        "orders": len(refs),
        "post_codes": dict(codes),
        "posted_seconds": posted - start,
        "in_extend": seen - before,
        "seconds": None if done_at is None else done_at - start,
        "per_second": None if done_at is None else len(refs) / (done_at - start),
    }


def exactly_once(sim: Sim, refs: list[str]) -> dict[str, Any]:
    """After a quiet moment: each reference once in Extend; one POST /CustomerOrders per order."""
    time.sleep(2.0)
    wanted = set(refs)
    data = sim("GET", "/state/orders")
    items = data["items"] if isinstance(data, dict) else data
    held = Counter(
        str(o.get("orderNumberExternal")) for o in items if o.get("orderNumberExternal") in wanted
    )
    posts = int(sim.counters()["endpoints"].get("POST /CustomerOrders", 0))
    duplicates = sum(c - 1 for c in held.values() if c > 1)
    missing = len(wanted - set(held))
    return {
        "duplicates": duplicates,
        "missing": missing,
        "order_posts": posts,
        "exactly_once": duplicates == 0 and missing == 0 and posts == len(refs),
    }


def wait_ready(url: str, sim: Sim, timeout: float = 180.0) -> float:
    """Until the connector's /v1/stock equals Extend's (the first start's balance load done)."""
    started = time.monotonic()
    truth = sim.balances(WAREHOUSES)
    with httpx2.Client(timeout=30) as http:
        while time.monotonic() - started < timeout:
            with contextlib.suppress(httpx2.HTTPError):
                if stock_mismatches(http, url, SHOP_TOKEN, truth) == 0:
                    return time.monotonic() - started
            time.sleep(0.5)
    raise TimeoutError(f"initial balances not loaded within {timeout:.0f} s")


def run_layout(
    layout: str, server: str, args: argparse.Namespace, tmp_root: Path
) -> dict[str, Any]:
    tmp = tmp_root / layout
    tmp.mkdir()
    port, sim_port = free_port(), free_port()
    with (
        postgres_database(server, f"bench_scale_{layout}") as database_url,
        process(
            "simulator",
            simulator_argv(
                sim_port,
                products=args.products,
                webhook_url=f"http://127.0.0.1:{port}/webhooks/extend",
                webhook_secret=SECRET,
                warehouses=WAREHOUSES,
                extra=("--no-rate-limits",),
            ),
            env={},
            log_dir=tmp,
            health_url=f"http://127.0.0.1:{sim_port}/_sim/health",
        ),
    ):
        sim = Sim(sim_port)
        env = settings_env(port, sim, database_url, tmp)
        migrate_database(env, tmp)
        started = time.monotonic()
        with connectors(layout, env, port, tmp):
            url = f"http://127.0.0.1:{port}"
            ready = wait_ready(url, sim)
            ready_at = time.monotonic() - started
            products = sorted(
                p["productNumber"] for p in sim("GET", "/state/products") if not p.get("phaseOut")
            )
            refs = [f"SO-{layout}-{i:05d}" for i in range(args.orders)]
            orders = asyncio.run(orders_phase(url, sim, refs, products))
            orders.update(exactly_once(sim, refs))
            # Let the orders' progress hooks settle before the ingest run.
            sim("GET", "/deliveries?wait=30&limit=1")
            time.sleep(1.0)
            work = bodies(int(args.ingest_seconds * 3000) + 1000, args.products, seed=11)
            ingest = asyncio.run(
                closed_loop(port, "/webhooks/extend", work, args.ingest_seconds, args.connections)
            )
        sim.close()
    print(
        f"{layout}: ready {ready_at:.1f} s (balances loaded {ready:.1f} s after healthy); "
        f"orders {orders['per_second'] or 0:.1f}/s, ingest {ingest['per_second']:.0f}/s",
        flush=True,
    )
    return {"layout": layout, "ready_seconds": ready_at, "orders": orders, "ingest": ingest}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=300, help="Orders per configuration.")
    parser.add_argument(
        "--ingest-seconds", type=float, default=5.0, help="Length of each closed-loop ingest run."
    )
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--products", type=int, default=200)
    parser.add_argument(
        "--postgres", default=None, help="postgresql://user@host:port/db (throw-away dbs are made)."
    )
    args = parser.parse_args()
    command = " ".join(["benchmarks/scale_out.py", *sys.argv[1:]])
    server = postgres_server(args.postgres)
    if not server:
        reason = "PostgreSQL not given (set EXTEND_CONNECTOR_TEST_POSTGRES_URL or --postgres URL)"
        print(f"scale_out: skipped: {reason}")
        write_results("scale_out", {"command": command, "skipped": reason})
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as name, fleet_slot(server):
        single = run_layout("single", server, args, Path(name))
        fleet = run_layout("fleet", server, args, Path(name))
    o_ratio = (
        fleet["orders"]["per_second"] / single["orders"]["per_second"]
        if fleet["orders"]["per_second"] and single["orders"]["per_second"]
        else None
    )
    i_ratio = fleet["ingest"]["per_second"] / single["ingest"]["per_second"]
    rows = []
    for r in (single, fleet):
        o, i = r["orders"], r["ingest"]
        rows.append(
            [
                "one process (all)" if r["layout"] == "single" else "web + 2 workers",
                f"{o['per_second']:.1f}/s" if o["per_second"] else "not all in Extend",
                f"{o['in_extend']}/{o['orders']}",
                f"{o['duplicates']} dup, {o['missing']} missing, {o['order_posts']} POSTs",
                f"{i['per_second']:.0f}/s",
                f"{i['errors']}",
            ]
        )
    rows.append(
        [
            "ratio fleet / single",
            ratio(fleet["orders"]["per_second"], single["orders"]["per_second"]),
            "",
            "",
            ratio(fleet["ingest"]["per_second"], single["ingest"]["per_second"]),
            "",
        ]
    )
    print_table(
        f"Scale-out on PostgreSQL ({args.orders} orders; ingest closed loop "
        f"{args.connections} conns for {args.ingest_seconds:.0f} s)",
        ["layout", "orders into Extend", "in Extend", "exactly once", "ingest", "ingest errors"],
        rows,
    )
    targets = {
        f"orders_fleet/single>={TARGET}": o_ratio is not None and o_ratio >= TARGET,
        f"ingest_fleet/single>={TARGET}": i_ratio >= TARGET,
        "orders_exactly_once": single["orders"]["exactly_once"] and fleet["orders"]["exactly_once"],
    }
    print("targets:", ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in targets.items()))
    path = write_results(
        "scale_out",
        {
            "command": command,
            "settings": {k: v for k, v in vars(args).items() if k != "postgres"},
            "runs": [single, fleet],
            "orders_ratio": o_ratio,
            "ingest_ratio": i_ratio,
            "target_ratio": TARGET,
            "targets": targets,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
