"""Start the demo's world: a seeded simulator, the connector on a SQLite file, the shop's inbox.

Everything is built in code from embedded defaults (no config file, no environment), so the
demo behaves the same on every machine. The connector's logs go to a file in the data dir,
keeping the terminal for the live view.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from pydantic import AnyHttpUrl, SecretStr

from extend_connector.demo.receiver import ShopInbox, serve_shop_inbox
from extend_connector.settings import (
    CustomersScope,
    EmbeddedSettings,
    ExtendSettings,
    ScopeSettings,
    ServerSettings,
    Settings,
    StoreSettings,
    SyncSettings,
    WebshopSettings,
)
from extend_connector.simulator import (
    RateLimit,
    RunningSimulator,
    SimulatorConfig,
    WebhookRegistration,
    run_in_thread,
)

WEBHOOK_SECRET = "demo-webhook-secret"
SHOP_TOKEN = "demo-shop-token"
SHOP_WEBHOOK_SECRET = "whsec_ZGVtby1zaG9wLXdlYmhvb2stc2VjcmV0LTMyYnl0ZXM="
SELL_FROM = ("MainWarehouse", "GreenWarehouse")
WAREHOUSES = ("MainWarehouse", "GreenWarehouse", "TEST")


def free_port() -> int:
    """A port free right now (another process may take it before it is bound again: tests only)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def reserve_port() -> socket.socket:
    """A socket bound to a free loopback port and kept: the server that listens on it later cannot
    lose the port to another process in between (the demo learns its ports before it starts).
    A TCP socket by protocol number, so asyncio turns Nagle's algorithm off on what it accepts."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def simulator_config(
    *,
    seed: int,
    products: int,
    orders_per_second: float,
    heavy_limit: tuple[int, float] = (60, 60.0),
) -> SimulatorConfig:
    """The seeded Extend the demo runs against; its webhook registration is set once the port is
    known."""
    # The write budget must carry the shop's order rate plus retries; the heavy group keeps
    # Extend's house default so balance coalescing is shown under a real limit.
    writes = max(120, int(orders_per_second * 60 * 3))
    return SimulatorConfig(
        seed=seed,
        products=products,
        customers=20,
        warehouses=WAREHOUSES,
        rate_limit_write=RateLimit(limit=writes, period_seconds=60),
        rate_limit_standard=RateLimit(limit=max(600, writes * 4), period_seconds=60),
        rate_limit_heavy=RateLimit(limit=heavy_limit[0], period_seconds=heavy_limit[1]),
        # Extend retries a failed delivery after 1 and 4 minutes; scaled to 1.2 s and 4.8 s here.
        time_scale=0.02,
    )


def extend_settings(sim: RunningSimulator) -> ExtendSettings:
    """The demo's Extend: the simulator's URL and credentials, selling from SELL_FROM."""
    return ExtendSettings(
        base_url=AnyHttpUrl(sim.base_url),
        api_token=SecretStr(sim.token),
        webhook_secret=SecretStr(WEBHOOK_SECRET),
        warehouses=list(SELL_FROM),
        read_timeout_seconds=10.0,
    )


def connector_settings(
    *, sim: RunningSimulator, data_dir: Path, port: int, shop_url: str
) -> Settings:
    """The connector's settings for the demo: simulator credentials, short sweeps, the shop's
    inbox."""
    return EmbeddedSettings(
        scope=ScopeSettings(customers=CustomersScope.TO_EXTEND),
        extend=extend_settings(sim),
        webshop=WebshopSettings(
            api_token=SecretStr(SHOP_TOKEN),
            webhook_url=AnyHttpUrl(shop_url),
            webhook_secret=SecretStr(SHOP_WEBHOOK_SECRET),
            stale_after_seconds=30.0,
        ),
        store=StoreSettings(data_dir=data_dir),
        server=ServerSettings(port=port),
        # Sweeps every 20-30 s so that what chaos drops is visibly repaired within a demo minute.
        sync=SyncSettings(
            orders_sweep_minutes=0.5,
            balances_sweep_minutes=0.33,
            products_sweep_minutes=1.0,
            customers_sweep_minutes=1.0,
            prices_full_refresh_minutes=2.0,
            prices_active_refresh_minutes=1.0,
            overlap_seconds=60.0,
        ),
    )


def log_to_file(path: Path, *, stream: TextIO | None = None) -> TextIO:
    """Send stdlib logging and structlog to `path` (the terminal belongs to the view), redacted
    like every other log of the connector (`service.configure_logging`)."""
    from extend_connector.service import configure_logging

    stream = stream or path.open("a", encoding="utf-8")
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    configure_logging("INFO", stream=stream)
    return stream


@dataclass(frozen=True, kw_only=True)
class Stack:
    """The running demo world."""

    sim: RunningSimulator
    connector: Any  # extend_connector.service.Connector (imported lazily: it pulls in DBOS)
    connector_url: str
    shop_inbox: ShopInbox
    shop_inbox_url: str
    data_dir: Path
    log_path: Path
    settings: Settings


@contextmanager
def running_stack(
    *,
    seed: int,
    products: int,
    orders_per_second: float,
    data_dir: Path,
    heavy_limit: tuple[int, float] = (60, 60.0),
) -> Iterator[Stack]:
    """Start simulator, shop inbox and connector (in that order); stop them in reverse."""
    from extend_connector.service import Connector

    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "connector.log"
    inbox = ShopInbox(secret=SHOP_WEBHOOK_SECRET)
    with ExitStack() as stack:
        connector_sock, shop_sock = reserve_port(), reserve_port()
        stack.callback(connector_sock.close)
        stack.callback(shop_sock.close)
        connector_port = connector_sock.getsockname()[1]
        log_stream = log_to_file(log_path)
        stack.callback(log_stream.close)
        config = simulator_config(
            seed=seed,
            products=products,
            orders_per_second=orders_per_second,
            heavy_limit=heavy_limit,
        )
        from dataclasses import replace

        config = replace(
            config,
            webhooks=(
                WebhookRegistration(
                    callback_url=f"http://127.0.0.1:{connector_port}/webhooks/extend",
                    secret=WEBHOOK_SECRET,
                ),
            ),
        )
        sim = stack.enter_context(run_in_thread(config))
        shop_url = stack.enter_context(serve_shop_inbox(inbox, shop_sock))
        settings = connector_settings(
            sim=sim, data_dir=data_dir, port=connector_port, shop_url=shop_url
        )
        connector = Connector(settings)
        stack.callback(connector.close)
        url = stack.enter_context(connector.serve_in_thread(sock=connector_sock, timeout=60))
        # DBOS installs its own console handler when it launches: send it to the file as well.
        log_to_file(log_path, stream=log_stream)
        yield Stack(
            sim=sim,
            connector=connector,
            connector_url=url,
            shop_inbox=inbox,
            shop_inbox_url=shop_url,
            data_dir=data_dir,
            log_path=log_path,
            settings=settings,
        )
