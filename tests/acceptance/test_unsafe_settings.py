"""The real `run` refuses unsafe secrets before it binds a port, and `check` never prints a
password.

Issue #12, defects 6 and 7, as an operator meets them: environment variables, a real process.
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

from support.processes import CLI, free_port


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EXTEND_CONNECTOR_")}
    # A connector that started by mistake must not hang the test: it is killed at the timeout.
    return subprocess.run(
        [*CLI, *args],
        env={**clean, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_run_against_a_real_extend_with_the_public_defaults_refuses_to_start(
    tmp_path: Path,
) -> None:
    port = free_port()
    # A non-loopback Extend (rather than server.host 0.0.0.0): a regression binds loopback only.
    done = _cli(
        ["run"],
        {
            "EXTEND_CONNECTOR_EXTEND__BASE_URL": "https://erp.example.com/api",
            "EXTEND_CONNECTOR_SERVER__PORT": str(port),
        },
        tmp_path,
    )
    assert done.returncode == 3, done.stdout + done.stderr
    for env in (
        "EXTEND_CONNECTOR_EXTEND__API_TOKEN",
        "EXTEND_CONNECTOR_EXTEND__WEBHOOK_SECRET",
        "EXTEND_CONNECTOR_WEBSHOP__API_TOKEN",
        "EXTEND_CONNECTOR_WEBSHOP__WEBHOOK_SECRET",
    ):
        assert env in done.stderr
    assert "sim-token" not in done.stderr and "shop-token" not in done.stderr
    assert not (tmp_path / "var").exists()  # nothing was opened, not even the database
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))  # the port was never taken


def test_run_with_an_empty_webhook_secret_refuses_to_start(tmp_path: Path) -> None:
    done = _cli(
        ["run"],
        {
            "EXTEND_CONNECTOR_EXTEND__WEBHOOK_SECRET": "",
            "EXTEND_CONNECTOR_SERVER__PORT": str(free_port()),
        },
        tmp_path,
    )
    assert done.returncode == 3, done.stdout + done.stderr
    assert (
        "extend.webhook_secret [env EXTEND_CONNECTOR_EXTEND__WEBHOOK_SECRET]: empty" in done.stderr
    )


def test_check_and_a_config_error_never_print_the_database_password(tmp_path: Path) -> None:
    good = _cli(
        ["check"],
        {"EXTEND_CONNECTOR_STORE__DATABASE_URL": "postgresql://app:pw-4711@db.internal/shop"},
        tmp_path,
    )
    assert good.returncode == 0, good.stderr
    assert "app:***@db.internal/shop" in good.stdout
    bad = _cli(
        ["check"],
        {"EXTEND_CONNECTOR_STORE__DATABASE_URL": "postgres://app:pw-4711@db.internal/shop"},
        tmp_path,
    )
    assert bad.returncode == 3
    assert "store.database_url" in bad.stderr
    for out in (good.stdout, good.stderr, bad.stdout, bad.stderr):
        assert "pw-4711" not in out
