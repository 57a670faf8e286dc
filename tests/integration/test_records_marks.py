"""Marks in bulk (the inbox marks a group-committed batch with one statement per handler), on
SQLite and PostgreSQL: a record or balance pair named twice in one statement is one mark (an
upsert may not touch a row twice on PostgreSQL), and a later mark moves the generation on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from extend_connector.flows import records
from extend_connector.store.migrate import migrate
from extend_connector.store.models import DirtyBalanceRow, DirtyRecordRow
from extend_connector.store.repositories import mark_dirty

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_record_named_twice_in_one_statement_is_one_mark(db_url: str) -> None:
    migrate(db_url)
    engine = sa.create_engine(db_url, poolclass=sa.NullPool)
    with Session(engine) as session, session.begin():
        records.mark(session, records.ORDER, ["100", "101", "100", ""], now=T0)
    with Session(engine) as session, session.begin():
        records.mark(session, records.ORDER, ["100"], now=T0 + timedelta(seconds=1))
    with engine.connect() as conn:
        t = DirtyRecordRow.__table__.c
        rows = conn.execute(sa.select(t.key, t.generation, t.first_marked_at, t.last_marked_at))
        got = {key: (generation, first, last) for key, generation, first, last in rows}
    assert got == {
        "100": (2, T0, T0 + timedelta(seconds=1)),
        "101": (1, T0, T0),
    }
    engine.dispose()


def test_a_balance_pair_named_twice_in_one_statement_is_one_mark(db_url: str) -> None:
    migrate(db_url)
    engine = sa.create_engine(db_url, poolclass=sa.NullPool)
    with Session(engine) as session, session.begin():
        mark_dirty(session, [("P1", "W"), ("P2", "W"), ("P1", "W")], now=T0)
    with engine.connect() as conn:
        count = conn.scalar(sa.select(sa.func.count()).select_from(DirtyBalanceRow))
    assert count == 2
    engine.dispose()
