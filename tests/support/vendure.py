"""A real Vendure server for the acceptance tests: installed once per machine from the committed
lock file (`extend_connector.webshop.vendure.install`, into `.cache/vendure-shop` or
$EXTEND_CONNECTOR_VENDURE_DIR), started per test on a free port with its own sql.js database,
and GraphQL clients for its Admin API and Shop API (a customer's view)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from extend_connector.demo.vendure import Gql as GraphQL
from extend_connector.webshop.vendure import install
from support.processes import Proc, free_port

ROOT = Path(__file__).resolve().parents[2]
SHOP_DIR = Path(os.environ.get("EXTEND_CONNECTOR_VENDURE_DIR") or ROOT / ".cache" / "vendure-shop")
REQUIRED = os.environ.get("EXTEND_CONNECTOR_REQUIRE_VENDURE") == "1"


def installed() -> Path:
    """The shop folder, installed (one installer at a time across pytest workers)."""
    if not REQUIRED:
        try:
            install.check_node()
        except install.NodeMissing as exc:
            pytest.skip(f"Vendure tests: {exc}")
    SHOP_DIR.parent.mkdir(parents=True, exist_ok=True)
    with (SHOP_DIR.parent / "vendure-shop.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        seconds = install.install(SHOP_DIR)
    if seconds:
        print(f"Vendure shop installed in {seconds:.1f} s")
    return SHOP_DIR


class Vendure:
    def __init__(self, proc: Proc, port: int) -> None:
        self.proc = proc
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.admin = GraphQL(f"{self.base}/admin-api")
        self.admin(
            'mutation { login(username: "superadmin", password: "superadmin") '
            "{ ... on CurrentUser { id } } }"
        )

    def shop(self) -> GraphQL:
        """A storefront session (anonymous until it logs in)."""
        return GraphQL(f"{self.base}/shop-api")

    def close(self) -> None:
        self.admin.close()


@contextlib.contextmanager
def vendure_server(tmp: Path, *, connector_url: str, secret: str) -> Iterator[Vendure]:
    """A Vendure server on a free port with a fresh database in `tmp/vendure`, sending its order
    events to `connector_url`; stopped on exit."""
    shop_dir = installed()
    data = tmp / "vendure"
    data.mkdir(exist_ok=True)
    port = free_port()
    proc = Proc(
        "vendure",
        ["node", str(shop_dir / "server.js")],
        env={
            "VENDURE_PORT": str(port),
            "VENDURE_DATA_DIR": str(data),
            "EXTEND_CONNECTOR_URL": connector_url,
            "EXTEND_CONNECTOR_WEBHOOK_SECRET": secret,
        },
        log_dir=tmp,
        cwd=shop_dir,
        health_url=f"http://127.0.0.1:{port}/health",
    )
    proc.start(timeout=180)
    shop = Vendure(proc, port)
    try:
        yield shop
    finally:
        shop.close()
        proc.stop()


def remove_install() -> None:
    shutil.rmtree(SHOP_DIR, ignore_errors=True)
