"""Drain work in passes and wait out an Extend outage: the loop of the coalesced flush jobs.

A flush job (balances, product-triggered prices) runs one pass at a time as a checkpointed step.
A pass returns `PassDone` (as JSON `{"outcome": "done", "more": bool, <counters>}`) when it did
its part, `PassFailed` (`{"outcome": "failed", "error": ...}`) when retrying cannot help (a person
must act), or `PassFailed` with outcome `retry` when Extend failed in a way worth retrying
(`retry.decide`). Between failed
passes the job waits durably by its `flows.retry` policy; once the policy's budget is spent it
stops and leaves its marks for the next trigger or sweep.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from extend_connector.flows import retry

log = structlog.get_logger("extend_connector.flows.passes")


@dataclass(frozen=True, kw_only=True, slots=True)
class PassDone:
    """A pass did its part (a pass step's result, as JSON: `{"outcome": "done", "more": bool,
    <counts>}`). `counts` is open-ended: each flow's counters (pairs, calls, products ...) plus
    whatever summary it records (e.g. the sweep tally's stats), kept as recorded."""

    more: bool
    counts: Mapping[str, Any] = field(default_factory=dict)

    def count(self, key: str) -> int:
        return int(self.counts.get(key, 0))

    def as_json(self) -> dict[str, Any]:
        return {"outcome": "done", **self.counts, "more": self.more}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PassDone:
        counts = {k: v for k, v in data.items() if k not in ("outcome", "more")}
        return cls(more=bool(data.get("more")), counts=counts)


@dataclass(frozen=True, kw_only=True, slots=True)
class PassFailed:
    """A pass failed (a pass step's result): `retry` (worth waiting for, `retry.decide`) or
    `failed` (retrying cannot help: a person must act). `kind` (the error class) and `pairs` (how
    many the pass covered) are recorded by the balance flush only."""

    retryable: bool
    error: str
    kind: str | None = None
    pairs: int | None = None

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"outcome": "retry" if self.retryable else "failed"}
        data["error"] = self.error
        if self.kind is not None:
            data["kind"] = self.kind
        if self.pairs is not None:
            data["pairs"] = self.pairs
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PassFailed:
        kind, pairs = data.get("kind"), data.get("pairs")
        return cls(
            # Any outcome but `done` and `failed` is worth retrying (as before the type).
            retryable=data.get("outcome") != "failed",
            error=str(data.get("error") or ""),
            kind=None if kind is None else str(kind),
            pairs=None if pairs is None else int(pairs),
        )


def pass_from_json(data: Mapping[str, Any]) -> PassDone | PassFailed:
    """What a pass step returned, read back from its recorded JSON."""
    if data.get("outcome") == "done":
        return PassDone.from_json(data)
    return PassFailed.from_json(data)


async def run_passes(
    one_pass: Callable[[], Awaitable[dict[str, Any]]], *, add: Sequence[str], policy: str
) -> dict[str, Any]:
    """Call `one_pass` (a step) until a pass reports nothing more; sum the `add` counters.

    Call it from a workflow body: the waits are the engine's durable sleeps. `policy` names the
    flow's `retry` policy, looked up at each wait (tests run it fast).
    """
    totals: dict[str, Any] = {"passes": 0, "retries": 0, **dict.fromkeys(add, 0)}
    waited = 0.0
    attempt = 0
    while True:
        match pass_from_json(await one_pass()):
            case PassDone() as done:
                attempt = 0
                totals["passes"] += 1
                for key in add:
                    totals[key] += done.count(key)
                if not done.more:
                    return {"outcome": "done", **totals}
                continue
            case PassFailed(retryable=False) as failed:
                return {"outcome": "failed", "error": failed.error, **totals}
            case PassFailed() as failed:
                pass
        attempt += 1
        backoff = retry.policy(policy)
        # A pass reports no Retry-After: the flush waits by its own backoff only.
        failure = retry.Failure(verdict=retry.Verdict.RETRY, reason="pass", error=failed.error)
        action = backoff.next(failure, attempt=attempt, waited=waited)
        if not isinstance(action, retry.RetryAfter):
            return {"outcome": "gave_up", "error": failed.error, **totals}
        totals["retries"] += 1
        waited += await retry.pause(action.seconds, policy=backoff)


class Trigger:
    """Start a debounced job on request, from a background thread, at most once per interval.

    `request()` never blocks and never fails: the inbox calls it after its commit, per delivery.
    `action` makes the call (an `Engine.debounce`, a database write of a few ms, too slow to make
    per notification at 1,000/s). A request that arrives while a call is under way is served by
    one more call after it, so the last request is always followed by a call made after it (the
    marks are durable; this only decides when they go). A call that fails (the database is
    down) is made again, after 0.5 s doubling to 5 s, until it goes through: the marks wait
    durably, but no further hook may come to ask again. Used by the balance flush and the record
    drains (flows/records.py).
    """

    def __init__(
        self,
        action: Callable[[], object],
        *,
        name: str,
        min_interval: float = 0.05,
        retry_first_seconds: float = 0.5,
        retry_cap_seconds: float = 5.0,
    ) -> None:
        self.action = action
        self.name = name
        self.min_interval = min_interval
        self.retry_first_seconds = retry_first_seconds
        self.retry_cap_seconds = retry_cap_seconds
        self.calls = 0
        self.failures = 0
        self._wanted = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def request(self) -> None:
        with self._lock:
            self._idle.clear()
            self._wanted.set()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until every request so far has been served (tests)."""
        return self._idle.wait(timeout)

    def _run(self) -> None:
        failed = 0  # calls failed in a row
        while True:
            if not self._wanted.wait(timeout=30.0):
                with self._lock:
                    if not self._wanted.is_set():
                        self._thread = None
                        return
                continue
            self._wanted.clear()  # requests from now on get another call after this one
            try:
                self.action()
            except Exception as exc:
                self.failures += 1
                failed += 1
                wait = min(self.retry_cap_seconds, self.retry_first_seconds * 2 ** (failed - 1))
                if failed == 1 or failed % 20 == 0:
                    log.warning(
                        "trigger_failed",
                        trigger=self.name,
                        error=f"{type(exc).__name__}: {exc}"[:500],
                        failed_calls=failed,
                        retry_in=wait,
                    )
                self._wanted.set()  # served only once a call goes through
                time.sleep(wait)
                continue
            self.calls += 1
            if failed:
                log.info("trigger_recovered", trigger=self.name, failed_calls=failed)
                failed = 0
            with self._lock:
                if not self._wanted.is_set():
                    self._idle.set()
            time.sleep(self.min_interval)
