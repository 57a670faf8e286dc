"""Retention deletes exactly what is finished and past its days, nothing still owed or open
(SQLite, and PostgreSQL when configured)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from extend_connector.flows import retention
from extend_connector.flows.context import FlowContext, install
from extend_connector.settings import EngineSettings, Settings, StoreSettings
from extend_connector.store import Database
from extend_connector.store.models import (
    AlertRow,
    InboxRow,
    OutboxRow,
    ParkedFailureRow,
    SyncRunRow,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


class Jobs:
    """The engine's side, recorded: which cutoff and batch the job pruning was asked for."""

    def __init__(self) -> None:
        self.calls: list[tuple[datetime, int]] = []

    def prune_succeeded(self, *, completed_before: datetime, limit: int) -> int:
        self.calls.append((completed_before, limit))
        return 4


@pytest.fixture
def jobs(db: Database) -> Iterator[Jobs]:
    fake = Jobs()
    settings = Settings(
        store=StoreSettings(
            database_url=db.url,
            outbox_retention_days=7,
            inbox_retention_days=2,
            resolved_failure_retention_days=30,
            sync_run_retention_days=10,
        ),
        engine=EngineSettings(finished_job_retention_days=3),
    )
    install(
        FlowContext(settings=settings, db=db, engine=fake, webshop=None, clock=lambda: NOW)  # type: ignore[arg-type]
    )
    try:
        yield fake
    finally:
        install(None)


def _outbox(
    key: str, *, age: float, delivered: float | None, due: bool, attempts: int
) -> OutboxRow:
    return OutboxRow(
        event_type="stock.changed",
        key=key,
        payload={},
        created_at=NOW - age * DAY,
        delivered_at=None if delivered is None else NOW - delivered * DAY,
        next_attempt_at=NOW if due else None,
        attempts=attempts,
    )


def test_prune_keeps_what_is_owed_open_or_young(db: Database, jobs: Jobs) -> None:
    with db.write() as session:
        session.add_all(
            [
                _outbox("delivered-old", age=9, delivered=8, due=False, attempts=1),
                _outbox("delivered-young", age=9, delivered=6, due=False, attempts=1),
                _outbox("owed-old", age=30, delivered=None, due=True, attempts=12),
                _outbox("parked-old", age=30, delivered=None, due=False, attempts=3),
                _outbox("no-shop-old", age=8, delivered=None, due=False, attempts=0),
                _outbox("no-shop-young", age=1, delivered=None, due=False, attempts=0),
                InboxRow(delivery_id="in-old", raw_body="{}", received_at=NOW - 3 * DAY),
                InboxRow(delivery_id="in-young", raw_body="{}", received_at=NOW - DAY),
                ParkedFailureRow(
                    kind="order",
                    key="resolved-old",
                    reason="x",
                    created_at=NOW - 99 * DAY,
                    resolved_at=NOW - 31 * DAY,
                ),
                ParkedFailureRow(
                    kind="order",
                    key="resolved-young",
                    reason="x",
                    created_at=NOW - 99 * DAY,
                    resolved_at=NOW - 29 * DAY,
                ),
                ParkedFailureRow(
                    kind="order", key="open-old", reason="x", created_at=NOW - 400 * DAY
                ),
                *(
                    AlertRow(
                        condition=f"failure:{name}",
                        kind="failure",
                        summary=name,
                        opened_at=NOW - 400 * DAY,
                        resolved_at=None if resolved is None else NOW - resolved * DAY,
                    )
                    for name, resolved in (("old", 31), ("young", 29), ("open", None))
                ),
                *(
                    SyncRunRow(
                        data_point=name,
                        status=status,
                        requested_by="ops",
                        requested_at=NOW - 400 * DAY,
                        finished_at=None if finished is None else NOW - finished * DAY,
                    )
                    for name, status, finished in (
                        ("done-old", "done", 11),
                        ("failed-old", "failed", 11),
                        ("done-young", "done", 9),
                        ("running-old", "running", None),
                        ("queued-old", "queued", None),
                    )
                ),
            ]
        )

    pruned = retention.prune()

    assert pruned == retention.Pruned(outbox=2, inbox=1, failures=1, alerts=1, sync_runs=2, jobs=4)
    assert jobs.calls == [(NOW - 3 * DAY, retention.BATCH)]
    with db.read() as session:
        assert sorted(session.scalars(sa.select(OutboxRow.key))) == [
            "delivered-young",
            "no-shop-young",
            "owed-old",
            "parked-old",
        ]
        assert list(session.scalars(sa.select(InboxRow.delivery_id))) == ["in-young"]
        assert sorted(session.scalars(sa.select(ParkedFailureRow.key))) == [
            "open-old",
            "resolved-young",
        ]
        assert sorted(session.scalars(sa.select(AlertRow.summary))) == ["open", "young"]
        assert sorted(session.scalars(sa.select(SyncRunRow.data_point))) == [
            "done-young",
            "queued-old",
            "running-old",
        ]
    # A second run has nothing left to delete (the fake engine always says 4).
    assert retention.prune() == retention.Pruned(jobs=4)


def test_prune_works_off_a_backlog_in_batches(
    db: Database, jobs: Jobs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention, "BATCH", 3)
    with db.write() as session:
        session.add_all(
            _outbox(f"k{i}", age=10, delivered=9, due=False, attempts=1) for i in range(7)
        )
    assert [retention.prune().outbox for _ in range(4)] == [3, 3, 1, 0]
