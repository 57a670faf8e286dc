"""The shared rate limit holds Extend's limit across separate connector processes.

The simulator (its own process) enforces a small standard group: 20 calls, refilled over 2 s.
Three separate caller processes (`fleet_caller.py`, each a `service.Connector` with its Extend
client) call `GET Products/{productNumber}` from 8 concurrent tasks each for 3 seconds. With
`extend.shared_rate_limit = on` the simulator counts zero 429s, on SQLite (one file shared by
the processes) and on PostgreSQL; with it off, the same run gets 429s, which shows it is the
shared limiter, not the per-process header pacing, that holds the limit.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from support.postgres import throwaway_database
from support.processes import CLI, Proc, free_port, running, wait_for

# The PostgreSQL variant may first wait its turn for the server's fleet slot (support.postgres).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

CALLER = Path(__file__).with_name("fleet_caller.py")
LIMIT, PERIOD = 20, 2
PROCESSES, TASKS, SECONDS = 3, 8, 3.0


class Simulator:
    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx2.Client(timeout=30)

    def admin(self, method: str, path: str) -> Any:
        response = self.http.request(method, f"{self.url}/_sim{path}")
        assert response.status_code < 300, response.text
        return response.json() if response.content else None


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    tmp = tmp_path_factory.mktemp("shared-rate-limit")
    port = free_port()
    sim = Proc(
        "simulator",
        [
            *CLI,
            "simulator",
            "--port",
            str(port),
            "--products",
            "40",
            "--customers",
            "3",
            "--no-webhook",
            "--rate-standard",
            f"{LIMIT}/{PERIOD}",
        ],
        env={},
        log_dir=tmp,
        health_url=f"http://127.0.0.1:{port}/_sim/health",
    )
    with running(sim):
        yield Simulator(f"http://127.0.0.1:{port}")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with throwaway_database("ec_fleet", fleet=True) as url:
        yield url


def run_fleet(
    simulator: Simulator, tmp: Path, database_url: str, shared: str
) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """Run the callers at once; return the simulator's status counts and each caller's figures."""
    from extend_connector.store import migrate

    migrate(database_url)  # once, before the processes start (they would race on an empty database)
    simulator.admin("POST", "/rate-limits/reset")
    simulator.admin("POST", "/counters/reset")
    products = sorted(p["productNumber"] for p in simulator.admin("GET", "/state/products"))[:20]
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXTEND_CONNECTOR_")}
    env.update(
        {
            "EXTEND_CONNECTOR_EXTEND__BASE_URL": f"{simulator.url}/api",
            "EXTEND_CONNECTOR_STORE__DATABASE_URL": database_url,
            "EXTEND_CONNECTOR_STORE__DATA_DIR": str(tmp / "data"),
            "EXTEND_CONNECTOR_EXTEND__SHARED_RATE_LIMIT": shared,
            "EXTEND_CONNECTOR_EXTEND__MAX_IN_FLIGHT": str(TASKS),
            "EXTEND_CONNECTOR_EXTEND__DIALECT__RATE_LIMITS": json.dumps(
                {"standard": f"{LIMIT}/{PERIOD}"}
            ),
        }
    )
    callers = [
        Proc(
            f"caller-{shared}-{n}",
            [
                sys.executable,
                str(CALLER),
                "--name",
                str(n),
                "--dir",
                str(tmp),
                "--products",
                ",".join(products),
                "--seconds",
                str(SECONDS),
                "--tasks",
                str(TASKS),
            ],
            env=env,
            log_dir=tmp,
            cwd=tmp,
        )
        for n in range(PROCESSES)
    ]
    with running(*callers):
        wait_for(
            lambda: all((tmp / f"ready-{n}").exists() for n in range(PROCESSES)),
            60,
            what="every caller built its connector",
        )
        (tmp / "go").write_text("go")
        for caller in callers:
            assert caller.popen is not None
            assert caller.popen.wait(60) == 0, caller.tail()
    figures = [json.loads(caller.tail().splitlines()[-1]) for caller in callers]
    statuses = simulator.admin("GET", "/counters")["statuses"]
    print(
        f"shared_rate_limit={shared} {database_url.split(':')[0]}: simulator statuses {statuses}; "
        f"calls per process {[f['ok'] for f in figures]} in {SECONDS:g} s "
        f"(bucket allows {LIMIT} + {LIMIT / PERIOD:g}/s)"
    )
    return {k: int(v) for k, v in statuses.items()}, figures


def assert_held(statuses: dict[str, int], figures: list[dict[str, Any]]) -> None:
    assert statuses.get("429", 0) == 0, statuses
    for f in figures:
        assert f["fleet_attached"] and f["fleet_failures"] == 0, f
        assert f["ok"] > 0 and f["errors"] == {} and f["throttled_answers"] == 0, f
    # Every call the simulator answered is one the callers counted: nothing else reached it.
    assert statuses.get("200", 0) == sum(f["ok"] for f in figures), (statuses, figures)


def test_shared_limit_on_sqlite_holds_across_processes(
    simulator: Simulator, tmp_path: Path
) -> None:
    statuses, figures = run_fleet(
        simulator, tmp_path, f"sqlite:///{(tmp_path / 'fleet.db').as_posix()}", "on"
    )
    assert_held(statuses, figures)


@pytest.mark.postgres
def test_shared_limit_on_postgres_holds_across_processes(
    simulator: Simulator, tmp_path: Path, postgres_url: str
) -> None:
    # `auto` is on with PostgreSQL: the default of a scale-out deployment.
    statuses, figures = run_fleet(simulator, tmp_path, postgres_url, "auto")
    assert_held(statuses, figures)


def test_without_the_shared_limit_the_same_run_gets_429s(
    simulator: Simulator, tmp_path: Path
) -> None:
    statuses, figures = run_fleet(
        simulator, tmp_path, f"sqlite:///{(tmp_path / 'fleet.db').as_posix()}", "off"
    )
    assert not any(f["fleet_attached"] for f in figures)
    assert statuses.get("429", 0) > 0, statuses
    assert sum(f["throttled_answers"] for f in figures) == statuses["429"]
    assert all(f["ok"] > 0 for f in figures), figures
