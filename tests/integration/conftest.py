"""Shared database fixtures for integration tests: a fresh, empty database per test.

`db_url` is parametrised over SQLite (a file in tmp_path) and PostgreSQL (a throw-away
database created on the server named by EXTEND_CONNECTOR_TEST_POSTGRES_URL, dropped after
the test; skipped when that variable is unset). `pg_url` is PostgreSQL only.
`migrated_url` is a fresh database with the app tables and the job engine's tables at head
(cloned from a template migrated once per session); `db` is a `store.Database` on it.
`settings_for(url, ...)` builds Settings pointing at a URL. Declare engine workflows at module
level, never inside tests.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from extend_connector.settings import EngineSettings, Settings, StoreSettings
from extend_connector.store import Database
from support.postgres import PG_ENV, admin_url, create_database


def _sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{(tmp_path / 'connector.db').as_posix()}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    """`sqlite` or `postgres` (skipped without EXTEND_CONNECTOR_TEST_POSTGRES_URL)."""
    if request.param == "postgres" and admin_url() is None:
        pytest.skip(f"{PG_ENV} not set")
    return str(request.param)


@pytest.fixture
def db_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL: SQLite file, or a throw-away PostgreSQL database."""
    if backend == "sqlite":
        yield _sqlite_url(tmp_path)
        return
    url, drop = create_database()
    try:
        yield url
    finally:
        drop()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database URL (skipped without the environment variable)."""
    if admin_url() is None:
        pytest.skip(f"{PG_ENV} not set")
    url, drop = create_database()
    try:
        yield url
    finally:
        drop()


def _migrate_all(url: str) -> None:
    from extend_connector.engine import Engine
    from extend_connector.store.migrate import migrate

    migrate(url)
    Engine(settings_for(url)).connect().shutdown()  # the job engine's tables too


class _Templates:
    """Databases migrated once per session and cloned per test (much faster than migrating)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.sqlite: Path | None = None
        self.pg: tuple[str, Callable[[], None]] | None = None

    def sqlite_clone(self, target: Path) -> str:
        if self.sqlite is None:
            path = self.tmp / "template.db"
            _migrate_all(f"sqlite:///{path.as_posix()}")
            self.sqlite = path
        shutil.copyfile(self.sqlite, target)
        return f"sqlite:///{target.as_posix()}"

    def pg_clone(self) -> tuple[str, Callable[[], None]]:
        if self.pg is None:
            self.pg = create_database()
            _migrate_all(self.pg[0])
        template = sa.make_url(self.pg[0]).database
        return create_database(template=template)

    def close(self) -> None:
        if self.pg is not None:
            self.pg[1]()


@pytest.fixture(scope="session")
def _templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Templates]:
    templates = _Templates(tmp_path_factory.mktemp("db-templates"))
    try:
        yield templates
    finally:
        templates.close()


@pytest.fixture
def migrated_url(backend: str, tmp_path: Path, _templates: _Templates) -> Iterator[str]:
    """A fresh database with the app tables and the job engine's tables at head."""
    if backend == "sqlite":
        yield _templates.sqlite_clone(tmp_path / "connector.db")
        return
    url, drop = _templates.pg_clone()
    try:
        yield url
    finally:
        drop()


def settings_for(url: str, **engine: Any) -> Settings:
    """Settings pointing at `url`, with engine settings overridden by keyword."""
    return Settings(store=StoreSettings(database_url=url), engine=EngineSettings(**engine))


@pytest.fixture
def make_settings() -> Callable[..., Settings]:
    """`make_settings(url, role=..., executor_id=..., application_version=...)`."""
    return settings_for


@pytest.fixture
def db(migrated_url: str) -> Iterator[Database]:
    database = Database(migrated_url)
    try:
        yield database
    finally:
        database.dispose()
