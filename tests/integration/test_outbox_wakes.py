"""Events published while the shop is slow: every one delivered, by a handful of drainer runs.

Each publishing transaction used to enqueue a drainer run of its own; with a slow shop they
queued up behind the one delivering (102 waiting in a CI run against a loaded Vendure), each a
durable job that then found nothing to do. Now a publication joins the run waiting to start.
Real connector (engine in a thread) on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from extend_connector import engine
from extend_connector.flows import outbox
from extend_connector.service import Connector
from extend_connector.settings import Settings
from extend_connector.simulator import SimulatorConfig, run_in_thread
from extend_connector.webshop import EventType, RecordingWebshop, ShopEvent
from support.processes import free_port, wait_for

EVENTS = 40


class SlowShop(RecordingWebshop):
    """Takes 0.3 s to accept each event."""

    async def deliver(self, event: ShopEvent) -> None:
        await asyncio.sleep(0.3)
        await super().deliver(event)


def test_events_published_one_by_one_to_a_slow_shop_need_few_drainer_runs(
    db_url: str, tmp_path: Path
) -> None:
    with run_in_thread(
        SimulatorConfig(seed=11, products=3, rate_limits_enabled=False, webhooks=())
    ) as sim:
        settings = Settings(
            extend={"base_url": sim.base_url, "api_token": sim.token},
            store={"database_url": db_url, "data_dir": str(tmp_path)},
            scope={"products": "off", "customers": "off", "prices": "off"},
        )
        shop = SlowShop()
        connector = Connector(settings, webshop=shop, scheduler_poll_seconds=0.2)
        try:
            with connector.serve_in_thread(port=free_port()):
                name = engine.workflow_name(outbox.drain)
                for i in range(EVENTS):
                    with connector.db.write() as session:
                        outbox.publish(
                            session, EventType.CUSTOMER_CHANGED, f"customer:C{i}", {"n": i}
                        )
                    time.sleep(0.02)

                def delivered() -> bool:
                    keys = [e.key for e in shop.of_type(EventType.CUSTOMER_CHANGED.value)]
                    return len(keys) >= EVENTS

                wait_for(delivered, timeout=60, what=f"{EVENTS} events delivered")
                # Every drainer run of this database: the start-up one and the balance load's too.
                runs = len(connector.engine.list_workflows(name=name, limit=10_000))
        finally:
            connector.close()
    print(f"{EVENTS} events published one by one to a slow shop -> {runs} drainer runs")
    keys = [e.key for e in shop.of_type(EventType.CUSTOMER_CHANGED.value)]
    assert sorted(keys) == sorted(f"customer:C{i}" for i in range(EVENTS))  # each once
    # The first wakes the drainer; while it delivers, later publications join one waiting run.
    assert runs <= 8, runs
