"""Shared pieces of the benchmarks: processes under test, a lean HTTP load generator, figures,
output.

Every benchmark runs the connector as its own process (`python -m extend_connector run`, or a
benchmark's own app build) and takes every timestamp in the benchmark process, outside the
process under test. API-call figures come from the simulator's counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
from rich.console import Console
from rich.table import Table

from extend_connector.demo.stack import free_port as free_port  # re-exported for the scripts

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
PYTHON = sys.executable


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f} ms"


def ratio(a: float | None, b: float | None) -> str:
    return "-" if not a or not b else f"{a / b:.2f}"


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }


def write_results(scenario: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{scenario}.json"
    payload = {
        "scenario": scenario,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        **data,
    }
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def print_table(title: str, headers: list[str], rows: list[list[str]]) -> None:
    table = Table(title=title)
    for h in headers:
        table.add_column(h, justify="right" if h != headers[0] else "left")
    for row in rows:
        table.add_row(*row)
    Console(width=160).print(table)


# ------------------------------------------------------------------ processes under test


@dataclass
class Process:
    """A child process with its log, stopped with SIGTERM (then SIGKILL) on exit."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


@contextlib.contextmanager
def process(
    name: str,
    argv: list[str],
    *,
    env: dict[str, str],
    log_dir: Path,
    health_url: str | None,
    timeout: float = 90.0,
) -> Iterator[Process]:
    """Start `argv`; with `health_url`, wait until it answers below 500 (a process without HTTP,
    such as a `worker`, is only checked to be still running)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            argv,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )
    proc = Process(name=name, popen=popen, log_path=log_path)
    try:
        deadline = time.monotonic() + timeout
        while health_url is not None:
            if popen.poll() is not None:
                raise RuntimeError(f"{name} exited with {popen.returncode}:\n{proc.tail()}")
            with contextlib.suppress(httpx2.HTTPError):
                if httpx2.get(health_url, timeout=1.0).status_code < 500:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} not healthy after {timeout}s:\n{proc.tail()}")
            time.sleep(0.1)
        if popen.poll() is not None:
            raise RuntimeError(f"{name} exited with {popen.returncode}:\n{proc.tail()}")
        yield proc
    finally:
        if popen.poll() is None:
            popen.terminate()
            try:
                popen.wait(20)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait(5)


def connector_env(
    *,
    port: int,
    data_dir: Path,
    base_url: str,
    token: str,
    webhook_secret: str,
    database_url: str | None = None,
    shop_url: str | None = None,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """Environment settings for `python -m extend_connector run` (no config file is read from
    ROOT)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXTEND_CONNECTOR_")}
    env.update(
        {
            "EXTEND_CONNECTOR_SERVER__PORT": str(port),
            "EXTEND_CONNECTOR_STORE__DATA_DIR": str(data_dir),
            "EXTEND_CONNECTOR_EXTEND__BASE_URL": base_url,
            "EXTEND_CONNECTOR_EXTEND__API_TOKEN": token,
            "EXTEND_CONNECTOR_EXTEND__WEBHOOK_SECRET": webhook_secret,
            # The benchmarks measure the connector's own capacity against a simulator whose limits
            # are raised or off; on PostgreSQL the fleet-wide bucket (auto = on) would otherwise
            # pace every run at the contract's default limits (heavy: 60 calls a minute).
            "EXTEND_CONNECTOR_EXTEND__SHARED_RATE_LIMIT": "off",
        }
    )
    if database_url:
        env["EXTEND_CONNECTOR_STORE__DATABASE_URL"] = database_url
    if shop_url:
        env["EXTEND_CONNECTOR_WEBSHOP__WEBHOOK_URL"] = shop_url
    env.update(extra or {})
    return env


@contextlib.contextmanager
def postgres_database(server_url: str, name_prefix: str) -> Iterator[str]:
    """A throw-away database on the server of `server_url`; dropped on exit."""
    import psycopg

    name = f"{name_prefix}_{uuid.uuid4().hex[:8]}"
    base, _, _ = server_url.rpartition("/")
    admin_url = f"{base}/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgres_server(cli_value: str | None) -> str | None:
    return cli_value or os.environ.get("EXTEND_CONNECTOR_TEST_POSTGRES_URL")


@contextlib.contextmanager
def fleet_slot(server_url: str) -> Iterator[None]:
    """Hold the PostgreSQL server's one slot for several connector processes (the lock file of
    tests/support/postgres.py `fleet_slot`), so a benchmark's fleet and a test's fleet never run
    at once and use up the server's connections together."""
    import fcntl
    import hashlib
    import tempfile

    admin = "postgresql+psycopg://" + server_url.split("://", 1)[1]
    digest = hashlib.sha256(admin.encode()).hexdigest()[:12]
    path = Path(tempfile.gettempdir()) / f"extend-connector-fleet-{digest}.lock"
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for the PostgreSQL fleet slot ({path}): another fleet runs", flush=True)
            waited = time.monotonic()
            fcntl.flock(handle, fcntl.LOCK_EX)
            print(f"got the fleet slot after {time.monotonic() - waited:.0f} s", flush=True)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def migrate_database(env: dict[str, str], log_dir: Path) -> None:
    """`extend-connector db upgrade` with the settings in `env` (before several processes start
    on one new database: they would race to create it)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    with (log_dir / "db-upgrade.log").open("ab") as log:
        subprocess.run(
            [PYTHON, "-m", "extend_connector", "db", "upgrade"],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=log_dir,
            check=True,
            timeout=180,
        )


# ------------------------------------------------------------------ the simulator as a process


def simulator_argv(
    port: int,
    *,
    products: int,
    webhook_url: str | None,
    webhook_secret: str,
    warehouses: tuple[str, ...] | None = None,
    extra: tuple[str, ...] = (),
) -> list[str]:
    """`extend-connector simulator` on `port`: seeded, webhooks signed with `webhook_secret` to
    `webhook_url` (None: no registration), retries of failed webhooks scaled to seconds."""
    argv = [
        PYTHON,
        "-m",
        "extend_connector",
        "simulator",
        "--port",
        str(port),
        "--products",
        str(products),
        "--customers",
        "3",
        "--time-scale",
        "0.01",
        "--webhook-secret",
        webhook_secret,
    ]
    argv += ["--webhook-url", webhook_url] if webhook_url else ["--no-webhook"]
    if warehouses:
        argv += ["--warehouses", ",".join(warehouses)]
    return argv + list(extra)


class Sim:
    """The simulator's driving API (`/_sim`) over HTTP: state, counters, faults."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.api_url = f"{self.base}/api"
        self.http = httpx2.Client(base_url=f"{self.base}/_sim", timeout=60)

    def __call__(self, method: str, path: str, body: Any = None) -> Any:
        response = self.http.request(method, path, json=body)
        if response.status_code >= 300:
            raise RuntimeError(f"{method} /_sim{path}: {response.status_code} {response.text}")
        return response.json() if response.content else None

    def counters(self) -> dict[str, Any]:
        return dict(self("GET", "/counters"))

    def balances(self, warehouses: tuple[str, ...]) -> dict[tuple[str, str], float]:
        """Extend's available balance of every product in `warehouses` (absent: 0)."""
        products = [p["productNumber"] for p in self("GET", "/state/products")]
        found = {
            (b["productNumber"], b["warehouse"]): float(b["availableBalance"])
            for b in self("GET", "/state/balances")
            if b["warehouse"] in warehouses
        }
        return {(p, w): found.get((p, w), 0.0) for p in products for w in warehouses}

    def close(self) -> None:
        self.http.close()


def local_stock(
    http: httpx2.Client, url: str, shop_token: str, products: list[str]
) -> dict[tuple[str, str], float]:
    """The connector's `GET /v1/stock` for `products` (pages of 500) as (product, warehouse) ->
    available."""
    out: dict[tuple[str, str], float] = {}
    for i in range(0, len(products), 500):
        response = http.get(
            f"{url}/v1/stock",
            headers={"Authorization": f"Bearer {shop_token}"},
            params={"productNumbers": ",".join(products[i : i + 500]), "pageSize": 500},
        )
        response.raise_for_status()
        for item in response.json()["items"]:
            for w in item["warehouses"]:
                out[(item["productNumber"], w["warehouse"])] = float(w["available"])
    return out


def stock_mismatches(
    http: httpx2.Client, url: str, shop_token: str, truth: dict[tuple[str, str], float]
) -> int:
    """How many (product, warehouse) balances of the connector's `/v1/stock` differ from
    `truth` (Extend's, from `Sim.balances`)."""
    products = sorted({p for p, _ in truth})
    local = local_stock(http, url, shop_token, products)
    return sum(1 for k, v in truth.items() if local.get(k) != v)


# ------------------------------------------------------------------ lean HTTP/1.1 load generator


class Conn:
    """One keep-alive HTTP/1.1 connection on raw asyncio streams (the client must cost little)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = [
            f"{method} {path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            f"Content-Length: {len(body)}",
        ]
        head += [f"{k}: {v}" for k, v in headers.items()]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            await self.close()
            raise ConnectionError("connection closed")
        status = int(status_line.split()[1])
        length = 0
        close = False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            key, _, value = line.decode("latin-1").partition(":")
            if key.lower() == "content-length":
                length = int(value.strip())
            elif key.lower() == "connection" and value.strip().lower() == "close":
                close = True
        if length:
            await self.reader.readexactly(length)
        if close:
            await self.close()
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        self.reader = self.writer = None
