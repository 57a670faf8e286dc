"""Alerts kept in the database (flows/alerts.py on real SQLite/PostgreSQL): one alert per open
condition however often it is evaluated, a resolved notice when it clears, and a notice that could
not be sent is sent again (with the same id) at the next run."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from extend_connector.flows import alerts, failures
from extend_connector.notify import RecordingNotifier
from extend_connector.service import Connector
from extend_connector.settings import EmbeddedSettings
from extend_connector.store.models import AlertRow, BalanceRow, ParkedFailureRow

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


@pytest.fixture
def connector(tmp_path: Path, db_url: str) -> Iterator[Connector]:
    settings = EmbeddedSettings(
        store={"database_url": db_url, "data_dir": tmp_path},
        alerts={"stale_minutes": 30},
        sync={"balances_sweep_minutes": 10},
    )
    clock = [NOW]
    c = Connector(settings, clock=lambda: clock[0])
    c.test_clock = clock  # type: ignore[attr-defined]
    try:
        yield c
    finally:
        c.close()


def _events(notifier: RecordingNotifier) -> list[tuple[str, str]]:
    return [(n.event, n.condition) for n in notifier.notices]


def test_one_alert_per_condition_then_resolved(connector: Connector) -> None:
    ctx = connector.context
    with ctx.db.write() as session:
        fid = failures.park(
            session, kind="order", key="R-1", reason="invalid_order", message="unknown SKU", now=NOW
        )
        session.add(
            BalanceRow(
                product_number="P1",
                warehouse="W",
                available=1,
                confirmed_at=NOW - timedelta(minutes=45),
            )
        )
    notifier = RecordingNotifier()
    first = alerts.run_once(ctx, [notifier])
    assert first["opened"] == 2 and first["sent"] == 2
    assert sorted(_events(notifier)) == [
        ("alert.opened", f"failure:{fid}"),
        ("alert.opened", "stale:balances"),
    ]
    # Still true at the next runs: nothing new.
    alerts.run_once(ctx, [notifier])
    alerts.run_once(ctx, [notifier])
    assert len(notifier.notices) == 2

    # The failure is settled and the balances confirmed again: both resolve, once.
    with ctx.db.write() as session:
        session.get(ParkedFailureRow, fid).resolved_at = NOW  # type: ignore[union-attr]
        session.execute(sa.update(BalanceRow).values(confirmed_at=NOW))
    alerts.run_once(ctx, [notifier])
    alerts.run_once(ctx, [notifier])
    assert sorted(_events(notifier)[2:]) == [
        ("alert.resolved", f"failure:{fid}"),
        ("alert.resolved", "stale:balances"),
    ]
    resolved = [n for n in notifier.notices if n.event == "alert.resolved"]
    assert all(n.resolved_at == NOW for n in resolved)

    # The same condition again later is a new alert.
    with ctx.db.write() as session:
        session.execute(sa.update(BalanceRow).values(confirmed_at=NOW - timedelta(hours=2)))
    alerts.run_once(ctx, [notifier])
    assert _events(notifier)[-1] == ("alert.opened", "stale:balances")
    with ctx.db.read() as session:
        open_flags = [
            r.resolved_at is None
            for r in session.scalars(
                sa.select(AlertRow)
                .where(AlertRow.condition == "stale:balances")
                .order_by(AlertRow.id)
            )
        ]
    assert open_flags == [False, True]


def test_a_notice_that_failed_is_sent_again_with_the_same_id(connector: Connector) -> None:
    ctx = connector.context
    with ctx.db.write() as session:
        failures.park(session, kind="job", key="wf-1", reason="job_failed", message="x", now=NOW)
    down = RecordingNotifier(fail=True)
    result = alerts.run_once(ctx, [down])
    assert (result["opened"], result["sent"], result["failed"]) == (1, 0, 1)
    with ctx.db.read() as session:
        (row,) = session.scalars(sa.select(AlertRow)).all()
        assert row.attempts == 1 and row.open_sent_at is None and row.last_error
        alert_id = row.id
    up = RecordingNotifier()
    assert alerts.run_once(ctx, [up])["sent"] == 1
    assert [n.notice_id for n in up.notices] == [f"alert-{alert_id}-opened"]


def test_the_database_refuses_a_second_open_row_for_one_condition(connector: Connector) -> None:
    with pytest.raises(sa.exc.IntegrityError), connector.db.write() as session:
        for _ in range(2):
            session.add(
                AlertRow(
                    condition="outbox_backlog",
                    kind="outbox_backlog",
                    summary="s",
                    detail={},
                    opened_at=NOW,
                    attempts=0,
                )
            )
            session.flush()
