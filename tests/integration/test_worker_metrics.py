"""A `worker` process serves its own /metrics, /healthz and /readyz on `server.worker_port`
(web + worker deployments: each process's counters are scraped from that process)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import httpx2
import pytest

from support.processes import CLI, Proc, free_port, running

pytestmark = pytest.mark.postgres


def test_a_worker_answers_metrics_and_readiness_on_its_port(pg_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = {
        "EXTEND_CONNECTOR_STORE__DATABASE_URL": pg_url,
        "EXTEND_CONNECTOR_ENGINE__ROLE": "worker",
        "EXTEND_CONNECTOR_ENGINE__EXECUTOR_ID": "worker-1",
        "EXTEND_CONNECTOR_SERVER__WORKER_PORT": str(port),
        "EXTEND_CONNECTOR_SCOPE__PRODUCTS": "off",
        "EXTEND_CONNECTOR_SCOPE__CUSTOMERS": "off",
        "EXTEND_CONNECTOR_SCOPE__PRICES": "off",
    }
    subprocess.run([*CLI, "db", "upgrade"], env={**os.environ, **env}, check=True, cwd=tmp_path)
    worker = Proc(
        "worker",
        [*CLI, "run"],
        env=env,
        log_dir=tmp_path,
        cwd=tmp_path,
        health_url=f"http://127.0.0.1:{port}/readyz",
    )
    with running(worker), httpx2.Client(timeout=30) as http:
        ready = http.get(f"http://127.0.0.1:{port}/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"database": "ok", "migrations": "ok", "engine": "ok"}
        metrics = http.get(f"http://127.0.0.1:{port}/metrics").text
        assert "# HELP extend_connector_extend_calls_total" in metrics  # the worker's counters
        assert "extend_connector_state_readable 1.0" in metrics
        assert http.get(f"http://127.0.0.1:{port}/v1/stock").status_code in (401, 404)
        assert worker.popen is not None
        os.killpg(worker.popen.pid, signal.SIGTERM)
        assert worker.popen.wait(30) == 0, worker.tail()
