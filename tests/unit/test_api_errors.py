"""Every error the local API gives has the one JSON form, a bug included."""

from __future__ import annotations

import pytest
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


def test_a_request_does_not_consult_opentelemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The connector reports through /metrics and logs; FastAPI's built-in OpenTelemetry check
    (three provider look-ups per request) is off."""
    from opentelemetry import _logs, metrics, trace

    asked: list[str] = []
    for module, name in (
        (trace, "get_tracer_provider"),
        (metrics, "get_meter_provider"),
        (_logs, "get_logger_provider"),
    ):
        monkeypatch.setattr(module, name, lambda name=name: asked.append(name))
    router = APIRouter()

    @router.get("/v1/ping")
    async def ping() -> dict[str, str]:
        return {"ok": "yes"}

    with TestClient(create_app(routers=[router])) as client:
        assert client.get("/v1/ping").json() == {"ok": "yes"}
    assert asked == []
