"""PostgreSQL stopped for 10 s and started again during order intake (issue #12, defect 2).

Real processes: the bundled simulator as Extend, the connector (one `all` process, or one `web`
and two `worker` processes with one worker SIGKILLed as the database stops and replaced, once it
is back, by a worker with a new executor id, as a container platform does) on a private
PostgreSQL server this test creates (initdb on a free port; never the machine's shared server).
The killed worker's jobs are run by the others once it has not been heard of for 5 s
(flows/executors.py; heartbeat 1 s).
A shop posts new orders at about 5 per second and re-posts any it got no acknowledgement for.

Exact counts: every order the shop got 202/200 for is in Extend exactly once; the shop saw only
202, 200 or a JSON 503 with Retry-After; no order job ended in ERROR.
"""

from __future__ import annotations

import collections
import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2
import pytest
import sqlalchemy as sa

from support.fleet import SECRET, simulator
from support.pgserver import PrivatePostgres, postgres_bin, private_postgres
from support.processes import CLI, Proc, free_port, running, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.skipif(postgres_bin() is None, reason="no PostgreSQL server binaries (initdb)"),
]

TOKEN = {"authorization": "Bearer shop-token"}
ORDERS = 150
PER_SECOND = 5.0
OUTAGE_AFTER_SECONDS = 8.0
OUTAGE_SECONDS = 10.0


class Shop:
    """Posts orders at a steady pace; retries each until acknowledged; counts every answer."""

    def __init__(self, url: str) -> None:
        self.url = url
        # A connection left idle as long as the connector's keep-alive (5 s) may be closed by it
        # just as a request goes out on it (a ReadError that says nothing about the connector);
        # a client drops its idle connections before the server does.
        self.http = httpx2.Client(timeout=30, limits=httpx2.Limits(keepalive_expiry=3.0))
        self.lock = threading.Lock()
        self.answers: collections.Counter[str] = collections.Counter()
        self.unexpected: list[str] = []
        self.acknowledged: list[str] = []

    def _post(self, ref: str) -> None:
        body = {
            "shopRef": ref,
            "lines": [{"productNumber": "P000001", "quantity": 1, "unitPrice": "12.50"}],
        }
        while True:
            try:
                response = self.http.post(f"{self.url}/v1/orders", json=body, headers=TOKEN)
            except httpx2.TransportError as exc:
                with self.lock:
                    self.answers["no answer"] += 1
                    self.unexpected.append(f"{ref}: {type(exc).__name__}")
                time.sleep(1.0)
                continue
            code = response.status_code
            json_body = response.headers.get("content-type", "").startswith("application/json")
            with self.lock:
                if code in (200, 202):
                    self.answers[str(code)] += 1
                    self.acknowledged.append(ref)
                    return
                if code == 503 and json_body and response.headers.get("retry-after"):
                    self.answers["503 json"] += 1
                else:
                    self.answers[f"{code} other"] += 1
                    self.unexpected.append(
                        f"{ref}: {code} {response.headers.get('content-type')} "
                        f"{response.text[:120]!r}"
                    )
            time.sleep(min(float(response.headers.get("retry-after") or 1.0), 1.0))

    def run(self, refs: list[str], on_time: dict[float, Any]) -> None:
        """Post `refs` at PER_SECOND; call each `on_time[t]` once t seconds have passed."""
        started = time.monotonic()
        pending = dict(sorted(on_time.items()))
        with ThreadPoolExecutor(16) as pool:
            futures = []
            for i, ref in enumerate(refs):
                while pending and time.monotonic() - started >= next(iter(pending)):
                    pending.pop(next(iter(pending)))()
                futures.append(pool.submit(self._post, ref))
                time.sleep(max(0.0, started + (i + 1) / PER_SECOND - time.monotonic()))
            for action in pending.values():
                action()
            for future in futures:
                future.result()


def _sim(tmp_path: Path, port: int) -> tuple[Proc, str]:
    sim_port = free_port()
    proc = simulator(
        tmp_path, port, sim_port, products=40, warehouses=None, extra=("--no-rate-limits",)
    )
    return proc, f"http://127.0.0.1:{sim_port}"


def _env(
    sim_url: str, db_url: str, port: int, tmp_path: Path, role: str, executor: str
) -> dict[str, str]:
    return {
        "EXTEND_CONNECTOR_EXTEND__BASE_URL": f"{sim_url}/api",
        "EXTEND_CONNECTOR_EXTEND__WEBHOOK_SECRET": SECRET,
        "EXTEND_CONNECTOR_EXTEND__WAREHOUSES": "MainWarehouse,GreenWarehouse",
        "EXTEND_CONNECTOR_SERVER__PORT": str(port),
        "EXTEND_CONNECTOR_STORE__DATA_DIR": str(tmp_path / f"var-{executor}"),
        "EXTEND_CONNECTOR_STORE__DATABASE_URL": db_url,
        "EXTEND_CONNECTOR_SCOPE__PRODUCTS": "off",
        "EXTEND_CONNECTOR_ENGINE__ROLE": role,
        "EXTEND_CONNECTOR_ENGINE__EXECUTOR_ID": executor,
        "EXTEND_CONNECTOR_ENGINE__HEARTBEAT_SECONDS": "1",
        "EXTEND_CONNECTOR_ENGINE__EXECUTOR_DEAD_SECONDS": "5",
    }


def _in_extend(http: httpx2.Client, sim_url: str) -> collections.Counter[str]:
    data: Any = http.get(f"{sim_url}/_sim/state/orders").json()
    items = data["items"] if isinstance(data, dict) else data
    return collections.Counter(str(o.get("orderNumberExternal")) for o in items)


def _local(db_url: str) -> tuple[dict[str, str | None], int]:
    """shopRef -> orderNumber, and how many order jobs ended in ERROR."""
    engine = sa.create_engine(
        db_url.replace("postgresql://", "postgresql+psycopg://"), poolclass=sa.NullPool
    )
    try:
        with engine.connect() as conn:
            rows = dict(conn.execute(sa.text("SELECT shop_ref, order_number FROM orders")).all())
            failed = conn.execute(
                sa.text(
                    "SELECT count(*) FROM dbos.workflow_status WHERE name = 'orders.submit' "
                    "AND status IN ('ERROR', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED')"
                )
            ).scalar_one()
    finally:
        engine.dispose()
    return rows, int(failed)


def _diagnosis(db_url: str, refs: list[str], procs: tuple[Proc, ...]) -> str:
    """What a failed run needs: each order not in Extend with its jobs and their steps, and every
    warning or error line the processes logged."""
    local, _ = _local(db_url)
    missing = [r for r in refs if not local.get(r)]
    engine = sa.create_engine(
        db_url.replace("postgresql://", "postgresql+psycopg://"), poolclass=sa.NullPool
    )
    out = [f"orders acknowledged but not in Extend: {missing}"]
    try:
        with engine.connect() as conn:
            for ref in missing:
                out.append(
                    repr(
                        conn.execute(
                            sa.text(
                                "SELECT status, submit_attempts, last_error FROM orders "
                                "WHERE shop_ref = :r"
                            ),
                            {"r": ref},
                        ).all()
                    )
                )
                jobs = conn.execute(
                    sa.text(
                        "SELECT workflow_uuid, status, executor_id, queue_name, "
                        "recovery_attempts, application_version, created_at, updated_at "
                        "FROM dbos.workflow_status WHERE workflow_uuid LIKE :w"
                    ),
                    {"w": f"%{ref}%"},
                ).all()
                out.append(f"  jobs: {jobs}")
                for job in jobs:
                    steps = conn.execute(
                        sa.text(
                            "SELECT function_id, function_name, output, error "
                            "FROM dbos.operation_outputs WHERE workflow_uuid = :w "
                            "ORDER BY function_id"
                        ),
                        {"w": job[0]},
                    ).all()
                    out.append(f"  steps of {job[0]}: {steps}")
    finally:
        engine.dispose()
    for proc in procs:
        try:
            lines = proc.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            continue
        loud = [
            line
            for line in lines
            if '"level": "info"' not in line and '"level": "debug"' not in line
        ]
        out.append(f"----- {proc.name}: {len(loud)} lines not at info -----")
        out.extend(loud[-150:])
    return "\n".join(out)


@pytest.fixture
def postgres() -> Iterator[PrivatePostgres]:
    with private_postgres() as server:
        yield server


def _scenario(tmp_path: Path, postgres: PrivatePostgres, *, fleet: bool) -> None:
    db_url = postgres.create_database("connector")
    port = free_port()
    sim, sim_url = _sim(tmp_path, port)
    role = "web" if fleet else "all"
    front = Proc(
        f"connector-{role}",
        [*CLI, "run"],
        env=_env(sim_url, db_url, port, tmp_path, role, "web"),
        log_dir=tmp_path,
        cwd=tmp_path,
        health_url=f"http://127.0.0.1:{port}/healthz",
    )
    workers = (
        [
            Proc(
                f"worker-{n}",
                [*CLI, "run"],
                env=_env(sim_url, db_url, port, tmp_path, "worker", f"w{n}"),
                log_dir=tmp_path,
                cwd=tmp_path,
            )
            for n in (1, 2)
        ]
        if fleet
        else []
    )
    # The killed worker's replacement: a new executor id, so nothing but the fleet's heartbeat
    # hands it the jobs the killed one held (flows/executors.py).
    replacement = Proc(
        "worker-3",
        [*CLI, "run"],
        env=_env(sim_url, db_url, port, tmp_path, "worker", "w3"),
        log_dir=tmp_path,
        cwd=tmp_path,
    )
    refs = [f"{'F' if fleet else 'A'}-{i:04d}" for i in range(ORDERS)]
    shop = Shop(f"http://127.0.0.1:{port}")
    http = httpx2.Client(timeout=30)

    def cut() -> None:
        if fleet:
            workers[0].kill()  # mid-flight: its running jobs stay PENDING under its executor id
        postgres.stop()

    def restore() -> None:
        postgres.start()
        if fleet:
            replacement.start()

    with running(sim, front, *workers):
        try:
            shop.run(
                refs, {OUTAGE_AFTER_SECONDS: cut, OUTAGE_AFTER_SECONDS + OUTAGE_SECONDS: restore}
            )

            def all_in_extend() -> bool:
                local, _ = _local(db_url)
                return all(local.get(r) for r in refs)

            wait_for(all_in_extend, 420, interval=2.0, what="every acknowledged order in Extend")
        except BaseException:
            sys.stderr.write(f"\n----- postgres log -----\n{postgres.log_tail()}\n")
            with contextlib.suppress(Exception):
                procs = (front, *workers, replacement)
                sys.stderr.write(f"\n{_diagnosis(db_url, refs, procs)}\n")
            raise
        finally:
            replacement.stop()
        counts = _in_extend(http, sim_url)
        local, failed_jobs = _local(db_url)
    print(
        f"\n{'web + 2 workers (one SIGKILLed)' if fleet else 'one process'}: shop answers "
        f"{dict(shop.answers)}; {len(refs)} orders, {sum(counts[r] for r in refs)} in Extend"
    )
    assert shop.unexpected == []
    assert set(shop.answers) <= {"200", "202", "503 json"}
    assert shop.answers["503 json"] > 0  # the database really was down while the shop posted
    assert sorted(shop.acknowledged) == sorted(refs)
    assert {r: counts[r] for r in refs if counts[r] != 1} == {}
    assert all(local[r] for r in refs)
    assert failed_jobs == 0


def test_database_restart_during_intake_loses_nothing(
    tmp_path: Path, postgres: PrivatePostgres
) -> None:
    _scenario(tmp_path, postgres, fleet=False)


def test_database_restart_and_a_killed_worker_lose_nothing(
    tmp_path: Path, postgres: PrivatePostgres
) -> None:
    _scenario(tmp_path, postgres, fleet=True)
