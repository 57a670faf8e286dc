"""Syncs started by a person (the console's Sync page): queued with their job, run by the same
sweep `extend-connector sync` runs, progress and result (or error) kept on the run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from extend_connector.flows import runs
from extend_connector.flows.freshness import reachability
from support.extend_fake import ExtendFake, extend_fake, inline_context


@pytest.fixture
def fake() -> Iterator[ExtendFake]:
    reachability.reset()
    with extend_fake() as f:
        yield f
    reachability.reset()


SYNC_PRODUCTS = {"scope": {"products": "sync"}}


def test_a_requested_dry_run_reads_everything_and_writes_nothing(
    tmp_path: Path, fake: ExtendFake
) -> None:
    with inline_context(tmp_path, fake, run_jobs=True, settings=SYNC_PRODUCTS) as (_, run):
        run_id = runs.request("products", full=True, dry_run=True, by="test")
        done = runs.get(run_id)
        assert done is not None and done.status == "done", done
        assert (done.full, done.dry_run, done.requested_by) == (True, True, "test")
        assert done.started_at is not None and done.finished_at is not None
        assert done.result is not None and done.result["dry_run"] is True
        assert done.result["records"] == len(fake.state.products) == done.progress["records"]
        # The local copy holds the 10 products the context starts with: 10 more would be created.
        assert done.result["outcomes"].get("created") == len(fake.state.products) - 10
        assert [j.workflow_id for j in run.jobs] == [f"sync-run-{run_id}"]
        assert run.jobs[0].partition_key == "products"
        assert [r.id for r in runs.history()] == [run_id]


def test_a_failing_sweep_marks_the_run_failed_with_the_error(
    tmp_path: Path, fake: ExtendFake
) -> None:
    fake.set_faults(error_rate=1.0)
    with inline_context(tmp_path, fake, run_jobs=True, settings=SYNC_PRODUCTS):
        run_id = runs.request("products", by="test")
        failed = runs.get(run_id)
        assert failed is not None and failed.status == "failed"
        assert failed.error is not None and "TechnicalFailure" in failed.error, failed.error


def test_a_run_is_refused_for_an_unknown_data_point_or_one_out_of_scope(
    tmp_path: Path, fake: ExtendFake
) -> None:
    with inline_context(tmp_path, fake, settings={"scope": {"prices": "off"}}) as (_, run):
        with pytest.raises(runs.RunRefused, match="unknown data point"):
            runs.request("widgets", by="test")
        with pytest.raises(runs.RunRefused, match=r"scope\.prices = off"):
            runs.request("prices", by="test")
        assert runs.available()["prices"] == "scope.prices = off"
        assert runs.history() == [] and run.jobs == []
