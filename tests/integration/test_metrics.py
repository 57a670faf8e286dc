"""`/metrics` scraped before and after real work moves every family of issue #15: orders by
outcome, Extend calls by group/operation/status and latency, 429s and rate-limit waits, shop
deliveries and their latency, queue depths, outbox backlog, parked failures by kind, freshness per
data point, and the webhook inbox's families (simulator + connector in one process, SQLite)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from extend_connector.webshop import RecordingWebshop
from support.order_stack import order_stack
from support.processes import wait_for

TOKEN = {"authorization": "Bearer shop-token"}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(http: httpx2.Client, url: str) -> Samples:
    response = http.get(f"{url}/metrics")
    assert response.status_code == 200
    out: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


def present(samples: Samples, name: str, **labels: str) -> bool:
    want = set(labels.items())
    return any(n == name and want <= set(lab) for (n, lab) in samples)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Any, Any, str, httpx2.Client]]:
    with (
        order_stack(tmp_path, webshop=RecordingWebshop()) as (sim, connector, url),
        httpx2.Client(timeout=30) as http,
    ):
        yield sim, connector, url, http


def test_every_family_moves_with_real_work(stack: tuple[Any, Any, str, httpx2.Client]) -> None:
    sim, _connector, url, http = stack
    before = scrape(http, url)
    assert before[("extend_connector_state_readable", ())] == 1

    def order(ref: str, sku: str = "P000001") -> int:
        body = {"shopRef": ref, "lines": [{"productNumber": sku, "quantity": 1}]}
        return http.post(f"{url}/v1/orders", json=body, headers=TOKEN).status_code

    def status(ref: str) -> str:
        return str(http.get(f"{url}/v1/orders/{ref}", headers=TOKEN).json()["status"])

    # A throttle storm: the order's POST gets 429s, the budget makes the retries wait.
    assert http.patch(f"{sim.admin_url}/faults", json={"throttleStorm": 1.0}).status_code < 300
    assert order("M-1") == 202
    # Wait for the order's own POST to be refused: another flow's call may take the first 429,
    # and a storm ended on that one could let the POST through unrefused.
    during = wait_for(
        lambda: (
            (s := scrape(http, url))
            and total(s, "extend_connector_extend_throttled_total") >= 1
            and total(
                s, "extend_connector_extend_calls_total", operation="create_order", status="429"
            )
            >= 1
            and s
        ),
        30,
        what="a 429 counted on the order's POST",
    )
    # The order's job waits on its queue meanwhile.
    assert total(during, "extend_connector_queue_depth") >= 1
    assert http.patch(f"{sim.admin_url}/faults", json={"throttleStorm": 0.0}).status_code < 300
    wait_for(lambda: status("M-1") == "Registered", 60, what="M-1 in Extend")
    assert order("M-bad", sku="NO-SUCH-SKU") in (202, 422)  # parked at intake
    number = http.get(f"{url}/v1/orders/M-1", headers=TOKEN).json()["orderNumber"]
    assert http.post(f"{sim.admin_url}/orders/{number}/reserve").status_code < 300
    wait_for(lambda: status("M-1") == "Reserved", 30, what="M-1 reserved (by webhook)")
    # The outbox has told the shop about Reserved.
    after = wait_for(
        lambda: (
            (s := scrape(http, url))
            and total(s, "extend_connector_shop_deliveries_total", outcome="delivered")
            > total(before, "extend_connector_shop_deliveries_total", outcome="delivered")
            and s[("extend_connector_outbox_pending", ())] == 0
            and s
        ),
        30,
        what="shop deliveries counted and the outbox empty",
    )

    def moved(name: str, **labels: str) -> bool:
        return total(after, name, **labels) > total(before, name, **labels)

    assert moved("extend_connector_orders_total", outcome="received")
    assert moved("extend_connector_orders_total", outcome="created")
    assert moved("extend_connector_orders_total", outcome="invalid")
    assert moved("extend_connector_extend_calls_total", operation="create_order", status="429")
    assert moved("extend_connector_extend_calls_total", operation="create_order", status="201") or (
        moved("extend_connector_extend_calls_total", operation="create_order", status="200")
    )
    assert moved("extend_connector_extend_calls_total", operation="get_order")
    assert moved("extend_connector_extend_call_seconds_count")
    assert moved("extend_connector_extend_throttled_total")
    assert moved("extend_connector_extend_rate_limit_waits_total")
    assert moved("extend_connector_extend_rate_limit_wait_seconds_total")
    assert moved("extend_connector_shop_delivery_seconds_count")
    assert moved("extend_connector_webhook_deliveries_total", outcome="accepted")
    assert moved("extend_connector_webhook_inbox_seconds_count")
    assert moved("extend_connector_failures_parked", kind="order")
    assert after[("extend_connector_extend_reachable", ())] == 1
    # Per rate-limit group: the orders went through the write group, the progress reads standard.
    assert total(after, "extend_connector_extend_group_reachable", group="write") == 1
    assert total(after, "extend_connector_extend_group_reachable", group="standard") == 1
    assert present(after, "extend_connector_outbox_oldest_pending_seconds")
    # The orders sweep has not run (every 60 min) but the balances' first load has.
    assert present(after, "extend_connector_freshness_age_seconds", data_point="balances")
