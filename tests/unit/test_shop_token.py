"""The shop's bearer token is judged by one rule: the HTTP guard and the `/v1` routes' dependency
agree on every `Authorization` header, also when the configured token is empty."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr
from starlette.requests import Request

from extend_connector.api.deps import shop_token
from extend_connector.api.errors import ApiProblem
from extend_connector.api.guard import GuardLimits, RequestGuard
from extend_connector.flows.context import FlowContext
from extend_connector.settings import Settings

CONTEXT: FlowContext

HEADERS: list[bytes | None] = [
    b"Bearer tok",
    b"bearer tok",
    b"BEARER tok",
    b"Bearer  tok ",
    b"Bearer tok2",
    b"Bearer to",
    b"Basic tok",
    b"tok",
    b"Bearer",
    b"Bearer ",
    b"",
    None,
]


@pytest.fixture(params=["tok", ""])
def expected(request: pytest.FixtureRequest) -> Iterator[str]:
    # Settings refuse an empty token; one that got past them (copied unvalidated) must not open up.
    token = str(request.param)
    settings = Settings()
    settings = settings.model_copy(
        update={"webshop": settings.webshop.model_copy(update={"api_token": SecretStr(token)})}
    )
    global CONTEXT
    CONTEXT = FlowContext(settings=settings, db=None, engine=None, webshop=None)  # type: ignore[arg-type]
    yield token


def _scope(authorization: bytes | None) -> dict[str, Any]:
    headers = [] if authorization is None else [(b"authorization", authorization)]
    return {
        "type": "http",
        "method": "GET",
        "path": "/v1/products",
        "headers": headers,
        "query_string": b"",
    }


def _guard_lets_in(
    authorization: bytes | None, expected: str
) -> tuple[bool, dict[str, Any] | None]:
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    limits = GuardLimits(
        shop_token=expected.encode(),
        max_body_bytes=100,
        webhook_max_body_bytes=100,
        body_timeout_seconds=1.0,
    )
    asyncio.run(RequestGuard(app, limits)(_scope(authorization), receive, send))
    if sent[0]["status"] == 200:
        return True, None
    return False, {
        "status": sent[0]["status"],
        "body": json.loads(sent[1]["body"]),
        "challenge": dict(sent[0]["headers"])[b"www-authenticate"].decode(),
    }


def _route_lets_in(authorization: bytes | None) -> tuple[bool, dict[str, Any] | None]:
    try:
        asyncio.run(shop_token(Request(_scope(authorization)), CONTEXT))
    except ApiProblem as problem:
        return False, {
            "status": problem.status,
            "body": problem.body.model_dump(),
            "challenge": (problem.headers or {})["www-authenticate"],
        }
    return True, None


@pytest.mark.parametrize("authorization", HEADERS)
def test_the_guard_and_the_routes_judge_a_token_alike(
    authorization: bytes | None, expected: str
) -> None:
    guard, route = _guard_lets_in(authorization, expected), _route_lets_in(authorization)
    assert guard == route
    assert guard[0] == (
        expected == "tok"
        and authorization is not None
        and authorization.lower().split() == [b"bearer", b"tok"]
    )
