"""2,000 slow connections held against a real connector process: `/v1` reads and `/healthz` still
answer, and the server closes every slow connection at its head deadline (issue #12, defect 4).

Exact counts only; the latency figures are `benchmarks/slow_clients.py`'s.
"""

from __future__ import annotations

from pathlib import Path

import httpx2
import pytest

from support.processes import CLI, Proc, free_port, running, wait_for
from support.slowloris import SlowClients, raise_open_files

pytestmark = pytest.mark.slow

SLOW = 2000
TOKEN = {"authorization": "Bearer shop-token"}


def test_reads_are_answered_while_2000_slow_connections_are_held(tmp_path: Path) -> None:
    raise_open_files(SLOW + 1024)
    port = free_port()
    env = {
        "EXTEND_CONNECTOR_EXTEND__BASE_URL": f"http://127.0.0.1:{free_port()}/api",
        "EXTEND_CONNECTOR_STORE__DATA_DIR": str(tmp_path / "data"),
        "EXTEND_CONNECTOR_SERVER__PORT": str(port),
        "EXTEND_CONNECTOR_SERVER__HEADER_TIMEOUT_SECONDS": "3",
    }
    connector = Proc(
        "connector",
        [*CLI, "run"],
        env=env,
        log_dir=tmp_path,
        cwd=tmp_path,
        health_url=f"http://127.0.0.1:{port}/healthz",
    )
    base = f"http://127.0.0.1:{port}"
    with running(connector):
        slow = SlowClients("127.0.0.1", port, SLOW, interval=0.5).start()
        try:
            slow.wait_held()
            codes: list[int] = []
            with httpx2.Client(timeout=60) as http:
                for _ in range(40):
                    assert slow.held >= SLOW * 0.9  # reads happen while the slow clients are there
                    codes.append(http.get(f"{base}/v1/stock", headers=TOKEN).status_code)
                    codes.append(http.get(f"{base}/healthz").status_code)
            assert codes == [200] * 80
            # Every slow connection opened so far ends at its deadline; the clients keep reopening.
            wait_for(
                lambda: slow.closed_by_server >= SLOW, timeout=120, what="slow connections closed"
            )
        finally:
            slow.stop()
        assert slow.refused == 0
        assert httpx2.get(f"{base}/healthz", timeout=30).status_code == 200
        log = connector.log_path.read_text(errors="replace")
        assert "Traceback" not in log
        assert "Too many open files" not in log
