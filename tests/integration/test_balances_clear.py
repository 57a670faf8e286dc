"""Clearing dirty balances after a flush never waits for an ingest that holds one of the rows
(issue #13's fleet scenario: the flush's DELETE waited for an ingest's mark and the ingest for
the DELETE; PostgreSQL killed one of them with `deadlock detected`, a few times a run)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from extend_connector.flows.balances import _clear
from extend_connector.store.migrate import migrate
from extend_connector.store.models import DirtyBalanceRow
from extend_connector.store.repositories import mark_dirty

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _dirty(engine: sa.Engine) -> set[tuple[str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(DirtyBalanceRow.product_number, DirtyBalanceRow.warehouse))
        return {(p, w) for p, w in rows}


def test_clear_deletes_what_the_fetch_covered_and_keeps_newer_marks(db_url: str) -> None:
    migrate(db_url)
    engine = sa.create_engine(db_url, poolclass=sa.NullPool)
    with Session(engine) as session, session.begin():
        mark_dirty(session, [("P1", "W"), ("P2", "W")], now=T0)
        mark_dirty(session, [("P3", "W")], now=T0 + timedelta(seconds=10))
    with Session(engine) as session, session.begin():
        cleared = _clear(session, [("P1", "W"), ("P3", "W")], T0 + timedelta(seconds=5))
    assert cleared == 1
    assert _dirty(engine) == {("P2", "W"), ("P3", "W")}
    engine.dispose()


@pytest.mark.postgres
def test_clear_skips_a_row_an_open_ingest_holds_instead_of_waiting(pg_url: str) -> None:
    migrate(pg_url)
    engine = sa.create_engine(pg_url, poolclass=sa.NullPool)
    with Session(engine) as session, session.begin():
        mark_dirty(session, [("P1", "W"), ("P2", "W")], now=T0)
    ingest = Session(engine)
    ingest.begin()
    mark_dirty(ingest, [("P2", "W")], now=T0 + timedelta(seconds=1))  # holds P2, uncommitted
    done: list[int] = []

    def flush() -> None:
        with Session(engine) as session, session.begin():
            session.execute(sa.text("SET LOCAL lock_timeout = '5s'"))
            done.append(_clear(session, [("P1", "W"), ("P2", "W")], T0 + timedelta(seconds=5)))

    thread = threading.Thread(target=flush)
    thread.start()
    thread.join(10)
    ingest.commit()
    ingest.close()
    assert done == [1], "the clear waited for the ingest's row (or failed)"
    assert _dirty(engine) == {("P2", "W")}  # marked again: fetched again by the next pass
    engine.dispose()
