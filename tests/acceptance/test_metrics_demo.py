"""`/metrics` scraped before and after a demo run (`demo --chaos`, a real process): every family
docs/operations.md lists for the flows moves (issue 15). One order the connector must park is
posted by the test, since a demo's shop places valid orders only."""

from __future__ import annotations

import queue
import re
import subprocess
import threading
import time
from pathlib import Path

import httpx2
import pytest

from support.processes import CLI

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SAMPLE = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")
COUNTERS = (
    "extend_connector_orders_total",
    "extend_connector_extend_calls_total",
    "extend_connector_extend_call_seconds_count",
    "extend_connector_extend_rate_limit_waits_total",
    "extend_connector_shop_deliveries_total",
    "extend_connector_shop_delivery_seconds_count",
    "extend_connector_webhook_notifications_total",
)
GAUGES = (
    "extend_connector_queue_depth",
    "extend_connector_outbox_pending",
    "extend_connector_failures_parked",
    "extend_connector_freshness_age_seconds",
)
STATES = ("extend_connector_extend_reachable", "extend_connector_state_readable")  # 0 or 1


def _scrape(url: str) -> dict[str, dict[str, float]]:
    """family sample name -> labels -> value."""
    out: dict[str, dict[str, float]] = {}
    for line in httpx2.get(f"{url}/metrics", timeout=10.0).text.splitlines():
        match = SAMPLE.match(line)
        if match and not line.startswith("#"):
            out.setdefault(match["name"], {})[match["labels"] or ""] = float(match["value"])
    return out


def test_every_flow_family_moves_during_a_demo_run(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        # Extend's list limit lowered so that the rate budget has to hold calls back.
        [
            *CLI,
            *("demo", "--chaos", "--duration", "30", "--plain", "--rate-heavy", "20/60"),
            *("--data-dir", str(tmp_path)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    lines: queue.Queue[str] = queue.Queue()
    seen: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()

    def wait_line(pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1.0)
            except queue.Empty:
                continue
            seen.append(line)
            found = re.search(pattern, line)
            if found:
                return found
        raise AssertionError(f"no line matching {pattern!r}:\n{''.join(seen[-40:])}")

    # A gauge is a level, not a count: it may stand at the same value at both ends of the run
    # (the outbox empty before and after), so it is sampled every second in between.
    samples: list[dict[str, dict[str, float]]] = []
    stop = threading.Event()

    def sample(url: str) -> None:
        while not stop.wait(1.0):
            try:
                samples.append(_scrape(url))
            except httpx2.HTTPError:
                pass  # a scrape that fails under load is just one sample fewer

    try:
        url = wait_line(r"connector\s+(http://127\.0\.0\.1:\d+)", 120)[1]
        before = _scrape(url)
        threading.Thread(target=sample, args=(url,), daemon=True).start()
        # An order the connector must park (unknown product): the shop's script never does that.
        parked = httpx2.post(
            f"{url}/v1/orders",
            json={"shopRef": "METRICS-1", "lines": [{"productNumber": "NO-SUCH", "quantity": 1}]},
            headers={"authorization": "Bearer demo-shop-token"},
            timeout=30.0,
        )
        assert parked.status_code in (202, 422), parked.text
        wait_line(r"^settle:", 180)
        stop.set()
        after = _scrape(url)
        # The demo's own self-check is test_demo.py's business; here (Extend's list limit cut to
        # a third, on a loaded CI machine) a slow settle may end it with 1, never a crash.
        assert proc.wait(timeout=300) in (0, 1), "".join(seen[-40:])
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
    moved = {
        name: sum(after.get(name, {}).values()) > sum(before.get(name, {}).values())
        for name in COUNTERS
    }
    assert all(moved.values()), moved
    seen_values = {
        name: {repr(sorted(s.get(name, {}).items())) for s in [before, *samples, after]}
        for name in GAUGES
    }
    changed = {name: len(values) > 1 for name, values in seen_values.items()}
    assert all(changed.values()), {n: seen_values[n] for n, ok in changed.items() if not ok}
    assert all(after.get(name) == {"": 1.0} for name in STATES), [after.get(n) for n in STATES]
