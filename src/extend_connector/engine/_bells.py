"""Queue pollers that this process wakes: work it enqueues starts now, not at the next poll.

DBOS finds queued jobs by polling: one thread per queue runs a dequeue transaction (the queue's
row, its scopes, a claim with a version check) every `polling_interval_sec`. Before this, every
queue of an `all` process was polled every 0.1-1 s so that a job started soon after it was
enqueued: about 40 polls a second, 9-18% of a core with nothing to do
(`benchmarks/ingest.py`, "the idle connector uses"), and the same polls competed for the GIL
with the webhook route under load.

Most jobs are enqueued by the process that runs them. So the engine runs DBOS's own per-queue
loop itself (`_dbos_private.serve_queue`) with a `Bell` in place of the stop event it waits on,
and rings the queue's bell when this process:

- enqueues a job on it (`Engine.enqueue`; `enqueue_in_transaction` once the session commits);
- moves a due debounced or delayed job onto it (`DueWaker`);
- finishes a job that ran from it (its place, or its partition key's, is free for the next;
  rung after DBOS recorded the outcome, `_dbos_private.on_job_released`).

A rung bell ends the poller's wait at once (rings while it polls are one more poll, not lost);
polls driven by rings are at least `MIN_GAP_SECONDS` apart, so a queue finishing a job every
few milliseconds is polled at most 50 times a second. What no bell announces (a job another
process enqueued, a schedule's job, DBOS's own sweep of delayed jobs) is found by the queue's
regular poll: its declared `poll_seconds` in a `worker` (the `web` process enqueues its work),
and at least `ALONE_POLL_SECONDS` in an `all` process, which enqueues its own.
"""

from __future__ import annotations

import threading
import time

import sqlalchemy as sa
from sqlalchemy.orm import Session

# Regular poll of an `all` process's queues: what another process enqueues there (a CLI command,
# a second `all` process on the same PostgreSQL, a schedule) starts within this long.
ALONE_POLL_SECONDS = 1.0
# Polls driven by rings are at least this far apart.
MIN_GAP_SECONDS = 0.02

_PENDING_KEY = "extend_connector.engine.rings"


class Bell:
    """A queue poller's wait (DBOS's `threading.Event` surface: `wait`, `is_set`, `set`) that
    `ring()` cuts short. `set()` is DBOS's shutdown: the poller's loop ends."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._stopped = False
        self._rung = False
        self._last_return = 0.0
        self.rings = 0  # for tests and benchmarks

    def ring(self) -> None:
        with self._cv:
            self.rings += 1
            self._rung = True
            self._cv.notify_all()

    def set(self) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify_all()

    def is_set(self) -> bool:
        return self._stopped

    def wait(self, timeout: float | None = None) -> bool:
        """Until rung (at least MIN_GAP_SECONDS after the last return), `timeout` or stopped;
        returns whether stopped, like `Event.wait`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while not self._stopped:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                if self._rung:
                    gap = self._last_return + MIN_GAP_SECONDS - now
                    if gap <= 0:
                        break
                    self._cv.wait(gap if deadline is None else min(gap, deadline - now))
                    continue
                self._cv.wait(None if deadline is None else deadline - now)
            self._rung = False
            self._last_return = time.monotonic()
            return self._stopped


class Bells:
    """The bells of the queues this process serves, by queue name (none in a `web` process)."""

    def __init__(self) -> None:
        self._bells: dict[str, Bell] = {}

    def add(self, queue: str) -> Bell:
        bell = self._bells[queue] = Bell()
        return bell

    def ring(self, queue: str) -> None:
        bell = self._bells.get(queue)
        if bell is not None:
            bell.ring()

    def ring_after_commit(self, session_or_connection: Session | sa.Connection, queue: str) -> None:
        """Ring `queue` when the session's transaction commits (never if it rolls back). A plain
        Connection has no after-commit event: its job waits for the queue's regular poll."""
        if queue not in self._bells or not isinstance(session_or_connection, Session):
            return
        session = session_or_connection
        pending: set[str] | None = session.info.get(_PENDING_KEY)
        if pending is None:
            pending = session.info[_PENDING_KEY] = set()
            sa.event.listen(session, "after_commit", self._committed)
            sa.event.listen(session, "after_rollback", self._rolled_back)
        pending.add(queue)

    def _committed(self, session: Session) -> None:
        pending: set[str] = session.info.get(_PENDING_KEY, set())
        for queue in tuple(pending):
            self.ring(queue)
        pending.clear()

    @staticmethod
    def _rolled_back(session: Session) -> None:
        pending: set[str] = session.info.get(_PENDING_KEY, set())
        pending.clear()

    def stop(self) -> None:
        """End every poller's loop (DBOS's shutdown does too; idempotent)."""
        for bell in self._bells.values():
            bell.set()
        self._bells.clear()
