"""One connector process in-process against an in-process simulator, with a local product copy:
what the order-flow integration tests start (SQLite in `tmp_path`, loopback, free port)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from extend_connector.service import Connector
from extend_connector.settings import Settings
from extend_connector.simulator import (
    RunningSimulator,
    SimulatorConfig,
    WebhookRegistration,
    run_in_thread,
)
from extend_connector.store.models import CursorRow, ProductRow
from extend_connector.webshop import WebshopPort
from support.processes import free_port


@contextlib.contextmanager
def order_stack(
    tmp_path: Path,
    *,
    engine_settings: dict[str, Any] | None = None,
    prepare: Callable[[Connector], None] | None = None,
    webshop: WebshopPort | None = None,
    database_url: str | None = None,
) -> Iterator[tuple[RunningSimulator, Connector, str]]:
    """Yield (simulator, connector, connector URL); everything stops on exit. `prepare` runs on
    the connector before it serves (e.g. to attach fault injection); `webshop` receives the
    outbox's events (default: none are delivered); `database_url` replaces the SQLite file."""
    port = free_port()
    cfg = SimulatorConfig(
        seed=3,
        products=20,
        customers=3,
        rate_limits_enabled=False,
        time_scale=0.01,
        webhooks=(WebhookRegistration(callback_url=f"http://127.0.0.1:{port}/webhooks/extend"),),
    )
    with run_in_thread(cfg) as sim:
        settings = Settings.model_validate(
            {
                "extend": {
                    "base_url": sim.base_url,
                    "webhook_secret": "sim-webhook-secret",
                    "warehouses": ["MainWarehouse", "GreenWarehouse"],
                },
                "store": {"database_url": database_url or f"sqlite:///{tmp_path / 'c.db'}"},
                "server": {"port": port},
                "sync": {"orders_sweep_minutes": 60},
                **({"engine": engine_settings} if engine_settings else {}),
            }
        )
        connector = Connector(settings, webshop=webshop, scheduler_poll_seconds=0.5)
        try:
            # The local product copy, as a completed products sweep would leave it.
            with connector.db.write() as session:
                for number in list(sim.state.products)[:10]:
                    session.add(ProductRow(product_number=number, name=number))
                session.add(CursorRow(name="products", high_water_mark=datetime.now(UTC), stats={}))
            if prepare is not None:
                prepare(connector)
            with connector.serve_in_thread(port=port) as url:
                yield sim, connector, url
        finally:
            connector.close()
