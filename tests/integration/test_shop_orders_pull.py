"""Reading orders from a shop platform: a slow shop never piles pulls up.

A real connector (engine, schedules, SQLite/PostgreSQL) with an order source that takes longer
to answer than the poll period, as a loaded Vendure does. A CI run saw 59 pulls waiting behind
a slow one (each re-reading every recent order and slowing the shop further, so that the
deliveries to it fell minutes behind); at most one may wait.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

from extend_connector import engine
from extend_connector.flows import shop_orders
from extend_connector.service import Connector
from extend_connector.settings import Settings
from extend_connector.simulator import SimulatorConfig, run_in_thread
from extend_connector.webshop import RecordingWebshop
from extend_connector.webshop.port import ShopOrderChange
from support.processes import free_port, wait_for

PULL_SECONDS = 2.5  # one read of the shop's orders; the poll period is 1 s


class SlowOrderSource(RecordingWebshop):
    """A platform whose order list takes PULL_SECONDS to answer (and has one paid order)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def orders_changed_since(self, since: datetime | None) -> AsyncIterator[ShopOrderChange]:
        self.reads += 1
        await asyncio.sleep(PULL_SECONDS)
        yield ShopOrderChange(
            shop_ref="SLOW-1",
            updated_at=datetime(2026, 12, 1, tzinfo=UTC),
            cancelled=False,
            payload={"shopRef": "SLOW-1", "lines": [{"productNumber": "P000001", "quantity": 1}]},
        )


def test_a_shop_slower_than_the_poll_period_has_at_most_one_pull_waiting(
    db_url: str, tmp_path: Path
) -> None:
    with run_in_thread(SimulatorConfig(seed=3, products=5, webhooks=())) as sim:
        settings = Settings(
            extend={"base_url": sim.base_url, "api_token": sim.token},
            store={"database_url": db_url, "data_dir": str(tmp_path)},
            scope={"products": "off", "customers": "off", "prices": "off"},
            webshop={
                "adapter": "vendure",
                "vendure": {
                    "admin_api_url": "http://127.0.0.1:9/admin-api",
                    "password": "unused: the source is injected",
                    "poll_seconds": 1,
                },
            },
        )
        source = SlowOrderSource()
        connector = Connector(settings, webshop=source, scheduler_poll_seconds=0.2)
        try:
            with connector.serve_in_thread(port=free_port()):
                name = engine.workflow_name(shop_orders.pull)
                waiting: list[int] = []
                deadline = time.monotonic() + 4 * PULL_SECONDS
                while time.monotonic() < deadline:
                    waiting.append(
                        len(connector.engine.list_workflows(name=name, status=("ENQUEUED",)))
                    )
                    time.sleep(0.25)
                # The pulls do run (ticks every second meanwhile).
                wait_for(lambda: source.reads >= 2, timeout=30, what="two reads of the shop")
            assert max(waiting) <= 1, waiting
        finally:
            connector.close()
            # Declarations are per process: no 1 s poll left for the next engine of this worker.
            engine.forget_schedule("shop_orders.poll")
