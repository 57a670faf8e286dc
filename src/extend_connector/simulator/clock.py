"""The simulator's clock: wall time in the configured zone, steerable by tests.

Change dates, campaign windows and token buckets all read this clock, so a test can
freeze it, move it forward, or start it at a chosen instant. It never moves backwards:
change-date indexes rely on that.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo


class SimClock:
    """Wall clock = start instant + elapsed; elapsed is real time (unless frozen) + manual moves."""

    def __init__(
        self, tz: str = "Europe/Stockholm", *, start: datetime | None = None, frozen: bool = False
    ) -> None:
        self.tz = ZoneInfo(tz)
        if start is not None and start.utcoffset() is None:
            raise ValueError("start must carry a UTC offset")
        self._start = (start or datetime.now(self.tz)).astimezone(self.tz)
        self._mono0 = time.monotonic()
        self._frozen_at: float | None = 0.0 if frozen else None
        self._offset = 0.0
        self._lock = threading.Lock()

    def elapsed(self) -> float:
        """Seconds since the clock started, as the simulator sees them (monotonic)."""
        real = self._frozen_at if self._frozen_at is not None else time.monotonic() - self._mono0
        return real + self._offset

    def now(self) -> datetime:
        """Now, in the configured zone, to the millisecond (what the API shows)."""
        instant = self._start + timedelta(seconds=self.elapsed())
        return instant.replace(microsecond=instant.microsecond // 1000 * 1000)

    def now_ms(self) -> int:
        """Now as epoch milliseconds: the sortable form of `now()`."""
        return int(self.now().timestamp() * 1000)

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("the simulator clock never moves backwards")
        with self._lock:
            self._offset += seconds

    def set(self, instant: datetime) -> None:
        if instant.utcoffset() is None:
            raise ValueError("instant must carry a UTC offset")
        delta = (instant - self.now()).total_seconds()
        if delta < -0.001:
            raise ValueError("the simulator clock never moves backwards")
        self.advance(max(delta, 0.0))

    @property
    def frozen(self) -> bool:
        return self._frozen_at is not None

    def freeze(self) -> None:
        with self._lock:
            if self._frozen_at is None:
                self._frozen_at = time.monotonic() - self._mono0

    def unfreeze(self) -> None:
        with self._lock:
            if self._frozen_at is not None:
                # Resume from the frozen instant rather than jumping to real time.
                self._offset += self._frozen_at - (time.monotonic() - self._mono0)
                self._frozen_at = None

    def fmt(self, epoch_ms: int) -> str:
        """ISO-8601 with the zone's offset at that instant, milliseconds precision."""
        instant = datetime.fromtimestamp(epoch_ms / 1000, self.tz)
        return instant.isoformat(timespec="milliseconds")
