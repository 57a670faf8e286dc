"""What a flow needs at run time: the typed, process-level `FlowContext`.

Durable workflows are module-level functions whose arguments must be JSON, so their
collaborators (database, Extend client, webshop adapter, engine) cannot be passed in: a
workflow or step calls `current()`, which returns the context the composition root
(`service.Connector`) installed for the process. Routes get the same object from
`app.state` through FastAPI `Depends` (`api.deps`), never from here. Tests install a
context with fakes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx2

from extend_connector.engine import Engine
from extend_connector.extend import ExtendClient
from extend_connector.flows import freshness
from extend_connector.settings import Settings
from extend_connector.store.database import Database
from extend_connector.webshop import WebshopPort


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(kw_only=True)
class FlowContext:
    """The process-wide collaborators of every flow."""

    settings: Settings
    db: Database
    engine: Engine
    webshop: WebshopPort
    clock: Callable[[], datetime] = _utcnow
    # Tests inject a transport (e.g. an ASGI transport onto the simulator).
    extend_transport_factory: Callable[[], httpx2.AsyncBaseTransport] | None = None
    extend_factory: Callable[[], ExtendClient] | None = None
    # False: no shop is configured, so outbox events are kept (the read API's change feed)
    # but no delivery job is started for them.
    deliver_to_shop: bool = True
    _clients: dict[int, ExtendClient] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def extend(self) -> ExtendClient:
        """The Extend client of the running event loop (an async client is bound to one loop).

        All clients of the process share one rate budget per credential (see extend/ratelimit).
        """
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._clients.get(id(loop))
            if client is None:
                if self.extend_factory is not None:
                    client = self.extend_factory()
                else:
                    transport = (
                        self.extend_transport_factory() if self.extend_transport_factory else None
                    )
                    # Every call this process makes tells the shop whether Extend answers.
                    client = ExtendClient.from_settings(
                        self.settings, transport=transport, observer=freshness.reachability
                    )
                self._clients[id(loop)] = client
            return client

    async def aclose(self) -> None:
        """Close the client of the running loop (others close with their loops)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._clients.pop(id(loop), None)
        if client is not None:
            await client.aclose()


_current: FlowContext | None = None


def install(ctx: FlowContext | None) -> None:
    """Make `ctx` the context of this process (None uninstalls)."""
    global _current
    _current = ctx


def current() -> FlowContext:
    if _current is None:
        raise RuntimeError(
            "no FlowContext installed: build a service.Connector (or install one in tests)"
        )
    return _current
