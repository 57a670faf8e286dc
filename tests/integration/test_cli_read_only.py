"""Read-only commands never create or migrate a database: pointed at the wrong folder they say
so, name the setting, and leave nothing behind."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from click.testing import CliRunner

from extend_connector.cli import main
from extend_connector.store import current_revision
from extend_connector.store.migrate import alembic_config


def run(args: list[str], data_dir: Path) -> tuple[int, str]:
    result = CliRunner().invoke(
        main, args, env={"EXTEND_CONNECTOR_STORE__DATA_DIR": str(data_dir)}, catch_exceptions=False
    )
    return result.exit_code, result.output


@pytest.mark.parametrize(
    "args", [["status"], ["failures", "list"], ["failures", "show", "1"]], ids=" ".join
)
def test_a_missing_database_is_reported_and_not_created(tmp_path: Path, args: list[str]) -> None:
    data_dir = tmp_path / "wrong-folder"
    code, output = run(args, data_dir)
    assert code != 0
    assert "no connector database" in output and "store.data_dir" in output
    assert not data_dir.exists()


def test_a_database_behind_this_version_is_not_migrated_by_a_read(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'extend-connector.db'}"
    command.upgrade(alembic_config(url), "0008")  # the service of an older version
    code, output = run(["failures", "list"], tmp_path)
    assert code != 0 and "revision 0008" in output and "db upgrade" in output
    assert current_revision(url) == "0008"
    code, output = run(["db", "upgrade"], tmp_path)
    assert code == 0, output
    code, output = run(["failures", "list"], tmp_path)
    assert (code, output.strip()) == (0, "no parked failures")
