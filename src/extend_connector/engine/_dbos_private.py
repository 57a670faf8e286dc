"""Every name the engine takes from DBOS's private modules, in one place.

DBOS 3.4 exports what the engine needs for running jobs, but not its exception classes, the
name of its internal queue, or a way to hand a dead executor's jobs back to the fleet (its
own recovery does that only for the executor that is starting up). Those come from here and
nowhere else; `tests/unit/test_dbos_private_surface.py` checks each one against the
installed DBOS, so an upgrade that moves one fails in CI with the name, not in production.
The dependency range in `pyproject.toml` (`dbos>=3.4,<4`) is the range this was checked on.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from dbos._error import DBOSException, DBOSNonExistentWorkflowError
from dbos._utils import INTERNAL_QUEUE_NAME

__all__ = [
    "INTERNAL_QUEUE_NAME",
    "DBOSException",
    "DBOSNonExistentWorkflowError",
    "reenqueue_for_recovery",
    "workflow_status_table",
]


def reenqueue_for_recovery(client: Any, workflow_id: str, executor_ids: list[str]) -> bool:
    """Return a job that a dead executor left PENDING to DBOS's internal queue, so a live
    worker picks it up. Idempotent: only matches while the job still names a dead executor.
    Returns whether the job was handed back."""
    return bool(
        client._sys_db.reenqueue_for_recovery(workflow_id, executor_ids, INTERNAL_QUEUE_NAME)
    )


def workflow_status_table(client: Any, conn: Any) -> sa.Table:
    """DBOS's `workflow_status` table (one row per job: `name`, `queue_name`,
    `queue_partition_key`, `status`, `application_version`), readable on the caller's own
    Session or Connection: DBOS names its schema by a placeholder, translated here on `conn` as
    DBOS's `enqueue_in_transaction` does (the caller's own statements are unaffected)."""
    client._sys_db._apply_caller_schema(conn)
    table: sa.Table = client._sys_db.tables.workflow_status
    return table
