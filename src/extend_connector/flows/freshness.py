"""How fresh an answer of the local copy is, and whether Extend is reachable right now.

Every read-API answer carries `confirmedAt` (when Extend last confirmed the value), its age in
seconds and `stale`: true once the age passes `webshop.stale_after_seconds`, or while Extend is
unreachable (the value may have changed there without us hearing of it).

Reachability is learnt from the outcomes of real calls, never from a probe of its own (Extend
asks integrators not to poll): every Extend client the flows build reports each call to
`reachability` (`extend.CallObserver`). A technical failure (5xx, timeout, dropped connection)
marks Extend unreachable until the next success; answers that prove Extend is up (a validation
error, a 404, a business conflict, even a 429) count as reachable. A call on the wire for longer
than `STALLED_AFTER_SECONDS` with no success anywhere since it started counts as unreachable too
(Extend accepting connections but not answering).

The same is kept per rate-limit group of the endpoint called (`groups`): Extend throttles and
may fail one group (the heavy lists) while it answers another, and the operator's overview shows
each. The overall verdict above stays the one that decides `stale`.

Processes share what they see: each process that has called Extend writes its view to the
`extend_reachability` table (`Publisher`: at most once a second, when it changed, and a heartbeat
every `HEARTBEAT_SECONDS`), and the read API combines its own view with every recent row
(`FleetReachability`, the rows cached for a second). So a `web` process that never calls Extend
says `extendReachable: false` while its workers' calls fail. Combined, the latest outcome of any
process decides; a stalled call of a live process (row refreshed within `LIVE_SECONDS`) counts
until a success anywhere is newer than its start.
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
import structlog

from extend_connector.extend import errors as extend_errors
from extend_connector.store import reachability as store

log = structlog.get_logger("extend_connector.freshness")

STALLED_AFTER_SECONDS = 20.0  # a call on the wire this long, nothing answered since: unreachable
PUBLISH_INTERVAL_SECONDS = 1.0  # a process writes its row at most this often
HEARTBEAT_SECONDS = 10.0  # and at least this often while it has something to say
LIVE_SECONDS = (
    30.0  # a row not refreshed for this long is from a stopped process: its pending call is ignored
)
RECENT_SECONDS = 600.0  # rows older than this are not read at all
READ_CACHE_SECONDS = 1.0  # the read API reads the rows at most this often
FORGET_AFTER = timedelta(days=1)  # rows of processes silent this long are deleted
WARN_INTERVAL_SECONDS = 60.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, kw_only=True, slots=True)
class ReachabilityState:
    reachable: bool
    last_success_at: datetime | None
    last_failure_at: datetime | None
    last_error: str | None
    pending_since: datetime | None = None  # start of the oldest call still on the wire


@dataclass(frozen=True, kw_only=True, slots=True)
class View:
    """What one process saw (`live`: its pending call may still be running)."""

    last_success_at: datetime | None
    last_failure_at: datetime | None
    last_error: str | None
    pending_since: datetime | None
    live: bool = True
    # The same per rate-limit group (a call reported without its group counts only above).
    groups: Mapping[str, View] = field(default_factory=dict)

    def group_json(self) -> dict[str, dict[str, str | None]]:
        """`groups` as stored in the shared table (timestamps as ISO strings)."""

        def iso(at: datetime | None) -> str | None:
            return None if at is None else at.isoformat()

        return {
            name: {
                "last_success_at": iso(g.last_success_at),
                "last_failure_at": iso(g.last_failure_at),
                "last_error": g.last_error,
                "pending_since": iso(g.pending_since),
            }
            for name, g in sorted(self.groups.items())
        }


def groups_from_json(data: Mapping[str, Mapping[str, str | None]] | None) -> dict[str, View]:
    """`View.group_json` read back (a row written before groups were kept has none)."""

    def at(value: str | None) -> datetime | None:
        return None if not value else datetime.fromisoformat(value)

    return {
        str(name): View(
            last_success_at=at(g.get("last_success_at")),
            last_failure_at=at(g.get("last_failure_at")),
            last_error=g.get("last_error"),
            pending_since=at(g.get("pending_since")),
        )
        for name, g in (data or {}).items()
    }


def combine_groups(
    views: Iterable[View], *, now: datetime, stalled_after: float = STALLED_AFTER_SECONDS
) -> dict[str, ReachabilityState]:
    """`combine` per rate-limit group, over every view that has called the group."""
    by_group: dict[str, list[View]] = {}
    for view in views:
        for name, group in view.groups.items():
            by_group.setdefault(name, []).append(replace(group, live=view.live))
    return {
        name: combine(group_views, now=now, stalled_after=stalled_after)
        for name, group_views in sorted(by_group.items())
    }


def combine(
    views: Iterable[View], *, now: datetime, stalled_after: float = STALLED_AFTER_SECONDS
) -> ReachabilityState:
    """One verdict from several processes' views: the latest outcome anywhere decides, and a live
    call pending longer than `stalled_after` with no success anywhere since it began means down."""
    views = list(views)
    successes = [v.last_success_at for v in views if v.last_success_at is not None]
    failures = [(v.last_failure_at, v.last_error) for v in views if v.last_failure_at is not None]
    last_success = max(successes, default=None)
    last_failure, last_error = max(failures, key=lambda f: f[0], default=(None, None))
    pending = [v.pending_since for v in views if v.live and v.pending_since is not None]
    pending_since = min(pending, default=None)
    down = last_failure is not None and (last_success is None or last_failure > last_success)
    stalled = [
        p
        for p in pending
        if (now - p).total_seconds() > stalled_after and (last_success is None or last_success < p)
    ]
    if stalled and not down:
        last_error = f"no answer from Extend for {(now - min(stalled)).total_seconds():.0f} s"
    return ReachabilityState(
        reachable=not (down or stalled),
        last_success_at=last_success,
        last_failure_at=last_failure,
        last_error=last_error,
        pending_since=pending_since,
    )


class Reachability:
    """Extend's reachability as seen by this process's recent calls (thread-safe).

    Implements `extend.CallObserver`: the flows' clients report every call to it. Logs one
    WARNING when an outage starts (the first call Extend did not answer after a success, or
    ever) and one when it ends (the next answer), with its duration and the calls that failed.
    """

    def __init__(
        self, clock: Callable[[], datetime] = _utcnow, stalled_after: float = STALLED_AFTER_SECONDS
    ) -> None:
        self._clock = clock
        self._stalled_after = stalled_after
        self._lock = threading.Lock()
        self._last_success: datetime | None = None
        self._last_failure: datetime | None = None
        self._last_error: str | None = None
        self._pending: dict[int, tuple[datetime, str | None]] = {}  # token -> (start, group)
        self._groups: dict[str, _GroupSeen] = {}
        self._tokens = itertools.count(1)
        self._outage_since: datetime | None = None
        self._outage_failed_calls = 0

    def waiting(self, group: str | None = None) -> int:
        """A call (to an endpoint of rate-limit `group`) goes on the wire; returns the token
        `done` takes."""
        with self._lock:
            token = next(self._tokens)
            self._pending[token] = (self._clock(), group)
            return token

    def done(self, token: int) -> None:
        with self._lock:
            self._pending.pop(token, None)

    def _group(self, group: str) -> _GroupSeen:
        seen = self._groups.get(group)
        if seen is None:
            seen = self._groups[group] = _GroupSeen()
        return seen

    def succeeded(self, group: str | None = None) -> None:
        with self._lock:
            now = self._last_success = self._clock()
            if group is not None:
                self._group(group).last_success = now
            since, failed = self._outage_since, self._outage_failed_calls
            self._outage_since, self._outage_failed_calls = None, 0
        if since is not None:
            log.warning(
                "extend_reachable_again",
                outage_started_at=since.isoformat(),
                outage_seconds=round((now - since).total_seconds(), 3),
                failed_calls=failed,
            )

    def failed(self, error: BaseException, group: str | None = None) -> None:
        """Record a failed call; only failures that mean "Extend did not answer" count."""
        if not is_unreachable_error(error):
            self.succeeded(group)
            return
        with self._lock:
            now = self._last_failure = self._clock()
            self._last_error = f"{type(error).__name__}: {error}"[:300]
            if group is not None:
                seen = self._group(group)
                seen.last_failure, seen.last_error = now, self._last_error
            self._outage_failed_calls += 1
            started = self._outage_since is None
            if started:
                self._outage_since = now
            last_error = self._last_error
        if started:
            log.warning("extend_unreachable", since=now.isoformat(), error=last_error)

    def view(self) -> View:
        with self._lock:
            return View(
                last_success_at=self._last_success,
                last_failure_at=self._last_failure,
                last_error=self._last_error,
                pending_since=min((at for at, _ in self._pending.values()), default=None),
                groups={
                    name: View(
                        last_success_at=seen.last_success,
                        last_failure_at=seen.last_failure,
                        last_error=seen.last_error,
                        pending_since=min(
                            (at for at, g in self._pending.values() if g == name), default=None
                        ),
                    )
                    for name, seen in self._groups.items()
                },
            )

    def state(self) -> ReachabilityState:
        return combine([self.view()], now=self._clock(), stalled_after=self._stalled_after)

    def group_states(self) -> dict[str, ReachabilityState]:
        return combine_groups([self.view()], now=self._clock(), stalled_after=self._stalled_after)

    @property
    def reachable(self) -> bool:
        return self.state().reachable

    def reset(self) -> None:
        with self._lock:
            self._last_success = self._last_failure = None
            self._last_error = None
            self._pending.clear()
            self._groups.clear()
            self._outage_since, self._outage_failed_calls = None, 0


@dataclass(kw_only=True, slots=True)
class _GroupSeen:
    """What one process saw of one rate-limit group (under `Reachability._lock`)."""

    last_success: datetime | None = None
    last_failure: datetime | None = None
    last_error: str | None = None


def is_unreachable_error(error: BaseException) -> bool:
    """Technical failures and unknown outcomes mean Extend did not answer usefully."""
    return isinstance(error, extend_errors.TechnicalFailure | extend_errors.OutcomeUnknown)


reachability = Reachability()
"""The process-wide reachability every flow feeds."""


def process_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:200]


class _Warner:
    """Logs a failing database operation at most once a minute (the read API must not flood)."""

    def __init__(self) -> None:
        self._at: float | None = None

    def warn(self, event: str, exc: BaseException) -> None:
        now = time.monotonic()
        if self._at is None or now - self._at >= WARN_INTERVAL_SECONDS:
            self._at = now
            log.warning(event, error=f"{type(exc).__name__}: {exc}"[:300])


class Publisher:
    """Writes this process's view to the shared table: on change (at most once per `interval`)
    and every `heartbeat`; nothing while the process has never called Extend."""

    def __init__(
        self,
        engine: sa.Engine,
        *,
        role: str,
        source: Reachability | None = None,
        process: str | None = None,
        clock: Callable[[], datetime] = _utcnow,
        interval: float = PUBLISH_INTERVAL_SECONDS,
        heartbeat: float = HEARTBEAT_SECONDS,
    ) -> None:
        self.engine = engine
        self.role = role
        self.source = source or reachability
        self.process = process or process_name()
        self._clock = clock
        self._interval = interval
        self._heartbeat = heartbeat
        self._written: View | None = None
        self._written_at: datetime | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warner = _Warner()
        self.writes = 0

    def publish_once(self) -> bool:
        """Write the row when it changed or the heartbeat is due; return whether it wrote."""
        view = self.source.view()
        now = self._clock()
        if view == View(
            last_success_at=None, last_failure_at=None, last_error=None, pending_since=None
        ):
            return False
        due = (
            self._written_at is None or (now - self._written_at).total_seconds() >= self._heartbeat
        )
        if view == self._written and not due:
            return False
        store.publish(
            self.engine,
            store.Seen(
                process=self.process,
                role=self.role,
                last_success_at=view.last_success_at,
                last_failure_at=view.last_failure_at,
                last_error=view.last_error,
                pending_since=view.pending_since,
                updated_at=now,
                groups=view.group_json(),
            ),
        )
        if self._written_at is None:
            store.forget(self.engine, older_than=now - FORGET_AFTER)
        self._written, self._written_at = view, now
        self.writes += 1
        return True

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.publish_once()
            except Exception as exc:  # a database hiccup must not end the thread
                self._warner.warn("reachability_publish_failed", exc)

    def start(self) -> Publisher:
        self._thread = threading.Thread(
            target=self._run, name="reachability-publisher", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None


class FleetReachability:
    """This process's view combined with every other process's recent row (rows cached briefly)."""

    def __init__(
        self,
        engine: sa.Engine,
        *,
        local: Reachability | None = None,
        clock: Callable[[], datetime] = _utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        cache_seconds: float = READ_CACHE_SECONDS,
        exclude: str | None = None,
    ) -> None:
        self.engine = engine
        self.local = local or reachability
        self._clock = clock
        self._monotonic = monotonic
        self._cache_seconds = cache_seconds
        self._exclude = exclude if exclude is not None else process_name()
        self._lock = threading.Lock()
        self._rows: list[store.Seen] = []
        self._read_at: float | None = None
        self._warner = _Warner()
        self.reads = 0

    def _recent(self, now: datetime) -> list[store.Seen]:
        with self._lock:
            fresh = (
                self._read_at is not None
                and self._monotonic() - self._read_at < self._cache_seconds
            )
            if fresh:
                return self._rows
            try:
                self._rows = store.recent(
                    self.engine, since=now - timedelta(seconds=RECENT_SECONDS)
                )
                self.reads += 1
            except Exception as exc:  # the shop still gets an answer: from this process's view
                self._warner.warn("reachability_read_failed", exc)
                self._rows = []
            self._read_at = self._monotonic()
            return self._rows

    def _views(self, now: datetime, *, groups: bool = False) -> list[View]:
        """This process's view and every other recent row's; the per-group part only when asked
        (`state()` answers every read-API request and does not need it)."""
        views = [self.local.view()]
        for row in self._recent(now):
            if row.process == self._exclude:
                continue  # our own row is older than what we know
            live = (now - row.updated_at).total_seconds() <= LIVE_SECONDS
            views.append(
                View(
                    last_success_at=row.last_success_at,
                    last_failure_at=row.last_failure_at,
                    last_error=row.last_error,
                    pending_since=row.pending_since,
                    live=live,
                    groups=groups_from_json(row.groups) if groups else {},
                )
            )
        return views

    def state(self) -> ReachabilityState:
        now = self._clock()
        return combine(self._views(now), now=now)

    def group_states(self) -> dict[str, ReachabilityState]:
        """The fleet's verdict per rate-limit group (groups nobody has called are absent)."""
        now = self._clock()
        return combine_groups(self._views(now, groups=True), now=now)

    @property
    def reachable(self) -> bool:
        return self.state().reachable


_fleet_views: weakref.WeakKeyDictionary[sa.Engine, FleetReachability] = weakref.WeakKeyDictionary()
_fleet_lock = threading.Lock()


def fleet_reachability(engine: sa.Engine) -> FleetReachability:
    """The process's combined view over the database `engine` (one per engine, reused)."""
    with _fleet_lock:
        view = _fleet_views.get(engine)
        if view is None:
            view = _fleet_views[engine] = FleetReachability(engine)
        return view


@dataclass(frozen=True, kw_only=True, slots=True)
class Freshness:
    """How fresh one answer is (`confirmed_at` None: never confirmed by Extend)."""

    confirmed_at: datetime | None
    age_seconds: float | None
    stale: bool

    def as_json(self) -> dict[str, object]:
        return {
            "confirmedAt": self.confirmed_at.isoformat() if self.confirmed_at else None,
            "ageSeconds": None if self.age_seconds is None else round(self.age_seconds, 3),
            "stale": self.stale,
        }


def freshness(
    confirmed_at: datetime | None, *, now: datetime, stale_after_seconds: float, reachable: bool
) -> Freshness:
    """Freshness of a value confirmed at `confirmed_at` (never confirmed counts as stale)."""
    if confirmed_at is None:
        return Freshness(confirmed_at=None, age_seconds=None, stale=True)
    age = max(0.0, (now - confirmed_at).total_seconds())
    return Freshness(
        confirmed_at=confirmed_at,
        age_seconds=age,
        stale=(not reachable) or age > stale_after_seconds,
    )


def oldest(values: list[datetime | None]) -> datetime | None:
    """The confirmation an answer made of several values can claim: the oldest (None wins)."""
    if not values or any(v is None for v in values):
        return None
    return min(v for v in values if v is not None)
