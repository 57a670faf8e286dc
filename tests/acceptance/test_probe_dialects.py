"""`extend-connector probe` with real processes, the connector deliberately configured wrong:
the default dialect against the simulator in the second dialect (support/dialects.py), and the
second dialect against the simulator in the house contract. The report names every differing
assumption, exits 1, and the settings it suggests, applied to the config file, make a second
probe all-held (exit 0). In the first direction the result is exactly the second dialect's file,
the one the orders, balances and master-data scenarios run with."""

from __future__ import annotations

import json
import os
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from support.dialects import DIALECT2, configure_connector, simulator_args
from support.processes import CLI, Proc, free_port, running

pytestmark = pytest.mark.slow

CHANGE_DATE = "change-date filter (name, date format, inclusive at the instant)"
DIFFERING = {
    # (simulator, connector) -> the assumptions that must be reported as differing
    ("dialect2", "house"): {
        "authentication",
        "list envelope",
        "page-size parameter",
        "page parameter",
        CHANGE_DATE,
        "fields of Product",
        "fields of Availability",
        "fields of OrderLight",
    },
    ("house", "dialect2"): {
        "authentication",
        "list envelope",
        "page-size parameter",
        "page parameter",
        CHANGE_DATE,
        "fields of Product",
        "fields of Availability",
        "fields of OrderLight",
    },
}


def _toml(data: dict[str, Any], prefix: str = "") -> str:
    """A config of nested tables with string values, as TOML."""
    plain = [f"{k} = {json.dumps(v)}" for k, v in data.items() if not isinstance(v, dict)]
    out = ([f"[{prefix}]"] if prefix and plain else []) + plain
    for key, value in data.items():
        if isinstance(value, dict):
            out.append(_toml(value, f"{prefix}.{key}" if prefix else key))
    return "\n".join(out) + "\n"


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _verdicts(output: str) -> dict[str, str]:
    lines = output.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("assumption")))
    found: dict[str, str] = {}
    for line in lines[header + 1 :]:
        if not line.strip():
            break
        for verdict in ("could not tell", "differs", "held"):
            mark = f"  {verdict}"
            if mark in line:
                found[line.split(mark)[0].strip()] = verdict
                break
    return found


@pytest.mark.parametrize(("sim_dialect", "connector_dialect"), sorted(DIFFERING))
def test_probe_names_every_difference_and_its_settings_make_a_second_probe_hold(
    tmp_path: Path, sim_dialect: str, connector_dialect: str
) -> None:
    port = free_port()
    sim = Proc(
        "simulator",
        [
            *CLI,
            "simulator",
            "--port",
            str(port),
            "--products",
            "30",
            "--customers",
            "4",
            "--orders",
            "4",
            "--no-webhook",
            *simulator_args(sim_dialect),
        ],
        env={},
        log_dir=tmp_path,
        health_url=f"http://127.0.0.1:{port}/_sim/health",
    )
    configure_connector(connector_dialect, tmp_path)
    env = {**os.environ, "EXTEND_CONNECTOR_EXTEND__BASE_URL": f"http://127.0.0.1:{port}/api"}

    def run_probe() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, "probe", "--toml-out", "suggested.toml", "--sample-out", "sample.json"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )

    with running(sim):
        first = run_probe()
        assert first.returncode == 1, first.stdout + first.stderr
        verdicts = _verdicts(first.stdout)
        assert {a for a, v in verdicts.items() if v == "differs"} == DIFFERING[
            (sim_dialect, connector_dialect)
        ], first.stdout
        suggested = tomllib.loads((tmp_path / "suggested.toml").read_text())
        config = tmp_path / "extend-connector.toml"
        current = tomllib.loads(config.read_text()) if config.exists() else {}
        applied = _merge(current, suggested)
        config.write_text(_toml(applied))
        (tmp_path / "suggested.toml").unlink()

        second = run_probe()
        assert second.returncode == 0, second.stdout + second.stderr
        verdicts = _verdicts(second.stdout)
        # 20: the configured page size served whole is checked too.
        assert len(verdicts) == 21 and set(verdicts.values()) == {"held"}, second.stdout
        assert not (tmp_path / "suggested.toml").exists()  # nothing left to suggest
        sample = (tmp_path / "sample.json").read_text()
        assert json.loads(sample)["answers"] and "sim-token" not in sample

    if sim_dialect == "dialect2":
        # What the probe led to is the file the dialect2 scenarios run with.
        assert applied == tomllib.loads(DIALECT2.read_text())
