"""A probe's saved sample file replays through the client: the same reads, answered from the
file, give the same findings, and the client reads the recorded records."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx2
import pytest

from extend_connector.extend import ExtendClient, NotFound, RateBudget
from extend_connector.extend.probe import ProbeReport, probe
from extend_connector.extend.wire import DriftRegistry
from extend_connector.settings import Settings

SAMPLE = Path(__file__).parent / "data" / "probe-sample.json"


def _replay() -> httpx2.MockTransport:
    answers: dict[tuple[str, str, str], dict[str, Any]] = {}
    for answer in json.loads(SAMPLE.read_text())["answers"]:
        answers[(answer["method"], answer["path"], answer["query"])] = answer

    def handler(request: httpx2.Request) -> httpx2.Response:
        key = (request.method, request.url.path, request.url.query.decode("ascii"))
        answer = answers.get(key)
        if answer is None:
            return httpx2.Response(599, content=f"not in the sample: {key}".encode())
        return httpx2.Response(
            answer["status"],
            content=json.dumps(answer["body"]).encode(),
            headers=answer["headers"],
        )

    return httpx2.MockTransport(handler)


def _client() -> ExtendClient:
    # the base URL the sample was recorded against does not matter: paths and queries do
    settings = Settings(extend={"base_url": "http://extend.localhost/api"})
    return ExtendClient.from_settings(
        settings, transport=_replay(), budget=RateBudget(), drift=DriftRegistry()
    )


def test_the_saved_sample_replays_to_the_same_findings() -> None:
    async def run() -> ProbeReport:
        async with _client() as client:
            with pytest.raises(NotFound):
                await client.get_product("probe-no-such-product")
            return await probe(client)

    report = asyncio.run(run())
    assert [f.verdict for f in report.findings] == ["held"] * len(report.findings), report.table()
    assert len(report.findings) == 13
