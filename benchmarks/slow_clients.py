"""Slow clients: `/v1/stock` read latency with 0 and with N (default 2,000) slow connections held.

A slow connection sends its request head one header line every `--interval` seconds and never
finishes it; whenever the server closes one, another is opened, so N stay held all the time.
Two servers, each its own process, same app and database, measured in the same run:
* protected: `python -m extend_connector run` (head deadline `server.header_timeout_seconds`,
  connection limit, body guard; see docs/read-api.md "Protection");
* unprotected baseline: the same app on plain uvicorn as main served it before issue #12 (this
  script with `--serve-unprotected`): no head deadline, no connection limit.
Then one unauthenticated `POST /v1/orders` of `--body-mib` (default 200) MiB against each: the
answer, how much of the body the client got to send, and the server's peak RSS growth (VmHWM).
The baseline also drops the app's body guard (`api.guard.RequestGuard`), as on main.
Per phase: sequential keep-alive GETs of `/v1/stock` for `--seconds` (timestamps taken here), how
many slow connections the server closed during the phase, the server's RSS, and tracebacks in its
log.

Run:
    .venv/bin/python benchmarks/slow_clients.py [--slow 2000 --seconds 20 --interval 1
        --header-timeout 10]
"""

from __future__ import annotations

import argparse
import contextlib
import re
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from common import (
    PYTHON,
    connector_env,
    free_port,
    ms,
    percentile,
    print_table,
    process,
    ratio,
    write_results,
)

from support.slowloris import RawExchange, SlowClients, raise_open_files

TOKEN = {"authorization": "Bearer shop-token"}


def serve_unprotected() -> None:
    """The connector's app on uvicorn configured as on main before the protections (the
    baseline)."""
    import uvicorn

    from extend_connector.api.guard import RequestGuard
    from extend_connector.service import MAX_REQUEST_LINE_BYTES, Connector, configure_logging
    from extend_connector.settings import load_settings

    configure_logging("WARNING")
    settings = load_settings()
    connector = Connector(settings)
    app = connector.app()
    app.user_middleware = [m for m in app.user_middleware if m.cls is not RequestGuard]
    uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=settings.server.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            h11_max_incomplete_event_size=MAX_REQUEST_LINE_BYTES,
        )
    ).run()
    connector.close()


def rss_mib(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) / 1024 if match else float("nan")


def reads(base: str, seconds: float) -> tuple[list[float], int]:
    """Latencies of sequential keep-alive reads for `seconds`, and how many did not answer 200."""
    latencies: list[float] = []
    errors = 0
    end = time.monotonic() + seconds
    with httpx2.Client(timeout=30) as http:
        while time.monotonic() < end:
            started = time.perf_counter()
            try:
                ok = http.get(f"{base}/v1/stock", headers=TOKEN).status_code == 200
            except httpx2.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - started)
            errors += not ok
    return latencies, errors


@contextlib.contextmanager
def server(kind: str, work: Path, extra: dict[str, str]) -> Iterator[tuple[str, Any]]:
    port = free_port()
    env = connector_env(
        port=port,
        data_dir=work / kind,
        base_url=f"http://127.0.0.1:{free_port()}/api",
        token="sim-token",
        webhook_secret="bench-webhook-secret",
        extra=extra,
    )
    argv = (
        [PYTHON, "-m", "extend_connector", "run"]
        if kind == "protected"
        else [PYTHON, __file__, "--serve-unprotected"]
    )
    with process(
        kind, argv, env=env, log_dir=work / "logs", health_url=f"http://127.0.0.1:{port}/healthz"
    ) as proc:
        yield f"http://127.0.0.1:{port}", proc


def status_kib(pid: int, field: str) -> int:
    match = re.search(
        rf"^{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE
    )
    return int(match.group(1)) if match else 0


def big_body(port: int, pid: int, size: int) -> dict[str, Any]:
    """One unauthenticated POST /v1/orders of `size` bytes: the answer, bytes taken, server peak
    growth."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # the peak (VmHWM) restarts from now
    before = status_kib(pid, "VmRSS")
    started = time.perf_counter()
    exchange = RawExchange("127.0.0.1", port)
    head = (
        f"POST /v1/orders HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {size}\r\n\r\n"
    ).encode()
    piece = b"a" * 1024 * 1024
    try:
        exchange.send(head)
        end = exchange.sent + size
        exchange.send(b'{"shopRef": "')
        while exchange.sent < end and exchange.poll() is None:
            if not exchange.send(piece[: end - exchange.sent]):
                break
        taken = exchange.sent - len(head)
        response = exchange.poll(120.0)
    finally:
        exchange.close()
    return {
        "status": response.status if response else None,
        "body_bytes_sent": taken,
        "seconds": time.perf_counter() - started,
        "peak_growth_mib": round((status_kib(pid, "VmHWM") - before) / 1024, 1),
    }


def phase(
    kind: str, base: str, proc: Any, port: int, slow: int, args: argparse.Namespace
) -> dict[str, Any]:
    clients = SlowClients("127.0.0.1", port, slow, interval=args.interval).start() if slow else None
    try:
        if clients is not None:
            clients.wait_held()
        closed_before = clients.closed_by_server if clients else 0
        latencies, errors = reads(base, args.seconds)
        held_min = clients.held if clients else 0
        closed = (clients.closed_by_server - closed_before) if clients else 0
        rss = rss_mib(proc.popen.pid)
    finally:
        if clients is not None:
            clients.stop()
    return {
        "server": kind,
        "slow_held": slow,
        "held_at_end": held_min,
        "reads": len(latencies),
        "errors": errors,
        "p50_s": percentile(latencies, 50),
        "p99_s": percentile(latencies, 99),
        "max_s": max(latencies),
        "slow_closed_by_server": closed,
        "server_rss_mib": round(rss, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--slow", type=int, default=2000, help="slow connections held")
    parser.add_argument(
        "--seconds",
        type=float,
        default=20.0,
        help="length of each phase (longer than the head deadline, so slow connections get closed)",
    )
    parser.add_argument(
        "--interval", type=float, default=1.0, help="seconds between a slow client's header lines"
    )
    parser.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        help="server.header_timeout_seconds (protected)",
    )
    parser.add_argument(
        "--body-mib", type=int, default=200, help="size of the unauthenticated POST /v1/orders"
    )
    parser.add_argument("--serve-unprotected", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_unprotected:
        serve_unprotected()
        return
    raise_open_files(args.slow + 1024)
    rows: list[dict[str, Any]] = []
    bodies: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-slow-") as tmp:
        work = Path(tmp)
        for kind in ("protected", "unprotected"):
            extra = (
                {"EXTEND_CONNECTOR_SERVER__HEADER_TIMEOUT_SECONDS": str(args.header_timeout)}
                if kind == "protected"
                else {}
            )
            with server(kind, work, extra) as (base, proc):
                port = int(base.rsplit(":", 1)[1])
                reads(
                    base, 3.0
                )  # warm-up, not counted: start-up work (migrations, first sweeps) settles
                for slow in (0, args.slow):
                    rows.append(phase(kind, base, proc, port, slow, args))
                bodies.append(
                    {"server": kind, **big_body(port, proc.popen.pid, args.body_mib * 1024 * 1024)}
                )
                log = proc.log_path.read_text(errors="replace")
                for row in rows[-2:]:
                    row["tracebacks_in_log"] = log.count("Traceback")
    by = {(r["server"], r["slow_held"]): r for r in rows}
    table = [
        [
            r["server"],
            str(r["slow_held"]),
            str(r["held_at_end"]),
            f"{r['reads'] - r['errors']}/{r['reads']}",
            ms(r["p50_s"]),
            ms(r["p99_s"]),
            ms(r["max_s"]),
            str(r["slow_closed_by_server"]),
            f"{r['server_rss_mib']:.0f} MiB",
            ratio(r["p99_s"], by[(r["server"], 0)]["p99_s"]),
        ]
        for r in rows
    ]
    print_table(
        f"/v1/stock reads with slow connections held (interval {args.interval:g} s, "
        f"protected head deadline {args.header_timeout:g} s)",
        [
            "server",
            "slow held",
            "held at end",
            "answered",
            "p50",
            "p99",
            "max",
            "slow closed by server",
            "server RSS",
            "p99 vs 0 slow",
        ],
        table,
    )
    print_table(
        f"one unauthenticated POST /v1/orders of {args.body_mib} MiB",
        ["server", "answer", "body bytes taken", "seconds", "server peak RSS growth"],
        [
            [
                b["server"],
                str(b["status"]),
                f"{b['body_bytes_sent'] / 1048576:.1f} MiB",
                f"{b['seconds']:.2f}",
                f"{b['peak_growth_mib']:.0f} MiB",
            ]
            for b in bodies
        ],
    )
    path = write_results(
        "slow_clients",
        {
            "settings": {
                "slow": args.slow,
                "phase_s": args.seconds,
                "interval_s": args.interval,
                "header_timeout_s": args.header_timeout,
                "client_open_files": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            },
            "rows": rows,
            "unauthenticated_body": bodies,
            "command": " ".join(sys.argv),
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
