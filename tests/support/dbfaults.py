"""Database faults injected where the database answers, for tests of transient-error handling.

`Faults.before` is a SQLAlchemy `before_cursor_execute` listener: once armed, the next `n`
statements that `match` fail with `error(statement)`, a real SQLAlchemy error wrapping what the
driver raises (a locked SQLite file, a refused or shut-down PostgreSQL connection, a broken
statement, a constraint), whatever the test's own backend is.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from typing import Any

import psycopg
import sqlalchemy as sa

Error = Callable[[str], Exception]


def locked(statement: str) -> Exception:
    return sa.exc.OperationalError(statement, {}, sqlite3.OperationalError("database is locked"))


def refused(statement: str) -> Exception:
    return sa.exc.OperationalError(
        statement,
        {},
        psycopg.OperationalError(
            'connection failed: connection to server at "127.0.0.1", port 5999 failed: '
            "Connection refused"
        ),
    )


def shutting_down(statement: str) -> Exception:
    return sa.exc.OperationalError(
        statement,
        {},
        psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
    )


def broken(statement: str) -> Exception:
    return sa.exc.ProgrammingError(
        statement, {}, sqlite3.ProgrammingError("a statement that cannot work")
    )


def duplicate(statement: str) -> Exception:
    return sa.exc.IntegrityError(
        statement, {}, sqlite3.IntegrityError("UNIQUE constraint failed: test_effects.id")
    )


class Faults:
    """The next `n` statements matching `match` fail with `error(statement)`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.left = 0
        self.raised = 0
        self.match: Callable[[str], bool] = lambda _: False
        self.error: Error = locked

    def arm(self, n: int, error: Error, match: Callable[[str], bool]) -> None:
        with self.lock:
            self.left, self.raised, self.error, self.match = n, 0, error, match

    def disarm(self) -> None:
        with self.lock:
            self.left = 0

    def before(self, conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if not self.match(statement):
            return
        with self.lock:
            if self.left <= 0:
                return
            self.left -= 1
            self.raised += 1
        raise self.error(statement)
