"""The shop's bearer token: the one comparison the HTTP guard and the routes both use.

`token_matches` holds the rule (constant time, `Bearer` scheme, an empty token never passes).
`RequestGuard` (api/guard.py) applies it before a request body is read; `require_shop_token`
applies it again as the `/v1` routers' dependency, which documents the 401 in the OpenAPI
document and guards apps built without the middleware (tests of one router).
"""

from __future__ import annotations

import hmac

from fastapi import Request

from extend_connector.api.errors import ApiProblem
from extend_connector.flows.context import current

UNAUTHORIZED = "unauthorized"
UNAUTHORIZED_MESSAGE = "send `Authorization: Bearer <webshop.api_token>`"
CHALLENGE = {"www-authenticate": "Bearer"}


def token_matches(authorization: bytes | None, expected: bytes) -> bool:
    """Whether an `Authorization` header value is `Bearer <expected>`, compared in constant time."""
    scheme, _, token = (authorization or b"").partition(b" ")
    return bool(expected) and scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), expected)


def expected_shop_token() -> bytes:
    return current().settings.webshop.api_token.get_secret_value().encode()


async def require_shop_token(request: Request) -> None:
    """FastAPI dependency of the `/v1` routers: 401 without the shop's bearer token."""
    header = request.headers.get("authorization")
    if not token_matches(None if header is None else header.encode("latin-1"), expected_shop_token()):
        raise ApiProblem(401, UNAUTHORIZED, UNAUTHORIZED_MESSAGE, headers=CHALLENGE)
