"""The private DBOS names the engine relies on still exist and mean what the engine assumes.

A DBOS release that moves or changes one of them fails here, naming it, instead of failing a
merchant's worker at run time (`engine/_dbos_private.py` lists why each is needed)."""

from __future__ import annotations

import inspect

import dbos
from dbos._sys_db import SystemDatabase

from extend_connector.engine import _dbos_private


def test_exception_classes_are_dbos_exceptions() -> None:
    assert issubclass(_dbos_private.DBOSNonExistentWorkflowError, _dbos_private.DBOSException)
    assert issubclass(_dbos_private.DBOSException, Exception)


def test_internal_queue_name_is_a_plain_name() -> None:
    assert isinstance(_dbos_private.INTERNAL_QUEUE_NAME, str)
    assert _dbos_private.INTERNAL_QUEUE_NAME


def test_reenqueue_for_recovery_takes_what_the_engine_passes() -> None:
    assert "_sys_db" in inspect.getsource(dbos.DBOSClient.__init__)
    params = list(inspect.signature(SystemDatabase.reenqueue_for_recovery).parameters)
    assert params == ["self", "workflow_id", "executor_ids", "recovery_queue_name"]


def test_only_this_module_imports_private_dbos_names() -> None:
    from pathlib import Path

    package = Path(_dbos_private.__file__).parents[1]
    offenders = [
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if path.name != "_dbos_private.py" and "dbos._" in path.read_text(encoding="utf-8")
    ]
    assert offenders == []


def test_active_workflow_ids_reads_what_dbos_keeps() -> None:
    from dbos._core import ActiveWorkflowById

    assert "_active_workflows_set" in inspect.getsource(dbos.DBOS.__init__)
    active = ActiveWorkflowById()
    entry = active.add("wf-1", "q")
    assert active.activeList() == ["wf-1"]
    entry.release()
    assert active.activeList() == []
    assert _dbos_private.active_workflow_ids() == set()  # no launched DBOS in this process


def test_move_due_delayed_repeats_dbos_sweep_of_due_delayed_jobs() -> None:
    """`move_due_delayed` is DBOS's `transition_delayed_workflows` with `RETURNING`: the method
    must still be that one UPDATE (DELAYED and due -> ENQUEUED, a debounced job's key cleared,
    only this application's rows) on the names used here."""
    source = inspect.getsource(SystemDatabase.transition_delayed_workflows)
    for piece in (
        "WorkflowStatusString.DELAYED.value",
        "delay_until_epoch_ms <= now_ms",
        "self._name_filter(",
        "self.app_name",
        "status=WorkflowStatusString.ENQUEUED.value",
        "is_debounced == True",
        "deduplication_id=sa.case(",
        "self._keyless_connection()",
    ):
        assert piece in source, piece
    assert source.count("c.execute(") == 1
    assert isinstance(inspect.getattr_static(SystemDatabase, "_name_filter"), staticmethod)


def test_serve_queue_runs_dbos_own_queue_loop_with_a_wait_of_ours() -> None:
    from dbos._queue import queue_worker_thread

    params = list(inspect.signature(queue_worker_thread).parameters)
    assert params == ["stop_event", "dbos", "queue"]
    loop = inspect.getsource(queue_worker_thread)
    # The loop uses only the Event surface a Bell has.
    assert "stop_event.wait(" in loop and "stop_event.is_set()" in loop
    init = inspect.getsource(dbos.DBOS.__init__)
    assert "background_thread_stop_events" in init and "_background_threads" in init
    destroy = inspect.getsource(dbos.DBOS._destroy)
    assert "event.set()" in destroy and "bg_thread.join(" in destroy
    assert list(inspect.signature(SystemDatabase.get_queue).parameters)[:2] == ["self", "name"]


def test_on_job_released_hears_each_job_of_a_queue_end() -> None:
    from dbos._core import ActiveWorkflowById

    active = ActiveWorkflowById()
    heard: list[str] = []
    _dbos_private.on_job_released(heard.append, active)
    active.add("wf-1", "q", "k").release()
    active.add("wf-2").release()  # not from a queue
    assert heard == ["q"]
    assert active.activeList() == []


def test_the_poll_lookups_the_engine_caches_are_the_ones_dbos_makes_per_poll() -> None:
    """`_cache_poll_lookups` replaces `get_queue` and `_is_latest_version` on the system
    database for calls from threads named like DBOS's queue threads."""
    from dbos._queue import queue_thread, queue_worker_thread

    assert 'f"queue-worker-{queue_name}"' in inspect.getsource(queue_thread)
    assert _dbos_private.POLLER_THREAD_PREFIX == "queue-worker-"
    assert "dbos._sys_db.get_queue(queue.name)" in inspect.getsource(queue_worker_thread)
    assert "self._is_latest_version(app_version, c)" in inspect.getsource(
        SystemDatabase.start_queued_workflows
    )
    assert list(inspect.signature(SystemDatabase.get_queue).parameters) == [
        "self",
        "name",
        "client_system_database",
    ]
    assert list(inspect.signature(SystemDatabase._is_latest_version).parameters) == [
        "self",
        "app_version",
        "c",
    ]


def test_poll_lookups_are_cached_on_poller_threads_only() -> None:
    import threading

    reads: list[str] = []

    class Sys:
        def get_queue(self, name: str, **kwargs: object) -> object:
            reads.append(f"queue {name}")
            return None if name == "gone" else {"name": name}

        def _is_latest_version(self, app_version: str, c: object = None) -> bool:
            reads.append(f"version {app_version}")
            return True

    sys_db = Sys()
    _dbos_private._cache_poll_lookups(sys_db)
    _dbos_private._cache_poll_lookups(sys_db)  # once per system database

    def poll() -> None:
        for _ in range(3):
            sys_db.get_queue("q")
            sys_db._is_latest_version("1")
            sys_db.get_queue("gone")

    poller = threading.Thread(target=poll, name="queue-worker-q")
    poller.start()
    poller.join()
    assert reads == ["queue q", "version 1", "queue gone", "queue gone", "queue gone"]
    reads.clear()
    sys_db.get_queue("q")  # not a poller: read as before
    sys_db._is_latest_version("1")
    assert reads == ["queue q", "version 1"]
