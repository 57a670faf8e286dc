"""SQLite writers of one process queue in the process, not in SQLite's busy handler (issue #13).

SQLite has one write lock. A writer that finds it taken sleeps in SQLite's busy handler, in
steps that grow to 25-100 ms, and the lock can sit free while every waiter sleeps: a profile of
the orders benchmark had a quarter of the connector's thread time in `BEGIN IMMEDIATE` and more
in the pool behind it. The engine's connections now take a per-file lock of the process before
they take SQLite's (`store/database.py`, `WriteGate`), for the app's writes and the job engine's
alike, and hand it over at once when they commit. So with SQLite's own busy wait switched off
(`busy_timeout_ms=0`), concurrent writers of one process still never see "database is locked".
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from extend_connector.store.database import Database, create_db_engine

THREADS = 8
WRITES = 40


def _engine(path: Path, **kwargs: object) -> sa.Engine:
    engine = create_db_engine(f"sqlite:///{path}", busy_timeout_ms=0, **kwargs)  # type: ignore[arg-type]
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v TEXT)")
    return engine


def _hammer(work: object) -> list[BaseException]:
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def run(i: int) -> None:
        start.wait()
        try:
            for j in range(WRITES):
                work(i * 1000 + j)  # type: ignore[operator]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return errors


def test_write_transactions_of_one_process_never_meet_a_locked_database(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'gate.db'}", engine=_engine(tmp_path / "gate.db"))

    def work(k: int) -> None:
        with db.write() as session:  # BEGIN IMMEDIATE, read, then write
            session.execute(sa.text("SELECT count(*) FROM t")).scalar()
            session.execute(sa.text("INSERT INTO t (k, v) VALUES (:k, 'x')"), {"k": k})

    assert _hammer(work) == []
    with db.read() as session:
        assert session.execute(sa.text("SELECT count(*) FROM t")).scalar() == THREADS * WRITES


def test_the_drivers_implicit_transactions_are_gated_too(tmp_path: Path) -> None:
    """The job engine writes through `engine.begin()`: the driver opens the transaction itself
    before the first INSERT/UPDATE/DELETE (isolation level IMMEDIATE)."""
    engine = _engine(tmp_path / "implicit.db")

    def work(k: int) -> None:
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO t (k, v) VALUES (:k, 'x')"), {"k": k})
            conn.execute(sa.text("UPDATE t SET v = 'y' WHERE k = :k"), {"k": k})

    def autocommit(k: int) -> None:  # a statement outside any transaction
        with engine.connect() as conn:
            conn.connection.driver_connection.execute(  # type: ignore[union-attr]
                "WITH n(k) AS (SELECT ?) INSERT INTO t (k, v) SELECT k + 500000, 'z' FROM n", (k,)
            )

    assert _hammer(work) == []
    assert _hammer(autocommit) == []
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 2 * THREADS * WRITES
    engine.dispose()


def test_readers_are_not_held_behind_a_writer(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'read.db'}", engine=_engine(tmp_path / "read.db"))
    with db.write() as session:
        session.execute(sa.text("INSERT INTO t (k, v) VALUES (1, 'x')"))
        seen: list[int] = []
        reader = threading.Thread(
            target=lambda: seen.append(_count(db)), daemon=True
        )  # WAL: a reader runs beside the open write transaction
        reader.start()
        reader.join(timeout=10)
        assert seen == [0]


def _count(db: Database) -> int:
    with db.read() as session:
        return int(session.execute(sa.text("SELECT count(*) FROM t")).scalar() or 0)


def test_a_second_write_by_the_thread_holding_the_gate_fails_as_before_and_frees_it(
    tmp_path: Path,
) -> None:
    """A thread that opens a second write transaction while its first is open would wait for
    itself: it is not queued behind itself, SQLite answers at once ("database is locked", as
    without the gate), and the gate is free again once both are over."""
    db = Database(f"sqlite:///{tmp_path / 'self.db'}", engine=_engine(tmp_path / "self.db"))
    with pytest.raises(sa.exc.OperationalError, match="locked"):
        with db.write() as outer:
            outer.execute(sa.text("INSERT INTO t (k, v) VALUES (1, 'x')"))
            with db.write() as inner:
                inner.execute(sa.text("INSERT INTO t (k, v) VALUES (2, 'x')"))
    done = threading.Event()

    def later() -> None:
        with db.write() as session:
            session.execute(sa.text("INSERT INTO t (k, v) VALUES (3, 'x')"))
        done.set()

    threading.Thread(target=later, daemon=True).start()
    assert done.wait(10)
