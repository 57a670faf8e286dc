"""Catalogue sync: peak memory and records/s of the streaming sweep against a naive baseline.

The simulator runs as its own process (seeded: 20,000 products, 2,000 customers, 10% B2B =
200 price customers), so tracemalloc measures the connector only. For each run a fresh
SQLite database:
- streaming: `sweep_products()` (list page by page, fetch each changed one, write per batch);
- naive: the same work with the whole list materialised first and every fetched record held
  until one big write (what "read it all, then write" code does);
then `sweep_customers()`, a second products sweep (nothing changed: list calls only), and the
prices of `--price-customers` customers (20,000 prices each).

    .venv/bin/python benchmarks/catalogue_sync.py [--products 20000] [--customers 2000]

Prints a table and writes benchmarks/results/catalogue_sync.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx2 as httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from extend_connector.domain import Product  # noqa: E402
from extend_connector.flows import products as product_flow  # noqa: E402
from extend_connector.flows.context import current  # noqa: E402
from extend_connector.flows.customers import sweep_customers  # noqa: E402
from extend_connector.flows.prices import sweep_prices  # noqa: E402
from extend_connector.flows.products import sweep_products  # noqa: E402
from extend_connector.flows.sync import SweepResult  # noqa: E402
from extend_connector.service import Connector  # noqa: E402
from extend_connector.settings import Settings  # noqa: E402
from support.processes import free_port  # noqa: E402


async def naive_products() -> dict[str, Any]:
    """The baseline: materialise the whole list, fetch everything, write once."""
    ctx = current()
    extend = ctx.extend()
    listed = [p async for p in extend.products_changed_since(None)]
    sem = asyncio.Semaphore(8)

    async def one(number: str) -> Product:
        async with sem:
            return await extend.get_product(number)

    fetched = await asyncio.gather(*(one(p.product_number) for p in listed))
    with ctx.db.write() as session:
        outcomes = product_flow.apply(session, list(fetched), now=ctx.clock())
    return {"records": len(listed), "created": outcomes.count("created")}


def measure(label: str, make: Callable[[], Awaitable[Any]]) -> dict[str, Any]:
    async def go() -> Any:
        try:
            return await make()
        finally:
            await current().aclose()

    tracemalloc.start()
    tracemalloc.reset_peak()
    started = time.perf_counter()
    result = asyncio.run(go())
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    records = result.records if isinstance(result, SweepResult) else result["records"]
    row = {
        "run": label,
        "records": records,
        "seconds": round(seconds, 2),
        "records_per_second": round(records / seconds, 1) if seconds else None,
        "peak_mib": round(peak / 2**20, 2),
    }
    if isinstance(result, SweepResult):
        row["api_calls"] = result.api_calls
        row["outcomes"] = dict(result.outcomes)
    print(json.dumps(row), flush=True)
    return row


def connector_for(base_url: str, folder: Path, name: str) -> Connector:
    settings = Settings(
        extend={"base_url": base_url, "api_token": "sim-token", "dialect": {"page_size": 500}},
        store={"database_url": f"sqlite:///{folder / name}.db"},
    )
    c = Connector(settings)
    c.engine.connect()
    return c


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--products", type=int, default=20_000)
    parser.add_argument("--customers", type=int, default=2_000)
    parser.add_argument("--b2b-share", type=float, default=0.1)
    parser.add_argument(
        "--price-customers",
        type=int,
        default=3,
        help="customers whose full price list is synced in the prices run",
    )
    args = parser.parse_args()
    port = free_port()
    sim = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "extend_connector",
            "simulator",
            "--port",
            str(port),
            "--products",
            str(args.products),
            "--customers",
            str(args.customers),
            "--b2b-share",
            str(args.b2b_share),
            "--no-rate-limits",
            "--no-webhook",
            "--max-page-size",
            "500",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    rows: list[dict[str, Any]] = []
    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(f"{base}/_sim/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise SystemExit("simulator did not start")
            time.sleep(0.2)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            c = connector_for(f"{base}/api", folder, "naive")
            rows.append(measure("products naive (materialised)", naive_products))
            c.engine.shutdown()
            c.close()
            c = connector_for(f"{base}/api", folder, "streaming")
            rows.append(measure("products streaming (first sync)", lambda: sweep_products()))
            httpx.post(f"{base}/_sim/counters/reset")
            rows.append(measure("products streaming (nothing changed)", lambda: sweep_products()))
            counters = httpx.get(f"{base}/_sim/counters").json()["endpoints"]
            rows[-1]["simulator_calls"] = counters
            rows.append(measure("customers streaming (first sync)", lambda: sweep_customers()))
            b2b = [
                cu["customerNumber"]
                for cu in httpx.get(f"{base}/_sim/state/customers").json()
                if cu.get("organizationNumber")
            ]
            chosen = ["WEB", *b2b[: max(0, args.price_customers - 1)]]
            rows.append(
                measure(
                    f"prices streaming ({len(chosen)} customers)",
                    lambda: sweep_prices(customers=chosen),
                )
            )
            c.engine.shutdown()
            c.close()
    finally:
        sim.terminate()
        sim.wait(10)
    naive, streaming = rows[0], rows[1]
    ratio = round(naive["peak_mib"] / streaming["peak_mib"], 2) if streaming["peak_mib"] else None
    summary = {
        "products": args.products,
        "customers": args.customers,
        "b2b_share": args.b2b_share,
        "peak_memory_ratio_naive_over_streaming": ratio,
        "runs": rows,
        "b2b_price_customers_in_data": round(args.customers * args.b2b_share),
    }
    print()
    print(f"{'run':42} {'records':>8} {'seconds':>8} {'rec/s':>8} {'peak MiB':>9}")
    for r in rows:
        print(
            f"{r['run']:42} {r['records']:>8} {r['seconds']:>8} {r['records_per_second']:>8} "
            f"{r['peak_mib']:>9}"
        )
    print(f"peak memory naive / streaming: {ratio}x")
    out = ROOT / "benchmarks" / "results" / "catalogue_sync.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
