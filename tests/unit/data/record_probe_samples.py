"""Record the probe samples tests/unit/test_probe_replay.py replays (run when the probe asks new
questions): `PYTHONPATH=src .venv/bin/python tests/unit/data/record_probe_samples.py`.

The simulator: seed 7, 6 products, 3 customers, 4 orders (one of each state), clock frozen at
2024-10-01T12:00+02:00; once in the house contract, once in the second dialect (dialect2.toml,
null empty lists). The probe runs with the connector's default settings both times.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

from extend_connector.extend import ExtendClient
from extend_connector.extend.probe import probe
from extend_connector.settings import Settings
from extend_connector.simulator import SimulatorConfig, run_in_thread
from extend_connector.simulator.config import dialect_file_settings

DATA = Path(__file__).parent
BASE = SimulatorConfig(
    seed=7,
    products=6,
    customers=3,
    orders=4,
    start_time="2024-10-01T12:00:00+02:00",
    frozen_clock=True,
    rate_limits_enabled=False,
)


def record(config: SimulatorConfig, out: Path) -> None:
    with run_in_thread(config) as sim:
        settings = Settings(extend={"base_url": sim.base_url})

        async def go() -> str:
            async with ExtendClient.from_settings(settings) as client:
                return (await probe(client)).sample_json()

        out.write_text(asyncio.run(go()) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    record(BASE, DATA / "probe-sample.json")
    second = replace(BASE, **dialect_file_settings(DATA / "dialect2.toml"), null_empty_lists=True)
    record(second, DATA / "probe-sample-dialect2.json")
