"""Waiting for "nothing more will happen" on a condition instead of a fixed sleep."""

from __future__ import annotations

import sqlalchemy as sa

from extend_connector.engine import Engine
from extend_connector.store.database import Database
from extend_connector.store.models import DirtyRecordRow
from support.processes import wait_for


def wait_settled(engine: Engine, *queues: str, timeout: float = 30.0) -> None:
    """Until none of `queues` has a job waiting or running: whatever the input so far causes on
    them has happened, so a test can assert that something did not."""
    wait_for(
        lambda: not any(engine.queue_depth().get(queue) for queue in queues) or None,
        timeout,
        interval=0.05,
        what=f"no job waiting or running on {', '.join(queues)}",
    )


def wait_drained(engine: Engine, db: Database, kind: str, timeout: float = 30.0) -> None:
    """Until no record of `kind` (flows/records.py: order, product, customer) is marked and its
    drain's queue is idle: every hook received so far has been fetched and applied."""

    def drained() -> bool | None:
        with db.read() as session:
            marked = session.scalar(
                sa.select(sa.func.count())
                .select_from(DirtyRecordRow)
                .where(DirtyRecordRow.kind == kind)
            )
        return (not marked and not engine.queue_depth().get(f"records-{kind}")) or None

    wait_for(drained, timeout, interval=0.05, what=f"no {kind} marked and its drain idle")
