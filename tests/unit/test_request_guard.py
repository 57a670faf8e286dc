"""`api.guard.RequestGuard` on its own, with a fake ASGI app and a scripted client (no sockets)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from starlette.requests import Request

from extend_connector.api.guard import GuardLimits, RequestGuard

LIMITS = GuardLimits(
    shop_token=b"tok", max_body_bytes=100, webhook_max_body_bytes=1000, body_timeout_seconds=0.2
)
Message = dict[str, Any]


def scope(
    path: str, *, token: str | None = "tok", length: int | None = None, chunked: bool = False
) -> dict[str, Any]:
    headers = []
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    if chunked:
        headers.append((b"transfer-encoding", b"chunked"))
    return {"type": "http", "method": "POST", "path": path, "headers": headers, "query_string": b""}


class Client:
    """Body pieces the client sends (None: it stalls for ever) and what the server sent back."""

    def __init__(self, *pieces: bytes | None, disconnect: bool = False) -> None:
        self.pieces = list(pieces)
        self.disconnect = disconnect
        self.reads = 0
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        self.reads += 1
        if not self.pieces:
            if self.disconnect:
                return {"type": "http.disconnect"}
            await asyncio.Event().wait()
        piece = self.pieces.pop(0)
        if piece is None:
            await asyncio.Event().wait()
        return {
            "type": "http.request",
            "body": piece,
            "more_body": bool(self.pieces) or self.disconnect,
        }

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.sent[0]["headers"])

    @property
    def error(self) -> str:
        return str(json.loads(self.sent[1]["body"])["error"])


def echo_app() -> Callable[[dict[str, Any], Any, Any], Awaitable[None]]:
    """Reads the whole body the way the routes do, then answers 200 with its length."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = await Request(scope, receive).body()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(len(body)).encode()})

    return app


def run(path_scope: dict[str, Any], client: Client) -> None:
    asyncio.run(RequestGuard(echo_app(), LIMITS)(path_scope, client.receive, client.send))


def test_v1_without_the_token_is_refused_before_the_body_is_read() -> None:
    for token in (None, "wrong", ""):
        client = Client(b"x" * 50)
        run(scope("/v1/orders", token=token, length=50), client)
        assert (client.status, client.error, client.reads) == (401, "unauthorized", 0)
        assert client.headers[b"www-authenticate"] == b"Bearer"
        assert client.headers[b"connection"] == b"close"  # the unread body ends with the connection


def test_the_token_is_not_asked_outside_v1() -> None:
    client = Client(b"{}")
    run(scope("/webhooks/extend", token=None, length=2), client)
    assert client.status == 200


def test_a_declared_length_over_the_route_limit_is_refused_unread() -> None:
    for path, limit in (("/v1/orders", 100), ("/webhooks/extend", 1000), ("/healthz", 100)):
        client = Client(b"x")
        run(scope(path, length=limit + 1), client)
        assert (client.status, client.error, client.reads) == (413, "too_large", 0)
        ok = Client(b"x" * limit)
        run(scope(path, length=limit), ok)
        assert ok.status == 200


def test_a_chunked_body_is_cut_at_the_limit_and_the_app_answer_is_dropped() -> None:
    client = Client(*([b"x" * 30] * 10))
    run(scope("/v1/orders", chunked=True), client)
    assert (client.status, client.error) == (413, "too_large")
    assert client.reads == 4  # 120 bytes seen: no more read
    assert len(client.sent) == 2  # the app's own answer after the refusal went nowhere


def test_a_body_that_stalls_gets_408() -> None:
    client = Client(b"x" * 10, None)
    run(scope("/v1/orders", length=50), client)
    assert (client.status, client.error) == (408, "body_timeout")
    assert client.headers[b"connection"] == b"close"


def test_a_client_leaving_mid_body_is_one_log_line(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    client = Client(b"x" * 10, disconnect=True)
    run(scope("/webhooks/extend", length=50), client)  # the route would raise ClientDisconnect
    out = capsys.readouterr().out + caplog.text
    assert out.count("http_client_disconnected") == 1
    assert "Traceback" not in out
