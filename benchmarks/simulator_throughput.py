"""How fast the simulator answers, so it is never the bottleneck of another benchmark.

Measures, with the server in its own process and a lean keep-alive HTTP/1.1 load generator
(raw asyncio streams, so the client costs little):

* baseline: a constant JSON answer from a bare ASGI app on the same uvicorn set-up;
* simple GETs on the simulator: GET /api/Products/{n}, GET /api/CustomerOrders/{n}, and a
  100-item page of GET /api/ProductAvailability;
* start-up time and memory of a 100,000-product simulator;
* 10,000 AvailableBalanceChanged over 2,000 products from one bulk stock move, delivered to a
  local inbox (batched by 100, and one per POST).

Prints a table and writes benchmarks/results/simulator_throughput.json.
Run: .venv/bin/python benchmarks/simulator_throughput.py [--seconds 5] [--connections 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import resource
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from extend_connector.demo.stack import free_port

RESULTS = Path(__file__).parent / "results" / "simulator_throughput.json"


async def _constant_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b'{"productNumber":"P000001"}'
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _serve(kind: str, port: int, products: int) -> None:
    import uvicorn

    from extend_connector.simulator import SimulatorConfig, build_app
    from extend_connector.simulator.server import SimHttpProtocol, uvicorn_config

    if kind == "baseline":
        config = uvicorn.Config(
            _constant_app,
            http=SimHttpProtocol,
            lifespan="off",
            access_log=False,
            log_level="warning",
            host="127.0.0.1",
            port=port,
        )
    else:
        app = build_app(
            SimulatorConfig(products=products, customers=100, orders=200, rate_limits_enabled=False)
        )
        config = uvicorn_config(app, host="127.0.0.1", port=port)
    uvicorn.Server(config).run()


def _wait_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server on {port} did not start")


async def _load(port: int, paths: list[str], seconds: float, connections: int) -> dict[str, float]:
    """Closed-loop load: each connection sends the next request when the previous answer is read."""
    done = 0
    errors = 0
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def one(worker: int) -> None:
        nonlocal done, errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = worker
        while time.perf_counter() < stop_at:
            path = paths[i % len(paths)]
            i += connections
            began = time.perf_counter()
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
                f"sim-token\r\n\r\n".encode()
            )
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200"):
                errors += 1
            latencies.append(time.perf_counter() - began)
            done += 1
        writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(one(w) for w in range(connections)))
    elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "requests": done,
        "errors": errors,
        "seconds": round(elapsed, 2),
        "per_second": round(done / elapsed),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
    }


def _measure(
    kind: str, paths: list[str], seconds: float, connections: int, products: int
) -> dict[str, float]:
    port = free_port()
    process = multiprocessing.get_context("spawn").Process(
        target=_serve, args=(kind, port, products), daemon=True
    )
    process.start()
    try:
        _wait_port(port)
        asyncio.run(_load(port, paths[:1], 0.5, connections))  # warm-up
        return asyncio.run(_load(port, paths, seconds, connections))
    finally:
        process.terminate()
        process.join(10)


def _startup(products: int) -> dict[str, float]:
    from extend_connector.simulator import SimulatorConfig, build_app

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    began = time.perf_counter()
    app = build_app(SimulatorConfig(products=products, customers=2000))
    elapsed = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    counts = app.state.snapshot_counts()
    began = time.perf_counter()
    ix, _quotes, _changed = app.state.price_index("10001")
    prices = time.perf_counter() - began
    app.close()
    return {
        "products": counts["products"],
        "balances": counts["balances"],
        "start_seconds": round(elapsed, 2),
        "rss_growth_mb": round((after - before) / 1024, 1),
        "first_price_index_seconds": round(prices, 2),
        "prices_indexed": len(ix),
    }


def _webhook_burst(batch_size: int) -> dict[str, float]:
    import httpx2

    from extend_connector.simulator import SimulatorConfig, WebhookRegistration, run_in_thread

    received = 0
    lock = threading.Lock()

    class Inbox(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            nonlocal received
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with lock:
                received += body.count(b'"Action"')
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Inbox)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/webhooks/extend"
    hook = WebhookRegistration(callback_url=url, events=("AvailableBalanceChanged",))
    cfg = SimulatorConfig(
        products=2000, customers=10, webhooks=(hook,), webhook_batch_size=batch_size
    )
    try:
        with run_in_thread(cfg) as sim:
            began = time.perf_counter()
            httpx2.post(
                sim.admin_url + "/stock/bulk",
                json={"random": {"count": 10_000, "products": 2000}},
                timeout=60,
            ).raise_for_status()
            raised = time.perf_counter() - began
            idle = sim.dispatcher.wait_idle(120)
            elapsed = time.perf_counter() - began
            posts = len(sim.dispatcher.snapshot())
    finally:
        server.shutdown()
        server.server_close()
    return {
        "batch_size": batch_size,
        "events": received,
        "posts": posts,
        "raise_seconds": round(raised, 2),
        "delivered_seconds": round(elapsed, 2),
        "events_per_second": round(received / elapsed),
        "idle": idle,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--products", type=int, default=10_000)
    args = parser.parse_args()

    rows: dict[str, dict[str, float]] = {}
    rows["baseline constant ASGI"] = _measure("baseline", ["/"], args.seconds, args.connections, 0)
    products = [f"/api/Products/P{i:06d}" for i in range(1, 1001)]
    rows["GET /api/Products/{n}"] = _measure(
        "sim", products, args.seconds, args.connections, args.products
    )
    orders = [f"/api/CustomerOrders/{100001 + i}" for i in range(200)]
    rows["GET /api/CustomerOrders/{n}"] = _measure(
        "sim", orders, args.seconds, args.connections, args.products
    )
    pages = [f"/api/ProductAvailability?pageSize=100&page={p}" for p in range(1, 100)]
    rows["GET /api/ProductAvailability (100/page)"] = _measure(
        "sim", pages, args.seconds, args.connections, args.products
    )
    baseline = rows["baseline constant ASGI"]["per_second"]
    print(f"{'scenario':42} {'req/s':>8} {'vs base':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for name, row in rows.items():
        print(
            f"{name:42} {row['per_second']:>8} {row['per_second'] / baseline:>8.2f} "
            f"{row['p50_ms']:>8} {row['p99_ms']:>8} {row['errors']:>7}"
        )
    startup = _startup(100_000)
    print(f"\n100,000 products: {startup}")
    bursts = [_webhook_burst(100), _webhook_burst(1)]
    for burst in bursts:
        print(f"10,000 AvailableBalanceChanged over 2,000 products: {burst}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                # Other work on the machine skews absolute numbers; the ratio to the baseline is the
                # stable figure.
                "machine": {
                    "python": sys.version.split()[0],
                    "platform": platform.platform(),
                    "cpus": os.cpu_count(),
                    "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
                },
                "settings": vars(args),
                "throughput": rows,
                "startup_100k": startup,
                "webhook_bursts": bursts,
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
