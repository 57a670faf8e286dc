"""Build the FastAPI app: shared error handling, health and metrics, plus the routers of each part.

Each part of the API (webhook inbox, read API, orders intake, admin) is an `APIRouter` in its own
module; `create_app` mounts the ones it is given so tests can build an app with just one part.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from extend_connector import __version__
from extend_connector.api.errors import install_error_handlers
from extend_connector.api.guard import GuardLimits, RequestGuard
from extend_connector.settings import Settings


def create_app(*, routers: Iterable[APIRouter] = (), state: dict[str, Any] | None = None,
               lifespan: Any = None) -> FastAPI:
    """The ASGI app. `state` entries land on `app.state` for the routers' dependencies."""
    app = FastAPI(
        title="extend-connector",
        version=__version__,
        description="The shop's single integration point: a local copy of Extend Commerce data that keeps "
        "answering while Extend is down, order intake, and the webhook inbox for Extend.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    settings = (state or {}).get("settings")
    if isinstance(settings, Settings):  # token, body size and body deadline before any route runs
        app.add_middleware(RequestGuard, limits=GuardLimits.from_settings(settings))
    for key, value in (state or {}).items():
        setattr(app.state, key, value)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest().decode(), media_type=CONTENT_TYPE_LATEST)

    for router in routers:
        app.include_router(router)
    return app
