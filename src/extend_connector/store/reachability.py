"""The rows in which connector processes share what they have seen of Extend (flows/freshness.py).

One row per process (`host:pid`), upserted by that process; read by every process that answers
the shop. Each operation is its own short transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from extend_connector.store.models import ReachabilityRow


@dataclass(frozen=True, kw_only=True, slots=True)
class Seen:
    """One process's view of Extend (`updated_at`: when it was written)."""

    process: str
    role: str
    last_success_at: datetime | None
    last_failure_at: datetime | None
    last_error: str | None
    pending_since: datetime | None
    updated_at: datetime
    groups: dict[str, Any] = field(default_factory=dict)  # per rate-limit group, as JSON


def publish(engine: sa.Engine, seen: Seen) -> None:
    """Insert or replace the row of `seen.process`."""
    insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    values = {
        "process": seen.process,
        "role": seen.role,
        "last_success_at": seen.last_success_at,
        "last_failure_at": seen.last_failure_at,
        "last_error": seen.last_error,
        "pending_since": seen.pending_since,
        "updated_at": seen.updated_at,
        "groups": seen.groups,
    }
    statement = insert(ReachabilityRow).values(**values)
    statement = statement.on_conflict_do_update(
        index_elements=[ReachabilityRow.process],
        set_={k: statement.excluded[k] for k in values if k != "process"},
    )
    with engine.begin() as conn:
        conn.execute(statement)


def recent(engine: sa.Engine, *, since: datetime) -> list[Seen]:
    """Every row written at or after `since`."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(ReachabilityRow.__table__).where(ReachabilityRow.updated_at >= since)
        ).all()
        conn.rollback()
    return [
        Seen(
            process=r.process,
            role=r.role,
            last_success_at=r.last_success_at,
            last_failure_at=r.last_failure_at,
            last_error=r.last_error,
            pending_since=r.pending_since,
            updated_at=r.updated_at,
            groups=dict(r.groups or {}),
        )
        for r in rows
    ]


def forget(engine: sa.Engine, *, older_than: datetime) -> int:
    """Delete rows of processes silent since before `older_than` (stopped long ago)."""
    with engine.begin() as conn:
        return int(
            conn.execute(
                sa.delete(ReachabilityRow).where(ReachabilityRow.updated_at < older_than)
            ).rowcount
        )


__all__ = ["Seen", "forget", "publish", "recent"]
