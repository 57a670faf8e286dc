"""Schema migrations of the app tables (Alembic), run at start and by `extend-connector db upgrade`.

The same revisions run on SQLite (batch mode) and PostgreSQL. Alembic sees only our own
tables: DBOS's tables (schema `dbos` on PostgreSQL, unprefixed tables in the same SQLite
file) are filtered out, and our revision table has its own name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from extend_connector.store.database import create_db_engine, normalise_url

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
VERSION_TABLE = "extend_connector_alembic_version"


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Alembic filter: only our tables. DBOS keeps its tables beside ours (same SQLite file;
    schema `dbos` on PostgreSQL), and they are not ours to create, alter or drop."""
    from extend_connector.store.models import metadata

    if type_ == "schema":
        return name is None
    if type_ == "table":
        return name in metadata.tables
    return True


def alembic_config(url: str, engine: sa.Engine | None = None) -> Config:
    """An Alembic config for `url`; `engine` (optional) is reused instead of a new one."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    if engine is not None:
        config.attributes["engine"] = engine
    return config


def head_revision() -> str:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    head = script.get_current_head()
    assert head is not None, "no migrations found"
    return head


def migrate(url: str, *, engine: sa.Engine | None = None) -> str:
    """Bring the database at `url` to the newest revision; returns that revision."""
    own = engine is None
    engine = engine if engine is not None else create_db_engine(url, pool_size=1)
    try:
        command.upgrade(alembic_config(url, engine), "head")
        return current_revision(url, engine=engine) or ""
    finally:
        if own:
            engine.dispose()


def current_revision(url: str, *, engine: sa.Engine | None = None) -> str | None:
    """The revision the database is at, or None for a database never migrated."""
    if engine is None and normalise_url(url).startswith("sqlite:///"):
        path = Path(sa.make_url(normalise_url(url)).database or "")
        if not path.exists():
            return None  # reading must not create the file (or fail on a missing directory)
    own = engine is None
    engine = engine if engine is not None else create_db_engine(url, pool_size=1)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
            return context.get_current_revision()
    finally:
        if own:
            engine.dispose()
