"""Which database errors a step waits out (transient) and which end it at once."""

from __future__ import annotations

import asyncio
import sqlite3

import psycopg
import pytest
import sqlalchemy as sa

from extend_connector import engine
from extend_connector.engine._transient import run_with_retry, run_with_retry_async


def _op(orig: Exception) -> sa.exc.OperationalError:
    return sa.exc.OperationalError("SELECT 1", {}, orig)


@pytest.mark.parametrize(
    "error",
    [
        _op(sqlite3.OperationalError("database is locked")),
        _op(sqlite3.OperationalError("disk I/O error")),
        _op(
            psycopg.OperationalError(
                'connection failed: connection to server at "127.0.0.1", port 1 failed: '
                "Connection refused"
            )
        ),
        _op(psycopg.OperationalError("server closed the connection unexpectedly")),
        _op(psycopg.errors.AdminShutdown("terminating connection due to administrator command")),
        _op(psycopg.errors.CannotConnectNow("the database system is starting up")),
        _op(psycopg.errors.DeadlockDetected("deadlock detected")),
        _op(psycopg.errors.TooManyConnections("sorry, too many clients already")),
        _op(psycopg.errors.IdleInTransactionSessionTimeout("terminating connection")),
        sa.exc.TimeoutError("QueuePool limit of size 20 overflow 10 reached"),
        sa.exc.OperationalError(
            "SELECT 1", {}, sqlite3.OperationalError("x"), connection_invalidated=True
        ),
    ],
    ids=[
        "sqlite-locked",
        "sqlite-io",
        "pg-refused",
        "pg-closed",
        "pg-admin-shutdown",
        "pg-starting",
        "pg-deadlock",
        "pg-too-many",
        "pg-idle-timeout",
        "pool",
        "invalidated",
    ],
)
def test_transient(error: Exception) -> None:
    assert engine.is_transient_db_error(error)


@pytest.mark.parametrize(
    "error",
    [
        sa.exc.IntegrityError(
            "INSERT", {}, sqlite3.IntegrityError("UNIQUE constraint failed: orders.shop_ref")
        ),
        sa.exc.IntegrityError("INSERT", {}, psycopg.errors.UniqueViolation("duplicate key value")),
        sa.exc.ProgrammingError(
            "SELECT", {}, psycopg.errors.UndefinedTable('relation "x" does not exist')
        ),
        _op(sqlite3.OperationalError("no such table: orders")),
        sa.exc.DataError("INSERT", {}, psycopg.errors.StringDataRightTruncation("value too long")),
        ValueError("database is locked"),  # the words alone are not a database error
        _op(psycopg.errors.QueryCanceled("canceling statement due to statement timeout")),
    ],
    ids=[
        "sqlite-unique",
        "pg-unique",
        "pg-undefined-table",
        "sqlite-no-table",
        "pg-data",
        "not-db",
        "pg-cancel",
    ],
)
def test_not_transient(error: Exception) -> None:
    assert not engine.is_transient_db_error(error)


@pytest.fixture(autouse=True)
def fast_policy() -> None:
    engine.configure_transient_retry(
        engine.TransientRetry(
            first_wait_seconds=0.001, max_wait_seconds=0.002, give_up_after_seconds=5
        )
    )


def test_retry_runs_again_until_the_database_answers() -> None:
    calls: list[int] = []

    def body() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise _op(sqlite3.OperationalError("database is locked"))
        return "ok"

    assert run_with_retry("t", body) == "ok" and len(calls) == 3


def test_retry_does_not_repeat_a_permanent_error() -> None:
    calls: list[int] = []

    def body() -> str:
        calls.append(1)
        raise sa.exc.IntegrityError("INSERT", {}, sqlite3.IntegrityError("UNIQUE"))

    with pytest.raises(sa.exc.IntegrityError):
        run_with_retry("t", body)
    assert len(calls) == 1


def test_async_retry_and_give_up() -> None:
    engine.configure_transient_retry(
        engine.TransientRetry(
            first_wait_seconds=0.001, max_wait_seconds=0.002, give_up_after_seconds=0.05
        )
    )
    calls: list[int] = []

    async def body() -> str:
        calls.append(1)
        raise _op(psycopg.OperationalError("connection failed: Connection refused"))

    with pytest.raises(sa.exc.OperationalError):
        asyncio.run(run_with_retry_async("t", body))
    assert len(calls) > 1
