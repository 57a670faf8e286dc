"""Every name the engine takes from DBOS's private modules, in one place.

DBOS 3.4 exports what the engine needs for running jobs, but not its exception classes, the
name of its internal queue, a way to hand a dead executor's jobs back to the fleet (its
own recovery does that only for the executor that is starting up), which jobs run
in this process (to tell a running job from one its claim left PENDING, never started), a
way to move a due debounced job onto its queue sooner than its once-a-second sweep, or a way to
wake a queue's poller (`_bells.py`: the engine runs DBOS's own per-queue loop with a wait it
can cut short, and hears when a job of a queue ends).
Those come from here and nowhere else; `tests/unit/test_dbos_private_surface.py` checks each
one against the installed DBOS, so an upgrade that moves one fails in CI with the name, not in
production. The dependency range in `pyproject.toml` (`dbos>=3.4,<4`) is the range this was
checked on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from dbos._error import DBOSException, DBOSNonExistentWorkflowError
from dbos._sys_db import WorkflowStatusString
from dbos._utils import INTERNAL_QUEUE_NAME

log = logging.getLogger("extend_connector.engine")

RESTART_SECONDS = 1.0  # a queue poller that failed runs again after this
# A poller's reload of its queue's row and its check of the application's latest version are
# kept this long (DBOS reads both on every poll: two of an idle poll's four statements).
POLL_LOOKUP_SECONDS = 5.0

__all__ = [
    "INTERNAL_QUEUE_NAME",
    "POLL_LOOKUP_SECONDS",
    "DBOSException",
    "DBOSNonExistentWorkflowError",
    "active_workflow_ids",
    "move_due_delayed",
    "on_job_released",
    "reenqueue_for_recovery",
    "serve_queue",
]


def move_due_delayed(client: Any) -> set[str]:
    """Move every DELAYED job whose delay has passed onto its queue (what DBOS's background
    thread does once a second, `SystemDatabase.transition_delayed_workflows`; idempotent, safe
    beside it). Returns the names of the queues that received a job.

    DBOS's method returns nothing, so this is its statement with `RETURNING queue_name`: the
    engine rings only the queues a move filled. A debounce pushed back by a later call is not
    due at its first wake, and ringing its queue then was a poll for nothing (under a stream of
    balance triggers, several a second). `tests/unit/test_dbos_private_surface.py` checks the
    method still does what this repeats."""
    sys_db = client._sys_db
    status = sys_db.tables.workflow_status
    moved = (
        sa.update(status)
        .where(status.c.status == WorkflowStatusString.DELAYED.value)
        .where(status.c.delay_until_epoch_ms <= int(time.time() * 1000))
        .where(sys_db._name_filter(status.c.application_name, sys_db.app_name))
        .values(
            status=WorkflowStatusString.ENQUEUED.value,
            # A debounce key is held only while DELAYED: a later debounce starts a fresh job.
            deduplication_id=sa.case(
                (status.c.is_debounced == sa.true(), None),
                else_=status.c.deduplication_id,
            ),
        )
        .returning(status.c.queue_name)
    )
    with sys_db._keyless_connection() as connection:
        return {name for (name,) in connection.execute(moved) if name}


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


def _instance() -> Any:
    from dbos import _dbos as dbos_module

    instance = dbos_module._dbos_global_instance
    if instance is None:
        raise RuntimeError("no DBOS instance in this process")
    return instance


POLLER_THREAD_PREFIX = "queue-worker-"  # DBOS's name for its queue threads; ours use it too


def _in_poller() -> bool:
    return threading.current_thread().name.startswith(POLLER_THREAD_PREFIX)


def _cache_poll_lookups(sys_db: Any) -> None:
    """Let the engine's queue pollers reuse, for `POLL_LOOKUP_SECONDS`, the queue row and the
    latest-version answer that DBOS's `queue_worker_thread` and its dequeue read on every poll.

    Only calls made on a queue poller's thread (ours from `serve_queue`, and DBOS's own for its
    internal queue, both named `queue-worker-<queue>`) are served from the cache; every other
    caller (registration, enqueue, the client) reads the database as before. What a stale
    answer can do: a queue's changed limits or a newly registered application version apply
    up to `POLL_LOOKUP_SECONDS` later (the engine registers its queues at launch; a version
    changes with a deploy). A missing queue is never cached, so a deleted row still stops the
    loop at its next poll."""
    if getattr(sys_db, "_extend_connector_poll_cache", False):
        return
    get_queue = sys_db.get_queue
    is_latest_version = sys_db._is_latest_version
    queues: dict[str, tuple[float, Any]] = {}
    versions: dict[str, tuple[float, bool]] = {}

    def cached_get_queue(name: str, **kwargs: Any) -> Any:
        if kwargs or not _in_poller():
            return get_queue(name, **kwargs)
        now = time.monotonic()
        hit = queues.get(name)
        if hit is not None and now < hit[0]:
            return hit[1]
        found = get_queue(name)
        if found is None:
            queues.pop(name, None)
        else:
            queues[name] = (now + POLL_LOOKUP_SECONDS, found)
        return found

    def cached_is_latest_version(app_version: str, c: Any = None) -> bool:
        if not _in_poller():
            return bool(is_latest_version(app_version, c))
        now = time.monotonic()
        hit = versions.get(app_version)
        if hit is not None and now < hit[0]:
            return hit[1]
        latest = bool(is_latest_version(app_version, c))
        versions[app_version] = (now + POLL_LOOKUP_SECONDS, latest)
        return latest

    sys_db.get_queue = cached_get_queue
    sys_db._is_latest_version = cached_is_latest_version
    sys_db._extend_connector_poll_cache = True


def serve_queue(wait: Any, queue_name: str) -> threading.Thread:
    """Run DBOS's own poll-and-dequeue loop for one queue on a thread of ours, waiting on `wait`
    (DBOS's `threading.Event` surface: `wait(timeout) -> stopped`, `is_set()`, `set()`) instead
    of its stop event, so the engine can cut a wait short. DBOS's shutdown sets `wait` and joins
    the thread like its own. The queue must be registered; call after `DBOS.launch()` with
    `DBOS.listen_queues` leaving it out, so DBOS does not poll it as well.

    DBOS restarts its own queue threads when one dies; this thread does the same for its loop:
    an error outside the loop's own guards (or the queue's row gone for a moment) is logged and
    the loop runs again a second later, so the queue's jobs are never left unserved."""
    from dbos._queue import queue_worker_thread

    instance = _instance()
    if instance._sys_db.get_queue(queue_name) is None:
        raise RuntimeError(f"queue {queue_name!r} is not registered")
    _cache_poll_lookups(instance._sys_db)

    def serve() -> None:
        while not wait.is_set():
            try:
                queue = instance._sys_db.get_queue(queue_name)
                if queue is not None:
                    queue_worker_thread(wait, instance, queue)
            except Exception:
                log.exception("queue poller of %s failed; it starts again", queue_name)
            if not wait.is_set():
                time.sleep(RESTART_SECONDS)

    thread = threading.Thread(target=serve, name=f"{POLLER_THREAD_PREFIX}{queue_name}", daemon=True)
    instance.background_thread_stop_events.append(wait)
    instance._background_threads.append(thread)
    thread.start()
    return thread


def on_job_released(callback: Callable[[str], None], active: Any = None) -> None:
    """Call `callback(queue_name)` each time a job that ran from a queue in this process lets go
    of its place (after DBOS recorded its outcome, or when it parks). Before `DBOS.launch()`.
    `active`: DBOS's set of running jobs (default: the launched instance's)."""
    if active is None:
        active = _instance()._active_workflows_set
    remove = active._remove

    def _remove(key: str, bucket: tuple[str, str | None] | None) -> None:
        remove(key, bucket)
        if bucket is not None:
            callback(bucket[0])

    active._remove = _remove
