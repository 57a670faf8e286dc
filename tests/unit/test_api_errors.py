"""Every error the local API gives has the one JSON form, a bug included."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.testclient import TestClient

from extend_connector.api.app import create_app


def test_an_unexpected_error_is_a_json_500() -> None:
    router = APIRouter()

    @router.get("/v1/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    with TestClient(create_app(routers=[router]), raise_server_exceptions=False) as client:
        answer = client.get("/v1/boom")
    assert answer.status_code == 500
    assert answer.headers["content-type"] == "application/json"
    assert answer.json()["error"] == "internal_error"
