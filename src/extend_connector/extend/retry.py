"""When a failed call is tried again inside the client, and after how long.

Exponential backoff with full jitter between a floor and a cap, honouring what Extend says
(`Retry-After`, `x-ratelimit-reset`), bounded by a number of attempts and a total time. A failure
whose `Retry-After` asks for longer than `max_told_wait_seconds` (an outage: 503 with
Retry-After 30) is not slept inside the call but raised with the figure: the durable flow waits
it out where it can also see Extend answer again (the balance flush probes every 2 s), instead of
one call holding its slot for half a minute. A throttled call waits in the shared budget.

What is retried: reads that failed technically or were throttled, and writes that provably
never reached Extend (connect errors) or were throttled (refused before processing). A write
that timed out or lost its connection raises `OutcomeUnknown` at once; a write answered with a
5xx raises `TechnicalFailure` to the caller, who decides (the order flow looks the order up).
Validation, business and access errors are never retried.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import AccessDenied, ExtendError, TechnicalFailure, Throttled


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryPolicy:
    max_attempts: int = 5
    max_total_seconds: float = 60.0
    floor_seconds: float = 0.2
    cap_seconds: float = 20.0
    multiplier: float = 2.0
    max_told_wait_seconds: float = 5.0
    random: Callable[[], float] = field(default=random.random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if not 0 <= self.floor_seconds <= self.cap_seconds:
            raise ValueError("need 0 <= floor_seconds <= cap_seconds")

    def backoff(self, attempt: int) -> float:
        """Delay after failed attempt number `attempt` (1-based): full jitter in [floor,
        ceiling]."""
        ceiling = min(self.cap_seconds, self.floor_seconds * self.multiplier ** (attempt - 1))
        return self.floor_seconds + (ceiling - self.floor_seconds) * self.random()

    def delay(self, attempt: int, error: ExtendError) -> float:
        """Extend's own figure wins over our backoff when it asks for longer (never beyond
        cap*3)."""
        ours = self.backoff(attempt)
        if error.retry_after is not None:
            # Small jitter on top so many waiters do not all return in the same millisecond.
            told = error.retry_after + (self.floor_seconds * self.random())
            return min(
                max(told, ours if not isinstance(error, Throttled) else 0.0), self.cap_seconds * 3
            )
        return ours

    def retryable(self, error: ExtendError, *, is_write: bool, sent: bool) -> bool:
        """Whether the client may send the same request again by itself."""
        if isinstance(error, Throttled):
            return True  # refused before processing, for reads and writes alike
        if isinstance(error, AccessDenied):
            return False
        if isinstance(error, TechnicalFailure):
            if error.retry_after is not None and error.retry_after > self.max_told_wait_seconds:
                return False  # a long outage: the caller's durable flow waits it out
            return not is_write or not sent
        return False
