"""Serving the simulator: uvicorn in a background thread (tests, benchmarks) or in the foreground
(CLI).

`SimHttpProtocol` is uvicorn's HTTP protocol plus a registry of open connections by client
address, so a fault can drop a connection without answering it (outage mode `drop`, a write
whose response is lost): the client then sees what a dead network gives it, not an HTTP error.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn

from extend_connector.simulator.app import TRANSPORTS, Simulator
from extend_connector.simulator.config import SimulatorConfig
from extend_connector.simulator.state import SimState
from extend_connector.simulator.webhooks import WebhookDispatcher

try:  # the faster parser when installed, as uvicorn itself would choose
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _BaseProtocol
except ImportError:  # pragma: no cover - depends on the environment
    from uvicorn.protocols.http.h11_impl import H11Protocol as _BaseProtocol  # type: ignore[assignment]


class SimHttpProtocol(_BaseProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.client is not None:
            TRANSPORTS[self.client] = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self.client is not None:
            TRANSPORTS.pop(self.client, None)
        super().connection_lost(exc)


def build_app(config: SimulatorConfig | None = None) -> Simulator:
    """The ASGI app (a `Simulator`: `.state`, `.dispatcher`, `.limiter` are reachable on it)."""
    return Simulator(config or SimulatorConfig())


@dataclass(frozen=True, kw_only=True, slots=True)
class RunningSimulator:
    """A simulator serving on loopback: where to reach it and its live objects."""

    base_url: str  # the real-API surface, e.g. http://127.0.0.1:54321/api
    admin_url: str  # the /_sim driving API
    token: str
    port: int
    app: Simulator

    @property
    def state(self) -> SimState:
        return self.app.state

    @property
    def dispatcher(self) -> WebhookDispatcher:
        return self.app.dispatcher

    @property
    def config(self) -> SimulatorConfig:
        return self.app.config


def _free_socket(host: str, port: int) -> socket.socket:
    # IPPROTO_TCP, not 0: only then does asyncio turn Nagle's algorithm off on the connections it
    # accepts (else each answer's body waits ~40 ms for the client's delayed ACK).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def uvicorn_config(app: Simulator, **kwargs: Any) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        http=SimHttpProtocol,
        lifespan="on",
        access_log=False,
        log_level="warning",
        timeout_keep_alive=30,
        **kwargs,
    )


@contextmanager
def run_in_thread(
    config: SimulatorConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> Iterator[RunningSimulator]:
    """Serve a new simulator on a free loopback port in a daemon thread; stop it on exit."""
    app = build_app(config)
    sock = _free_socket(host, port)
    bound_port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(app))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"simulator-{bound_port}", daemon=True
    )
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the simulator failed to start")
        threading.Event().wait(0.01)
    try:
        yield RunningSimulator(
            base_url=f"http://{host}:{bound_port}/api",
            admin_url=f"http://{host}:{bound_port}/_sim",
            token=app.config.token,
            port=bound_port,
            app=app,
        )
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        app.close()
        sock.close()


def serve(config: SimulatorConfig, *, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve in the foreground until interrupted (the `simulator` command)."""
    app = build_app(config)
    try:
        uvicorn.Server(uvicorn_config(app, host=host, port=port)).run()
    finally:
        app.close()
