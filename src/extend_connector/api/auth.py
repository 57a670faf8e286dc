"""Bearer-token check for the shop-facing API, constant time."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from fastapi import Request

from extend_connector.api.errors import ApiProblem


def require_shop_token(expected: str) -> Callable[[Request], Awaitable[None]]:
    """A FastAPI dependency that refuses requests without `Authorization: Bearer <expected>`."""
    expected_bytes = expected.encode()

    async def check(request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected_bytes):
            raise ApiProblem(401, "unauthorized", "send `Authorization: Bearer <webshop.api_token>`",
                             headers={"www-authenticate": "Bearer"})

    return check
