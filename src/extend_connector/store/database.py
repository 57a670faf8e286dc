"""One SQLAlchemy engine per database, shared by the app tables and the job engine.

SQLite: WAL journal, a generous busy timeout, and writers that take the write lock at
`BEGIN IMMEDIATE` (the same rule DBOS applies to its own tables), so a read-then-write
transaction never dies with SQLITE_BUSY when another writer got there first.
PostgreSQL: psycopg 3 with a pool sized for the worker threads of one process.

`Database.write()` is the only way code should open a write transaction: it issues
`BEGIN IMMEDIATE` on SQLite, and plain `BEGIN` (read committed) on PostgreSQL.

The SQLite connections of one engine (DBOS's too) share a `WriteGate`: writers of one process
take turns there, handed over at each commit, rather than in SQLite's busy handler.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger("extend_connector.store")

SQLITE_BUSY_TIMEOUT_MS = 30_000
# An urgent writer (`Database.write(urgent=True)`) asks for the write lock again after this
# long, doubling up to the cap, instead of leaving the wait to SQLite's busy handler.
URGENT_POLL_FIRST_SECONDS = 0.0001
URGENT_POLL_MAX_SECONDS = 0.001


def normalise_url(url: str) -> str:
    """`postgresql://` → `postgresql+psycopg://` (psycopg 3); anything else unchanged."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    # pysqlite's legacy transaction control: "IMMEDIATE" makes the driver open every
    # implicit transaction with BEGIN IMMEDIATE (before the first DML statement). DBOS
    # relies on exactly this mode for its own SQLite tables, so the shared engine keeps it.
    dbapi_conn.isolation_level = "IMMEDIATE"
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # WAL lets readers run while one writer writes; it is a property of the file,
        # so setting it on every connection is cheap after the first time.
        cursor.execute("PRAGMA journal_mode=WAL")
        # NORMAL is durable across process crashes in WAL mode (only an OS crash or
        # power loss can lose the last transactions). A transaction that backs an answer to
        # the shop ("accepted") asks for FULL (`Database.write(durable=True)`).
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "BEGIN")


class WriteGate:
    """One write transaction at a time among this process's connections to one SQLite file,
    handed from one writer to the next the moment it commits.

    SQLite lets one writer in at a time anyway; the gate only changes how a waiting writer
    learns that the lock is free. SQLite's busy handler sleeps between tries (1, 2, 5, ... 25,
    50, 100 ms), so under load a freed lock often stays free while every waiter sleeps; a thread
    waiting on the gate is woken at the commit. Writers in other processes (a CLI command beside
    a running connector) still meet the busy handler, behind the gate."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def acquire(self) -> None:
        # The same limit as SQLite's busy timeout: a writer waits no longer here than there.
        if not self._lock.acquire(timeout=SQLITE_BUSY_TIMEOUT_MS / 1000):
            # What SQLite says when its own busy timeout runs out: callers already handle it.
            raise sqlite3.OperationalError("database is locked (waited for this process's writer)")

    def release(self) -> None:
        self._lock.release()


def _opens_write(sql: str) -> bool:
    # The statements before which the driver opens a transaction itself (legacy transaction
    # control: INSERT, UPDATE, DELETE, REPLACE), and an explicit BEGIN.
    head = sql.lstrip()[:7].upper()
    return head.startswith(_WRITES)


class _GatedCursor(sqlite3.Cursor):
    connection: _GatedConnection

    def execute(self, sql: str, parameters: Any = (), /) -> _GatedCursor:
        self.connection._enter(sql)
        try:
            return super().execute(sql, parameters)
        finally:
            self.connection._settle()

    def executemany(self, sql: str, seq_of_parameters: Any, /) -> _GatedCursor:
        self.connection._enter(sql)
        try:
            return super().executemany(sql, seq_of_parameters)
        finally:
            self.connection._settle()


class _GatedConnection(sqlite3.Connection):
    """A pysqlite connection that holds its engine's `WriteGate` from the statement that opens a
    write transaction to the commit or rollback that ends it."""

    gate: WriteGate
    _holding = False

    def cursor(self, factory: Any = _GatedCursor) -> Any:
        return super().cursor(factory)

    # The connection's own shortcuts make a plain cursor in C: route them through the gate.
    def execute(self, sql: str, parameters: Any = (), /) -> Any:
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, seq_of_parameters: Any, /) -> Any:
        return self.cursor().executemany(sql, seq_of_parameters)

    def _enter(self, sql: str) -> None:
        if not self._holding and not self.in_transaction and _opens_write(sql):
            self.gate.acquire()
            self._holding = True

    def _settle(self) -> None:
        if self._holding and not self.in_transaction:
            self._holding = False
            self.gate.release()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self._settle()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._settle()

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self._holding:
                self._holding = False
                self.gate.release()


def _gated_factory(gate: WriteGate) -> type[_GatedConnection]:
    return type("GatedConnection", (_GatedConnection,), {"gate": gate})


def create_db_engine(
    url: str, *, pool_size: int = 20, max_overflow: int = 10, echo: bool = False
) -> sa.Engine:
    """The SQLAlchemy engine for `url` (SQLite file or PostgreSQL), configured as above. On
    PostgreSQL a process holds at most `pool_size + max_overflow` connections (settings
    `store.pool_size`, `store.max_overflow`); a SQLite file has no connection limit.

    Bound parameters are kept out of exception texts (`hide_parameters`): they carry the shop's
    orders and customers (names, e-mail, addresses), and a failed statement's traceback is logged.
    """
    url = normalise_url(url)
    if is_sqlite(url):
        if url in ("sqlite://", "sqlite:///:memory:"):
            raise ValueError(
                "an in-memory SQLite database cannot be shared by the job engine; use a file"
            )
        engine = sa.create_engine(
            url,
            echo=echo,
            hide_parameters=True,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_timeout=60,
            connect_args={
                "check_same_thread": False,
                "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
                "factory": _gated_factory(WriteGate()),
            },
        )
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "checkin", _sync_normal)
        return engine
    return sa.create_engine(
        url,
        echo=echo,
        hide_parameters=True,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=60,
        pool_pre_ping=True,
        connect_args={"application_name": "extend-connector", "connect_timeout": 10},
    )


_SYNC_FULL = "extend_connector.synchronous_full"


def _sync_full(connection: sa.Connection) -> None:
    """This SQLite connection's commits reach the disk before they return (`synchronous=FULL`:
    in WAL mode the log is synced at each commit, with every earlier transaction in it) until it
    goes back to the pool, where `_sync_normal` undoes it."""
    fairy = connection.connection
    if not fairy.info.get(_SYNC_FULL):
        cursor = fairy.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute("PRAGMA synchronous=FULL")
        finally:
            cursor.close()
        fairy.info[_SYNC_FULL] = True


def _sync_normal(dbapi_conn: Any, record: Any) -> None:
    if not record.info.pop(_SYNC_FULL, False) or dbapi_conn is None:
        return  # a connection closed meanwhile comes back from `_sqlite_on_connect` at NORMAL
    try:
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()
    except sqlite3.Error as exc:  # it stays at FULL: slower, never less safe
        log.warning("sqlite_synchronous_not_restored: %s (the connection stays at FULL)", exc)


def begin_write(connection: sa.Connection, *, urgent: bool = False) -> None:
    """Take SQLite's write lock now (no-op on PostgreSQL or when a transaction is open).

    `urgent`: somebody waits on this transaction's commit for an answer (a webhook's
    acknowledgement, a customer registration or a cancellation the shop is answered on; not the
    order intake, docs/engine.md "Database"). SQLite's own busy handler sleeps between tries, longer
    the longer it has waited (1, 2, 5, ... 25 ms, then 50 and 100 ms: measured, an inbox batch
    that waited 53 or 78 ms for a lock held far shorter), so an urgent writer asks again every
    0.1-1 ms itself, within the same `SQLITE_BUSY_TIMEOUT_MS`. Writers of this process wait for
    each other at the engine's `WriteGate` before they get here, so this matters against a
    writer in another process (a CLI command beside a running connector)."""
    if connection.dialect.name != "sqlite":
        return
    driver = connection.connection.driver_connection
    if driver is None or driver.in_transaction:
        return
    if urgent:
        _begin_polling(connection)
    else:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _begin_polling(connection: sa.Connection) -> None:
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    delay = URGENT_POLL_FIRST_SECONDS
    connection.exec_driver_sql("PRAGMA busy_timeout=0")
    try:
        while True:
            try:
                connection.exec_driver_sql("BEGIN IMMEDIATE")
                return
            except sa.exc.OperationalError as exc:
                busy = getattr(exc.orig, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY
                if not busy or time.monotonic() >= deadline:
                    raise
            time.sleep(delay)
            delay = min(2 * delay, URGENT_POLL_MAX_SECONDS)
    finally:
        connection.exec_driver_sql(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")


class Database:
    """The app's handle on its database: an engine plus read and write sessions."""

    def __init__(
        self,
        url: str,
        *,
        engine: sa.Engine | None = None,
        pool_size: int = 20,
        max_overflow: int = 10,
    ) -> None:
        self.url = normalise_url(url)
        self.engine = (
            engine
            if engine is not None
            else create_db_engine(self.url, pool_size=pool_size, max_overflow=max_overflow)
        )
        self._owns_engine = engine is None
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def write(self, *, durable: bool = False, urgent: bool = False) -> Iterator[Session]:
        """A session in one write transaction: committed on exit, rolled back on error.

        `durable`: the commit is on disk when this returns, across an OS crash or power loss
        too, for a transaction whose commit the shop is answered on (an order accepted). SQLite
        otherwise syncs at checkpoints only (`synchronous=NORMAL`: a process crash loses
        nothing, a power cut the last transactions); PostgreSQL syncs every commit anyway.

        `urgent`: somebody waits on the commit for an answer; on SQLite it takes the write lock as
        soon as the lock is free (`begin_write`)."""
        with self._sessions() as session, session.begin():
            connection = session.connection()
            if durable and self.is_sqlite:
                _sync_full(connection)
            begin_write(connection, urgent=urgent)
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reads; nothing it does is committed."""
        with self._sessions() as session:
            try:
                yield session
            finally:
                session.rollback()

    def dispose(self) -> None:
        if self._owns_engine:
            self.engine.dispose()
