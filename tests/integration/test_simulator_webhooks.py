"""Webhooks out over real loopback HTTP: format, signature, batching, retry schedule, 410, filters
and faults."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx2
import pytest

from extend_connector.simulator import (
    RunningSimulator,
    SimulatorConfig,
    WebhookRegistration,
    run_in_thread,
    sign,
)
from extend_connector.simulator.webhooks import UNKNOWN_ACTION

SECRET = "hook-secret"


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A webhook inbox on loopback that answers with scripted statuses (200 when the script is
    empty)."""

    url: str = ""
    calls: list[Received] = field(default_factory=list)
    script: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    inbox = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with inbox.lock:
                inbox.calls.append(Received({k.lower(): v for k, v in self.headers.items()}, body))
                status = inbox.script.pop(0) if inbox.script else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    inbox.url = f"http://127.0.0.1:{server.server_address[1]}/webhooks/extend"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield inbox
    server.shutdown()
    server.server_close()


def _sim(receiver: Receiver, **kwargs: Any) -> Any:
    hook = WebhookRegistration(
        callback_url=receiver.url, secret=SECRET, warehouses=tuple(kwargs.pop("warehouses", ()))
    )
    kwargs.setdefault("products", 20)
    cfg = SimulatorConfig(
        customers=3,
        webhooks=(hook,),
        time_scale=kwargs.pop("time_scale", 0.001),
        rate_limits_enabled=False,
        **kwargs,
    )
    return run_in_thread(cfg)


def _notifications(receiver: Receiver) -> list[dict[str, Any]]:
    return [n for call in receiver.calls for n in call.json["Notifications"]]


def test_delivery_is_in_extends_format_and_signed(receiver: Receiver) -> None:
    with _sim(receiver) as sim:
        sim.state.move_stock(
            [{"productNumber": "P000001", "warehouse": "MainWarehouse", "physical": 5324}]
        )
        assert sim.dispatcher.wait_idle(10)
    (call,) = receiver.calls
    assert call.headers["content-type"] == "application/json; charset=utf-8"
    assert call.headers["ms-signature"] == sign(SECRET, call.body)
    assert call.headers["ms-signature"].removeprefix("sha256=").isupper()
    assert b"\n  " in call.body  # pretty-printed
    body = call.json
    assert len(body["Id"]) == 32 and int(body["Id"], 16) >= 0
    assert body["Attempt"] == 1 and len(body["Properties"]["NotificationId"]) == 36
    # Raised together (one stock move) -> one POST with both notifications; all Details values are
    # strings.
    assert [n["Action"] for n in body["Notifications"]] == [
        "BalanceChanged",
        "AvailableBalanceChanged",
    ]
    assert body["Notifications"][0]["Details"] == {
        "ProductNumber": "P000001",
        "Warehouse": "MainWarehouse",
        "Balance": "5324",
    }


def test_retries_after_one_and_four_minutes_scaled_with_the_same_id(receiver: Receiver) -> None:
    receiver.script = [500, 503]
    with _sim(receiver, time_scale=0.002) as sim:  # 1 min -> 0.12 s, 4 min -> 0.48 s
        sim.state.fire("ProductCreated", {"ProductNumber": "P000001"})
        assert sim.dispatcher.wait_idle(10)
        records = sim.dispatcher.snapshot()
    assert [c.json["Attempt"] for c in receiver.calls] == [1, 2, 3]
    assert len({c.json["Id"] for c in receiver.calls}) == 1
    assert len({c.json["Properties"]["NotificationId"] for c in receiver.calls}) == 1
    assert [r.outcome for r in records] == ["failed", "failed", "delivered"]
    assert all(c.headers["ms-signature"] == sign(SECRET, c.body) for c in receiver.calls)


def test_three_failures_abandon_the_delivery(receiver: Receiver) -> None:
    receiver.script = [500, 500, 500, 500]
    with _sim(receiver) as sim:
        sim.state.fire("ProductCreated", {"ProductNumber": "P000001"})
        assert sim.dispatcher.wait_idle(10)
        assert [r.outcome for r in sim.dispatcher.snapshot()] == ["failed", "failed", "abandoned"]
    assert len(receiver.calls) == 3


def test_410_stops_delivery_and_deactivates_the_registration(receiver: Receiver) -> None:
    receiver.script = [410]
    with _sim(receiver) as sim:
        sim.state.fire("ProductCreated", {"ProductNumber": "P000001"})
        assert sim.dispatcher.wait_idle(10)
        assert sim.state.registrations["connector"].active is False
        sim.state.fire("ProductCreated", {"ProductNumber": "P000002"})
        assert sim.dispatcher.wait_idle(10)
        hooks = httpx2.get(sim.admin_url + "/webhooks").json()
    assert len(receiver.calls) == 1 and hooks[0]["active"] is False


def test_warehouse_filter_and_event_selection(receiver: Receiver) -> None:
    with _sim(receiver, warehouses=("TEST",)) as sim:
        sim.state.move_stock(
            [
                {"productNumber": "P000001", "warehouse": "MainWarehouse", "delta": 1},
                {"productNumber": "P000001", "warehouse": "TEST", "delta": 2},
            ]
        )
        sim.state.fire("ProductCreated", {"ProductNumber": "X"})  # no warehouse: not filtered
        assert sim.dispatcher.wait_idle(10)
        assert {n["Details"].get("Warehouse") for n in _notifications(receiver)} == {"TEST", None}
        receiver.calls.clear()
        httpx2.put(
            sim.admin_url + "/webhooks/connector",
            json={
                "callbackUrl": receiver.url,
                "secret": SECRET,
                "events": ["AvailableBalanceChanged"],
            },
        ).raise_for_status()
        sim.state.move_stock(
            [{"productNumber": "P000002", "warehouse": "MainWarehouse", "delta": 3}]
        )
        assert sim.dispatcher.wait_idle(10)
    assert [n["Action"] for n in _notifications(receiver)] == ["AvailableBalanceChanged"]


def test_webhook_faults_are_observable(receiver: Receiver) -> None:
    with _sim(receiver, webhook_batch_size=1) as sim:
        admin = sim.admin_url
        httpx2.patch(admin + "/faults", json={"webhookDuplicateRate": 1.0}).raise_for_status()
        sim.state.fire("ProductCreated", {"ProductNumber": "D1"})
        assert sim.dispatcher.wait_idle(10)
        assert (
            len(receiver.calls) == 2
            and receiver.calls[0].json["Id"] == receiver.calls[1].json["Id"]
        )
        receiver.calls.clear()
        httpx2.patch(
            admin + "/faults", json={"webhookDuplicateRate": 0, "webhookDropRate": 1.0}
        ).raise_for_status()
        sim.state.fire("ProductCreated", {"ProductNumber": "D2"})
        assert sim.dispatcher.wait_idle(10)
        assert receiver.calls == []
        assert httpx2.get(admin + "/deliveries", params={"outcome": "dropped"}).json()["deliveries"]
        httpx2.patch(
            admin + "/faults",
            json={"webhookDropRate": 0, "unknownWebhookActions": True, "extraFields": True},
        ).raise_for_status()
        sim.state.fire("ProductCreated", {"ProductNumber": "D3"})
        assert sim.dispatcher.wait_idle(10)
        actions = [n["Action"] for c in receiver.calls for n in c.json["Notifications"]]
        assert actions == ["ProductCreated", UNKNOWN_ACTION]
        assert "SimExtraField" in receiver.calls[0].json
        receiver.calls.clear()
        # Reorder: one worker so the sending order is the queue order, reversed per burst.
        httpx2.patch(
            admin + "/faults",
            json={"unknownWebhookActions": False, "extraFields": False, "webhookReorder": True},
        ).raise_for_status()
    cfg = SimulatorConfig(
        products=5,
        customers=1,
        webhook_batch_size=1,
        webhook_concurrency=1,
        webhooks=(WebhookRegistration(callback_url=receiver.url, secret=SECRET),),
    )
    with run_in_thread(cfg) as sim:
        sim.state.set_faults(webhook_reorder=True)
        sim.state.move_stock(
            [
                {"productNumber": n, "warehouse": "MainWarehouse", "physical": 1000 + i}
                for i, n in enumerate(("P000001", "P000002", "P000003"))
            ]
        )
        assert sim.dispatcher.wait_idle(10)
    balances = [
        n["Details"]["ProductNumber"]
        for n in _notifications(receiver)
        if n["Action"] == "BalanceChanged"
    ]
    assert balances == ["P000003", "P000002", "P000001"]


def test_bulk_stock_moves_fire_many_events_fast(receiver: Receiver) -> None:
    with _sim(receiver, products=300) as sim:
        httpx2.put(
            sim.admin_url + "/webhooks/connector",
            json={
                "callbackUrl": receiver.url,
                "secret": SECRET,
                "events": ["AvailableBalanceChanged"],
            },
        ).raise_for_status()
        reply = httpx2.post(
            sim.admin_url + "/stock/bulk", json={"random": {"count": 1000, "products": 200}}
        )
        assert reply.json()["moved"] == 1000
        assert sim.dispatcher.wait_idle(20)
    notes = _notifications(receiver)
    # Applied as 4 changes of 250 moves; each change's notifications go in POSTs of at most 100.
    assert len(notes) == 1000 and len(receiver.calls) == 4 * 3
    assert len({n["Details"]["ProductNumber"] for n in notes}) == 200


def test_swedish_numbers_in_details(receiver: Receiver) -> None:
    with _sim(receiver, swedish_numbers=True) as sim:
        sim.state.move_stock(
            [{"productNumber": "P000001", "warehouse": "MainWarehouse", "physical": 5324.5}]
        )
        assert sim.dispatcher.wait_idle(10)
    assert _notifications(receiver)[0]["Details"]["Balance"] == "5 324,5"


def test_running_simulator_exposes_the_entry_point(receiver: Receiver) -> None:
    with _sim(receiver) as sim:
        assert isinstance(sim, RunningSimulator)
        assert (
            sim.base_url.endswith("/api")
            and sim.admin_url.endswith("/_sim")
            and sim.token == "sim-token"
        )
