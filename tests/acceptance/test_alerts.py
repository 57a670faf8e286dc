"""Alerts end to end with real processes (issue #15): the simulator as Extend, the connector
(`run`, SQLite) with its alert webhook pointed at a receiver on a free port. During an Extend
outage the receiver gets a parked-failure alert (an order for a product Extend does not have
yet) and a stale-data alert (balances not confirmed for longer than the threshold), each once;
after the outage, with the product created in Extend and the failure retried
(`failures retry`), it gets their resolutions. Every call is signed (Standard Webhooks)."""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import httpx2
import pytest
from standardwebhooks.webhooks import Webhook

from support.alert_receiver import alert_receiver
from support.fleet import SECRET, simulator
from support.processes import CLI, Proc, free_port, running, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ALERT_SECRET = "whsec_YWxlcnQtcmVjZWl2ZXItc2VjcmV0LTMyYnl0ZXMh"
AUTH = {"authorization": "Bearer shop-token"}


def _metrics(http: httpx2.Client, url: str) -> str:
    return http.get(f"{url}/metrics").text


def test_parked_and_stale_alerts_during_an_outage_then_resolved(tmp_path: Path) -> None:
    sim_port, port = free_port(), free_port()
    with alert_receiver() as (hook_url, received), httpx2.Client(timeout=30) as http:
        env = {
            "EXTEND_CONNECTOR_EXTEND__BASE_URL": f"http://127.0.0.1:{sim_port}/api",
            "EXTEND_CONNECTOR_EXTEND__WEBHOOK_SECRET": SECRET,
            "EXTEND_CONNECTOR_EXTEND__WAREHOUSES": "MainWarehouse,GreenWarehouse",
            "EXTEND_CONNECTOR_SERVER__PORT": str(port),
            "EXTEND_CONNECTOR_STORE__DATA_DIR": str(tmp_path / "data"),
            "EXTEND_CONNECTOR_SCOPE__PRODUCTS": "sync",
            "EXTEND_CONNECTOR_SCOPE__CUSTOMERS": "off",
            "EXTEND_CONNECTOR_SCOPE__PRICES": "off",
            # Sweeps every 3 s keep a quiet, healthy data point confirmed; stale after 15 s.
            "EXTEND_CONNECTOR_SYNC__BALANCES_SWEEP_MINUTES": "0.05",
            "EXTEND_CONNECTOR_SYNC__ORDERS_SWEEP_MINUTES": "0.05",
            "EXTEND_CONNECTOR_SYNC__PRODUCTS_SWEEP_MINUTES": "0.05",
            "EXTEND_CONNECTOR_ALERTS__WEBHOOK_URL": hook_url,
            "EXTEND_CONNECTOR_ALERTS__WEBHOOK_SECRET": ALERT_SECRET,
            "EXTEND_CONNECTOR_ALERTS__CHECK_SECONDS": "1",
            "EXTEND_CONNECTOR_ALERTS__STALE_MINUTES": "0.25",
            "EXTEND_CONNECTOR_ALERTS__UNREACHABLE_MINUTES": "0.1",
            "EXTEND_CONNECTOR_LOG__LEVEL": "INFO",
        }
        sim = simulator(
            tmp_path, port, sim_port, products=20, warehouses=None, extra=("--no-rate-limits",)
        )
        connector = Proc(
            "connector",
            [*CLI, "run"],
            env=env,
            log_dir=tmp_path,
            cwd=tmp_path,
            health_url=f"http://127.0.0.1:{port}/readyz",
        )
        url = f"http://127.0.0.1:{port}"
        sim_url = f"http://127.0.0.1:{sim_port}/_sim"

        def sim_call(method: str, path: str, body: Any = None) -> Any:
            response = http.request(method, f"{sim_url}{path}", json=body)
            assert response.status_code < 300, response.text
            return response.json() if response.content else None

        with running(sim, connector):
            # Every data point confirmed by a first sweep; nothing to alert about.
            wait_for(
                lambda: all(
                    f'extend_connector_freshness_age_seconds{{data_point="{p}"}}'
                    in _metrics(http, url)
                    for p in ("orders", "balances", "products")
                ),
                90,
                what="a first sweep of orders, balances and products",
            )
            assert received.events() == []

            sim_call("POST", "/outage", {})
            order = {"shopRef": "A-1", "lines": [{"productNumber": "NEW-1", "quantity": 1}]}
            assert http.post(f"{url}/v1/orders", json=order, headers=AUTH).status_code < 500
            opened = wait_for(
                lambda: (
                    (e := received.events())
                    and {k for t, k in e if t == "alert.opened" and k.startswith("failure:")}
                    and ("alert.opened", "stale:balances") in e
                    and ("alert.opened", "extend_unreachable") in e
                    and e
                ),
                120,
                interval=0.5,
                what="parked-failure, stale-balances and unreachable alerts",
            )
            assert not [t for t, _ in opened if t == "alert.resolved"]  # still down

            sim_call("DELETE", "/outage")
            sim_call("POST", "/products", {"productNumber": "NEW-1", "productName": "New"})
            failure_condition = next(
                k for t, k in opened if t == "alert.opened" and k.startswith("failure:")
            )
            retried = subprocess.run(
                [*CLI, "failures", "retry", failure_condition.removeprefix("failure:")],
                env={**connector.env},
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert retried.returncode == 0, retried.stdout + retried.stderr
            wanted = {
                ("alert.resolved", failure_condition),
                ("alert.resolved", "stale:balances"),
                ("alert.resolved", "extend_unreachable"),
            }
            wait_for(
                lambda: wanted <= set(received.events()),
                120,
                interval=0.5,
                what="the resolutions",
            )
            wait_for(
                lambda: http.get(f"{url}/v1/orders/A-1", headers=AUTH).json().get("orderNumber"),
                60,
                what="the retried order in Extend",
            )

    # One notice per condition and event: de-duplicated across the ~1 s evaluations.
    counts = Counter(received.events())
    assert all(n == 1 for n in counts.values()), counts
    verifier = Webhook(ALERT_SECRET)
    for headers, body in received.calls:
        verifier.verify(body, headers)
    stale = next(b for b in received.bodies() if b["alert"]["condition"] == "stale:balances")
    assert stale["alert"]["kind"] == "stale_data"
    assert stale["alert"]["detail"]["dataPoint"] == "balances"
