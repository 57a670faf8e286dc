"""The webhook inbox, `POST /webhooks/extend`: verify, store, mark, answer; nothing else.

Order of work (design rule 2, a webhook is a trigger, not data): read the raw body, refuse
it if too large (413), check `ms-signature` on the exact bytes (401), parse (400), then ONE
write transaction stores the delivery (deduplicated on Extend's `Id`) and, per notification,
runs the bookkeeping of the flow that handles its action (marks the balance pair or the record
dirty; flows/dispatch.py); the flows' drains fetch what was marked, in batches, behind it.
Only after the commit is 2xx answered; any failure before it answers 5xx so Extend delivers
again. A redelivery (same Id, any Attempt) is
acknowledged without doing anything twice. Unknown actions are stored, counted, acknowledged.
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, cast

import sqlalchemy as sa
import structlog
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import Counter, Histogram
from sqlalchemy.orm import Session
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from extend_connector.api.deps import Context
from extend_connector.extend.webhooks import (
    SIGNATURE_HEADER,
    MalformedWebhook,
    Notification,
    SignatureInvalid,
    WebhookEnvelope,
    verify_and_parse,
)
from extend_connector.flows import dispatch
from extend_connector.flows.context import FlowContext
from extend_connector.store.models import InboxRow
from extend_connector.store.repositories import built_once

log = structlog.get_logger("extend_connector.inbox")

router = APIRouter()
PATH = "/webhooks/extend"

DELIVERIES = Counter(
    "extend_connector_webhook_deliveries_total",
    "Webhook deliveries received, by outcome",
    ["outcome"],
)
NOTIFICATIONS = Counter(
    "extend_connector_webhook_notifications_total",
    "Notifications of accepted deliveries, by how they were handled",
    ["handling"],
)
INBOX_SECONDS = Histogram(
    "extend_connector_webhook_inbox_seconds",
    "Time from body read to answer for accepted deliveries",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


ApplyMany = Callable[[Session, list[Notification]], None]


@dataclass(frozen=True, kw_only=True, slots=True)
class Stored:
    """What the transaction did with one delivery."""

    duplicate: bool
    inline: int = 0
    unhandled: int = 0


_INBOX = cast(sa.Table, InboxRow.__table__)


def _row(envelope: WebhookEnvelope, raw: bytes, now: datetime, attempt: int) -> dict[str, Any]:
    """The inbox row of one delivery (`attempt`: the highest seen in its batch)."""
    return {
        "delivery_id": envelope.id,
        "attempt": envelope.attempt,
        "notification_id": envelope.notification_id,
        "received_at": now,
        "raw_body": raw.decode("utf-8", "replace"),
        "notification_count": len(envelope.notifications),
        "unknown_action_count": sum(
            dispatch.handler_for(note.action) is None for note in envelope.notifications
        ),
        "last_seen_attempt": attempt,
    }


def _apply(
    session: Session,
    envelope: WebhookEnvelope,
    now: datetime,
    after: list[tuple[Any, Notification]],
    batched: dict[tuple[int, int], tuple[ApplyMany, list[Notification]]],
) -> Stored:
    """Run each notification's handler for one new delivery inside `session` (or gather it for
    its handler's `apply_many`)."""
    received_at = now.isoformat()
    inline = unhandled = 0
    for index, note in enumerate(envelope.notifications):
        handler = dispatch.handler_for(note.action)
        if handler is None:
            unhandled += 1
            continue
        if handler.apply_many is not None:
            slot = (dispatch.rank(handler), id(handler))
            batched.setdefault(slot, (handler.apply_many, []))[1].append(note)
        else:
            payload = dispatch.notification_json(
                note, delivery_id=envelope.id, index=index, received_at=received_at
            )
            handler.apply(session, note, payload)
        if handler.after_commit is not None:
            after.append((handler, note))
        inline += 1
    return Stored(duplicate=False, inline=inline, unhandled=unhandled)


def _insert_new(insert: Any) -> Any:
    """Store each delivery not stored before; returns the ids it stored (one statement and one
    round trip for the batch: no look-up first)."""
    return (
        insert(_INBOX)
        .on_conflict_do_nothing(index_elements=[_INBOX.c.delivery_id])
        .returning(_INBOX.c.delivery_id)
    )


# A redelivery of a stored delivery: its `last_seen_attempt` moves up, never down (the same
# statement on both databases, executed with the batch's redeliveries as rows).
_RAISE_ATTEMPT = (
    sa.update(_INBOX)
    .where(
        _INBOX.c.delivery_id == sa.bindparam("redelivered"),
        _INBOX.c.last_seen_attempt < sa.bindparam("seen"),
    )
    .values(last_seen_attempt=sa.bindparam("seen"))
)


def store_deliveries(
    ctx: FlowContext, items: list[tuple[WebhookEnvelope, bytes]]
) -> tuple[list[Stored], list[tuple[Any, Notification]]]:
    """The inbox transaction for a batch of deliveries (sync; one commit for all of them).

    A delivery already stored (or repeated within the batch) is a duplicate: only its
    `last_seen_attempt` moves. Returns one `Stored` per item, in order, and the inline
    handlers whose `after_commit` is owed once the transaction has committed. The rows are
    inserted first (`ON CONFLICT DO NOTHING RETURNING` tells which were new), then the new
    deliveries' notifications are handled: no look-up before the insert, one round trip fewer
    per batch on PostgreSQL. The inbox rows are plain rows (no ORM objects: their unit of work
    was a quarter of this transaction's CPU).
    """
    now = ctx.clock()
    after: list[tuple[Any, Notification]] = []
    batched: dict[tuple[int, int], tuple[ApplyMany, list[Notification]]] = {}
    first: dict[str, int] = {}  # delivery id -> index of its first copy in the batch
    highest: dict[str, int] = {}
    for index, (envelope, _) in enumerate(items):
        first.setdefault(envelope.id, index)
        highest[envelope.id] = max(highest.get(envelope.id, 0), envelope.attempt)
    with ctx.db.write(urgent=True) as session:  # Extend waits on it for the acknowledgement
        # In delivery id order: two transactions storing some of the same deliveries (two web
        # processes on PostgreSQL) wait for each other's rows in one order, never in a cycle.
        rows = [
            _row(items[index][0], items[index][1], now, highest[delivery_id])
            for delivery_id, index in sorted(first.items())
        ]
        new = {
            delivery_id
            for (delivery_id,) in session.execute(
                built_once(session, "inbox.insert_new", _insert_new), rows
            )
        }
        raised = [
            {"redelivered": delivery_id, "seen": attempt}
            for delivery_id, attempt in highest.items()
            if delivery_id not in new
        ]
        if raised:
            session.execute(_RAISE_ATTEMPT, raised)
        results: list[Stored] = []
        for index, (envelope, _) in enumerate(items):
            if envelope.id in new and first[envelope.id] == index:
                results.append(_apply(session, envelope, now, after, batched))
            else:
                results.append(Stored(duplicate=True))
        # The handlers that mark in bulk, once for the whole batch (one statement, many marks),
        # always in the same order (`dispatch.rank`).
        for _, (apply_many, notes) in sorted(batched.items()):
            apply_many(session, notes)
    return results, after


def store_delivery(
    ctx: FlowContext, envelope: WebhookEnvelope, raw: bytes
) -> tuple[Stored, list[tuple[Any, Notification]]]:
    """The inbox transaction for one delivery (see `store_deliveries`)."""
    results, after = store_deliveries(ctx, [(envelope, raw)])
    return results[0], after


def _after_commit(after: list[tuple[Any, Notification]], delivery_id: str) -> None:
    """Run each inline handler's after-commit callback once, with its notifications."""
    grouped: dict[int, tuple[Any, list[Notification]]] = {}
    for handler, note in after:
        grouped.setdefault(id(handler), (handler, []))[1].append(note)
    for handler, notes in grouped.values():
        try:
            handler.after_commit(notes)
        except Exception:  # the delivery is committed; the sweep repairs what the callback missed
            log.exception("inbox_after_commit_failed", delivery_id=delivery_id)


Outcome = Stored | BaseException
Waiting = tuple[WebhookEnvelope, bytes, asyncio.AbstractEventLoop, asyncio.Future[Stored]]


def _settle(answers: list[tuple[asyncio.Future[Stored], Outcome]]) -> None:
    """On the event loop: hand each waiting request its delivery's outcome. A request that gave
    up (its task cancelled: the client went away, the server is stopping) is skipped; its
    delivery is stored all the same, and Extend's redelivery of it is a duplicate."""
    for future, outcome in answers:
        if future.done():
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


class InboxWriter:
    """Group commit: one thread stores every delivery waiting at that moment in one transaction.

    SQLite has one writer at a time and each transaction has a fixed cost, so under load many
    deliveries share a commit (no delivery waits for a timer: a lone delivery is written at
    once). A delivery is answered only after its batch committed, and a batch is answered with
    one wake-up of the event loop, not one per delivery (each is a write to the loop's wake-up
    socket, and the writer then waits for the GIL again). If a batch fails, each of its
    deliveries is stored alone so one bad delivery cannot fail the others. The thread exits
    after a few idle seconds and is started again by the next delivery.
    """

    MAX_BATCH = 64
    IDLE_EXIT_SECONDS = 5.0

    def __init__(self, ctx: FlowContext) -> None:
        self.ctx = ctx
        self._queue: queue.SimpleQueue[Waiting] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, envelope: WebhookEnvelope, raw: bytes) -> asyncio.Future[Stored]:
        """Queue one delivery; call it on the event loop that awaits the answer."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Stored] = loop.create_future()
        self._queue.put((envelope, raw, loop, future))
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="inbox-writer", daemon=True)
                self._thread.start()
        return future

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=self.IDLE_EXIT_SECONDS)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            batch = [first]
            while len(batch) < self.MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._answer(batch, self._write(batch))

    def _write(self, batch: list[Waiting]) -> list[Outcome]:
        """Store the batch; returns each delivery's outcome, in order."""
        try:
            results, after = store_deliveries(
                self.ctx, [(envelope, raw) for envelope, raw, _, _ in batch]
            )
        except Exception as exc:
            if len(batch) == 1:
                return [exc]
            outcomes: list[Outcome] = []
            for envelope, raw, _, _ in batch:
                try:
                    stored, one_after = store_delivery(self.ctx, envelope, raw)
                except Exception as one_exc:
                    outcomes.append(one_exc)
                    continue
                _after_commit(one_after, envelope.id)
                outcomes.append(stored)
            return outcomes
        _after_commit(after, batch[0][0].id)
        return list(results)

    @staticmethod
    def _answer(batch: list[Waiting], outcomes: list[Outcome]) -> None:
        """One `call_soon_threadsafe` per event loop with requests in the batch."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Stored], Outcome]]] = {}
        for (_, _, loop, future), outcome in zip(batch, outcomes, strict=True):
            by_loop.setdefault(loop, []).append((future, outcome))
        for loop, answers in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, answers)
            except RuntimeError:  # the loop is closed: nobody waits any more
                log.info("inbox_answer_dropped", deliveries=len(answers), reason="loop closed")


def writer_of(app: Any, ctx: FlowContext) -> InboxWriter:
    """The app's one group-commit writer (made at the first delivery, on the event loop, so
    never made twice)."""
    writer = getattr(app.state, "inbox_writer", None)
    if not isinstance(writer, InboxWriter):
        writer = InboxWriter(ctx)
        app.state.inbox_writer = writer
    return writer


async def inbox_writer(request: Request, ctx: Context) -> InboxWriter:
    return writer_of(request.app, ctx)


async def _read_limited(receive: Receive, declared: str | None, limit: int) -> bytes | None:
    """The body from ASGI `receive`, or None as soon as it grows past `limit` (an oversized
    `Content-Length` is refused before anything is read; nothing oversized is buffered)."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


Answer = tuple[int, dict[str, Any]]


def _problem(status: int, error: str, message: str) -> Answer:
    return status, {"error": error, "message": message, "details": []}


async def deliver(
    ctx: FlowContext,
    writer: InboxWriter,
    read_body: Callable[[int], Awaitable[bytes | None]],
    signature: str | None,
) -> Answer:
    """The inbox's answer to one delivery (status, JSON body), whichever way it came in: the
    body read up to `server.webhook_max_body_bytes` (`read_body` returns None past it)."""
    started = time.perf_counter()
    settings = ctx.settings
    raw = await read_body(settings.server.webhook_max_body_bytes)
    if raw is None:
        DELIVERIES.labels("too_large").inc()
        log.warning(
            "webhook_refused", outcome="too_large", limit=settings.server.webhook_max_body_bytes
        )
        return _problem(
            413,
            "too_large",
            f"webhook body larger than server.webhook_max_body_bytes "
            f"({settings.server.webhook_max_body_bytes} bytes)",
        )
    try:
        envelope = verify_and_parse(
            raw,
            signature,
            settings.extend.webhook_secret.get_secret_value(),
            verify=settings.extend.verify_webhook_signatures,
        )
    except SignatureInvalid as exc:
        DELIVERIES.labels("forged").inc()
        log.warning("webhook_refused", outcome="forged", why=str(exc), size=len(raw))
        return _problem(401, "invalid_signature", f"{exc}; check extend.webhook_secret")
    except MalformedWebhook as exc:
        DELIVERIES.labels("malformed").inc()
        log.warning("webhook_refused", outcome="malformed", why=str(exc), size=len(raw))
        return _problem(400, "malformed", str(exc))
    try:
        stored = await writer.submit(envelope, raw)
    except Exception as exc:  # whatever failed, nothing committed: Extend must deliver again
        DELIVERIES.labels("error").inc()
        log.error(
            "webhook_not_stored",
            outcome="error",
            delivery_id=envelope.id,
            attempt=envelope.attempt,
            error=f"{type(exc).__name__}: {exc}",
        )
        return _problem(503, "not_stored", "the delivery could not be stored; deliver it again")
    if stored.duplicate:
        DELIVERIES.labels("duplicate").inc()
        log.info(
            "webhook_duplicate",
            outcome="duplicate",
            delivery_id=envelope.id,
            attempt=envelope.attempt,
        )
        return 200, {"status": "duplicate", "id": envelope.id}
    DELIVERIES.labels("accepted").inc()
    if stored.inline:
        NOTIFICATIONS.labels("inline").inc(stored.inline)
    if stored.unhandled:
        NOTIFICATIONS.labels("unhandled").inc(stored.unhandled)
    INBOX_SECONDS.observe(time.perf_counter() - started)
    log.info(
        "webhook_accepted",
        outcome="accepted",
        delivery_id=envelope.id,
        attempt=envelope.attempt,
        notifications=len(envelope.notifications),
        inline=stored.inline,
        unhandled=stored.unhandled,
        actions=sorted({n.action for n in envelope.notifications}),
    )
    return 200, {
        "status": "accepted",
        "id": envelope.id,
        "inline": stored.inline,
        "unhandled": stored.unhandled,
    }


@router.post(PATH, include_in_schema=True, summary="Extend Commerce webhook inbox")
async def receive(
    request: Request, ctx: Context, writer: Annotated[InboxWriter, Depends(inbox_writer)]
) -> Response:
    """Served by `WebhookLane` in the connector's app (same answers, `deliver`); this route
    documents it and serves apps built without the lane."""
    status, body = await deliver(
        ctx,
        writer,
        lambda limit: _read_limited(request.receive, request.headers.get("content-length"), limit),
        request.headers.get(SIGNATURE_HEADER),
    )
    return JSONResponse(body, status_code=status)


# --- the fast lane ------------------------------------------------------------------------------


class WebhookLane:
    """ASGI middleware that answers `POST /webhooks/extend` itself, before FastAPI's routing,
    dependency injection and request/response objects (the same `deliver`, the same answers).

    At the ingest benchmark's load the HTTP framework was three quarters of the process's Python
    time and the webhook route's own work a tenth (docs/benchmarks.md, "Queue bells"): the
    delivery path is the one request whose volume is Extend's to choose. Install it inside the
    `RequestGuard` (token, size and deadline checks stay in front); any other request passes on.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._signature = SIGNATURE_HEADER.lower().encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = None
        if scope["type"] == "http" and scope["path"] == PATH and scope["method"] == "POST":
            ctx = getattr(scope["app"].state, "flow_context", None)
        if not isinstance(ctx, FlowContext):
            await self.app(scope, receive, send)
            return
        signature = declared = None
        for name, value in scope["headers"]:
            if name == self._signature:
                signature = value.decode("latin-1")
            elif name == b"content-length":
                declared = value.decode("latin-1")

        status, body = await deliver(
            ctx,
            writer_of(scope["app"], ctx),
            lambda limit: _read_limited(receive, declared, limit),
            signature,
        )
        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-length", str(len(payload)).encode("latin-1")),
                    (b"content-type", b"application/json"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload, "more_body": False})
