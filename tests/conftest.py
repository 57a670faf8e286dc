"""Shared pytest configuration: async tests run on asyncio through anyio's plugin; under
pytest-xdist, the collection is ordered so that every worker starts with an equal share of the
long scenarios (see `balanced_order`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from support.ordering import balanced_order

# Seconds each test longer than 2 s took in one uncontended serial run (`--durations`); a test
# not listed counts as short. Only the order of the run depends on it, never an outcome.
DURATIONS = Path(__file__).with_name("durations.json")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    workerinput = getattr(config, "workerinput", None)
    workers = int(workerinput["workercount"]) if workerinput else 1
    if workers <= 1:
        return
    durations = json.loads(DURATIONS.read_text(encoding="utf-8")) if DURATIONS.exists() else {}
    by_id = {item.nodeid: item for item in items}
    items[:] = [by_id[i] for i in balanced_order(list(by_id), workers, durations)]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the test item (`item.rep_call.failed`), so a fixture can
    print its processes' logs when the test failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
