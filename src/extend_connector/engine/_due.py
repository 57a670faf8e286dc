"""Moving a debounced job onto its queue when it is due, not at DBOS's next sweep.

DBOS keeps a debounced job DELAYED until a background thread of its own moves the due ones onto
their queue, once a second. A debounce window of 0.3 s so meant 0.3-1.3 s, and the balance flush
of a steady trickle ran about every 2 s (`benchmarks/balances.py`: local p99 2.1-2.3 s against
the 1.5 s target). `DueWaker` wakes at the instant each debounce call makes its job due and does
the same move (`_dbos_private.move_due_delayed`, one UPDATE of the due rows). A later debounce
that pushed the job back makes that wake find nothing; it armed its own. During a steady stream
the job falls due at its longest delay, which the next call's wake (or DBOS's sweep) catches.
The engine rings only the queues a move gave a job (`move_due_delayed` returns them): ringing a
queue is a DBOS poll of it, and a wake whose job was pushed back moves nothing.

A job held by a steady stream falls due at its deadline (first call + longest delay), which no
call's wake aims at: the next wake came up to one debounce period later, and when DBOS's own sweep
moved the job in between, that wake found nothing to move and rang nothing. The job then waited
for its queue's next regular poll: measured in `benchmarks/balances.py`'s trickle, one flush in
five about a second late (local p99 2.0 s instead of 1.15 s, in some runs and not others,
by the phase of DBOS's sweep). So the engine also arms a wake at each new job's deadline, and
that wake rings the job's queue even when its move found nothing: one poll per job at most.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("extend_connector.engine")

# Wakes closer together than this are one wake (a trigger debounces at most every 50 ms).
COALESCE_SECONDS = 0.02
# A wake this long after its instant moves the job too: DBOS compares with its own clock.
MARGIN_SECONDS = 0.01


class DueWaker:
    """A daemon thread that runs `move(ring)` at every armed instant (time.monotonic); `ring` is
    the set of queues the instants it serves asked to ring whatever the move finds."""

    def __init__(self, move: Callable[[set[str]], None], *, name: str = "engine-due-waker") -> None:
        self._move = move
        self._name = name
        self._due: list[tuple[float, str]] = []  # (instant, queue to ring or "")
        self._cv = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._last_error_logged = 0.0
        self.moves = 0  # wakes that ran `move()` (for tests and benchmarks)

    def arm(self, seconds: float, *, ring: str = "") -> None:
        """Run `move()` about `seconds` from now (starts the thread on first use); with `ring`,
        that wake rings the queue so named even if its move finds nothing."""
        at = time.monotonic() + seconds + MARGIN_SECONDS
        with self._cv:
            if self._stopped:
                return
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            if not ring and any(abs(at - other) < COALESCE_SECONDS for other, _ in self._due):
                return
            heapq.heappush(self._due, (at, ring))
            self._cv.notify()

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            self._due.clear()
            self._cv.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stopped and (not self._due or self._due[0][0] > time.monotonic()):
                    timeout = None if not self._due else self._due[0][0] - time.monotonic()
                    self._cv.wait(timeout)
                if self._stopped:
                    return
                now = time.monotonic()
                ring: set[str] = set()
                while self._due and self._due[0][0] <= now + COALESCE_SECONDS:
                    ring.add(heapq.heappop(self._due)[1])
                ring.discard("")
            try:
                self._move(ring)
                self.moves += 1
            except Exception:  # DBOS's own sweep still moves the job within a second
                now = time.monotonic()
                if now - self._last_error_logged > 60:
                    self._last_error_logged = now
                    log.warning("moving due debounced jobs failed", exc_info=True)
