"""The shop's bearer token: the one comparison the HTTP guard and the routes both use.

`token_matches` holds the rule (constant time, `Bearer` scheme, an empty token never passes).
`RequestGuard` (api/guard.py) applies it before a request body is read; `require_shop_token`
applies it again in the `/v1` routers' dependency (`api.deps.shop_token`), which documents the
401 in the OpenAPI document and guards apps built without the middleware (tests of one router).
"""

from __future__ import annotations

import hmac

from fastapi import Request

from extend_connector.api.errors import ApiProblem

UNAUTHORIZED = "unauthorized"
UNAUTHORIZED_MESSAGE = "send `Authorization: Bearer <webshop.api_token>`"
CHALLENGE = {"www-authenticate": "Bearer"}


def token_matches(authorization: bytes | None, expected: bytes) -> bool:
    """Whether an `Authorization` header value is `Bearer <expected>`, compared in constant time."""
    scheme, _, token = (authorization or b"").partition(b" ")
    return (
        bool(expected)
        and scheme.lower() == b"bearer"
        and hmac.compare_digest(token.strip(), expected)
    )


def require_shop_token(request: Request, expected: bytes) -> None:
    """401 unless the request carries `Authorization: Bearer <expected>`."""
    header = request.headers.get("authorization")
    if not token_matches(None if header is None else header.encode("latin-1"), expected):
        raise ApiProblem(401, UNAUTHORIZED, UNAUTHORIZED_MESSAGE, headers=CHALLENGE)
