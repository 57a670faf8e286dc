"""Transient database errors: which ones a durable step waits out, and how long.

DBOS retries its own job-table operations on a lost connection (availability traded for
correctness); the flows' steps do their own SQLAlchemy work and would otherwise end their
workflow in ERROR on the first dropped connection. A step re-run after such an error is the
same thing as a step re-run after a crash, which every step is written to survive.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import sqlalchemy as sa
import structlog

log = structlog.get_logger("extend_connector.engine")

T = TypeVar("T")

# SQLite reports a lock held past busy_timeout, and a file briefly unavailable, in these words.
_SQLITE_TRANSIENT = ("database is locked", "database table is locked", "disk i/o error")
# psycopg's words for a server that went away or is not accepting connections yet.
_POSTGRES_TRANSIENT = (
    "connection failed",
    "server closed the connection",
    "connection refused",
    "terminating connection",
    "the database system is starting up",
    "the database system is shutting down",
    "consuming input failed",
    "connection is closed",
    "connection timeout expired",
    "could not receive data",
    "ssl connection has been closed",
)
# PostgreSQL error classes (SQLSTATE) that go away by themselves: connection exception (08),
# insufficient resources (53), operator intervention (57: admin shutdown, crash shutdown,
# cannot connect now), plus a deadlock (40P01) and an idle-in-transaction timeout (25P03),
# both of which rolled the transaction back. 57014 (query cancelled) is a deliberate stop.
_POSTGRES_TRANSIENT_CLASSES = ("08", "53", "57")
_POSTGRES_TRANSIENT_STATES = ("40P01", "25P03")
_POSTGRES_DELIBERATE = ("57014",)
# Never transient: the statement itself is wrong, or the data breaks a rule; running it again
# gives the same answer.
_PERMANENT = (
    sa.exc.IntegrityError,
    sa.exc.ProgrammingError,
    sa.exc.DataError,
    sa.exc.NotSupportedError,
)


def is_transient_db_error(exc: BaseException) -> bool:
    """Whether `exc` is a database error that goes away by itself: connection lost or refused,
    server shutting down or starting up, pool checkout timed out, SQLite locked or I/O error."""
    if isinstance(exc, sa.exc.TimeoutError):  # pool checkout: no statement ran
        return True
    if not isinstance(exc, sa.exc.DBAPIError) or isinstance(exc, _PERMANENT):
        return False
    if exc.connection_invalidated:
        return True
    sqlstate = getattr(exc.orig, "sqlstate", None) or ""
    if sqlstate in _POSTGRES_DELIBERATE:
        return False
    if sqlstate in _POSTGRES_TRANSIENT_STATES or sqlstate[:2] in _POSTGRES_TRANSIENT_CLASSES:
        return True
    if not isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
        return False
    text = str(exc.orig if exc.orig is not None else exc).lower()
    return any(words in text for words in (*_SQLITE_TRANSIENT, *_POSTGRES_TRANSIENT))


@dataclass(frozen=True, kw_only=True, slots=True)
class TransientRetry:
    """How long a step waits out transient database errors: `first_wait_seconds`, doubled up to
    `max_wait_seconds`, for at most `give_up_after_seconds` (then the error ends the workflow,
    where the watchdog finds it)."""

    first_wait_seconds: float = 0.5
    max_wait_seconds: float = 30.0
    give_up_after_seconds: float = 3600.0

    def wait(self, attempt: int) -> float:
        base = min(self.max_wait_seconds, self.first_wait_seconds * 2.0 ** max(0, attempt - 1))
        return base * (0.75 + random.random() / 2)  # jitter: workers do not reconnect in lockstep


_policy = TransientRetry()
_lock = threading.Lock()


def configure_transient_retry(policy: TransientRetry) -> None:
    """Set the process-wide policy (the Engine does it from settings)."""
    global _policy
    with _lock:
        _policy = policy


def transient_retry_policy() -> TransientRetry:
    return _policy


def _should_wait(exc: Exception, name: str, attempt: int, started: float) -> float | None:
    policy = _policy
    if not is_transient_db_error(exc) or time.monotonic() - started > policy.give_up_after_seconds:
        return None
    wait = policy.wait(attempt)
    log.warning(
        "step_database_unavailable",
        step=name,
        attempt=attempt,
        retry_in=round(wait, 2),
        error=type(exc).__name__,
        detail=str(getattr(exc, "orig", exc))[:200],
    )
    return wait


def run_with_retry(name: str, fn: Callable[[], T]) -> T:
    """Call `fn` until it returns or raises something that is not a transient database error."""
    started = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except Exception as exc:
            wait = _should_wait(exc, name, attempt, started)
            if wait is None:
                raise
        time.sleep(wait)


async def run_with_retry_async(name: str, fn: Callable[[], Awaitable[T]]) -> T:
    """`run_with_retry` for a coroutine function; waits without blocking the loop."""
    started = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        try:
            return await fn()
        except Exception as exc:
            wait = _should_wait(exc, name, attempt, started)
            if wait is None:
                raise
        await asyncio.sleep(wait)
