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

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from extend_connector.flows import retry


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
