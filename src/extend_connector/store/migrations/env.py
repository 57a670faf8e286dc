"""Alembic environment: our metadata only, DBOS's tables ignored, batch mode on SQLite."""

from __future__ import annotations

from alembic import context

from extend_connector.store.database import begin_write, create_db_engine
from extend_connector.store.migrate import VERSION_TABLE, include_name
from extend_connector.store.models import metadata

config = context.config


def run_migrations_online() -> None:
    engine = config.attributes.get("engine")
    own = engine is None
    if engine is None:
        engine = create_db_engine(config.get_main_option("sqlalchemy.url") or "", pool_size=1)
    try:
        with engine.connect() as connection:
            begin_write(connection)
            context.configure(
                connection=connection,
                target_metadata=metadata,
                version_table=VERSION_TABLE,
                include_name=include_name,
                include_schemas=False,
                render_as_batch=connection.dialect.name == "sqlite",
                compare_type=True,
            )
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
    finally:
        if own:
            engine.dispose()


if context.is_offline_mode():
    raise SystemExit(
        "offline (SQL script) migrations are not supported; run `extend-connector db upgrade`"
    )
run_migrations_online()
