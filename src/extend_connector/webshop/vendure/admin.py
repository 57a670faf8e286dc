"""A small client for Vendure's Admin GraphQL API: log in, send a query, classify what failed.

Errors follow the webshop port: the network, a timeout, a 5xx or a 429 are `ShopUnavailable`
(retried with backoff); a GraphQL error Vendure will answer the same way again (a validation
error, an unknown id) is `DeliveryRefused` (parked with Vendure's words). A lost session
(`FORBIDDEN`) logs in again once.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import httpx2

from extend_connector import metrics
from extend_connector.webshop.port import DeliveryRefused, ShopUnavailable

_TOKEN_HEADER = "vendure-auth-token"
_RETRYABLE = {408, 425, 429}
_LOGIN = """
mutation($u: String!, $p: String!) {
  login(username: $u, password: $p, rememberMe: true) {
    __typename
    ... on CurrentUser { id }
    ... on ErrorResult { errorCode message }
  }
}"""


class VendureAdmin:
    """One authenticated session on the Admin API (bearer token, refreshed when it lapses)."""

    def __init__(
        self,
        url: str,
        username: str,
        password: str,
        *,
        channel_token: str | None = None,
        timeout: float = 30.0,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url
        self._username = username
        self._password = password
        self._channel_token = channel_token
        self._http = httpx2.AsyncClient(timeout=timeout, transport=transport)
        self._token: str | None = None
        self._login_lock = asyncio.Lock()
        self.calls = 0  # GraphQL requests sent (the tests and the benchmark report it)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def login(self) -> None:
        async with self._login_lock:
            self._token = None
            data, headers = await self._post(_LOGIN, {"u": self._username, "p": self._password})
            result = data["login"]
            if result.get("__typename") != "CurrentUser":
                raise DeliveryRefused(
                    f"Vendure refused the login of {self._username!r} "
                    f"(webshop.vendure.username / password): {result.get('message')}"
                )
            token = headers.get(_TOKEN_HEADER)
            if not token:
                raise DeliveryRefused(
                    "Vendure answered the login without a `vendure-auth-token` header: set "
                    "authOptions.tokenMethod to include 'bearer' in the Vendure config"
                )
            self._token = token

    async def __call__(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run `query`; its `data`, or raise a WebshopError."""
        if self._token is None:
            await self.login()
        try:
            data, _ = await self._post(query, variables or {})
        except _Forbidden:
            await self.login()
            try:
                data, _ = await self._post(query, variables or {})
            except _Forbidden as exc:
                raise DeliveryRefused(
                    f"Vendure denied the request to {self._username!r} (FORBIDDEN): give that "
                    "administrator the permissions in docs/webshops/vendure.md"
                ) from exc
        return data

    async def _post(
        self, query: str, variables: dict[str, Any]
    ) -> tuple[dict[str, Any], httpx2.Headers]:
        headers = {"content-type": "application/json"}
        if self._token:
            headers["authorization"] = f"Bearer {self._token}"
        if self._channel_token:
            headers["vendure-token"] = self._channel_token
        body = json.dumps({"query": query, "variables": variables}, separators=(",", ":"))
        self.calls += 1
        metrics.SHOP_API_CALLS.labels("vendure", _operation(query)).inc()
        try:
            response = await self._http.post(self.url, content=body.encode(), headers=headers)
        except httpx2.HTTPError as exc:
            raise ShopUnavailable(f"Vendure Admin API {self.url} unreachable: {exc!r}") from exc
        excerpt = response.text[:500]
        if response.status_code >= 500 or response.status_code in _RETRYABLE:
            raise ShopUnavailable(
                f"Vendure answered {response.status_code}",
                status=response.status_code,
                body_excerpt=excerpt,
            )
        try:
            out = response.json()
        except ValueError as exc:
            raise ShopUnavailable(
                f"Vendure answered {response.status_code} with no JSON",
                status=response.status_code,
                body_excerpt=excerpt,
            ) from exc
        errors = out.get("errors") or []
        if errors:
            codes = {str((e.get("extensions") or {}).get("code") or "") for e in errors}
            if "FORBIDDEN" in codes:
                raise _Forbidden()
            message = "; ".join(str(e.get("message")) for e in errors)[:500]
            raise DeliveryRefused(
                f"Vendure refused: {message}", status=response.status_code, body_excerpt=excerpt
            )
        if not response.is_success or not isinstance(out.get("data"), dict):
            raise DeliveryRefused(
                f"Vendure answered {response.status_code}",
                status=response.status_code,
                body_excerpt=excerpt,
            )
        return out["data"], response.headers


_FIELD = re.compile(r"\{\s*(?:\w+\s*:\s*)?(\w+)")


def _operation(query: str) -> str:
    """The first field a query or mutation selects (`updateProductVariants`, `orders`, ...)."""
    found = _FIELD.search(query)
    return found.group(1) if found else "unknown"


class _Forbidden(Exception):
    """The session is gone (or never had the permission): log in again once."""
