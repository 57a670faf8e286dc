"""Throw-away PostgreSQL databases on the server named by EXTEND_CONNECTOR_TEST_POSTGRES_URL.

One database per test (or per fixture), created from that server's URL and dropped afterwards
`WITH (FORCE)`, which also ends sessions a killed child process left behind. Tests without the
variable are skipped.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator

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
def throwaway_database(prefix: str) -> Iterator[str]:
    """A new database for the length of the block, as the `postgresql://` URL the connector's
    settings take; skips the test without the variable."""
    if admin_url() is None:
        pytest.skip(f"{PG_ENV} not set")
    url, drop = create_database(prefix)
    try:
        yield url.replace("postgresql+psycopg://", "postgresql://", 1)
    finally:
        drop()
