"""The local copy and the integration state: tables, repositories, migrations.

    from extend_connector.store import Database, migrate, models, repositories as repo

    migrate(url)                          # at start (also `extend-connector db upgrade`)
    db = Database(url, engine=eng.db_engine)   # share the job engine's SQLAlchemy engine
    with db.write() as session:           # one transaction; BEGIN IMMEDIATE on SQLite
        result = repo.upsert(session, models.BalanceRow, {...}, touch=("confirmed_at",))
        if result.changed: ...

See docs/store.md.
"""

from extend_connector.store import models, repositories
from extend_connector.store.database import Database, begin_write, create_db_engine, normalise_url
from extend_connector.store.migrate import current_revision, head_revision, migrate
from extend_connector.store.ratebuckets import RateBuckets
from extend_connector.store.repositories import UpsertResult, upsert
from extend_connector.store.types import Amount, NaiveDatetimeError, UTCDateTime

__all__ = [
    "Amount",
    "Database",
    "NaiveDatetimeError",
    "RateBuckets",
    "UTCDateTime",
    "UpsertResult",
    "begin_write",
    "create_db_engine",
    "current_revision",
    "head_revision",
    "migrate",
    "models",
    "normalise_url",
    "repositories",
    "upsert",
]
