"""Drain work in passes and wait out an Extend outage: the loop of the coalesced flush jobs.

A flush job (balances, product-triggered prices) runs one pass at a time as a checkpointed step.
A pass returns `{"outcome": "done", "more": bool, <counters>}` when it did its part,
`{"outcome": "failed", "error": ...}` when retrying cannot help (a person must act), or any other
outcome (e.g. `retry`) when Extend failed in a way worth retrying (`retry.decide`). Between failed
passes the job waits durably by its `flows.retry` policy; once the policy's budget is spent it
stops and leaves its marks for the next trigger or sweep.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from extend_connector.flows import retry


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
        result = await one_pass()
        if result["outcome"] == "done":
            attempt = 0
            totals["passes"] += 1
            for key in add:
                totals[key] += int(result.get(key, 0))
            if not result.get("more"):
                return {"outcome": "done", **totals}
            continue
        if result["outcome"] == "failed":
            return {"outcome": "failed", "error": result.get("error"), **totals}
        attempt += 1
        backoff = retry.policy(policy)
        # A pass reports no Retry-After: the flush waits by its own backoff only.
        failure = retry.Failure(
            verdict=retry.Verdict.RETRY, reason="pass", error=str(result.get("error") or "")
        )
        action = backoff.next(failure, attempt=attempt, waited=waited)
        if not isinstance(action, retry.RetryAfter):
            return {"outcome": "gave_up", "error": result.get("error"), **totals}
        totals["retries"] += 1
        waited += await retry.pause(action.seconds, policy=backoff)
