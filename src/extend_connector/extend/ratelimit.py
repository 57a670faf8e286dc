"""A rate budget per Extend rate-limit group: per process from the headers, fleet-wide from a table.

Extend throttles per credential and group (three groups, 429 when a group is exhausted) with a
token bucket, and answers with `x-ratelimit-limit / -remaining / -reset`. `RateBudget` is shared
by every flow of a process (`shared_budget`) and does two things before each call:

1. Fleet-wide (when a `FleetBucket` is attached): reserve a slot in the bucket that every process
   sharing the database draws from, and sleep until the slot. The bucket is GCRA over one row per
   (credential, group) (`store.ratebuckets`): capacity and refill are the group's limit times a
   headroom fraction, so N worker processes together stay under Extend's limit. A 429 that still
   gets through pushes that row, so nobody in the fleet calls the group before `Retry-After`.
   When the table cannot be reached the call goes on with local pacing only (warning logged at
   most once a minute): the limiter must never be why an Extend call fails. A call that got no
   answer at all (connection dropped or never made; not a timeout) gives its slot back
   (`release`), so an outage does not drain the bucket of calls Extend never counted.
2. Per process, from the headers: when fewer than `low_water` of the limit remain, calls are
   paced: at the group's refill rate (`limit / period`, the period from the dialect's
   `rate_limits`, `set_periods`) or, when that is faster, spread evenly over the time left until
   the reset (a window that ends soon); a group with no known period is spread over the reset.
   Only spreading wasted a token bucket: Extend's (and the simulator's) reset is the time until
   the bucket is full again, so the calls left went at a fraction of the refill rate and about a
   fifth of the bucket stayed unused for a whole catalogue sync. The count is read from the
   answer to the latest-taken call (its ticket, `acquire_ticket`), less the calls taken after
   it: the bucket refills between answers, so a later figure may be higher (keeping the lowest
   figure of a window ran the count to zero while Extend still had a sixth of its bucket, and
   a sync stalled for the whole reset). Bulk work (`bulk_calls`: the catalogue sweeps) is paced
   only below `BULK_LOW_WATER` and gives way to every other paced call. At zero calls wait for
   the reset. A 429 empties the group for this process until its `retry_after`. Every count is
   held only until the reset time that came with it (`UNKNOWN_RESET_SECONDS` when none came);
   after that the group is unknown again and calls go until an answer teaches it. So every wait
   ends by time alone, also when Extend drops connections and no answer (no header, no 429)
   ever comes.

State changes are guarded by a threading lock and never await, so one budget can serve several
event loops (threads) at once; waiting happens outside the lock.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

import structlog

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

# Without a reset time from Extend (a 429 without Retry-After, an answer without the reset
# header), what the budget learnt holds this long, then the group is unknown again.
UNKNOWN_RESET_SECONDS = 1.0
# A fleet limiter that is down is reported at most this often (every call would otherwise log).
FLEET_WARNING_INTERVAL_SECONDS = 60.0
# Below this share of a group's limit, calls are paced at the group's refill rate.
LOW_WATER = 0.2
# Bulk calls (`bulk_calls`) are paced only below this share: they may spend what the other calls
# keep as a burst reserve, and once paced they yield a slot to every other paced call.
BULK_LOW_WATER = 0.03

_BULK: ContextVar[bool] = ContextVar("extend_connector_bulk_calls", default=False)


@contextmanager
def bulk_calls() -> Iterator[None]:
    """Mark every Extend call made inside (and in tasks started inside) as bulk work: a catalogue
    sweep, not an order or a stock refresh.

    Bulk calls spend a group's bucket down to `BULK_LOW_WATER` of its limit (the other calls
    start pacing at `LOW_WATER`), so a sweep against binding limits wastes almost none of the
    bucket; below that they are paced at the refill rate on a schedule of their own, and every
    other call paced meanwhile takes the next slot ahead of them (the bulk schedule moves back
    one interval). An order's call never waits behind a queue of catalogue fetches.
    """
    token = _BULK.set(True)
    try:
        yield
    finally:
        _BULK.reset(token)


log = structlog.get_logger("extend_connector.ratelimit")


class FleetBucket(Protocol):
    """A token bucket per rate-limit group shared by every process calling Extend with one
    credential.

    `limit` is the bucket's capacity (calls, headroom applied, may be fractional) refilled evenly
    over `period` seconds.
    """

    async def reserve(self, group: str, limit: float, period: float, bulk: bool = False) -> float:
        """Take the next free slot of the group; return the seconds to wait before sending.
        `bulk` (a call inside `bulk_calls`): a slot that leaves part of the bucket to the
        other calls."""
        ...

    async def block(self, group: str, seconds: float, limit: float, period: float) -> None:
        """Extend said 429: no slot of the group may start within `seconds` from now."""
        ...

    async def release(self, group: str, limit: float, period: float) -> None:
        """A reserved call got no answer and was most likely never counted by Extend: give its
        slot back (never beyond a full bucket)."""
        ...


class SyncFleetBucket(Protocol):
    """The same operations done by blocking I/O (the store's implementation)."""

    def reserve(self, group: str, limit: float, period: float, bulk: bool = False) -> float: ...

    def block(self, group: str, seconds: float, limit: float, period: float) -> None: ...

    def release(self, group: str, limit: float, period: float) -> None: ...


class ThreadedFleetBucket:
    """A `FleetBucket` over a blocking one: each operation runs in a worker thread, off the loop."""

    def __init__(self, bucket: SyncFleetBucket) -> None:
        self.bucket = bucket

    async def reserve(self, group: str, limit: float, period: float, bulk: bool = False) -> float:
        return await asyncio.to_thread(self.bucket.reserve, group, limit, period, bulk)

    async def block(self, group: str, seconds: float, limit: float, period: float) -> None:
        await asyncio.to_thread(self.bucket.block, group, seconds, limit, period)

    async def release(self, group: str, limit: float, period: float) -> None:
        await asyncio.to_thread(self.bucket.release, group, limit, period)


@dataclass(frozen=True, kw_only=True, slots=True)
class _Fleet:
    bucket: FleetBucket
    limits: Mapping[str, tuple[int, float]]  # group -> (configured limit, period seconds)
    headroom: float
    timeout: float


@dataclass(kw_only=True, slots=True)
class _Group:
    limit: int | None = None
    remaining: int | None = None  # None: not learnt yet (no call answered in this window)
    reset_at: float | None = None  # monotonic time when Extend refills the group
    next_slot: float = 0.0  # pacing: earliest start of the next call below the low-water mark
    bulk_slot: float = 0.0  # the same for bulk calls below their own (lower) mark
    issued: int = 0  # calls taken so far; each call's number is its ticket
    answered: int = 0  # the ticket of the latest-taken call whose answer was read


@dataclass(frozen=True, kw_only=True, slots=True)
class GroupBudget:
    """What the budget believes about one group right now (for status pages)."""

    group: str
    limit: int | None
    remaining: int | None
    reset_in: float | None


class RateBudget:
    def __init__(
        self,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        low_water: float = LOW_WATER,
        bulk_low_water: float = BULK_LOW_WATER,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._low_water = low_water
        self._bulk_low_water = min(bulk_low_water, low_water)
        self._groups: dict[str, _Group] = {}
        self._periods: dict[str, float] = {}
        self._lock = threading.Lock()
        self._fleet: _Fleet | None = None
        self._fleet_warned_at: float | None = None
        self.fleet_failures = (
            0  # operations of the fleet bucket that failed (local pacing took over)
        )

    def set_periods(self, limits: Mapping[str, tuple[int, float]]) -> None:
        """The refill period of each group (group -> (configured limit, period seconds), the
        dialect's `rate_limits`): below the low-water mark calls go at `limit / period` a second,
        with the limit Extend's headers give."""
        with self._lock:
            self._periods = {group: period for group, (_, period) in limits.items() if period > 0}

    # --- the fleet-wide bucket -------------------------------------------------------------------

    def attach_fleet(
        self,
        bucket: FleetBucket,
        *,
        limits: Mapping[str, tuple[int, float]],
        headroom: float = 0.9,
        timeout: float = 5.0,
    ) -> None:
        """Draw every call from `bucket` too (replacing any bucket attached before).

        `limits`: group -> (limit, period seconds) as configured; Extend's `x-ratelimit-limit`
        replaces the limit once an answer carried it. `headroom` is the share of the limit used.
        `timeout`: a reservation slower than this is given up and the call paced locally only.
        """
        if not 0 < headroom <= 1:
            raise ValueError("headroom must be in (0, 1]")
        self._fleet = _Fleet(bucket=bucket, limits=dict(limits), headroom=headroom, timeout=timeout)

    def detach_fleet(self, bucket: FleetBucket | None = None) -> None:
        """Stop using the fleet bucket (only `bucket`, when given and still the attached one)."""
        if bucket is None or (self._fleet is not None and self._fleet.bucket is bucket):
            self._fleet = None

    @property
    def fleet(self) -> FleetBucket | None:
        return None if self._fleet is None else self._fleet.bucket

    def _fleet_rate(self, fleet: _Fleet, name: str) -> tuple[float, float] | None:
        """(capacity with headroom, period) for the group, or None when no limit is known."""
        configured = fleet.limits.get(name)
        if configured is None:
            return None
        with self._lock:
            learnt = self._groups[name].limit if name in self._groups else None
        limit = learnt if learnt is not None and learnt > 0 else configured[0]
        return max(1.0, limit * fleet.headroom), configured[1]

    def _fleet_failed(self, operation: str, name: str, exc: BaseException) -> None:
        with self._lock:
            self.fleet_failures += 1
            now = self._clock()
            due = (
                self._fleet_warned_at is None
                or now - self._fleet_warned_at >= FLEET_WARNING_INTERVAL_SECONDS
            )
            if due:
                self._fleet_warned_at = now
        if due:
            log.warning(
                "fleet_rate_limit_unavailable",
                operation=operation,
                group=name,
                error=f"{type(exc).__name__}: {exc}"[:300],
                failures=self.fleet_failures,
                fallback="this process paces from Extend's headers only until the table answers",
            )

    async def _fleet_wait(self, name: str) -> float:
        fleet = self._fleet
        rate = None if fleet is None else self._fleet_rate(fleet, name)
        if fleet is None or rate is None:
            return 0.0
        try:
            wait = await asyncio.wait_for(
                fleet.bucket.reserve(name, *rate, bulk=_BULK.get()), fleet.timeout
            )
        except Exception as exc:  # the limiter must never fail an Extend call
            self._fleet_failed("reserve", name, exc)
            return 0.0
        if wait > 0:
            await self._sleep(wait)
            return wait
        return 0.0

    # --- per process -----------------------------------------------------------------------------

    def _group(self, name: str) -> _Group:
        group = self._groups.get(name)
        if group is None:
            group = self._groups[name] = _Group()
        return group

    def _reserve(self, name: str, bulk: bool = False) -> tuple[float, int]:
        """Try to take one call from the group: (seconds to wait first, its ticket; 0 when it
        was not taken).

        Taken with a wait: the call is paced and may go after the wait. Not taken: the group is
        empty; wait for the reset and try again. `bulk`: see `bulk_calls`.
        """
        with self._lock:
            g = self._group(name)
            now = self._clock()
            if g.reset_at is not None and now >= g.reset_at:
                # The window an answer announced is over. What we counted since is forgotten: calls
                # that got no answer (Extend dropping connections) may never have reached it, and
                # only an answer can say what is left, so the group is unknown again (as before
                # the first answer) and the next answer teaches it. Refilling a local count here
                # instead would let unanswered calls empty it with nothing left to refill it.
                g.remaining = None
                g.reset_at = None
                g.next_slot = g.bulk_slot = now
            if g.remaining is None:
                g.issued += 1
                return 0.0, g.issued
            if g.reset_at is None:  # a count is held with its reset time; never one without
                g.reset_at = now + UNKNOWN_RESET_SECONDS
            if g.remaining <= 0:
                return max(g.reset_at - now, 0.001), 0
            g.remaining -= 1
            g.issued += 1
            mark = self._bulk_low_water if bulk else self._low_water
            if g.limit and g.remaining < mark * g.limit:
                start = max(now, g.bulk_slot if bulk else g.next_slot)
                # Spread from this call's slot, not from now: callers reserving at one instant
                # would otherwise be spaced past the reset they are spread over.
                interval = max(0.0, g.reset_at - start) / (g.remaining + 1)
                period = self._periods.get(name)
                if period is not None:
                    interval = min(interval, period / g.limit)  # the bucket's refill rate
                if bulk:
                    g.bulk_slot = start + interval
                else:
                    g.next_slot = start + interval
                    # This call took a slot the bulk schedule counted on: bulk yields it.
                    g.bulk_slot = max(g.bulk_slot, now) + interval
                return start - now, g.issued
            return 0.0, g.issued

    async def acquire(self, name: str) -> float:
        """Wait until a call in `name` fits the budget; return the seconds waited."""
        waited, _ = await self.acquire_ticket(name)
        return waited

    async def acquire_ticket(self, name: str) -> tuple[float, int]:
        """Wait until a call in `name` fits the budget; return the seconds waited and the call's
        ticket (give it to `observe` with the call's answer).

        The fleet's slot first (it holds the limit across processes), then this process's pacing
        from the headers (it catches what the fleet cannot see, e.g. another client of Extend).
        """
        waited = await self._fleet_wait(name)
        bulk = _BULK.get()
        while True:
            delay, ticket = self._reserve(name, bulk)
            if delay > 0:
                await self._sleep(delay)
                waited += delay
            if ticket:
                return waited, ticket

    def observe(
        self,
        name: str,
        headers: Mapping[str, str],
        *,
        limit_header: str,
        remaining_header: str,
        reset_header: str,
        ticket: int | None = None,
    ) -> None:
        """Learn the group's state from an answer's rate-limit headers (missing ones are
        ignored). `ticket`: the answered call's, from `acquire_ticket`."""
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
            new_window = reset is not None and (
                g.reset_at is None or now + reset > g.reset_at + 0.5
            )
            if reset is not None:
                g.reset_at = now + reset
            if remaining is not None:
                if ticket:
                    # Extend's bucket refills between answers, so a later figure may be higher;
                    # the answer to the latest-taken call is the newest reading, less the calls
                    # taken after it (they may not be counted in it yet). An answer overtaken by
                    # a later call's is out of date and ignored.
                    if ticket >= g.answered:
                        g.answered = ticket
                        g.remaining = max(0, remaining - (g.issued - ticket))
                # Without tickets: answers overtake each other; within a window the lowest
                # figure is the truest.
                elif new_window or g.remaining is None:
                    g.remaining = remaining
                else:
                    g.remaining = min(g.remaining, remaining)
                if g.reset_at is None:
                    # No reset header: the count still expires, or an empty group would wait
                    # for an answer no call may be sent to get.
                    g.reset_at = now + UNKNOWN_RESET_SECONDS

    def throttled(self, name: str, retry_after: float | None) -> None:
        """A 429 arrived: nobody in this process calls the group before it refills."""
        with self._lock:
            g = self._group(name)
            g.remaining = 0
            g.reset_at = self._clock() + (
                retry_after if retry_after is not None else UNKNOWN_RESET_SECONDS
            )

    async def report_throttled(self, name: str, retry_after: float | None) -> None:
        """A 429 arrived: block the group in this process and, when attached, in the whole fleet."""
        self.throttled(name, retry_after)
        fleet = self._fleet
        rate = None if fleet is None else self._fleet_rate(fleet, name)
        if fleet is None or rate is None:
            return
        seconds = retry_after if retry_after is not None else UNKNOWN_RESET_SECONDS
        try:
            await asyncio.wait_for(fleet.bucket.block(name, seconds, *rate), fleet.timeout)
        except Exception as exc:
            self._fleet_failed("block", name, exc)

    async def release(self, name: str) -> None:
        """The call taken last got no answer (Extend dropped it or it was never sent): give its
        unit back here and in the fleet. Calls that reached Extend's door but not its counter
        must not use up the budget, or an outage in which Extend drops connections would leave
        the fleet's bucket empty (and every process queued behind it) when Extend comes back,
        while Extend's own bucket is full. A call Extend did count after all is corrected by its
        next answer's headers or, at worst, one 429."""
        with self._lock:
            g = self._group(name)
            if g.remaining is not None and g.limit is not None and g.remaining < g.limit:
                g.remaining += 1
        fleet = self._fleet
        rate = None if fleet is None else self._fleet_rate(fleet, name)
        if fleet is None or rate is None:
            return
        try:
            await asyncio.wait_for(fleet.bucket.release(name, *rate), fleet.timeout)
        except Exception as exc:
            self._fleet_failed("release", name, exc)

    def snapshot(self) -> list[GroupBudget]:
        with self._lock:
            now = self._clock()
            return [
                GroupBudget(
                    group=name,
                    limit=g.limit,
                    remaining=g.remaining,
                    reset_in=None if g.reset_at is None else max(0.0, g.reset_at - now),
                )
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
    """The process-wide budget for one Extend credential (key: base URL + credential
    fingerprint)."""
    with _shared_lock:
        budget = _shared.get(key)
        if budget is None:
            budget = _shared[key] = RateBudget()
        return budget
