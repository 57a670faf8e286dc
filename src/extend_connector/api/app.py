"""Build the FastAPI app: shared error handling, health and metrics, plus the routers of each part.

Each part of the API (webhook inbox, read API, orders intake, admin) is an `APIRouter` in its own
module; `create_app` mounts the ones it is given so tests can build an app with just one part.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterable
from typing import Any

import sqlalchemy as sa
import structlog
from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp

from extend_connector import __version__
from extend_connector.api import admin
from extend_connector.api.errors import install_error_handlers
from extend_connector.api.guard import GuardLimits, RequestGuard
from extend_connector.flows import monitor
from extend_connector.metrics import exposition
from extend_connector.settings import Settings
from extend_connector.store.migrate import current_revision, head_revision

HEALTH_DATABASE_TIMEOUT_SECONDS = 2.0
# The revision this code needs, read from the migration scripts once per process.
_head_revision = functools.cache(head_revision)

log = structlog.get_logger("extend_connector.api")


async def database_problem(app: FastAPI) -> str | None:
    """Why the database does not answer `SELECT 1` within a short timeout (None: it does).

    An app built without a connector (tests of one router) has no database to check.
    """
    connector = getattr(app.state, "connector", None)
    if connector is None:
        return None
    db_engine: sa.Engine = connector.db.engine

    def ping() -> None:
        with db_engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    try:
        await asyncio.wait_for(asyncio.to_thread(ping), HEALTH_DATABASE_TIMEOUT_SECONDS)
    except TimeoutError:
        return f"no answer within {HEALTH_DATABASE_TIMEOUT_SECONDS:g} s"
    except Exception as exc:
        # The class only: the driver's text names hosts and users, and /healthz needs no token.
        return f"unreachable ({type(getattr(exc, 'orig', None) or exc).__name__})"
    return None


class StateCollector(Collector):
    """The gauges read from the database at scrape time (`flows/monitor.py`)."""

    def __init__(self, snapshot: monitor.Snapshot | None) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        p = "extend_connector_"
        snap = self.snapshot
        yield GaugeMetricFamily(
            p + "state_readable",
            "1 when this scrape could read the connector's state from the database, else 0 "
            "(then the gauges below are missing).",
            value=0 if snap is None else 1,
        )
        if snap is None:
            return
        queues = GaugeMetricFamily(
            p + "queue_depth", "Jobs waiting or running, per queue.", labels=["queue"]
        )
        for queue, depth in sorted((snap.queues or {}).items()):
            queues.add_metric([queue], depth)
        yield queues
        yield GaugeMetricFamily(
            p + "outbox_pending",
            "Events owed to the shop (not delivered yet).",
            value=snap.outbox_pending,
        )
        yield GaugeMetricFamily(
            p + "outbox_oldest_pending_seconds",
            "Age of the oldest event owed to the shop (0 when none).",
            value=snap.outbox_oldest_seconds or 0.0,
        )
        parked = GaugeMetricFamily(
            p + "failures_parked", "Open parked failures, per kind.", labels=["kind"]
        )
        for kind, count in sorted(snap.failures.items()):
            parked.add_metric([kind], count)
        yield parked
        age = GaugeMetricFamily(
            p + "freshness_age_seconds",
            "Seconds since Extend last confirmed each data point (newest row confirmation or "
            "successful sweep); missing until the first one.",
            labels=["data_point"],
        )
        for point in snap.confirmed:
            seconds = snap.age_seconds(point)
            if seconds is not None:
                age.add_metric([point], seconds)
        yield age
        alerts = GaugeMetricFamily(
            p + "alerts_open", "Open alerts, per kind (docs/operations.md).", labels=["kind"]
        )
        for kind, count in sorted(snap.alerts.items()):
            alerts.add_metric([kind], count)
        yield alerts
        yield GaugeMetricFamily(
            p + "extend_reachable",
            "1 when Extend answered the latest call of any connector process, else 0.",
            value=1 if snap.reachability.reachable else 0,
        )
        groups = GaugeMetricFamily(
            p + "extend_group_reachable",
            "Per rate-limit group: 1 when Extend answered the group's latest call, else 0 "
            "(groups not called yet are missing).",
            labels=["group"],
        )
        for group, state in snap.reachability_groups.items():
            groups.add_metric([group], 1 if state.reachable else 0)
        yield groups


async def readiness(app: FastAPI, head: str) -> dict[str, str]:
    """Each readiness check's verdict: `ok` or why not. `database`: answers `SELECT 1` within
    2 s; `migrations`: at the revision this code needs; `engine`: launched (`web`: connected)."""
    connector = getattr(app.state, "connector", None)
    if connector is None:
        return {}
    checks: dict[str, str] = {}
    problem = await database_problem(app)
    checks["database"] = problem or "ok"
    if problem is not None:
        checks["migrations"] = "not checked: the database does not answer"
    else:
        db_engine: sa.Engine = connector.db.engine
        try:
            at = await asyncio.wait_for(
                asyncio.to_thread(current_revision, str(db_engine.url), engine=db_engine),
                HEALTH_DATABASE_TIMEOUT_SECONDS,
            )
        except Exception as exc:
            checks["migrations"] = f"unreadable ({type(exc).__name__})"
        else:
            checks["migrations"] = (
                "ok" if at == head else f"database at revision {at or 'none'}, code needs {head}"
            )
    checks["engine"] = "ok" if connector.engine.running else "not running"
    return checks


async def read_state(app: FastAPI) -> monitor.Snapshot | None:
    """The database-backed state for `/metrics` (None: no connector, or the read failed)."""
    ctx = getattr(app.state, "flow_context", None)
    if ctx is None:
        return None
    try:
        return await asyncio.wait_for(
            asyncio.to_thread(monitor.read, ctx), HEALTH_DATABASE_TIMEOUT_SECONDS * 2
        )
    except Exception as exc:
        log.warning("metrics_state_unreadable", error=f"{type(exc).__name__}: {exc}"[:300])
        return None


def create_app(
    *,
    routers: Iterable[APIRouter] = (),
    state: dict[str, Any] | None = None,
    lifespan: Any = None,
    lanes: Iterable[Callable[[ASGIApp], ASGIApp]] = (),
) -> FastAPI:
    """The ASGI app. `state` entries land on `app.state` for the routers' dependencies; `lanes`
    are ASGI middleware answering a hot route before FastAPI's routing (`webhooks.WebhookLane`),
    installed inside the request guard."""
    app = FastAPI(
        title="extend-connector",
        version=__version__,
        description="The shop's single integration point: a local copy of Extend Commerce data "
        "that keeps answering while Extend is down, "
        "order intake, and the webhook inbox for Extend.",
        lifespan=lifespan,
        # The connector reports through /metrics and its logs, not OpenTelemetry. Left on,
        # FastAPI looks up three OpenTelemetry providers (environment reads) on every request:
        # 3.5% of the webhook route's CPU in a py-spy profile (docs/benchmarks.md).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_error_handlers(app)
    # The console's login redirect, wherever its router is mounted.
    app.add_exception_handler(admin.NotLoggedIn, admin.not_logged_in)  # type: ignore[arg-type]
    for lane in lanes:  # added before the guard, so the guard runs first
        app.add_middleware(lane)
    settings = (state or {}).get("settings")
    if isinstance(settings, Settings):  # token, body size and body deadline before any route runs
        app.add_middleware(RequestGuard, limits=GuardLimits.from_settings(settings))
    for key, value in (state or {}).items():
        setattr(app.state, key, value)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        # Alive: the process answers HTTP. Nothing outside it is asked (a restart would not
        # fix the database); `/readyz` says whether it can do its work.
        return JSONResponse({"status": "ok", "version": __version__})

    head = _head_revision()

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        checks = await readiness(app, head)
        failing = [
            name
            for name, result in checks.items()
            if result != "ok" and not result.startswith("not checked")
        ]
        if failing:
            return JSONResponse(
                {
                    "status": "not_ready",
                    "version": __version__,
                    "failing": failing,
                    "checks": checks,
                },
                status_code=503,
                headers={"Retry-After": "5"},
            )
        return JSONResponse({"status": "ready", "version": __version__, "checks": checks})

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> PlainTextResponse:
        # Counters of this process (every module's; of every web process sharing the port, with
        # server.processes), then the gauges read from the database.
        body = exposition()
        if getattr(app.state, "flow_context", None) is not None:
            state = CollectorRegistry(auto_describe=False)
            state.register(StateCollector(await read_state(app)))
            body += generate_latest(state)
        return PlainTextResponse(body.decode(), media_type=CONTENT_TYPE_LATEST)

    for router in routers:
        app.include_router(router)
    return app
