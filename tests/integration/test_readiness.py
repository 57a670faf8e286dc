"""`/healthz` says the process is alive; `/readyz` answers 503 naming the failing check when the
database's migrations are not the ones the code needs or the engine is not running (the
database being down: tests/integration/test_database_outage.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from alembic import command

from extend_connector.store.migrate import alembic_config, current_revision, head_revision
from support.order_stack import order_stack


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Any, str, httpx2.Client]]:
    with order_stack(tmp_path) as (_sim, connector, url), httpx2.Client(timeout=30) as http:
        yield connector, url, http


def test_ready_when_everything_is(stack: tuple[Any, str, httpx2.Client]) -> None:
    _connector, url, http = stack
    ready = http.get(f"{url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "migrations": "ok", "engine": "ok"}
    assert http.get(f"{url}/healthz").json()["status"] == "ok"


def test_not_ready_when_the_database_is_behind_the_code(
    stack: tuple[Any, str, httpx2.Client],
) -> None:
    connector, url, http = stack
    db_url = connector.settings.store.url
    command.downgrade(alembic_config(db_url, connector.db.engine), "-1")
    behind = current_revision(db_url, engine=connector.db.engine)
    assert behind is not None and behind != head_revision()
    ready = http.get(f"{url}/readyz")
    assert ready.status_code == 503 and ready.headers["retry-after"] == "5"
    assert ready.json()["failing"] == ["migrations"]
    assert ready.json()["checks"]["migrations"] == (
        f"database at revision {behind}, code needs {head_revision()}"
    )
    assert http.get(f"{url}/healthz").status_code == 200
    command.upgrade(alembic_config(db_url, connector.db.engine), "head")
    assert http.get(f"{url}/readyz").status_code == 200


def test_not_ready_when_the_engine_is_not_running(stack: tuple[Any, str, httpx2.Client]) -> None:
    connector, url, http = stack
    connector.engine.shutdown()
    ready = http.get(f"{url}/readyz")
    assert ready.status_code == 503
    assert ready.json()["failing"] == ["engine"]
    assert ready.json()["checks"]["engine"] == "not running"
