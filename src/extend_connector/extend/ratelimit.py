"""A rate budget per Extend rate-limit group, shared by every flow of this process.

Extend throttles per group (three groups, 429 when a group is exhausted) and answers with
`x-ratelimit-limit / -remaining / -reset`. The budget learns the group's state from those
headers and makes callers wait BEFORE the group runs dry: when fewer than `low_water` of the
limit remain, calls are spaced evenly over the time left until the reset; at zero they wait
for the reset. A 429 empties the group for everybody until its `retry_after`.

Across worker processes (engine role `worker`) each process only sees its own calls; the
process-wide limit is then held by the engine's rate-limited queues (docs/extend-client.md).

State changes are guarded by a threading lock and never await, so one budget can serve several
event loops (threads) at once; waiting happens outside the lock.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

# Without a reset time from Extend, an empty group is probed again after this long.
UNKNOWN_RESET_SECONDS = 1.0


@dataclass(kw_only=True, slots=True)
class _Group:
    limit: int | None = None
    remaining: int | None = None  # None: not learnt yet (no call answered in this window)
    reset_at: float | None = None  # monotonic time when Extend refills the group
    next_slot: float = 0.0  # pacing: earliest start of the next call below the low-water mark


@dataclass(frozen=True, kw_only=True, slots=True)
class GroupBudget:
    """What the budget believes about one group right now (for status pages)."""

    group: str
    limit: int | None
    remaining: int | None
    reset_in: float | None


class RateBudget:
    def __init__(self, *, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep,
                 low_water: float = 0.2) -> None:
        self._clock = clock
        self._sleep = sleep
        self._low_water = low_water
        self._groups: dict[str, _Group] = {}
        self._lock = threading.Lock()

    def _group(self, name: str) -> _Group:
        group = self._groups.get(name)
        if group is None:
            group = self._groups[name] = _Group()
        return group

    def _reserve(self, name: str) -> tuple[float, bool]:
        """Try to take one call from the group: (seconds to wait first, whether it was taken).

        Taken with a wait: the call is paced and may go after the wait. Not taken: the group is
        empty; wait for the reset and try again.
        """
        with self._lock:
            g = self._group(name)
            now = self._clock()
            if g.reset_at is not None and now >= g.reset_at:
                # A new window: full again as far as we know, until the next answer says otherwise.
                g.remaining = g.limit
                g.reset_at = None
                g.next_slot = now
            if g.remaining is None:
                return 0.0, True
            if g.remaining <= 0:
                wait = (g.reset_at - now) if g.reset_at is not None else UNKNOWN_RESET_SECONDS
                return max(wait, 0.001), False
            g.remaining -= 1
            if g.limit and g.reset_at is not None and g.remaining < self._low_water * g.limit:
                interval = (g.reset_at - now) / (g.remaining + 1)
                start = max(now, g.next_slot)
                g.next_slot = start + interval
                return start - now, True
            return 0.0, True

    async def acquire(self, name: str) -> float:
        """Wait until a call in `name` fits the budget; return the seconds waited."""
        waited = 0.0
        while True:
            delay, taken = self._reserve(name)
            if delay > 0:
                await self._sleep(delay)
                waited += delay
            if taken:
                return waited

    def observe(self, name: str, headers: Mapping[str, str], *, limit_header: str,
                remaining_header: str, reset_header: str) -> None:
        """Learn the group's state from an answer's rate-limit headers (missing ones are ignored)."""
        limit = _int(headers.get(limit_header))
        remaining = _int(headers.get(remaining_header))
        reset = _float(headers.get(reset_header))
        if limit is None and remaining is None and reset is None:
            return
        with self._lock:
            g = self._group(name)
            now = self._clock()
            if limit is not None:
                g.limit = limit
            new_window = reset is not None and (g.reset_at is None or now + reset > g.reset_at + 0.5)
            if reset is not None:
                g.reset_at = now + reset
            if remaining is not None:
                # Answers overtake each other; within a window the lowest figure is the truest.
                if new_window or g.remaining is None:
                    g.remaining = remaining
                else:
                    g.remaining = min(g.remaining, remaining)

    def throttled(self, name: str, retry_after: float | None) -> None:
        """A 429 arrived: nobody in this process calls the group before it refills."""
        with self._lock:
            g = self._group(name)
            g.remaining = 0
            g.reset_at = self._clock() + (retry_after if retry_after is not None else UNKNOWN_RESET_SECONDS)

    def snapshot(self) -> list[GroupBudget]:
        with self._lock:
            now = self._clock()
            return [
                GroupBudget(group=name, limit=g.limit, remaining=g.remaining,
                            reset_in=None if g.reset_at is None else max(0.0, g.reset_at - now))
                for name, g in sorted(self._groups.items())
            ]


def _int(value: str | None) -> int | None:
    try:
        return int(float(value)) if value is not None else None
    except ValueError:
        return None


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


_shared: dict[str, RateBudget] = {}
_shared_lock = threading.Lock()


def shared_budget(key: str) -> RateBudget:
    """The process-wide budget for one Extend credential (key: base URL + credential fingerprint)."""
    with _shared_lock:
        budget = _shared.get(key)
        if budget is None:
            budget = _shared[key] = RateBudget()
        return budget
