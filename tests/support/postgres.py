"""Throw-away PostgreSQL databases on the server named by EXTEND_CONNECTOR_TEST_POSTGRES_URL.

One database per test (or per fixture), created from that server's URL and dropped afterwards
`WITH (FORCE)`, which also ends sessions a killed child process left behind. Tests without the
variable are skipped.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

PG_ENV = "EXTEND_CONNECTOR_TEST_POSTGRES_URL"


def admin_url() -> str | None:
    """The server's URL with SQLAlchemy's psycopg driver, or None when the variable is unset."""
    raw = os.environ.get(PG_ENV)
    if not raw:
        return None
    return "postgresql+psycopg://" + raw.split("://", 1)[1]


def create_database(
    prefix: str = "ec_test", template: str | None = None
) -> tuple[str, Callable[[], None]]:
    """A new database (optionally cloned from `template`): its `postgresql+psycopg://` URL and the
    function that drops it."""
    url = admin_url()
    assert url is not None, f"{PG_ENV} not set"
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with admin.connect() as conn:
        suffix = f' TEMPLATE "{template}"' if template else ""
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"{suffix}')

    def drop() -> None:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()

    return sa.make_url(url).set(database=name).render_as_string(hide_password=False), drop


@contextlib.contextmanager
def fleet_slot() -> Iterator[None]:
    """Hold the server's one slot for a fleet scenario (several connector processes, each with a
    pool of up to 30 connections) for the length of the block. Parallel test workers take turns
    (an exclusive lock on a file named after the server), so two fleets never run at once and
    the server's connection limit (100 by default) is not used up."""
    server = hashlib.sha256((admin_url() or "").encode()).hexdigest()[:12]
    path = Path(tempfile.gettempdir()) / f"extend-connector-fleet-{server}.lock"
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def throwaway_database(prefix: str, *, fleet: bool = False) -> Iterator[str]:
    """A new database for the length of the block, as the `postgresql://` URL the connector's
    settings take; skips the test without the variable. `fleet`: the block runs several
    connector processes on it, so it waits for the server's fleet slot (`fleet_slot`)."""
    if admin_url() is None:
        pytest.skip(f"{PG_ENV} not set")
    with fleet_slot() if fleet else contextlib.nullcontext():
        url, drop = create_database(prefix)
        try:
            yield url.replace("postgresql+psycopg://", "postgresql://", 1)
        finally:
            drop()
