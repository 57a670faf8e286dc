"""The connector's uvicorn server, hardened against clients that hold connections open.

uvicorn alone never times out a request head that arrives a byte at a time (its keep-alive
timer stops at the first byte), and it accepts connections until the process runs out of file
descriptors. `GuardedH11Protocol` adds, per connection:
- a head deadline (`server.header_timeout_seconds`), armed when the connection opens and again
  when each answer is complete, disarmed only when the next request head is complete: a head
  that is not whole in time gets a 408 (an idle connection is closed silently);
- a connection limit (`server.max_connections`, lowered to fit the open-file limit): a
  connection over it gets a fixed JSON 503 and is closed before anything is parsed.
The body deadline, body size limits and the token check are the app's front door
(`api.guard.RequestGuard`). `GuardedServer` raises the process's soft open-file limit to the
hard one and condenses "too many open files" from `accept()` into a throttled one-line warning.
"""

from __future__ import annotations

import asyncio
import errno
import resource
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import h11
import structlog
import uvicorn
from prometheus_client import Counter
from uvicorn.protocols.http.h11_impl import H11Protocol

from extend_connector.api.errors import ApiError
from extend_connector.settings import Settings

log = structlog.get_logger("extend_connector.http")

CLOSED = Counter(
    "extend_connector_http_connections_closed_total",
    "Connections the server closed to protect itself, by reason",
    ["reason"],
)

# Descriptors kept free for what is not a client connection: database, Extend and shop clients,
# log and data files.
RESERVED_DESCRIPTORS = 256
_OUT_OF_DESCRIPTORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


def _raw_response(status: int, reason: str, error: str, message: str, extra: str = "") -> bytes:
    body = ApiError(error=error, message=message).model_dump_json().encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: "
        f"{len(body)}\r\n{extra}connection: close\r\n\r\n"
    )
    return head.encode() + body


OVER_LIMIT = _raw_response(
    503,
    "Service Unavailable",
    "too_many_connections",
    "the server has as many connections open as server.max_connections allows; retry",
    "retry-after: 1\r\n",
)
HEAD_TIMEOUT = _raw_response(
    408,
    "Request Timeout",
    "header_timeout",
    "the request head did not arrive within server.header_timeout_seconds",
)


class Throttled:
    """A warning that says how often something happened, at most once per `every` seconds."""

    def __init__(self, event: str, every: float = 10.0) -> None:
        self.event = event
        self.every = every
        self._count = 0
        self._last = float("-inf")

    def hit(self, **fields: Any) -> None:
        self._count += 1
        now = time.monotonic()
        if now - self._last >= self.every:
            log.warning(self.event, count=self._count, **fields)
            self._count = 0
            self._last = now


@dataclass(frozen=True, kw_only=True, slots=True)
class ConnectionLimits:
    header_timeout_seconds: float
    max_connections: int


def raise_open_file_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; return the soft limit now in
    force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("open_file_limit_not_raised", soft=soft, hard=hard, error=str(exc))
    return soft if soft != resource.RLIM_INFINITY else 1_048_576


def connection_limits(settings: Settings) -> ConnectionLimits:
    """The limits for this process: `server.max_connections`, lowered when the open-file limit is
    smaller."""
    files = raise_open_file_limit()
    fits = max(16, files - RESERVED_DESCRIPTORS)
    wanted = settings.server.max_connections
    if wanted > fits:
        log.warning(
            "max_connections_lowered",
            setting="server.max_connections",
            configured=wanted,
            effective=fits,
            open_file_limit=files,
            why="the process may not open more files; raise `ulimit -n` (hard) to allow more",
        )
    return ConnectionLimits(
        header_timeout_seconds=settings.server.header_timeout_seconds,
        max_connections=min(wanted, fits),
    )


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a head deadline and a connection limit (see the module
    docstring)."""

    LIMITS = ConnectionLimits(header_timeout_seconds=10.0, max_connections=4096)
    _over_limit = Throttled("http_connections_over_limit")
    _slow_heads = Throttled("http_slow_heads_closed")

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_cycle: object = None
        self._head_bytes = False
        super().connection_made(transport)
        _answer_without_delay(transport)
        if len(self.connections) > self.LIMITS.max_connections:
            CLOSED.labels("over_limit").inc()
            self._over_limit.hit(limit=self.LIMITS.max_connections)
            transport.write(OVER_LIMIT)
            transport.close()
            return
        self._arm_head_deadline()

    def send_400_response(self, msg: str) -> None:
        # uvicorn's own answer to bytes that are not HTTP is text/plain; the API answers JSON.
        body = ApiError(error="invalid_http", message=msg).model_dump_json().encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        events = (
            h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
            h11.Data(data=body),
            h11.EndOfMessage(),
        )
        try:
            output = b"".join(self.conn.send(event) or b"" for event in events)
        except h11.LocalProtocolError:  # an answer had already begun: nothing sensible can follow
            output = b""
        self.transport.write(output)
        self.transport.close()

    def _unsupported_upgrade_warning(self) -> None:
        pass  # no websockets here: an Upgrade header is ignored, not two warnings per request

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._head_bytes = True
        super().data_received(data)

    def handle_events(self) -> None:
        super().handle_events()
        if self._head_timer is not None and self.cycle is not self._head_cycle:
            self._disarm_head_deadline()  # a request head is complete: the app has its request

    def on_response_complete(self) -> None:
        # Armed before uvicorn looks at pipelined data, which may complete the next head at once.
        if not self.transport.is_closing():
            self._arm_head_deadline()
        super().on_response_complete()

    def _arm_head_deadline(self) -> None:
        self._disarm_head_deadline()
        self._head_cycle = self.cycle
        self._head_bytes = False
        self._head_timer = self.loop.call_later(
            self.LIMITS.header_timeout_seconds, self._head_expired
        )

    def _disarm_head_deadline(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_expired(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self.cycle is not self._head_cycle:
            return
        if self._head_bytes:  # part of a head arrived, too slowly: tell the client why it ends
            CLOSED.labels("header_timeout").inc()
            self._slow_heads.hit(timeout_seconds=self.LIMITS.header_timeout_seconds)
            if self.conn.our_state is h11.IDLE:
                self.transport.write(HEAD_TIMEOUT)
        self.transport.close()


def _answer_without_delay(transport: asyncio.Transport) -> None:
    """TCP_NODELAY on an accepted connection, whatever socket the server was handed. asyncio sets
    it only when the listening socket's protocol number says TCP, and one made by `socket.socket()`
    says 0: uvicorn writes an answer's head and body separately, and the body would wait for the
    client's delayed ACK, about 40 ms per answer."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def protocol_class(limits: ConnectionLimits) -> type[GuardedH11Protocol]:
    """The protocol class uvicorn instantiates per connection, bound to `limits`."""
    return type("BoundGuardedH11Protocol", (GuardedH11Protocol,), {"LIMITS": limits})


class GuardedServer(uvicorn.Server):
    """uvicorn's server; running out of descriptors in `accept()` is one throttled line, no
    traceback."""

    _accept_failed = Throttled("http_accept_failed")
    # Called once the server listens (after the app's lifespan started): a supervisor's signal.
    on_started: Callable[[], None] | None = None

    async def startup(self, sockets: Any = None) -> None:
        loop = asyncio.get_running_loop()
        previous = loop.get_exception_handler()

        def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            exc = context.get("exception")
            if isinstance(exc, OSError) and exc.errno in _OUT_OF_DESCRIPTORS:
                CLOSED.labels("accept_failed").inc()
                self._accept_failed.hit(
                    error=exc.strerror or str(exc),
                    why="out of file descriptors; lower server.max_connections",
                )
                return
            if previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)

        loop.set_exception_handler(handle)
        await super().startup(sockets=sockets)
        if self.started and self.on_started is not None:
            self.on_started()


def build_server(
    app: Any, settings: Settings, *, host: str, port: int, **config: Any
) -> GuardedServer:
    """A uvicorn server for the connector's app with the `server` section's protections."""
    limits = connection_limits(settings)
    return GuardedServer(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            http=protocol_class(limits),
            ws="none",
            log_level="warning",
            access_log=False,
            # No handlers of uvicorn's own: its lines reach the root logger's formatter
            # (`extend_connector.logs`), like every other library's.
            log_config=None,
            lifespan="on",
            timeout_keep_alive=settings.server.keepalive_timeout_seconds,
            **config,
        )
    )
