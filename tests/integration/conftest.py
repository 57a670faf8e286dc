"""Shared database fixtures for integration tests: a fresh, empty database per test.

`db_url` is parametrised over SQLite (a file in tmp_path) and PostgreSQL (a throw-away
database created on the server named by EXTEND_CONNECTOR_TEST_POSTGRES_URL, dropped after
the test; skipped when that variable is unset). `pg_url` is PostgreSQL only.
`migrated_url` is `db_url` with the app tables migrated. `settings_for(url, ...)` builds
Settings pointing at a URL. Declare engine workflows at module level, never inside tests.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from extend_connector.settings import EngineSettings, Settings, StoreSettings

PG_ENV = "EXTEND_CONNECTOR_TEST_POSTGRES_URL"


def _pg_admin_url() -> str | None:
    raw = os.environ.get(PG_ENV)
    if not raw:
        return None
    return "postgresql+psycopg://" + raw.split("://", 1)[1]


def _create_pg_database() -> tuple[str, Callable[[], None]]:
    admin_url = _pg_admin_url()
    assert admin_url is not None
    name = f"ec_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)

    def drop() -> None:
        with admin.connect() as conn:
            # FORCE ends sessions a killed child process may have left behind.
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()

    return url, drop


def _sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{(tmp_path / 'connector.db').as_posix()}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL: SQLite file, or a throw-away PostgreSQL database."""
    if request.param == "sqlite":
        yield _sqlite_url(tmp_path)
        return
    if _pg_admin_url() is None:
        pytest.skip(f"{PG_ENV} not set")
    url, drop = _create_pg_database()
    try:
        yield url
    finally:
        drop()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database URL (skipped without the environment variable)."""
    if _pg_admin_url() is None:
        pytest.skip(f"{PG_ENV} not set")
    url, drop = _create_pg_database()
    try:
        yield url
    finally:
        drop()


@pytest.fixture
def migrated_url(db_url: str) -> str:
    """`db_url` with the app tables at the newest revision."""
    from extend_connector.store.migrate import migrate

    migrate(db_url)
    return db_url


def settings_for(url: str, **engine: Any) -> Settings:
    """Settings pointing at `url`, with engine settings overridden by keyword."""
    return Settings(store=StoreSettings(database_url=url), engine=EngineSettings(**engine))


@pytest.fixture
def make_settings() -> Callable[..., Settings]:
    """`make_settings(url, role=..., executor_id=..., application_version=...)`."""
    return settings_for
