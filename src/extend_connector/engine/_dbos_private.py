"""Every name the engine takes from DBOS's private modules, in one place.

DBOS 3.4 exports what the engine needs for running jobs, but not its exception classes, the
name of its internal queue, a way to hand a dead executor's jobs back to the fleet (its
own recovery does that only for the executor that is starting up), which jobs run
in this process (to tell a running job from one its claim left PENDING, never started), or a
way to move a due debounced job onto its queue sooner than its once-a-second sweep.
Those come from here and nowhere else; `tests/unit/test_dbos_private_surface.py` checks each
one against the installed DBOS, so an upgrade that moves one fails in CI with the name, not in
production. The dependency range in `pyproject.toml` (`dbos>=3.4,<4`) is the range this was
checked on.
"""

from __future__ import annotations

from typing import Any

from dbos._error import DBOSException, DBOSNonExistentWorkflowError
from dbos._utils import INTERNAL_QUEUE_NAME

__all__ = [
    "INTERNAL_QUEUE_NAME",
    "DBOSException",
    "DBOSNonExistentWorkflowError",
    "active_workflow_ids",
    "move_due_delayed",
    "reenqueue_for_recovery",
]


def move_due_delayed(client: Any) -> None:
    """Move every DELAYED job whose delay has passed onto its queue (what DBOS's background
    thread does once a second; idempotent, safe beside it)."""
    client._sys_db.transition_delayed_workflows()


def reenqueue_for_recovery(client: Any, workflow_id: str, executor_ids: list[str]) -> bool:
    """Return a job that a dead executor left PENDING to DBOS's internal queue, so a live
    worker picks it up. Idempotent: only matches while the job still names a dead executor.
    Returns whether the job was handed back."""
    return bool(
        client._sys_db.reenqueue_for_recovery(workflow_id, executor_ids, INTERNAL_QUEUE_NAME)
    )


def active_workflow_ids() -> set[str]:
    """The ids of the jobs executing in this process now (empty before a launch)."""
    from dbos import _dbos as dbos_module

    instance = dbos_module._dbos_global_instance
    if instance is None:
        return set()
    return set(instance._active_workflows_set.activeList())
