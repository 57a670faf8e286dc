"""`check --online` against real parts on loopback: the simulator as Extend (in process), a real
SQLite database, and a shop webhook receiver that verifies signatures (the demo's)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from extend_connector.cli import main
from extend_connector.demo.receiver import ShopInbox, serve_shop_inbox
from extend_connector.online_check import Finding, check_online
from extend_connector.settings import Settings
from extend_connector.simulator import RunningSimulator, SimulatorConfig, run_in_thread
from extend_connector.store.migrate import migrate
from support.processes import free_port

SHOP_SECRET = "whsec_Y2hlY2stb25saW5lLXNob3Atc2VjcmV0LTEyMzQ1Njc4"


@pytest.fixture(scope="module")
def sim() -> Iterator[RunningSimulator]:
    with run_in_thread(SimulatorConfig(seed=2, products=20, customers=2)) as running:
        yield running


@pytest.fixture(scope="module")
def shop() -> Iterator[tuple[str, ShopInbox]]:
    inbox = ShopInbox(secret=SHOP_SECRET, keep_events=True)
    with serve_shop_inbox(inbox, free_port()) as url:
        yield url, inbox


def _settings(tmp: Path, sim: RunningSimulator, **override: Any) -> Settings:
    data: dict[str, Any] = {
        "extend": {"base_url": sim.base_url, "api_token": sim.token},
        "store": {"data_dir": str(tmp)},
        "webshop": {"webhook_secret": SHOP_SECRET},
    }
    for section, values in override.items():
        data[section] = {**data.get(section, {}), **values}
    return Settings.model_validate(data)


def _failed(findings: list[Finding]) -> list[str]:
    return [f.line() for f in findings if not f.ok]


def test_everything_reachable_is_one_ok_line_each(
    tmp_path: Path, sim: RunningSimulator, shop: tuple[str, ShopInbox]
) -> None:
    url, inbox = shop
    settings = _settings(tmp_path, sim, webshop={"webhook_url": url})
    migrate(settings.store.url)
    findings = asyncio.run(check_online(settings))
    assert _failed(findings) == []
    groups = {f.what for f in findings if f.what.startswith("Extend")}
    assert groups == {f"Extend, rate-limit group {g}" for g in ("heavy", "standard", "write")}
    assert any("writes only: not tried" in f.detail for f in findings)
    assert any("a made-up record: not found" in f.detail for f in findings)
    assert inbox.counts["ping"] >= 1  # the shop got a ping it could verify


def test_each_problem_names_the_setting_to_change(
    tmp_path: Path, sim: RunningSimulator, shop: tuple[str, ShopInbox]
) -> None:
    url, _ = shop
    nothing = f"http://127.0.0.1:{free_port()}"
    settings = _settings(
        tmp_path,
        sim,
        extend={"api_token": "not-the-token"},
        webshop={"webhook_url": f"{nothing}/shop"},
    )
    failed = _failed(asyncio.run(check_online(settings)))
    # The database was never created (nothing is created by a check).
    assert any("store.data_dir: no connector database" in line for line in failed)
    assert not list(tmp_path.iterdir())
    refused = [line for line in failed if "extend.api_token" in line]
    assert len(refused) == 2 and all("answered 401" in line for line in refused)  # both reads
    assert any(line.startswith("FAIL  shop webhook: webshop.webhook_url") for line in failed)

    down = _settings(tmp_path, sim, extend={"base_url": f"{nothing}/api"})
    assert all(
        "extend.base_url" in line
        for line in _failed(asyncio.run(check_online(down)))
        if "Extend" in line
    )

    wrong_secret = _settings(
        tmp_path,
        sim,
        webshop={
            "webhook_url": url,
            "webhook_secret": "whsec_b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldC0xMjM0",
        },
    )
    (line,) = [x for x in _failed(asyncio.run(check_online(wrong_secret))) if "shop" in x]
    assert "webshop.webhook_secret" in line and "401" in line


def test_the_command_prints_the_findings_and_exits_1_on_a_failure(
    tmp_path: Path, sim: RunningSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    env = {
        "EXTEND_CONNECTOR_EXTEND__BASE_URL": sim.base_url,
        "EXTEND_CONNECTOR_EXTEND__API_TOKEN": sim.token,
        "EXTEND_CONNECTOR_STORE__DATA_DIR": str(tmp_path / "var"),
    }
    result = CliRunner().invoke(main, ["check", "--online"], env=env)
    assert result.exit_code == 1, result.output
    assert "FAIL  database: store.data_dir: no connector database" in result.output
    assert "ok    Extend, rate-limit group heavy" in result.output
    (tmp_path / "var").mkdir()
    migrate(f"sqlite:///{tmp_path / 'var' / 'extend-connector.db'}")
    result = CliRunner().invoke(main, ["check", "--online"], env=env)
    assert result.exit_code == 0, result.output
    assert "ok    database" in result.output
