"""stock.changed reaches the shop as a signed Standard Webhook, only when the value changed.

The whole service runs in this process (SQLite, engine, inbox, flush, outbox delivery); the
simulator sends real signed webhooks to the inbox; a tiny receiver on loopback plays the shop.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2
import pytest

from extend_connector.flows import balances, outbox
from extend_connector.service import Connector
from extend_connector.settings import (
    ExtendSettings,
    ScopeSettings,
    ServerSettings,
    Settings,
    StoreSettings,
    SyncSettings,
    WebshopSettings,
)
from extend_connector.simulator import SimulatorConfig, WebhookRegistration, run_in_thread
from support.processes import free_port, wait_for
from support.settle import wait_settled

SECRET = "whsec_" + base64.b64encode(b"shop-receiver-secret-for-tests").decode()


class Receiver:
    """A shop endpoint that checks the Standard Webhooks signature and keeps what it got."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.bad_signatures = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                signed = (
                    f"{self.headers['webhook-id']}.{self.headers['webhook-timestamp']}.".encode()
                    + body
                )
                key = base64.b64decode(SECRET.removeprefix("whsec_"))
                expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
                if f"v1,{expected}" not in self.headers["webhook-signature"].split():
                    receiver.bad_signatures += 1
                receiver.events.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stock(self, product: str) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if e["type"] == "stock.changed" and e["data"]["key"] == f"sku:{product}"
        ]


@pytest.fixture
def shop() -> Iterator[Receiver]:
    receiver = Receiver()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()


def test_stock_changed_reaches_the_shop_only_when_the_value_changed(
    tmp_path: Path, shop: Receiver
) -> None:
    port = free_port()
    inbox = f"http://127.0.0.1:{port}/webhooks/extend"
    config = SimulatorConfig(
        seed=5,
        products=20,
        customers=1,
        warehouses=("MainWarehouse",),
        webhooks=(WebhookRegistration(callback_url=inbox, events=("AvailableBalanceChanged",)),),
    )
    with run_in_thread(config) as sim:
        settings = Settings(
            store=StoreSettings(database_url=f"sqlite:///{tmp_path / 'c.db'}"),
            extend=ExtendSettings(base_url=sim.base_url, warehouses=["MainWarehouse"]),
            webshop=WebshopSettings(webhook_url=shop.url, webhook_secret=SECRET),
            scope=ScopeSettings(products="off", customers="off", prices="off"),
            server=ServerSettings(port=port),
            sync=SyncSettings(balances_sweep_minutes=60),
        )
        connector = Connector(settings)
        try:
            with connector.serve_in_thread(port=port):
                product = sorted(sim.state.products)[0]
                wait_for(
                    lambda: _local(port, product) is not None, timeout=30, what="the initial load"
                )
                start = _local(port, product)
                assert start is not None
                # The initial load told the shop about every non-zero balance (once).
                before = 1 if start else 0
                wait_for(
                    lambda: len(shop.stock(product)) == before,
                    timeout=30,
                    what="the initial load's event",
                )

                httpx2.post(
                    f"{sim.admin_url}/stock",
                    json={"productNumber": product, "warehouse": "MainWarehouse", "delta": 5},
                )
                wait_for(
                    lambda: len(shop.stock(product)) == before + 1,
                    timeout=30,
                    what="stock.changed at the shop",
                )
                event = shop.stock(product)[-1]
                assert event["data"]["available"] == start + 5
                assert shop.bad_signatures == 0

                # A notification without a change: fetched and confirmed, but the shop hears
                # nothing.
                confirmed = _confirmed_at(port, product)
                httpx2.post(
                    f"{sim.admin_url}/events",
                    json={
                        "action": "AvailableBalanceChanged",
                        "details": {
                            "ProductNumber": product,
                            "Warehouse": "MainWarehouse",
                            "AvailableBalance": str(start + 5),
                        },
                    },
                )
                wait_for(
                    lambda: _confirmed_at(port, product) != confirmed,
                    timeout=30,
                    what="the re-fetch of an unchanged balance",
                )
                # An event, had one been published, would be delivered once both queues are idle.
                wait_settled(connector.engine, balances.QUEUE, outbox.QUEUE)
                assert len(shop.stock(product)) == before + 1
        finally:
            connector.close()


def _get(port: int, product: str) -> dict[str, Any] | None:
    response = httpx2.get(
        f"http://127.0.0.1:{port}/v1/stock",
        params={"productNumbers": product},
        headers={"authorization": "Bearer shop-token"},
    )
    item: dict[str, Any] = response.json()["items"][0]
    return item if item["freshness"]["confirmedAt"] else None


def _local(port: int, product: str) -> float | None:
    item = _get(port, product)
    return None if item is None else float(item["available"])


def _confirmed_at(port: int, product: str) -> str | None:
    item = _get(port, product)
    return None if item is None else str(item["freshness"]["confirmedAt"])
