"""The demo as a newcomer runs it: a real process, chaos on, and its own self-check must pass."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_demo_with_chaos_passes_its_self_check(tmp_path: Path) -> None:
    # Embedded defaults only: no config file in the working directory, no connector env vars.
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXTEND_CONNECTOR_")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "extend_connector",
            "demo",
            "--duration",
            "20",
            "--chaos",
            "--products",
            "40",
            "--orders-per-second",
            "2",
            "--data-dir",
            str(tmp_path / "demo"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("self-check: PASSED"), output[-4000:]
