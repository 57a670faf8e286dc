"""How fresh an answer of the local copy is, and whether Extend is reachable right now.

Every read-API answer carries `confirmedAt` (when Extend last confirmed the value), its age in
seconds and `stale`: true once the age passes `webshop.stale_after_seconds`, or while Extend is
unreachable (the value may have changed there without us hearing of it).

Reachability is learnt from the outcomes of real calls, never from a probe of its own (Extend
asks integrators not to poll): every flow that calls Extend feeds `reachability` with
`succeeded()` / `failed(error)`. A technical failure (5xx, timeout, connection refused) marks
Extend unreachable until the next success; answers that prove Extend is up (a validation error,
a 404, a business conflict, even a 429) count as reachable. The object is per process: in a
split deployment the web process learns reachability only from the calls it makes itself, and
falls back on the age threshold.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from extend_connector.extend import errors as extend_errors


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, kw_only=True, slots=True)
class ReachabilityState:
    reachable: bool
    last_success_at: datetime | None
    last_failure_at: datetime | None
    last_error: str | None


class Reachability:
    """Extend's reachability as seen by this process's recent calls (thread-safe)."""

    def __init__(self, clock: Callable[[], datetime] = _utcnow) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._last_success: datetime | None = None
        self._last_failure: datetime | None = None
        self._last_error: str | None = None

    def succeeded(self) -> None:
        with self._lock:
            self._last_success = self._clock()

    def failed(self, error: BaseException) -> None:
        """Record a failed call; only failures that mean "Extend did not answer" count."""
        if not is_unreachable_error(error):
            self.succeeded()
            return
        with self._lock:
            self._last_failure = self._clock()
            self._last_error = f"{type(error).__name__}: {error}"[:300]

    def state(self) -> ReachabilityState:
        with self._lock:
            down = self._last_failure is not None and (
                self._last_success is None or self._last_failure > self._last_success)
            return ReachabilityState(reachable=not down, last_success_at=self._last_success,
                                     last_failure_at=self._last_failure, last_error=self._last_error)

    @property
    def reachable(self) -> bool:
        return self.state().reachable

    def reset(self) -> None:
        with self._lock:
            self._last_success = self._last_failure = None
            self._last_error = None


def is_unreachable_error(error: BaseException) -> bool:
    """Technical failures and unknown outcomes mean Extend did not answer usefully."""
    return isinstance(error, extend_errors.TechnicalFailure | extend_errors.OutcomeUnknown)


reachability = Reachability()
"""The process-wide reachability every flow feeds."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Freshness:
    """How fresh one answer is (`confirmed_at` None: never confirmed by Extend)."""

    confirmed_at: datetime | None
    age_seconds: float | None
    stale: bool

    def as_json(self) -> dict[str, object]:
        return {"confirmedAt": self.confirmed_at.isoformat() if self.confirmed_at else None,
                "ageSeconds": None if self.age_seconds is None else round(self.age_seconds, 3),
                "stale": self.stale}


def freshness(confirmed_at: datetime | None, *, now: datetime, stale_after_seconds: float,
              reachable: bool) -> Freshness:
    """Freshness of a value confirmed at `confirmed_at` (never confirmed counts as stale)."""
    if confirmed_at is None:
        return Freshness(confirmed_at=None, age_seconds=None, stale=True)
    age = max(0.0, (now - confirmed_at).total_seconds())
    return Freshness(confirmed_at=confirmed_at, age_seconds=age,
                     stale=(not reachable) or age > stale_after_seconds)


def oldest(values: list[datetime | None]) -> datetime | None:
    """The confirmation an answer made of several values can claim: the oldest (None wins)."""
    if not values or any(v is None for v in values):
        return None
    return min(v for v in values if v is not None)
