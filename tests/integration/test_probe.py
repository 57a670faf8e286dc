"""`extend-connector probe` against the simulator: all held in a matching dialect; against a
simulator in another dialect, the differing assumptions and the TOML that makes them hold."""

from __future__ import annotations

import asyncio
import json
import tomllib
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from extend_connector.cli import main
from extend_connector.extend import ExtendClient, RateBudget
from extend_connector.extend.probe import ProbeReport, probe
from extend_connector.extend.wire import DriftRegistry
from extend_connector.settings import Settings
from extend_connector.simulator import RunningSimulator, SimulatorConfig, run_in_thread


def _probe(sim: RunningSimulator, dialect: dict[str, Any]) -> ProbeReport:
    settings = Settings(
        extend={"base_url": sim.base_url, "api_token": sim.token, "dialect": dialect}
    )

    async def go() -> ProbeReport:
        async with ExtendClient.from_settings(
            settings, budget=RateBudget(), drift=DriftRegistry()
        ) as client:
            return await probe(client)

    return asyncio.run(go())


def test_probe_against_the_house_contract_holds() -> None:
    with run_in_thread(SimulatorConfig(seed=3, products=8, customers=3, orders=2)) as sim:
        report = _probe(sim, {})
    assert report.blocking == [], report.table()
    assert {f.verdict for f in report.findings} <= {"held", "could not tell"}, report.table()
    assert report.toml() == ""


def test_probe_names_what_differs_and_its_toml_makes_a_second_probe_hold() -> None:
    config = SimulatorConfig(
        seed=4,
        products=8,
        customers=3,
        orders=2,
        token="key-1",
        auth_header="X-Api-Key",
        auth_scheme="",
        envelope="headers",
        field_renames=(
            ("Product", "productNumber", "itemNumber"),
            ("Customer", "customerNumber", "customerNo"),
        ),
        null_empty_lists=True,
    )
    with run_in_thread(config) as sim:
        first = _probe(sim, {})
        differing = {f.assumption for f in first.blocking}
        assert {
            "authentication",
            "list envelope",
            "fields of Product",
            "fields of Customer",
        } <= differing, first.table()
        suggested = tomllib.loads(first.toml())["extend"]["dialect"]
        assert suggested["auth_header"] == "X-Api-Key" and suggested["auth_scheme"] == ""
        assert suggested["envelope"] == "headers"
        assert suggested["fields"] == {
            "Product": {"productNumber": "itemNumber"},
            "Customer": {"customerNumber": "customerNo"},
        }
        second = _probe(sim, suggested)
        assert second.blocking == [], second.table()
        assert second.toml() == ""


def test_probe_command_prints_the_table_writes_toml_and_a_redacted_sample(
    tmp_path: Path,
) -> None:
    config = SimulatorConfig(seed=5, products=6, customers=3, envelope="headers")
    with run_in_thread(config) as sim:
        cfg = tmp_path / "c.toml"
        cfg.write_text(f'[extend]\nbase_url = "{sim.base_url}"\napi_token = "{sim.token}"\n')
        result = CliRunner().invoke(
            main,
            [
                "--config",
                str(cfg),
                "probe",
                "--toml-out",
                str(tmp_path / "s.toml"),
                "--sample-out",
                str(tmp_path / "sample.json"),
            ],
        )
    assert result.exit_code == 1, result.output
    assert "list envelope" in result.output and "differs" in result.output
    assert 'envelope = "headers"' in (tmp_path / "s.toml").read_text()
    sample = json.loads((tmp_path / "sample.json").read_text())
    assert sample["answers"] and sim.token not in (tmp_path / "sample.json").read_text()
    customers = [a for a in sample["answers"] if a["operation"] == "list_customers"]
    emails = [c.get("email") for a in customers for c in a["body"] if isinstance(c, dict)]
    assert emails and all(e in (None, "***") or "@" not in str(e) for e in emails)


def test_the_write_test_places_one_order_and_cancels_it_and_writes_nothing_else() -> None:
    # Two orders there already: Extend's clock is read off them for the look-up window check.
    with run_in_thread(SimulatorConfig(seed=5, products=6, customers=2, orders=2)) as sim:
        before = {n: o.status for n, o in sim.state.orders.items()}
        result = CliRunner().invoke(
            main,
            ["probe", "--write-test", "--toml-out", "/dev/null", "--sample-out", "/dev/null"],
            env={"EXTEND_CONNECTOR_EXTEND__BASE_URL": sim.base_url},
        )
        after = {n: (o.status, o.order_number_external) for n, o in sim.state.orders.items()}
        customers = len(sim.state.customers)
    assert result.exit_code == 0, result.output
    written = {n: v for n, v in after.items() if n not in before}
    ((status, ref),) = written.values()  # one order, and it is cancelled
    assert status == "Cancelled" and ref.startswith("PROBE-WRITE-TEST-")
    assert customers == 3  # 2 generated + WEB: no customer created
    for line in (
        "write test: create an order (POST)",
        "write test: Extend assigns the order number",
        "write test: look-up by the shop's reference",
        "write test: look-up window",
        "write test: cancel the order",
    ):
        assert any(line in row and "held" in row for row in result.output.splitlines()), (
            result.output
        )


def test_probe_finds_a_page_size_extend_does_not_serve_whole() -> None:
    """Extend serving at most 100 records a page while the connector asks for 500: the probe
    says so and suggests page_size = 100, which a second probe finds held."""
    config = SimulatorConfig(
        seed=5, products=150, customers=3, orders=2, max_page_size=100, default_page_size=100
    )
    with run_in_thread(config) as sim:
        first = _probe(sim, {})
        found = {f.assumption: f for f in first.findings}["configured page size"]
        assert found.verdict == "differs" and dict(found.settings) == {"page_size": 100}, (
            first.table()
        )
        assert "pageSize=500 -> 100 records of 150" in found.evidence
        second = _probe(sim, {"page_size": 100})
        assert {f.assumption: f for f in second.findings}["configured page size"].verdict == "held"
