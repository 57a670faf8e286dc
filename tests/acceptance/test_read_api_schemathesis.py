"""The read API's OpenAPI document is served, and schemathesis, fuzzing every read operation
against the running connector (real processes on loopback), finds no server error and no
answer that breaks the documented schema."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx2
import pytest

from .harness import CLI, Proc, free_port, running, wait_for

pytestmark = pytest.mark.slow

READ_PATHS = r"^/v1/(stock|products|prices|customers/)"


def test_schemathesis_finds_no_server_error(tmp_path: Path) -> None:
    sim_port, port = free_port(), free_port()
    sim = Proc("simulator", [*CLI, "simulator", "--port", str(sim_port), "--products", "50", "--customers", "5",
                             "--webhook-url", f"http://127.0.0.1:{port}/webhooks/extend"],
               env={}, log_dir=tmp_path, health_url=f"http://127.0.0.1:{sim_port}/_sim/health")
    env = {"EXTEND_CONNECTOR_EXTEND__BASE_URL": f"http://127.0.0.1:{sim_port}/api",
           "EXTEND_CONNECTOR_STORE__DATA_DIR": str(tmp_path / "data"),
           "EXTEND_CONNECTOR_SERVER__PORT": str(port)}
    connector = Proc("connector", [*CLI, "run"], env=env, log_dir=tmp_path, cwd=tmp_path,
                     health_url=f"http://127.0.0.1:{port}/healthz")
    base = f"http://127.0.0.1:{port}"
    with running(sim, connector):
        wait_for(lambda: httpx2.get(f"{base}/v1/stock", headers={"authorization": "Bearer shop-token"})
                 .json().get("totalCount"), timeout=60, what="balances loaded")
        document = httpx2.get(f"{base}/openapi.json").json()
        for path in ("/v1/stock", "/v1/products", "/v1/products/{productNumber}", "/v1/prices",
                     "/v1/customers/{customerNumber}"):
            assert "get" in document["paths"][path], path
        result = subprocess.run(
            [str(Path(sys.executable).with_name("schemathesis")), "run", f"{base}/openapi.json",
             "--include-path-regex", READ_PATHS, "--include-method", "GET",
             "-H", "Authorization: Bearer shop-token",
             # Not content-type conformance: requests that are not valid HTTP (raw control characters
             # in the URL) get uvicorn's own text/plain 400 before they reach the app.
             "--checks", "not_a_server_error,response_schema_conformance",
             "--max-examples", "40", "--seed", "1", "--workers", "2", "--no-color"],
            capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path)
        assert result.returncode == 0, result.stdout[:8000] + result.stderr[-2000:]
