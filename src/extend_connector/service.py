"""Compose the connector: database, migrations, engine, flows, webshop adapter and HTTP app.

`Connector(settings)` wires one process per `settings.engine.role`:
- `all`: HTTP (webhook inbox, read API) and job execution in one process (SQLite default);
- `web`: HTTP only; jobs are enqueued for workers (PostgreSQL);
- `worker`: job execution only (PostgreSQL).
Flow modules register their workflows, queues and webhook handlers when imported (the imports
below: a missing module is an ImportError, never a silently smaller connector); `SCHEDULES`
declares their schedules for the settings at hand; `ROUTERS` are the HTTP API's parts.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from pathlib import Path

import httpx2
import structlog
from fastapi import APIRouter, FastAPI

from extend_connector.api import admin as admin_api
from extend_connector.api import customers as customers_api
from extend_connector.api import orders as orders_api
from extend_connector.api import shop, shop_events, webhooks
from extend_connector.api.app import create_app
from extend_connector.api.http_server import build_server
from extend_connector.engine import Engine
from extend_connector.extend import ThreadedFleetBucket, budget_key, shared_budget
from extend_connector.flows import (
    alerts,
    balances,
    context,
    customers,
    executors,
    freshness,
    orders,
    outbox,
    prices,
    products,
    runs,
    shop_orders,
    watchdog,
)
from extend_connector.logs import configure_logging as configure_logging  # re-exported
from extend_connector.settings import Settings
from extend_connector.store.database import Database
from extend_connector.store.migrate import migrate
from extend_connector.store.ratebuckets import RateBuckets
from extend_connector.webshop import HeadlessWebshop, RecordingWebshop, WebshopPort

log = structlog.get_logger("extend_connector.service")

# Importing a flow declares its queues, workflows and webhook handlers; these declare the rest
# for the settings at hand (schedules, scope-dependent handlers, on-launch work). `outbox` has
# no schedule: imported for its delivery workflow and queue.
FLOWS = (outbox, orders, balances, products, customers, prices, watchdog, alerts, shop_orders)
SCHEDULES: tuple[Callable[[Settings], None], ...] = (
    orders.declare_schedules,
    balances.declare_schedules,
    products.declare_schedules,
    customers.declare_schedules,
    prices.declare_schedules,
    watchdog.declare_schedules,
    alerts.declare_schedules,
    shop_orders.declare_schedules,
)
ROUTERS: tuple[APIRouter, ...] = (
    admin_api.router,
    webhooks.router,
    orders_api.router,
    shop.router,
    customers_api.router,
    shop_events.router,
)

# The sweep of each data point `extend-connector sync`, the console and the demo can run now.
SWEEPS = runs.SWEEPS

# The longest query the read API documents (`productNumbers`, 10,500 characters) can take up
# to 12 bytes a character once percent-encoded; uvicorn's default (16 KiB) would reset the
# connection instead of answering, so the server accepts request heads up to this size.
MAX_REQUEST_LINE_BYTES = 160 * 1024


def attach_shared_rate_limit(settings: Settings, db: Database) -> Callable[[], None] | None:
    """Make every Extend call of this process draw from the fleet-wide bucket in `db`.

    Attached to the process-wide budget of the credential (the one `ExtendClient.from_settings`
    uses), so every client the flows, the `sync` command or a script build shares it. Returns the
    function that detaches it again, or None when `extend.shared_rate_limit` is off.
    """
    if not settings.shared_rate_limit_on:
        return None
    key = budget_key(settings)
    budget = shared_budget(key)
    fleet = ThreadedFleetBucket(RateBuckets(db.engine, key))
    budget.attach_fleet(
        fleet,
        limits=settings.extend.dialect.parsed_rate_limits,
        headroom=settings.extend.rate_limit_headroom,
    )
    log.info(
        "shared_rate_limit_on",
        database="sqlite" if db.is_sqlite else "postgresql",
        headroom=settings.extend.rate_limit_headroom,
        limits=settings.extend.dialect.rate_limits,
    )
    return lambda: budget.detach_fleet(fleet)


@contextlib.contextmanager
def startup_heap_frozen() -> Iterator[None]:
    """While the connector runs, what starting it made is out of the garbage collector's reach.

    A started connector holds about 190,000 objects that live as long as it does (modules, the
    app and its routes, the job engine, SQLAlchemy's tables and compiled statements), and every
    full collection walked them all while holding the GIL: 90-110 ms stops, six in one
    10-second run of `benchmarks/ingest.py`, the largest of the stalls that set the webhook
    acknowledgement's p99 at 200 deliveries/s (docs/benchmarks.md, sixth session).
    `gc.freeze()` moves them to the permanent generation; the collector still collects
    everything made afterwards.
    `gc.unfreeze()` on the way out, so a process that starts and stops connectors (the tests)
    gets its garbage collected. No collection first: it would cost every start (and every test
    that starts an app) a full pass, to spare the few cycles of start-up garbage it freezes."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


class Connector:
    """One connector process. Use `serve()` (blocking) or `serve_in_thread()` (tests, demo)."""

    def __init__(
        self,
        settings: Settings,
        *,
        webshop: WebshopPort | None = None,
        extend_transport_factory: Callable[[], httpx2.AsyncBaseTransport] | None = None,
        clock: Callable[[], datetime] | None = None,
        scheduler_poll_seconds: float = 1.0,
    ) -> None:
        self.settings = settings
        if settings.store.is_sqlite:
            Path(settings.store.data_dir).mkdir(parents=True, exist_ok=True)
            db_file = settings.store.url.removeprefix("sqlite:///")
            Path(db_file).parent.mkdir(parents=True, exist_ok=True)
        self.db = Database(
            settings.store.url,
            pool_size=settings.store.pool_size,
            max_overflow=settings.store.max_overflow,
        )
        migrate(settings.store.url, engine=self.db.engine)
        self._detach_rate_limit = attach_shared_rate_limit(settings, self.db)
        # What this process sees of Extend, shared with the processes answering the shop.
        self._reachability = freshness.Publisher(self.db.engine, role=settings.engine.role).start()
        self.engine = Engine(
            settings, db_engine=self.db.engine, scheduler_poll_seconds=scheduler_poll_seconds
        )
        self._liveness: executors.Liveness | None = None
        deliver_to_shop = (
            webshop is not None
            or settings.webshop.webhook_url is not None
            or settings.webshop.adapter == "vendure"
        )
        if webshop is None and settings.webshop.adapter == "vendure":
            from extend_connector.webshop import vendure

            webshop = vendure.from_settings(settings)
        if webshop is None:
            webshop = (
                HeadlessWebshop(
                    str(settings.webshop.webhook_url),
                    settings.webshop.webhook_secret.get_secret_value(),
                )
                if settings.webshop.webhook_url is not None
                else RecordingWebshop()
            )
        self.webshop = webshop
        self.context = context.FlowContext(
            settings=settings,
            db=self.db,
            engine=self.engine,
            webshop=webshop,
            extend_transport_factory=extend_transport_factory,
            deliver_to_shop=deliver_to_shop,
        )
        if clock is not None:
            self.context.clock = clock
        context.install(self.context)
        for declare in SCHEDULES:
            declare(settings)
        if not settings.extend.verify_webhook_signatures:
            log.warning(
                "webhook_signatures_not_verified",
                setting="extend.verify_webhook_signatures",
                why="anyone who can reach /webhooks/extend can trigger fetches; turn it back on",
            )

    # --- HTTP -------------------------------------------------------------------------------

    def app(self) -> FastAPI:
        """The ASGI app; its lifespan starts and stops the engine per role."""
        connector = self

        @contextlib.asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            # DBOS refuses a sync launch inside a running loop; launched from a worker thread it
            # runs async workflows on its own background loop (FlowContext keeps one Extend
            # client per loop, so the API's and the jobs' clients never cross loops).
            if connector.settings.engine.role == "all":
                await asyncio.to_thread(connector.launch_engine)
            else:
                await asyncio.to_thread(connector.engine.connect)
            log.info(
                "connector_started",
                role=connector.settings.engine.role,
                version=connector.settings.engine.application_version,
                executor=connector.settings.engine.executor_id,
            )
            try:
                with startup_heap_frozen():
                    yield
            finally:
                await connector.context.aclose()
                await asyncio.to_thread(connector.shutdown_engine)

        state = {"connector": self, "settings": self.settings, "flow_context": self.context}
        return create_app(
            routers=ROUTERS, state=state, lifespan=lifespan, lanes=(webhooks.WebhookLane,)
        )

    def serve(self) -> None:
        """Run until SIGINT/SIGTERM: HTTP for roles `all`/`web`, job execution for `worker`."""
        if self.settings.engine.role == "worker":
            self._serve_worker()
            return
        server = build_server(
            self.app(),
            self.settings,
            host=self.settings.server.host,
            port=self.settings.server.port,
            h11_max_incomplete_event_size=MAX_REQUEST_LINE_BYTES,
        )
        server.run()
        self.close()

    def worker_app(self) -> FastAPI:
        """A worker's own small app: /metrics (its counters), /healthz and /readyz; no API."""
        state = {"connector": self, "settings": self.settings, "flow_context": self.context}
        return create_app(state=state)

    def _serve_worker(self) -> None:
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        self.launch_engine()
        port = self.settings.server.worker_port
        log.info("worker_started", executor=self.settings.engine.executor_id, http_port=port)
        try:
            with contextlib.ExitStack() as running:
                running.enter_context(startup_heap_frozen())
                if port is not None:
                    running.enter_context(
                        self._serve_app_in_thread(
                            self.worker_app(), host=self.settings.server.host, port=port
                        )
                    )
                while not stop.wait(0.5):
                    pass
        finally:
            self.shutdown_engine()
            self.close()

    def launch_engine(self) -> None:
        """Launch the engine (roles `all`, `worker`) with this process's heartbeat, which puts
        back the jobs that a gone process, or this one, holds as running without running them
        (flows/executors.py)."""
        self.engine.launch()
        if self.engine.executes and self._liveness is None:
            self._liveness = executors.Liveness(self.db, self.engine).start()

    def shutdown_engine(self) -> None:
        if self._liveness is not None:
            self._liveness.stop()
            self._liveness = None
        self.engine.shutdown()

    @contextlib.contextmanager
    def _serve_app_in_thread(
        self, app: FastAPI, *, host: str, port: int, timeout: float = 30.0
    ) -> Iterator[str]:
        server = build_server(app, self.settings, host=host, port=port)
        # Off the main thread uvicorn leaves the signals to the worker's loop.
        thread = threading.Thread(target=server.run, name="worker-http", daemon=True)
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"worker HTTP server did not start on {host}:{port}")
            time.sleep(0.02)
        try:
            yield f"http://{host}:{server.config.port}"
        finally:
            server.should_exit = True
            thread.join(timeout)

    @contextlib.contextmanager
    def serve_in_thread(
        self, *, port: int | None = None, sock: socket.socket | None = None, timeout: float = 30.0
    ) -> Iterator[str]:
        """Serve on 127.0.0.1 (or on `sock`, a socket bound already) in a background thread; yields
        the base URL; stops on exit."""
        if sock is not None:
            port = sock.getsockname()[1]
        server = build_server(
            self.app(),
            self.settings,
            host="127.0.0.1",
            port=port or self.settings.server.port,
            h11_max_incomplete_event_size=MAX_REQUEST_LINE_BYTES,
        )
        config = server.config
        thread = threading.Thread(
            target=server.run,
            kwargs={"sockets": None if sock is None else [sock]},
            name="connector-http",
            daemon=True,
        )
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("connector HTTP server did not start")
            time.sleep(0.02)
        try:
            yield f"http://127.0.0.1:{config.port}"
        finally:
            server.should_exit = True
            thread.join(timeout)

    def close(self) -> None:
        if self._liveness is not None:
            self._liveness.stop()
            self._liveness = None
        context.install(None)
        self._reachability.stop()
        if self._detach_rate_limit is not None:
            self._detach_rate_limit()  # the bucket's database closes now
            self._detach_rate_limit = None
        self.db.dispose()
