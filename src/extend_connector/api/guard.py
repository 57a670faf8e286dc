"""The front door of the HTTP app: token, body size and body deadline, before any route runs.

A pure ASGI middleware (Starlette's `BaseHTTPMiddleware` would buffer the body it is meant to
refuse). Before the app sees a request:
- `/v1` without `Authorization: Bearer <webshop.api_token>` gets 401; the body is never read;
- a `Content-Length` over the route's limit gets 413 (`server.webhook_max_body_bytes` for the
  webhook inbox, `server.max_body_bytes` everywhere else); the body is never read.
While the app reads the body, a chunked body is counted and cut at the limit (413), and the whole
body must arrive within `server.body_timeout_seconds` of the request head (408). A refusal the
guard answers itself closes the connection, so the unread rest of the body is never received.
A client that goes away mid-body is one log line, not a traceback. The routes' own token check
stays (the same `auth.token_matches`): it documents the 401 in the OpenAPI document and guards
apps built without this layer.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog
from prometheus_client import Counter
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from extend_connector.api.auth import CHALLENGE, UNAUTHORIZED, UNAUTHORIZED_MESSAGE, token_matches
from extend_connector.api.errors import ApiError
from extend_connector.settings import Settings

log = structlog.get_logger("extend_connector.http")

REFUSED = Counter(
    "extend_connector_http_refused_total",
    "Requests the HTTP guard answered itself, by reason",
    ["reason"],
)
DISCONNECTS = Counter(
    "extend_connector_http_client_disconnects_total",
    "Clients that went away before their request body was complete",
)

SHOP_API_PREFIX = "/v1"
WEBHOOK_PREFIX = "/webhooks/"

_DISCONNECT: Message = {"type": "http.disconnect"}


@dataclass(frozen=True, kw_only=True, slots=True)
class GuardLimits:
    """What the guard enforces; `from_settings` reads them from the `server` and `webshop`
    sections."""

    shop_token: bytes
    max_body_bytes: int
    webhook_max_body_bytes: int
    body_timeout_seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> GuardLimits:
        return cls(
            shop_token=settings.webshop.api_token.get_secret_value().encode(),
            max_body_bytes=settings.server.max_body_bytes,
            webhook_max_body_bytes=settings.server.webhook_max_body_bytes,
            body_timeout_seconds=settings.server.body_timeout_seconds,
        )

    def body_limit(self, path: str) -> tuple[int, str]:
        """The byte limit for `path` and the setting that names it."""
        if path.startswith(WEBHOOK_PREFIX):
            return self.webhook_max_body_bytes, "server.webhook_max_body_bytes"
        return self.max_body_bytes, "server.max_body_bytes"


def is_shop_api(path: str) -> bool:
    return path == SHOP_API_PREFIX or path.startswith(SHOP_API_PREFIX + "/")


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def bearer_ok(scope: Scope, expected: bytes) -> bool:
    """The request carries the shop's bearer token (the rule is `auth.token_matches`, shared with
    the routes)."""
    return token_matches(_header(scope, b"authorization"), expected)


def declared_length(scope: Scope) -> int | None:
    raw = _header(scope, b"content-length")
    try:
        return int(raw) if raw is not None else None
    except ValueError:  # the HTTP parser refuses these first; never trust it here
        return None


def expects_body(scope: Scope) -> bool:
    length = declared_length(scope)
    return (length is not None and length > 0) or _header(scope, b"transfer-encoding") is not None


async def send_error(
    send: Send,
    status: int,
    error: str,
    message: str,
    *,
    close: bool,
    headers: dict[str, str] | None = None,
) -> None:
    """One `ApiError` answer; `close` when the body was not read, so the connection ends with it."""
    body = ApiError(error=error, message=message).model_dump_json().encode()
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    raw_headers += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    if close:
        raw_headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


@dataclass(kw_only=True, slots=True)
class _Exchange:
    """One request: counts the body as the app reads it, answers a refusal, hides the app's answer
    after one."""

    receive_next: Receive
    send_next: Send
    limit: int
    limit_setting: str
    deadline: float
    timeout_seconds: float
    path: str
    received: int = 0
    body_complete: bool = False
    response_started: bool = False
    refused: bool = False
    client_gone: bool = False

    async def receive(self) -> Message:
        if self.refused:
            return _DISCONNECT
        if (
            self.body_complete
        ):  # later receives wait for a disconnect (streaming answers): no deadline
            return await self.receive_next()
        try:
            async with asyncio.timeout_at(self.deadline):
                message = await self.receive_next()
        except TimeoutError:
            await self._refuse(
                408,
                "body_timeout",
                f"the request body did not arrive within server.body_timeout_seconds "
                f"({self.timeout_seconds:g} s)",
            )
            return _DISCONNECT
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                await self._refuse(
                    413,
                    "too_large",
                    f"request body larger than {self.limit_setting} ({self.limit} bytes)",
                )
                return _DISCONNECT
            self.body_complete = not message.get("more_body", False)
        elif message["type"] == "http.disconnect":
            self._client_went_away()
        return message

    async def send(self, message: Message) -> None:
        if self.refused:  # the guard has answered; whatever the app says now has no one to hear it
            return
        if message["type"] == "http.response.start":
            self.response_started = True
        await self.send_next(message)

    async def _refuse(self, status: int, reason: str, message: str) -> None:
        REFUSED.labels(reason).inc()
        log.warning(
            "http_request_refused", reason=reason, path=self.path, received_bytes=self.received
        )
        if not self.response_started:
            await send_error(self.send_next, status, reason, message, close=True)
        self.refused = True

    def _client_went_away(self) -> None:
        if not self.client_gone and not self.body_complete:
            DISCONNECTS.inc()
            log.info("http_client_disconnected", path=self.path, received_bytes=self.received)
        self.client_gone = True


class RequestGuard:
    """ASGI middleware: see the module docstring."""

    def __init__(self, app: ASGIApp, limits: GuardLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if is_shop_api(path) and not bearer_ok(scope, self.limits.shop_token):
            REFUSED.labels(UNAUTHORIZED).inc()
            await send_error(
                send,
                401,
                UNAUTHORIZED,
                UNAUTHORIZED_MESSAGE,
                close=expects_body(scope),
                headers=CHALLENGE,
            )
            return
        limit, setting = self.limits.body_limit(path)
        length = declared_length(scope)
        if length is not None and length > limit:
            REFUSED.labels("too_large").inc()
            log.warning(
                "http_request_refused", reason="too_large", path=path, declared_bytes=length
            )
            await send_error(
                send,
                413,
                "too_large",
                f"request body larger than {setting} ({limit} bytes)",
                close=True,
            )
            return
        loop = asyncio.get_running_loop()
        exchange = _Exchange(
            receive_next=receive,
            send_next=send,
            limit=limit,
            limit_setting=setting,
            deadline=loop.time() + self.limits.body_timeout_seconds,
            timeout_seconds=self.limits.body_timeout_seconds,
            path=path,
        )
        try:
            await self.app(scope, exchange.receive, exchange.send)
        except ClientDisconnect:
            # The app met the end of a body that will not come (the client left, or the guard
            # refused it); the answer, if any is owed, has been given.
            if not (exchange.refused or exchange.client_gone):
                raise
