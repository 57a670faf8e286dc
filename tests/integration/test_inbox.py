"""The webhook inbox on a real connector (HTTP on loopback, SQLite): every refusal class, dedupe
on Id, one dirty mark per notified record (no job per notification), unknown actions stored and
acknowledged."""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import pytest
import sqlalchemy as sa

from extend_connector.api.webhooks import InboxWriter, deliver, store_deliveries
from extend_connector.extend.webhooks import parse_envelope, sign
from extend_connector.service import Connector
from extend_connector.settings import Settings
from extend_connector.store.models import DirtyRecordRow, InboxRow
from support.processes import free_port

SECRET = "inbox-secret"


def _serving(database_url: str) -> Iterator[tuple[str, Connector]]:
    port = free_port()
    settings = Settings.model_validate(
        {
            # Nothing listens here: the drains the inbox asks for fail, the inbox must not care.
            "extend": {"base_url": f"http://127.0.0.1:{free_port()}/api", "webhook_secret": SECRET},
            "store": {"database_url": database_url},
            "server": {"port": port, "webhook_max_body_bytes": 4096},
        }
    )
    connector = Connector(settings)
    try:
        with connector.serve_in_thread(port=port) as url:
            yield url, connector
    finally:
        connector.close()


@pytest.fixture
def inbox(tmp_path: Path) -> Iterator[tuple[str, Connector]]:
    yield from _serving(f"sqlite:///{tmp_path / 'c.db'}")


@pytest.fixture
def any_inbox(db_url: str) -> Iterator[tuple[str, Connector]]:
    """The same on SQLite and on PostgreSQL."""
    yield from _serving(db_url)


def test_a_running_connector_keeps_its_start_up_heap_out_of_full_collections(
    tmp_path: Path,
) -> None:
    """What starting made is frozen while the connector runs (each full collection walked it
    while holding the GIL: 90-110 ms stops that set the acknowledgement's p99, docs/benchmarks.md)
    and given back to the collector when it stops."""
    assert gc.get_freeze_count() == 0
    port = free_port()
    settings = Settings.model_validate(
        {
            "extend": {"base_url": f"http://127.0.0.1:{free_port()}/api", "webhook_secret": SECRET},
            "store": {"database_url": f"sqlite:///{tmp_path / 'c.db'}"},
            "server": {"port": port},
        }
    )
    connector = Connector(settings)
    try:
        with connector.serve_in_thread(port=port):
            assert gc.get_freeze_count() > 0
    finally:
        connector.close()
    assert gc.get_freeze_count() == 0


def body(delivery_id: str, *notes: tuple[str, dict[str, Any]], attempt: int = 1) -> bytes:
    data = {
        "Id": delivery_id,
        "Attempt": attempt,
        "Properties": {"NotificationId": "a-b-c"},
        "Notifications": [{"Action": a, "Details": d} for a, d in notes],
    }
    return json.dumps(data, indent=2).encode()


def post(url: str, raw: bytes, signature: str | None = "good") -> httpx2.Response:
    headers = {"content-type": "application/json; charset=utf-8"}
    if signature == "good":
        headers["ms-signature"] = sign(SECRET, raw)
    elif signature is not None:
        headers["ms-signature"] = signature
    return httpx2.post(f"{url}/webhooks/extend", content=raw, headers=headers, timeout=10)


def test_refusals_and_acceptance(inbox: tuple[str, Connector]) -> None:
    url, connector = inbox
    order = (
        "OrderReserved",
        {"OrderNumber": "100001", "OrderNumberExternal": "S-1", "Warehouse": "MainWarehouse"},
    )
    raw = body("d1", order, ("SomethingNew", {"X": "1"}))
    assert post(url, raw, signature=None).status_code == 401
    assert post(url, raw, signature=sign("wrong", raw)).status_code == 401
    assert (
        post(url, raw + b" ", signature=sign(SECRET, raw)).status_code == 401
    )  # body changed after signing
    malformed = b'{"Notifications": []'
    assert post(url, malformed).status_code == 400
    assert post(url, b'{"Attempt": 1, "Notifications": []}').status_code == 400  # no Id
    big = body("big", ("OrderPicked", {"OrderNumber": "1", "Pad": "x" * 5000}))
    assert post(url, big).status_code == 413
    with connector.db.read() as s:
        assert (
            s.scalar(sa.select(sa.func.count()).select_from(InboxRow)) == 0
        )  # nothing refused was stored

    ok = post(url, raw)
    assert ok.status_code == 200
    assert ok.json() == {"status": "accepted", "id": "d1", "inline": 1, "unhandled": 1}
    again = post(url, body("d1", order, ("SomethingNew", {"X": "1"}), attempt=3))
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    with connector.db.read() as s:
        row = s.get(InboxRow, "d1")
        assert row is not None
        assert (
            row.attempt,
            row.last_seen_attempt,
            row.notification_count,
            row.unknown_action_count,
        ) == (1, 3, 2, 1)
        assert '"SomethingNew"' in row.raw_body
    # The order is marked for the order drain (once, though delivered twice); no job per hook.
    assert marks(connector) == {("order", "100001"): 1}
    assert connector.engine.get_status("wh-d1-0") is None

    metrics = httpx2.get(f"{url}/metrics", timeout=10).text
    for outcome in ("forged", "malformed", "accepted", "duplicate"):
        assert f'extend_connector_webhook_deliveries_total{{outcome="{outcome}"}}' in metrics
    # An oversized body is refused by the server's front door (api.guard) before the inbox runs.
    assert 'extend_connector_http_refused_total{reason="too_large"}' in metrics


def test_batched_delivery_marks_each_order_once_and_starts_no_job_per_notification(
    inbox: tuple[str, Connector],
) -> None:
    url, connector = inbox
    notes = [("OrderPicked", {"OrderNumber": str(100 + i)}) for i in range(5)]
    notes += [("OrderReserved", {"OrderNumber": "100"}), ("OrderCancelled", {"OrderNumber": "100"})]
    response = post(url, body("batch", *notes))
    assert response.status_code == 200 and response.json()["inline"] == 7
    # Three hooks about order 100 in one delivery are one mark (one statement for the batch) ...
    assert marks(connector) == {("order", str(100 + i)): 1 for i in range(5)}
    # ... and a later delivery about it moves its generation on: a drain that took the mark
    # before it will not clear it.
    assert post(url, body("later", ("OrderPicked", {"OrderNumber": "100"}))).status_code == 200
    assert marks(connector)[("order", "100")] == 2
    assert [connector.engine.get_status(f"wh-batch-{i}") for i in range(7)] == [None] * 7


def marks(connector: Connector) -> dict[tuple[str, str], int]:
    with connector.db.read() as s:
        rows = s.execute(
            sa.select(DirtyRecordRow.kind, DirtyRecordRow.key, DirtyRecordRow.generation)
        )
        return {(kind, key): generation for kind, key, generation in rows}


def test_the_fast_lane_answers_every_delivery_as_the_route_does(
    inbox: tuple[str, Connector],
) -> None:
    """`WebhookLane` (the connector's app) and the FastAPI route (an app built without the lane)
    give the same answers; the lane alone, with no route, serves the inbox."""
    from fastapi.testclient import TestClient

    from extend_connector.api import webhooks
    from extend_connector.api.app import create_app

    _, connector = inbox
    state = {"flow_context": connector.context}
    lane_only = create_app(state=state, lanes=(webhooks.WebhookLane,))
    route_only = create_app(routers=[webhooks.router], state=state)
    picked = ("OrderPicked", {"OrderNumber": "7"})

    def cases(tag: str) -> list[tuple[bytes | Iterator[bytes], str | None]]:
        raw = body(f"{tag}-ok", picked, ("SomethingNew", {}))
        big = body(f"{tag}-big", ("OrderPicked", {"OrderNumber": "1", "Pad": "x" * 5000}))
        return [
            (raw, None),  # unsigned
            (raw, sign("wrong", raw)),
            (b'{"Notifications": []', "good"),
            (b'{"Attempt": 1, "Notifications": []}', "good"),
            (big, "good"),  # declared too large
            (iter([big[:3000], big[3000:]]), sign(SECRET, big)),  # chunked, too large
            (raw, "good"),
            (raw, "good"),  # the same delivery again
        ]

    def answers(app: Any, tag: str) -> list[tuple[int, Any]]:
        out = []
        with TestClient(app) as client:
            for content, signature in cases(tag):
                headers = {"content-type": "application/json"}
                if signature is not None:
                    raw = content if isinstance(content, bytes) else b""
                    headers["ms-signature"] = (
                        sign(SECRET, raw) if signature == "good" else signature
                    )
                answer = client.post("/webhooks/extend", content=content, headers=headers)
                text = answer.text.replace(f'"{tag}-ok"', '"<id>"')
                out.append((answer.status_code, json.loads(text)))
        return out

    lane = answers(lane_only, "lane")
    assert lane == answers(route_only, "route")
    assert [status for status, _ in lane] == [401, 401, 400, 400, 413, 413, 200, 200]
    assert [answer.get("status") for _, answer in lane[-2:]] == ["accepted", "duplicate"]


def test_one_batch_with_redeliveries_stores_each_delivery_once_at_its_highest_attempt(
    any_inbox: tuple[str, Connector],
) -> None:
    """A group-committed batch can hold a delivery twice and one stored before: each is one row
    (the first copy's), its `last_seen_attempt` the highest seen, its notifications marked once."""
    url, connector = any_inbox
    assert (
        post(url, body("old", ("OrderPicked", {"OrderNumber": "7"}), attempt=2)).status_code == 200
    )
    items = [
        (body("new", ("OrderPicked", {"OrderNumber": "8"})), False),
        (body("old", ("OrderPicked", {"OrderNumber": "7"}), attempt=5), True),
        (body("new", ("OrderPicked", {"OrderNumber": "8"}), attempt=3), True),
        (body("old", ("OrderPicked", {"OrderNumber": "7"}), attempt=4), True),
        (body("new", ("OrderPicked", {"OrderNumber": "8"}), attempt=2), True),
    ]
    results, _ = store_deliveries(
        connector.context, [(parse_envelope(raw), raw) for raw, _ in items]
    )
    assert [r.duplicate for r in results] == [duplicate for _, duplicate in items]
    with connector.db.read() as s:
        rows = {
            row.delivery_id: (row.attempt, row.last_seen_attempt)
            for row in s.scalars(sa.select(InboxRow))
        }
    assert rows == {"old": (2, 5), "new": (1, 3)}
    assert marks(connector) == {("order", "7"): 1, ("order", "8"): 1}


def test_a_delivery_another_transaction_is_storing_is_a_duplicate_once_that_one_commits(
    any_inbox: tuple[str, Connector],
) -> None:
    """Two inbox transactions at once holding one delivery (two `web` processes on PostgreSQL,
    Extend redelivering to the second while the first stores it): the later one waits for the
    first, then answers that delivery as a duplicate and stores the rest of its batch. Before
    the insert itself told which rows were new, it failed on the primary key (the look-up before
    the insert could not see the uncommitted row)."""
    _, connector = any_inbox
    raws = [body(f"race-{i}", ("OrderPicked", {"OrderNumber": str(900 + i)})) for i in range(3)]
    items = [(parse_envelope(raw), raw) for raw in raws]
    outcome: list[Any] = []

    def second() -> None:
        try:
            outcome.append(store_deliveries(connector.context, items)[0])
        except BaseException as exc:  # reported below, not lost in the thread
            outcome.append(exc)

    thread = threading.Thread(target=second)
    with connector.db.write() as first:  # the other process's transaction, not committed yet
        first.execute(sa.insert(InboxRow), [_inbox_row("race-1")])
        thread.start()
        _until_waiting(connector, thread)
    thread.join(timeout=60)
    assert [
        [r.duplicate for r in result] if isinstance(result, list) else result for result in outcome
    ] == [[False, True, False]]
    assert marks(connector) == {("order", "900"): 1, ("order", "902"): 1}


def _inbox_row(delivery_id: str) -> dict[str, Any]:
    return {
        "delivery_id": delivery_id,
        "attempt": 1,
        "notification_id": "a-b-c",
        "received_at": datetime.now(UTC),
        "raw_body": "{}",
        "notification_count": 1,
        "unknown_action_count": 0,
        "last_seen_attempt": 1,
    }


def _until_waiting(connector: Connector, thread: threading.Thread) -> None:
    """Until `thread` waits for a lock: PostgreSQL's row lock (seen in `pg_locks`), or this
    process's write gate on SQLite (which has no view of it: a short pause)."""
    if connector.db.is_sqlite:
        thread.join(timeout=0.3)
        return
    deadline = time.monotonic() + 20
    with connector.db.engine.connect() as probe:
        while time.monotonic() < deadline:
            waiting = probe.execute(sa.text("SELECT count(*) FROM pg_locks WHERE NOT granted"))
            if waiting.scalar_one():
                return
            probe.rollback()
            time.sleep(0.02)
    raise AssertionError("the second transaction never waited for the first")


def test_batches_racing_with_the_same_deliveries_store_each_once_and_both_succeed(
    any_inbox: tuple[str, Connector],
) -> None:
    """Two inbox transactions at once (two `web` processes on PostgreSQL, each with Extend's
    redelivery of the other's delivery) holding the same deliveries: both commit, each delivery
    is stored and marked once, and every copy but one is answered as a duplicate. Before the
    insert told which rows were new, the later transaction failed on the primary key."""
    _, connector = any_inbox
    raws = [body(f"race-{i}", ("OrderPicked", {"OrderNumber": str(900 + i)})) for i in range(40)]
    items = [(parse_envelope(raw), raw) for raw in raws]
    start = threading.Barrier(2)
    outcomes: list[list[bool]] = []
    errors: list[BaseException] = []

    def one(batch: list[Any]) -> None:
        start.wait()
        try:
            results, _ = store_deliveries(connector.context, batch)
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)
        else:
            outcomes.append([r.duplicate for r in results])

    threads = [
        threading.Thread(target=one, args=(items,)),
        threading.Thread(target=one, args=(list(reversed(items)),)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len(outcomes) == 2
    assert sum(not duplicate for outcome in outcomes for duplicate in outcome) == len(items)
    with connector.db.read() as s:
        stored = s.scalar(sa.select(sa.func.count()).select_from(InboxRow))
    assert stored == len(items)
    assert marks(connector) == {("order", str(900 + i)): 1 for i in range(40)}


def test_a_waiter_that_gives_up_leaves_no_other_delivery_of_its_batch_unanswered(
    inbox: tuple[str, Connector],
) -> None:
    """A delivery whose request is cancelled while its batch waits (a client gone, a server
    shutting down) is still stored, and every other delivery of that batch is answered. Before,
    answering the cancelled one raised in the writer thread, and the rest of its batch waited
    for ever."""
    _, connector = inbox
    ctx = connector.context
    writer = InboxWriter(ctx)
    held, release = threading.Event(), threading.Event()

    def hold_the_database() -> None:
        with connector.db.write():
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold_the_database)
    holder.start()
    assert held.wait(10)

    def delivery(delivery_id: str, order: str) -> Any:
        raw = body(delivery_id, ("OrderPicked", {"OrderNumber": order}))

        async def read(limit: int) -> bytes:
            return raw

        return deliver(ctx, writer, read, sign(SECRET, raw))

    async def scenario() -> list[Any]:
        blocker = asyncio.create_task(delivery("blocker", "1"))
        await asyncio.sleep(0.3)  # the writer took it and waits for the database
        gone = asyncio.create_task(delivery("gone", "2"))
        rest = [asyncio.create_task(delivery(f"rest-{i}", str(3 + i))) for i in range(2)]
        await asyncio.sleep(0.1)  # all three queued behind the blocker: the next batch
        gone.cancel()
        await asyncio.sleep(0.1)
        release.set()
        return await asyncio.wait_for(asyncio.gather(blocker, *rest), timeout=20)

    try:
        answers = asyncio.run(scenario())
    finally:
        release.set()
        holder.join(10)
    assert [(status, answer["status"]) for status, answer in answers] == [(200, "accepted")] * 3
    assert marks(connector) == {("order", str(n)): 1 for n in range(1, 5)}
