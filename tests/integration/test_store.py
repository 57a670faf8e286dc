"""The store on a real database (SQLite, and PostgreSQL when configured): migrations,
exact amounts, aware instants, and repositories that report real changes only."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from extend_connector.store import (
    Database,
    NaiveDatetimeError,
    current_revision,
    database,
    head_revision,
    migrate,
)
from extend_connector.store import repositories as repo
from extend_connector.store.migrate import VERSION_TABLE, include_name
from extend_connector.store.models import (
    BalanceRow,
    CursorRow,
    DirtyBalanceRow,
    DirtyPriceProductRow,
    metadata,
)

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def test_upgrade_on_an_empty_database_reaches_head_and_is_repeatable(db_url: str) -> None:
    assert current_revision(db_url) is None
    assert migrate(db_url) == head_revision()
    assert migrate(db_url) == head_revision()
    engine = sa.create_engine(Database(db_url).url)
    try:
        tables = set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert set(metadata.tables) <= tables and VERSION_TABLE in tables


def test_models_and_migrations_do_not_drift(db: Database) -> None:
    # DBOS's tables share the database; they must be invisible to autogenerate.
    from extend_connector.engine import Engine
    from extend_connector.settings import Settings, StoreSettings

    eng = Engine(Settings(store=StoreSettings(database_url=db.url))).connect()
    eng.shutdown()
    with db.engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "include_name": include_name,
                "version_table": VERSION_TABLE,
            },
        )
        diff = compare_metadata(context, metadata)
    assert diff == []


def test_amounts_are_exact_and_instants_aware(db: Database) -> None:
    stockholm = timezone(timedelta(hours=1))
    with db.write() as session:
        session.add(
            BalanceRow(
                product_number="P1",
                warehouse="W",
                available=Decimal("0.1") + Decimal("0.2"),
                extend_changed_at=datetime(2025, 3, 1, 13, 0, tzinfo=stockholm),
            )
        )
    with db.read() as session:
        row = session.get(BalanceRow, ("P1", "W"))
        assert row is not None
        assert row.available == Decimal("0.3") and str(row.available) == "0.300000"
        assert row.extend_changed_at == T0 and row.extend_changed_at.tzinfo is not None
    with pytest.raises(sa.exc.StatementError) as caught, db.write() as session:
        session.add(
            BalanceRow(
                product_number="P2",
                warehouse="W",
                available=Decimal(1),
                extend_changed_at=datetime(2025, 3, 1, 12, 0),
            )
        )
        session.flush()
    assert isinstance(caught.value.orig, NaiveDatetimeError)


def test_upsert_reports_real_changes_only(db: Database) -> None:
    values = {
        "product_number": "P1",
        "warehouse": "W",
        "available": Decimal("5"),
        "confirmed_at": T0,
    }
    touch = ("confirmed_at",)
    with db.write() as session:
        assert repo.upsert(session, BalanceRow, values, touch=touch).inserted
    with db.write() as session:
        again = repo.upsert(
            session,
            BalanceRow,
            {**values, "available": Decimal("5.000"), "confirmed_at": T0 + timedelta(minutes=1)},
            touch=touch,
        )
    assert not again.changed
    with db.read() as session:
        assert session.get(BalanceRow, ("P1", "W")).confirmed_at == T0 + timedelta(minutes=1)  # type: ignore[union-attr]
    with db.write() as session:
        moved = repo.upsert(session, BalanceRow, {**values, "available": Decimal("4")}, touch=touch)
    assert moved.changed and moved.changed_columns == ("available",)
    with pytest.raises(ValueError, match="primary key"), db.write() as session:
        repo.upsert(session, BalanceRow, {"product_number": "P1", "available": Decimal("1")})


def test_marks_keep_the_first_mark_and_move_the_last(db: Database) -> None:
    with db.write() as session:
        repo.mark_dirty(session, [("P1", "W"), ("P2", "W")], now=T0)
        repo.mark_dirty(session, [("P1", "W")], now=T0 + timedelta(seconds=1))
        repo.mark_dirty(session, [], now=T0 + timedelta(seconds=2))
        repo.mark_price_products(session, ["P1", "P2", "P1"], now=T0)
        repo.mark_price_products(session, ["P2"], now=T0 + timedelta(seconds=1))
    with db.read() as session:
        dirty = {
            (p, w): (first, last)
            for p, w, first, last in session.execute(
                sa.select(
                    DirtyBalanceRow.product_number,
                    DirtyBalanceRow.warehouse,
                    DirtyBalanceRow.first_marked_at,
                    DirtyBalanceRow.last_marked_at,
                )
            )
        }
        prices = {
            n: at
            for n, at in session.execute(
                sa.select(DirtyPriceProductRow.product_number, DirtyPriceProductRow.marked_at)
            )
        }
    assert dirty == {("P1", "W"): (T0, T0 + timedelta(seconds=1)), ("P2", "W"): (T0, T0)}
    assert prices == {"P1": T0, "P2": T0 + timedelta(seconds=1)}


def test_cli_db_upgrade_and_current(db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from click.testing import CliRunner

    from extend_connector.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EXTEND_CONNECTOR_STORE__DATABASE_URL", db_url)
    runner = CliRunner()
    before = runner.invoke(main, ["db", "current"])
    assert before.exit_code == 1 and "never migrated" in before.output
    upgraded = runner.invoke(main, ["db", "upgrade"])
    assert upgraded.exit_code == 0, upgraded.output
    after = runner.invoke(main, ["db", "current"])
    assert after.exit_code == 0 and f"current: {head_revision()}" in after.output


def test_insert_many_reads_back_exactly_like_a_core_insert(db: Database) -> None:
    # The driver-level executemany must store what the column types would: exact amounts at the
    # column's scale, aware instants as UTC, nulls, and its own column order in any row order.
    from extend_connector.store.models import PriceRow

    table = PriceRow.__table__
    assert isinstance(table, sa.Table)
    later = datetime(2025, 3, 2, 9, 30, tzinfo=timezone(timedelta(hours=2)))
    rows = [
        {
            "customer_number": "C1",
            "product_number": f"P{i}",
            "unit_price": Decimal("12.5") + i,
            "currency": "SEK",
            "list_price": None if i % 2 else Decimal("0.1234567"),
            "discount_percent": None,
            "price_list": "PL" if i else None,
            "vat_percent": Decimal(25),
            "valid_to": later if i == 1 else None,
            "confirmed_at": T0,
        }
        for i in range(3)
    ]
    with db.write() as session:
        repo.insert_many(session, table, [dict(reversed(list(r.items()))) for r in rows[:1]])
        repo.insert_many(session, table, rows[1:])
        repo.insert_many(session, table, [])
    with db.read() as session:
        got = {
            r.product_number: r
            for r in session.execute(sa.select(*table.c).order_by(table.c.product_number))
        }
    assert sorted(got) == ["P0", "P1", "P2"]
    assert got["P0"].unit_price == Decimal("12.500000")
    assert got["P0"].list_price == Decimal("0.123457")  # rounded to the column's scale
    assert got["P1"].list_price is None and got["P1"].price_list == "PL"
    assert got["P1"].valid_to == later and got["P1"].valid_to.tzinfo == UTC
    assert got["P2"].unit_price == Decimal("14.500000") and got["P2"].confirmed_at == T0


def _synchronous(session: sa.orm.Session) -> int:
    return int(session.execute(sa.text("PRAGMA synchronous")).scalar_one())


def test_a_durable_write_is_synced_at_commit_and_its_connection_goes_back_normal(
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    """SQLite runs `synchronous=NORMAL` (a power cut can lose the last commits); a transaction
    the shop is answered on asks for FULL, and no other transaction pays for it afterwards."""
    url = f"sqlite:///{tmp_path / 'd.db'}"
    migrate(url)
    db = Database(url, pool_size=1)
    try:
        with db.write(durable=True) as session:
            assert _synchronous(session) == 2  # FULL
        for _ in range(4):  # whichever pooled connection comes next
            with db.write() as session:
                assert _synchronous(session) == 1  # NORMAL
            with db.read() as session:
                assert _synchronous(session) == 1
    finally:
        db.dispose()


def _hold_write_lock(path: str, seconds: float, held: threading.Event) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        held.set()
        time.sleep(seconds)
        conn.execute("COMMIT")
    finally:
        conn.close()


@contextmanager
def _locked_elsewhere(tmp_path, seconds: float) -> Iterator[tuple[Database, threading.Thread]]:  # type: ignore[no-untyped-def]
    """A migrated SQLite database (one pooled connection) whose write lock another connection
    holds for `seconds` from the moment this yields."""
    path = str(tmp_path / "locked.db")
    url = f"sqlite:///{path}"
    migrate(url)
    db = Database(url, pool_size=1)
    held = threading.Event()
    holder = threading.Thread(target=_hold_write_lock, args=(path, seconds, held))
    holder.start()
    try:
        assert held.wait(5)
        yield db, holder
    finally:
        holder.join()
        db.dispose()


def test_an_urgent_write_waits_out_a_held_lock_and_leaves_the_busy_timeout_as_it_was(
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    """An urgent writer (a webhook acknowledgement waits on it) asks for the lock itself, with
    SQLite's busy handler off while it does; once it has the lock the connection's busy timeout
    is what every other transaction expects."""
    with _locked_elsewhere(tmp_path, 0.3) as (db, holder):
        with db.write(urgent=True) as session:
            session.add(CursorRow(name="urgent", last_run_at=datetime.now(UTC)))
            assert session.execute(sa.text("PRAGMA busy_timeout")).scalar() == (
                database.SQLITE_BUSY_TIMEOUT_MS
            )
        holder.join()
        with db.read() as session:
            assert session.get(CursorRow, "urgent") is not None


def test_an_urgent_write_gives_up_after_the_same_busy_timeout(
    tmp_path,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(database, "SQLITE_BUSY_TIMEOUT_MS", 200)
    with _locked_elsewhere(tmp_path, 1.5) as (db, holder):
        with pytest.raises(sa.exc.OperationalError, match="database is locked"):
            with db.write(urgent=True) as session:
                session.add(CursorRow(name="late", last_run_at=datetime.now(UTC)))
        holder.join()
        with db.write() as session:  # the same pooled connection, busy timeout back in place
            assert session.execute(sa.text("PRAGMA busy_timeout")).scalar() == 200
            assert session.get(CursorRow, "late") is None


@contextmanager
def _writing(db: Database, name: str) -> Iterator[threading.Event]:
    """A write transaction of this process, open (a row inserted) until the yielded event is set."""
    opened, finish = threading.Event(), threading.Event()
    failed: list[BaseException] = []

    def write() -> None:
        try:
            with db.write() as session:
                session.add(CursorRow(name=name, last_run_at=datetime.now(UTC)))
                session.flush()
                opened.set()
                assert finish.wait(10)
        except BaseException as exc:  # reported when the block ends
            failed.append(exc)
            opened.set()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert opened.wait(5)
        yield finish
    finally:
        finish.set()
        writer.join()
    assert not failed, failed


def _insert_without_busy_handler(db: Database, name: str) -> None:
    """Insert a row on a connection whose SQLite busy handler is off: a lock held by another
    connection fails it at once ("database is locked") unless it waits somewhere else."""
    with db.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA busy_timeout=0")
        try:
            conn.execute(sa.insert(CursorRow).values(name=name, last_run_at=datetime.now(UTC)))
            conn.commit()
        finally:
            conn.exec_driver_sql(f"PRAGMA busy_timeout={database.SQLITE_BUSY_TIMEOUT_MS}")


def _migrated(tmp_path, name: str = "gate.db") -> Database:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / name}"
    migrate(url)
    return Database(url)


def test_a_writer_waits_for_another_writer_of_this_process_at_the_gate_not_in_sqlite(
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    """Writers of one process take turns at the engine's write gate, woken at the commit, rather
    than in SQLite's busy handler, which sleeps up to 100 ms between tries for a lock that is
    often long free (measured: orders 45/s -> 51-54/s, docs/benchmarks.md)."""
    db = _migrated(tmp_path)
    try:
        with _writing(db, "first") as finish:
            errors: list[BaseException] = []

            def insert_second() -> None:
                try:
                    _insert_without_busy_handler(db, "second")
                except BaseException as exc:  # asserted below
                    errors.append(exc)

            second = threading.Thread(target=insert_second)
            second.start()
            time.sleep(0.2)  # the second writer is waiting by now (the order only, not timed)
            assert second.is_alive() and not errors
            finish.set()
            second.join(10)
            assert not errors, errors
        with db.read() as session:
            assert {r.name for r in session.query(CursorRow)} == {"first", "second"}
    finally:
        db.dispose()


def test_reads_pass_a_writer_and_every_way_out_of_a_write_opens_the_gate(
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    db = _migrated(tmp_path)
    try:
        with _writing(db, "held"):
            with db.read() as session:  # WAL: a read never waits for the writer
                assert session.get(CursorRow, "held") is None
        # A transaction that fails (a duplicate key) is rolled back and lets the next one in.
        with pytest.raises(sa.exc.IntegrityError), db.write() as session:
            session.add(CursorRow(name="held", last_run_at=datetime.now(UTC)))
            session.flush()
        _insert_without_busy_handler(db, "after-rollback")
        # A connection dropped in the middle of a write (invalidated, closed) lets it in too.
        with db.engine.connect() as conn:
            conn.execute(sa.insert(CursorRow).values(name="lost", last_run_at=datetime.now(UTC)))
            conn.invalidate()
        _insert_without_busy_handler(db, "after-close")
        with db.read() as session:
            names = {r.name for r in session.query(CursorRow)}
        assert names == {"held", "after-rollback", "after-close"}
    finally:
        db.dispose()


def test_a_writer_gives_up_at_the_gate_after_the_busy_timeout(
    tmp_path,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(database, "SQLITE_BUSY_TIMEOUT_MS", 200)
    db = _migrated(tmp_path)
    try:
        with _writing(db, "long"):
            with pytest.raises(sa.exc.OperationalError, match="database is locked"):
                with db.write() as session:
                    session.add(CursorRow(name="late", last_run_at=datetime.now(UTC)))
        with db.write() as session:
            session.add(CursorRow(name="later", last_run_at=datetime.now(UTC)))
        with db.read() as session:
            assert {r.name for r in session.query(CursorRow)} == {"long", "later"}
    finally:
        db.dispose()
