"""`extend-connector sync`: the command builds the process (a Connector, engine connected only)
and hands the flow its context and sweep; the flows never reach up for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from extend_connector import cli
from extend_connector.service import SWEEPS
from extend_connector.simulator import SimulatorConfig, run_in_thread
from extend_connector.store.database import Database
from extend_connector.store.models import CursorRow, ProductRow

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def sim() -> Iterator[Any]:
    with run_in_thread(
        SimulatorConfig(seed=9, products=25, customers=2, rate_limits_enabled=False)
    ) as running:
        yield running


def _config(sim: Any, tmp_path: Path, *, products: str = "sync") -> Path:
    path = tmp_path / "extend-connector.toml"
    path.write_text(
        f"""
[scope]
products = "{products}"
[store]
database_url = "sqlite:///{(tmp_path / "c.db").as_posix()}"
[extend]
base_url = "{sim.base_url}"
warehouses = ["MainWarehouse"]
""",
        encoding="utf-8",
    )
    return path


def test_the_command_offers_every_sweep_and_only_those() -> None:
    assert sorted(cli.SYNC_DATA_POINTS) == sorted(SWEEPS)


def test_sync_runs_the_sweep_then_a_dry_run_writes_nothing(sim: Any, tmp_path: Path) -> None:
    config = _config(sim, tmp_path)
    result = CliRunner().invoke(cli.main, ["--config", str(config), "sync", "products"])
    assert result.exit_code == 0, result.output
    db = Database(f"sqlite:///{(tmp_path / 'c.db').as_posix()}")
    try:
        with db.read() as s:
            assert s.scalar(sa.select(sa.func.count()).select_from(ProductRow)) == len(
                sim.state.products
            )
            mark = s.get(CursorRow, "products")
            assert mark is not None and mark.high_water_mark is not None
            before = mark.high_water_mark
        dry = CliRunner().invoke(
            cli.main, ["--config", str(config), "sync", "products", "--dry-run", "--full"]
        )
        assert dry.exit_code == 0, dry.output
        with db.read() as s:
            assert s.get(CursorRow, "products").high_water_mark == before  # type: ignore[union-attr]
    finally:
        db.dispose()


def test_sync_of_a_data_point_out_of_scope_does_nothing(sim: Any, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli.main, ["--config", str(_config(sim, tmp_path, products="off")), "sync", "products"]
    )
    assert result.exit_code == 4
    assert "scope.products = off" in result.output
