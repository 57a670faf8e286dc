"""One error body for every 4xx/5xx the local API gives: what went wrong and what to do."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from extend_connector.engine import is_transient_db_error

DATABASE_RETRY_AFTER_SECONDS = 5


class ApiError(BaseModel):
    """Body of every error answer of the local API."""

    error: str
    message: str
    details: list[dict[str, Any]] = []


class ApiProblem(Exception):
    """Raise from a route to answer `status` with an `ApiError` body."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = ApiError(error=error, message=message, details=details or [])
        self.headers = headers


def install_error_handlers(app: FastAPI) -> None:
    async def problem(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiProblem)
        return JSONResponse(exc.body.model_dump(), status_code=exc.status, headers=exc.headers)

    async def invalid(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        details = [
            {"field": ".".join(str(p) for p in e.get("loc", ())), "message": e.get("msg", "")}
            for e in exc.errors()
        ]
        body = ApiError(
            error="invalid_request",
            message="the request does not have the expected form",
            details=details,
        )
        return JSONResponse(body.model_dump(), status_code=422)

    async def http(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        body = ApiError(error="http_error", message=str(exc.detail))
        return JSONResponse(body.model_dump(), status_code=exc.status_code, headers=exc.headers)

    async def database(_: Request, exc: Exception) -> JSONResponse:
        # Unreachable or restarting database: the shop retries (an order POST is idempotent on
        # shopRef); anything else from the database is a real error and stays one.
        if not is_transient_db_error(exc):
            raise exc
        body = ApiError(
            error="database_unavailable",
            message="the connector's database is not reachable right now; nothing was stored, "
            "retry after the time in Retry-After",
        )
        return JSONResponse(
            body.model_dump(),
            status_code=503,
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
        )

    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        # A bug, not the client's fault: the shop still gets the one error form (Starlette's own
        # answer is plain text); the traceback is logged by the server as before.
        body = ApiError(
            error="internal_error",
            message="the connector failed on this request; it is logged, retry later",
        )
        return JSONResponse(body.model_dump(), status_code=500)

    app.add_exception_handler(ApiProblem, problem)
    app.add_exception_handler(Exception, unexpected)
    app.add_exception_handler(sa_exc.DBAPIError, database)
    app.add_exception_handler(sa_exc.TimeoutError, database)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http)
