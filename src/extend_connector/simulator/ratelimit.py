"""Token buckets per (credential, group): Extend's three rate-limit groups (S1d), numbers per §5.4.

Headers on every /api response [ASSUMPTION except the first name, which Extend documents]:
`x-ratelimit-limit` (the group's limit), `x-ratelimit-remaining` (whole requests left now),
`x-ratelimit-reset` (seconds until the bucket is full again); on 429 also `Retry-After`
(seconds until one request is allowed). Time comes from the simulator clock, so a test can
advance it instead of sleeping.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from extend_connector.simulator.clock import SimClock
from extend_connector.simulator.config import RateLimit


@dataclass(frozen=True, kw_only=True, slots=True)
class Verdict:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int
    retry_after_seconds: int

    def headers(self) -> list[tuple[bytes, bytes]]:
        out = [
            (b"x-ratelimit-limit", str(self.limit).encode()),
            (b"x-ratelimit-remaining", str(self.remaining).encode()),
            (b"x-ratelimit-reset", str(self.reset_seconds).encode()),
        ]
        if not self.allowed:
            out.append((b"retry-after", str(self.retry_after_seconds).encode()))
        return out


class RateLimiter:
    def __init__(
        self, clock: SimClock, limits: dict[str, RateLimit], *, enabled: bool = True
    ) -> None:
        self.clock = clock
        self.limits = dict(limits)
        self.enabled = enabled
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}  # -> (tokens, at elapsed)
        self._lock = threading.Lock()

    def set_limit(self, group: str, limit: RateLimit) -> None:
        with self._lock:
            self.limits[group] = limit
            self._buckets = {k: v for k, v in self._buckets.items() if k[1] != group}

    def reset(self) -> None:
        with self._lock:
            self._buckets.clear()

    def check(
        self, credential: str, group: str, *, consume: bool = True, force_deny: bool = False
    ) -> Verdict:
        """Take one token (or only look, with consume=False). force_deny: a throttling storm."""
        rule = self.limits[group]
        if not self.enabled and not force_deny:
            return Verdict(
                allowed=True,
                limit=rule.limit,
                remaining=rule.limit,
                reset_seconds=0,
                retry_after_seconds=0,
            )
        rate = rule.limit / rule.period_seconds
        now = self.clock.elapsed()
        with self._lock:
            tokens, at = self._buckets.get((credential, group), (float(rule.limit), now))
            tokens = min(float(rule.limit), tokens + (now - at) * rate)
            allowed = tokens >= 1.0 and not force_deny
            if allowed and consume:
                tokens -= 1.0
            self._buckets[(credential, group)] = (tokens, now)
        remaining = 0 if force_deny else math.floor(tokens)
        reset = math.ceil((rule.limit - tokens) / rate) if tokens < rule.limit else 0
        retry = max(1, math.ceil((1.0 - tokens) / rate)) if tokens < 1.0 else 1
        return Verdict(
            allowed=allowed,
            limit=rule.limit,
            remaining=remaining,
            reset_seconds=reset,
            retry_after_seconds=retry,
        )
