"""The inline engine: declared workflows and steps as plain calls, sleeps on a fake clock."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest

from extend_connector import engine
from extend_connector.engine._declare import dbos_function

calls: list[int] = []


class Flaky(Exception):
    pass


@engine.step(name="test_inline.flaky", retries=3, backoff_seconds=1.0, backoff_rate=2.0)
def _flaky(fail_times: int) -> dict[str, Any]:
    calls.append(1)
    if len(calls) <= fail_times:
        raise Flaky(len(calls))
    return {"price": Decimal("9.50"), "n": len(calls)}


@engine.step(name="test_inline.picky", retries=3, retry_on=lambda e: not isinstance(e, Flaky))
async def _picky() -> None:
    raise Flaky("not retried")


@engine.workflow("test_inline.wf")
async def _wf(fail_times: int) -> Any:
    engine.sleep(5)
    await engine.sleep_async(7)
    result = await engine.offload(_flaky, fail_times)
    return {"result": result, "id": engine.workflow_id()}


def test_workflow_and_steps_run_inline_with_recorded_sleeps() -> None:
    calls.clear()
    clock = engine.FakeClock()
    start = clock()
    with engine.inline(clock) as run:
        out = asyncio.run(_wf(2))
    # The step's JSON as a checkpoint would give it (Decimal -> str), after two retries.
    assert out == {"result": {"price": "9.50", "n": 3}, "id": run.workflow_id}
    assert run.sleeps == [5, 7, 1.0, 2.0]
    assert (clock() - start).total_seconds() == 15
    assert run.steps == ["test_inline.flaky"]


def test_step_retries_run_out_and_retry_on_is_honoured() -> None:
    calls.clear()
    with engine.inline() as run:
        with pytest.raises(Flaky):
            asyncio.run(_wf(10))
        assert run.sleeps == [5, 7, 1.0, 2.0, 4.0]
        with pytest.raises(Flaky):
            asyncio.run(_picky())
        assert run.sleeps == [5, 7, 1.0, 2.0, 4.0]  # not retried: no further wait


def test_declared_wrapper_keeps_its_durable_name_and_dbos_function() -> None:
    assert engine.workflow_name(_wf) == "test_inline.wf"
    assert dbos_function(_wf) is not _wf
    assert engine.workflow_name(dbos_function(_wf)) == "test_inline.wf"
    assert "test_inline.wf" in engine.declared_workflows()
    with engine.inline(), pytest.raises(RuntimeError):
        with engine.inline():
            pass


def test_inline_engine_records_jobs_as_json() -> None:
    with engine.inline() as run:
        eng = engine.InlineEngine()
        engine.queue("test_inline.q")
        job_id = eng.enqueue(_wf, Decimal("1"), queue="test_inline.q", workflow_id="w-1")
        other = eng.start(_wf, 2)
    assert job_id == "w-1" and other.startswith("inline-")
    assert [(j.kind, j.workflow, j.args) for j in run.jobs] == [
        ("enqueue", "test_inline.wf", ("1",)),
        ("start", "test_inline.wf", (2,)),
    ]
