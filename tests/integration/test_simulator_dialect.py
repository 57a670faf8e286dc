"""The simulator in a second dialect (tests/unit/data/dialect2.toml): UTC-only change dates and
renamed filter parameters are honoured, the house contract's are not."""

from __future__ import annotations

from pathlib import Path

import httpx2

from extend_connector.simulator import SimulatorConfig, run_in_thread
from extend_connector.simulator.config import dialect_file_settings

DIALECT2 = Path(__file__).parents[1] / "unit" / "data" / "dialect2.toml"


def test_utc_change_dates_only_and_the_other_names_honoured() -> None:
    config = SimulatorConfig(
        products=5,
        customers=1,
        orders=3,
        rate_limits_enabled=False,
        null_empty_lists=True,
        status_param="state",
        **dialect_file_settings(DIALECT2),
    )
    with run_in_thread(config) as sim, httpx2.Client(timeout=10) as http:
        key = {"X-Api-Key": sim.token}
        url = f"{sim.base_url}/Products"
        utc = http.get(url, params={"modifiedSince": "2000-01-01T00:00:00Z"}, headers=key)
        assert utc.status_code == 200 and len(utc.json()) == 5
        offset = http.get(url, params={"modifiedSince": "2000-01-01T02:00:00+02:00"}, headers=key)
        assert offset.status_code == 400 and "UTC" in offset.text
        future = http.get(url, params={"modifiedSince": "2999-01-01T00:00:00Z"}, headers=key)
        assert future.json() == []
        page = http.get(url, params={"pageNo": "2", "take": "2"}, headers=key)
        assert page.headers["x-page"] == "2" and len(page.json()) == 2
        orders = http.get(f"{sim.base_url}/CustomerOrders", params={"state": "Nope"}, headers=key)
        assert orders.status_code == 200 and orders.json() == []
        every = http.get(f"{sim.base_url}/CustomerOrders", headers=key)
        assert len(every.json()) == 3
        refused = http.get(url, headers={"Authorization": f"Bearer {sim.token}"})
        assert refused.status_code == 401
