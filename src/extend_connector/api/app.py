"""Build the FastAPI app: shared error handling, health and metrics, plus the routers of each part.

Each part of the API (webhook inbox, read API, orders intake, admin) is an `APIRouter` in its own
module; `create_app` mounts the ones it is given so tests can build an app with just one part.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from extend_connector import __version__
from extend_connector.api.errors import install_error_handlers
from extend_connector.api.guard import GuardLimits, RequestGuard
from extend_connector.settings import Settings

HEALTH_DATABASE_TIMEOUT_SECONDS = 2.0


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


def create_app(
    *, routers: Iterable[APIRouter] = (), state: dict[str, Any] | None = None, lifespan: Any = None
) -> FastAPI:
    """The ASGI app. `state` entries land on `app.state` for the routers' dependencies."""
    app = FastAPI(
        title="extend-connector",
        version=__version__,
        description="The shop's single integration point: a local copy of Extend Commerce data "
        "that keeps answering while Extend is down, "
        "order intake, and the webhook inbox for Extend.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    settings = (state or {}).get("settings")
    if isinstance(settings, Settings):  # token, body size and body deadline before any route runs
        app.add_middleware(RequestGuard, limits=GuardLimits.from_settings(settings))
    for key, value in (state or {}).items():
        setattr(app.state, key, value)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        problem = await database_problem(app)
        if problem is not None:
            return JSONResponse(
                {"status": "unavailable", "version": __version__, "database": problem},
                status_code=503,
                headers={"Retry-After": "5"},
            )
        return JSONResponse({"status": "ok", "version": __version__, "database": "ok"})

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest().decode(), media_type=CONTENT_TYPE_LATEST)

    for router in routers:
        app.include_router(router)
    return app
