"""Drain work in passes and wait out an Extend outage: the loop of the coalesced flush jobs.

A flush job (balances, product-triggered prices) runs one pass at a time as a checkpointed step.
A pass returns `{"outcome": "done", "more": bool, <counters>}` when it did its part,
`{"outcome": "failed", "error": ...}` when retrying cannot help (a person must act), or any other
outcome (e.g. `retry`) when Extend failed in a way worth retrying. Between failed passes the job
sleeps durably with capped exponential backoff; after `give_up_seconds` of waiting it stops and
leaves its marks for the next trigger or sweep.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from extend_connector import engine


@dataclass(frozen=True, kw_only=True)
class Backoff:
    floor_seconds: float
    cap_seconds: float
    give_up_seconds: float

    def wait(self, attempt: int) -> float:
        return float(min(self.cap_seconds, self.floor_seconds * 2.0 ** (attempt - 1)))


async def run_passes(one_pass: Callable[[], Awaitable[dict[str, Any]]], *, add: Sequence[str],
                     backoff: Backoff) -> dict[str, Any]:
    """Call `one_pass` (a step) until a pass reports nothing more; sum the `add` counters.

    Call it from a workflow body: the sleeps are the engine's durable sleeps.
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
        wait = backoff.wait(attempt)
        if waited + wait > backoff.give_up_seconds:
            return {"outcome": "gave_up", "error": result.get("error"), **totals}
        totals["retries"] += 1
        await engine.sleep_async(wait)
        waited += wait
