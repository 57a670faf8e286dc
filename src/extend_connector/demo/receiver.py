"""The demo shop's webhook endpoint: verifies the connector's signed Standard Webhooks and counts
them.

It stands in for the merchant's shop backend, so the demo (and the balance benchmark) can show
that changes reach the shop, signed, and when. Served by uvicorn on loopback in a daemon thread.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass(frozen=True, kw_only=True, slots=True)
class ReceivedEvent:
    """One verified delivery, with the monotonic time it arrived (the shop's own clock)."""

    event_id: str
    type: str
    key: str
    data: dict[str, Any]
    arrived: float


@dataclass(kw_only=True)
class ShopInbox:
    """What the shop received: counts per type, refusals, and the latest event per key."""

    secret: str
    keep_events: bool = False
    counts: Counter[str] = field(default_factory=Counter)
    refused: int = 0
    duplicates: int = 0
    last_arrival: float | None = None
    latest: dict[str, ReceivedEvent] = field(default_factory=dict)
    events: list[ReceivedEvent] = field(default_factory=list)
    _seen: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._verifier = Webhook(self.secret)

    def accept(self, body: bytes, headers: dict[str, str]) -> int:
        """Verify and record one delivery; the HTTP status the shop answers."""
        try:
            self._verifier.verify(body, headers)
        except WebhookVerificationError:
            with self._lock:
                self.refused += 1
            return 401
        try:
            envelope = json.loads(body)
            data = dict(envelope.get("data") or {})
            event = ReceivedEvent(
                event_id=headers.get("webhook-id", ""),
                type=str(envelope.get("type")),
                key=str(data.get("key", "")),
                data=data,
                arrived=time.monotonic(),
            )
        except (ValueError, AttributeError, TypeError):
            return 400
        with self._lock:
            # Standard Webhooks: the shop dedupes on webhook-id (stable across retries).
            if event.event_id in self._seen:
                self.duplicates += 1
                return 200
            self._seen.add(event.event_id)
            self.counts[event.type] += 1
            self.latest[event.key] = event
            self.last_arrival = event.arrived
            if self.keep_events:
                self.events.append(event)
        return 200

    def snapshot(self) -> tuple[dict[str, int], int, int]:
        with self._lock:
            return dict(self.counts), self.refused, self.duplicates

    def arrived(self, key: str) -> float | None:
        """When the latest event about `key` arrived (monotonic clock), None if none did."""
        with self._lock:
            event = self.latest.get(key)
            return None if event is None else event.arrived

    def drain(self) -> list[ReceivedEvent]:
        with self._lock:
            out, self.events = self.events, []
            return out


class _App:
    def __init__(self, inbox: ShopInbox) -> None:
        self.inbox = inbox

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        status = self.inbox.accept(b"".join(chunks), headers) if scope["method"] == "POST" else 405
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"0")],
            }
        )
        await send({"type": "http.response.body", "body": b""})


@contextmanager
def serve_shop_inbox(inbox: ShopInbox, port: int | socket.socket) -> Iterator[str]:
    """Serve the shop's webhook endpoint on 127.0.0.1:port (or on a socket bound already); yields
    its URL."""
    sockets = [port] if isinstance(port, socket.socket) else None
    number: int = port.getsockname()[1] if isinstance(port, socket.socket) else port
    server = uvicorn.Server(
        uvicorn.Config(
            _App(inbox),
            host="127.0.0.1",
            port=number,
            log_level="warning",
            access_log=False,
            lifespan="on",
        )
    )
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": sockets}, name="demo-shop-inbox", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the shop's webhook receiver did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{number}/shop/webhooks"
    finally:
        server.should_exit = True
        thread.join(10)
