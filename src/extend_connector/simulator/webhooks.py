"""Webhooks out, in Extend's documented format, with the .NET WebHooks library's delivery policy.

Documented by Extend (S3, S3v): the body {Id (32 hex), Attempt, Properties.NotificationId,
Notifications[{Action, Details}]} with string values; the header
`ms-signature: sha256=<UPPERCASE HEX HMAC-SHA256(secret, raw body)>`.
Inferred from the ASP.NET WebHooks sender (S15): pretty-printed JSON, `Content-Type:
application/json; charset=utf-8`, notifications raised together grouped per registration,
retries 1 and then 4 minutes after a failure (3 attempts), same Id with a higher Attempt,
any 2xx = done, 410 = stop and deactivate the registration.

The dispatcher runs its own event loop in a daemon thread, so state changes made from any
thread (API handlers, /_sim, tests) are delivered the same way.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from json.encoder import encode_basestring as _encode_str
from typing import Any
from urllib.parse import urlsplit

import httpx2

from extend_connector.simulator.config import SimulatorConfig, WebhookRegistration
from extend_connector.simulator.state import Notification, SimState


class DeliveryError(Exception):
    """The POST did not get an HTTP answer (refused, reset, timed out, unreadable)."""


class _KeepAlivePoster:
    """A lean HTTP/1.1 keep-alive POST client for plain-http callbacks.

    httpx2's async client manages about 200 POSTs/s here, far too few for benchmarks that
    fire 10,000 single-notification deliveries in seconds; this reuses idle connections and
    parses just enough of the answer (status, Content-Length or chunked, Connection: close).
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._idle: dict[
            tuple[str, int], list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]
        ] = {}

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        head = [f"POST {target} HTTP/1.1", f"Host: {parts.netloc}", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        idle = self._idle.setdefault((host, port), [])
        while (
            idle
        ):  # a reused connection may have been closed by the server meanwhile: try the next
            reader, writer = idle.pop()
            try:
                async with asyncio.timeout(self.timeout):  # cheaper than wait_for: no extra task
                    return await self._exchange(reader, writer, request, idle)
            except TimeoutError as exc:  # first: it is an OSError, and must not be sent again
                writer.close()
                raise DeliveryError(f"no answer within {self.timeout} s") from exc
            except (OSError, asyncio.IncompleteReadError, DeliveryError):
                writer.close()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), self.timeout
            )
        except (OSError, TimeoutError) as exc:
            raise DeliveryError(f"cannot connect to {host}:{port}: {exc!r}") from exc
        try:
            async with asyncio.timeout(self.timeout):
                return await self._exchange(reader, writer, request, idle)
        except TimeoutError as exc:  # first: it is an OSError
            writer.close()
            raise DeliveryError(f"no answer within {self.timeout} s") from exc
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            writer.close()
            raise DeliveryError(f"connection failed: {exc!r}") from exc

    @staticmethod
    async def _exchange(
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request: bytes,
        idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]],
    ) -> int:
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status_parts = lines[0].split(" ", 2)
        if len(status_parts) < 2 or not status_parts[0].startswith("HTTP/"):
            raise DeliveryError(f"not an HTTP answer: {lines[0][:80]!r}")
        status = int(status_parts[1])
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip().lower()
        if "chunked" in fields.get("transfer-encoding", ""):
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip() or b"0", 16)
                await reader.readexactly(size + 2)
                if size == 0:
                    break
        elif "content-length" in fields:
            await reader.readexactly(int(fields["content-length"]))
        else:
            await reader.read()  # until the server closes: the answer's end
            writer.close()
            return status
        if fields.get("connection") == "close" or status_parts[0] == "HTTP/1.0":
            writer.close()
        else:
            idle.append((reader, writer))
        return status

    async def aclose(self) -> None:
        for conns in self._idle.values():
            for _reader, writer in conns:
                writer.close()
        self._idle.clear()


RETRY_DELAYS_SECONDS = (60.0, 240.0)
"""Waits before attempts 2 and 3 (ASP.NET WebHooks defaults: 1 and 4 minutes), times
config.time_scale."""

UNKNOWN_ACTION = "SimulatedFutureEvent"
EXTRA_FIELD = "SimExtraField"


def sign(secret: str, body: bytes) -> str:
    """The `ms-signature` header value: `sha256=` + uppercase hex HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest().upper()


def render_body(
    *,
    delivery_id: str,
    attempt: int,
    notification_id: str,
    notifications: list[dict[str, Any]],
    extra_fields: bool = False,
) -> bytes:
    """The pretty-printed body (2-space indent, as Newtonsoft's Formatting.Indented), UTF-8."""
    envelope: dict[str, Any] = {
        "Id": delivery_id,
        "Attempt": attempt,
        "Properties": {"NotificationId": notification_id},
        "Notifications": notifications,
    }
    if extra_fields:
        envelope[EXTRA_FIELD] = "added by the simulator's extra-fields fault"
    return _pretty(envelope, "").encode("utf-8")


def _pretty(value: Any, indent: str) -> str:
    """Exactly `json.dumps(value, indent=2, ensure_ascii=False)`, several times faster.

    With `indent` the stdlib falls back to its pure-Python encoder, which dominated the cost
    of a delivery; this walks the (small, fixed-shape) body once and encodes strings in C.
    """
    if isinstance(value, str):
        return _encode_str(value)
    if isinstance(value, dict):
        if not value:
            return "{}"
        inner = indent + "  "
        items = [f"{inner}{_encode_str(str(k))}: {_pretty(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(value, list | tuple):
        if not value:
            return "[]"
        inner = indent + "  "
        return "[\n" + ",\n".join(inner + _pretty(v, inner) for v in value) + "\n" + indent + "]"
    return json.dumps(value)


@dataclass(slots=True, kw_only=True)
class Job:
    """One delivery (one POST per attempt) to one registration."""

    delivery_id: str
    notification_id: str
    registration: str
    notifications: list[dict[str, Any]]
    duplicate: bool = False
    attempt: int = 0


@dataclass(slots=True, kw_only=True)
class DeliveryRecord:
    id: str
    registration: str
    callback_url: str
    attempt: int
    actions: list[str]
    status: int | None
    outcome: str  # delivered | failed | gone | error | dropped | abandoned
    error: str | None
    sent_at: str
    duration_ms: float
    body: str
    signature: str
    duplicate: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "registration": self.registration,
            "callbackUrl": self.callback_url,
            "attempt": self.attempt,
            "actions": self.actions,
            "status": self.status,
            "outcome": self.outcome,
            "error": self.error,
            "sentAt": self.sent_at,
            "durationMs": round(self.duration_ms, 2),
            "duplicate": self.duplicate,
            "signature": self.signature,
            "body": self.body,
        }


class WebhookDispatcher:
    """Takes operations' notifications from the state and POSTs them to the registrations."""

    def __init__(self, state: SimState) -> None:
        self.state = state
        self.config: SimulatorConfig = state.config
        self.deliveries: deque[DeliveryRecord] = deque(maxlen=self.config.deliveries_kept)
        self.outcomes: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._outstanding = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._queue: asyncio.Queue[Job] | None = None
        self._client: httpx2.AsyncClient | None = None
        self._poster: _KeepAlivePoster | None = None
        self._started = threading.Event()
        self._closed = False
        state.sink = self.submit

    # ---------------------------------------------------------------- from any thread

    def submit(self, batch: list[Notification]) -> None:
        """Group one operation's notifications per registration, apply webhook faults, queue
        them."""
        faults = self.state.faults
        with self.state.lock:
            registrations = list(self.state.registrations.values())
        jobs: list[Job] = []
        for reg in registrations:
            wanted = [n for n in batch if reg.wants(n.action, n.warehouse)]
            if not wanted:
                continue
            size = self.config.webhook_batch_size
            for start in range(0, len(wanted), size):
                items = [
                    self._notification_json(n, faults.extra_fields)
                    for n in wanted[start : start + size]
                ]
                if faults.unknown_webhook_actions:
                    items.append(
                        self._notification_json(
                            Notification(
                                action=UNKNOWN_ACTION,
                                details={"Note": "an Action this client has never seen"},
                            ),
                            faults.extra_fields,
                        )
                    )
                jobs.append(
                    Job(
                        delivery_id=uuid.uuid4().hex,
                        notification_id=str(uuid.uuid4()),
                        registration=reg.name,
                        notifications=items,
                    )
                )
        if not jobs:
            return
        if faults.webhook_reorder:
            jobs.reverse()
        ready: list[Job] = []
        for job in jobs:
            if self.state.chance(faults.webhook_drop_rate):
                self._record(
                    job,
                    None,
                    None,
                    "dropped",
                    "dropped by the webhook_drop_rate fault",
                    0.0,
                    b"",
                    "",
                )
                continue
            ready.append(job)
            if self.state.chance(faults.webhook_duplicate_rate):
                ready.append(
                    Job(
                        delivery_id=job.delivery_id,
                        notification_id=job.notification_id,
                        registration=job.registration,
                        notifications=job.notifications,
                        duplicate=True,
                    )
                )
        if not ready:
            return
        self._ensure_started()
        with self._lock:
            self._outstanding += len(ready)
        loop = self._loop
        assert loop is not None
        for job in ready:
            loop.call_soon_threadsafe(self._enqueue, job)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until nothing is queued, in flight or waiting for a retry; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._outstanding:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def snapshot(self) -> list[DeliveryRecord]:
        with self._lock:
            return list(self.deliveries)

    def clear(self) -> None:
        with self._lock:
            self.deliveries.clear()
            self.outcomes.clear()

    def close(self) -> None:
        """Stop the sender thread (idempotent); deliveries still waiting for a retry are
        abandoned."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)

    # ---------------------------------------------------------------- the sender loop

    def _ensure_started(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="sim-webhooks", daemon=True)
                self._thread.start()
        self._started.wait(5)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        self._queue = asyncio.Queue()
        limits = httpx2.Limits(
            max_connections=self.config.webhook_concurrency * 2,
            max_keepalive_connections=self.config.webhook_concurrency * 2,
        )
        self._client = httpx2.AsyncClient(
            timeout=self.config.webhook_timeout_seconds, limits=limits
        )
        self._poster = _KeepAlivePoster(self.config.webhook_timeout_seconds)
        workers = [loop.create_task(self._worker()) for _ in range(self.config.webhook_concurrency)]
        self._started.set()
        try:
            loop.run_forever()
        finally:
            for w in workers:
                w.cancel()
            loop.run_until_complete(self._client.aclose())
            loop.run_until_complete(self._poster.aclose())
            loop.close()

    def _enqueue(self, job: Job) -> None:
        assert self._queue is not None
        self._queue.put_nowait(job)

    async def _worker(self) -> None:
        assert self._queue is not None
        while True:
            job = await self._queue.get()
            try:
                await self._attempt(job)
            except Exception as exc:  # a bug here must not kill the worker; record it
                self._record(job, None, None, "error", f"dispatcher error: {exc!r}", 0.0, b"", "")
                self._done()

    async def _attempt(self, job: Job) -> None:
        with self.state.lock:
            reg = self.state.registrations.get(job.registration)
        if reg is None or not reg.active:
            self._record(
                job, reg, None, "abandoned", "registration removed or inactive", 0.0, b"", ""
            )
            self._done()
            return
        job.attempt += 1
        body = render_body(
            delivery_id=job.delivery_id,
            attempt=job.attempt,
            notification_id=job.notification_id,
            notifications=job.notifications,
            extra_fields=self.state.faults.extra_fields,
        )
        signature = sign(reg.secret, body)
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "ms-signature": signature,
            "User-Agent": "extend-commerce-simulator",
        }
        started = time.perf_counter()
        status: int | None = None
        error: str | None = None
        assert self._client is not None and self._poster is not None
        try:
            if reg.callback_url.startswith("http://"):
                status = await self._poster.post(reg.callback_url, body, headers)
            else:  # https and anything else: the full client
                response = await self._client.post(reg.callback_url, content=body, headers=headers)
                status = response.status_code
        except (httpx2.HTTPError, DeliveryError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        elapsed = (time.perf_counter() - started) * 1000
        if status is not None and 200 <= status < 300:
            self._record(job, reg, status, "delivered", None, elapsed, body, signature)
            self._done()
        elif status == 410:
            self._record(
                job,
                reg,
                status,
                "gone",
                "410 Gone: registration deactivated",
                elapsed,
                body,
                signature,
            )
            self.state.deactivate_registration(reg.name)
            self._done()
        elif job.attempt <= len(RETRY_DELAYS_SECONDS) and not job.duplicate:
            self._record(
                job, reg, status, "failed", error or f"HTTP {status}", elapsed, body, signature
            )
            delay = RETRY_DELAYS_SECONDS[job.attempt - 1] * self.config.time_scale
            assert self._loop is not None
            self._loop.call_later(delay, self._enqueue, job)
        else:
            outcome = "abandoned" if not job.duplicate else "failed"
            self._record(
                job, reg, status, outcome, error or f"HTTP {status}", elapsed, body, signature
            )
            self._done()

    def _done(self) -> None:
        with self._lock:
            self._outstanding -= 1
            if self._outstanding <= 0:
                self._outstanding = 0
                self._idle.notify_all()

    def _record(
        self,
        job: Job,
        reg: WebhookRegistration | None,
        status: int | None,
        outcome: str,
        error: str | None,
        duration_ms: float,
        body: bytes,
        signature: str,
    ) -> None:
        record = DeliveryRecord(
            id=job.delivery_id,
            registration=job.registration,
            callback_url=reg.callback_url if reg else "",
            attempt=job.attempt,
            actions=[str(n.get("Action")) for n in job.notifications],
            status=status,
            outcome=outcome,
            error=error,
            sent_at=self.state.clock.now().isoformat(timespec="milliseconds"),
            duration_ms=duration_ms,
            body=body.decode("utf-8"),
            signature=signature,
            duplicate=job.duplicate,
        )
        with self._lock:
            self.deliveries.append(record)
            self.outcomes[outcome] += 1

    @staticmethod
    def _notification_json(n: Notification, extra_fields: bool) -> dict[str, Any]:
        details: dict[str, Any] = dict(n.details)
        item: dict[str, Any] = {"Action": n.action, "Details": details}
        if extra_fields:
            details[EXTRA_FIELD] = "x"
            item[EXTRA_FIELD] = "x"
        return item
