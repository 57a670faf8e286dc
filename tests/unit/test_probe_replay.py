"""A probe's saved sample file replays through the client: the same reads, answered from the
file, give the same findings (and the same suggested settings), and the client reads the
recorded records.

The samples were recorded by `extend-connector probe` (default settings) against the simulator
(seed 7, 6 products, 3 customers, 4 orders, clock frozen at 2024-10-01T12:00+02:00;
`tests/unit/data/record_probe_samples.py` records them again): once in the
house contract, once in the second dialect (tests/unit/data/dialect2.toml, null empty lists).
"""

from __future__ import annotations

import asyncio
import json
import tomllib
from collections import deque
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx2
import pytest

from extend_connector.extend import ExtendClient, NotFound, RateBudget
from extend_connector.extend.probe import ProbeReport, probe
from extend_connector.extend.wire import DriftRegistry
from extend_connector.settings import Settings

DATA = Path(__file__).parent / "data"
SAMPLE = DATA / "probe-sample.json"
SAMPLE_DIALECT2 = DATA / "probe-sample-dialect2.json"


def _key(method: str, path: str, query: str) -> tuple[str, str, str]:
    """The parameters in any order (the client and the probe order them differently)."""
    return method, path, urlencode(sorted(parse_qsl(query)))


def _replay(sample: Path) -> httpx2.MockTransport:
    """Answers in the order recorded per (method, path, query); the last one repeats."""
    answers: dict[tuple[str, str, str], deque[dict[str, Any]]] = {}
    for answer in json.loads(sample.read_text())["answers"]:
        key = _key(answer["method"], answer["path"], answer["query"])
        answers.setdefault(key, deque()).append(answer)

    def handler(request: httpx2.Request) -> httpx2.Response:
        key = _key(request.method, request.url.path, request.url.query.decode("ascii"))
        queue = answers.get(key)
        if not queue:
            return httpx2.Response(599, content=f"not in the sample: {key}".encode())
        answer = queue.popleft() if len(queue) > 1 else queue[0]
        return httpx2.Response(
            answer["status"],
            content=json.dumps(answer["body"]).encode(),
            headers=answer["headers"],
        )

    return httpx2.MockTransport(handler)


def _client(sample: Path, dialect: dict[str, Any] | None = None) -> ExtendClient:
    # the base URL the sample was recorded against does not matter: paths and queries do
    settings = Settings(
        extend={"base_url": "http://extend.localhost/api", "dialect": dialect or {}}
    )
    return ExtendClient.from_settings(
        settings, transport=_replay(sample), budget=RateBudget(), drift=DriftRegistry()
    )


def test_the_saved_sample_replays_to_the_same_findings() -> None:
    async def run() -> ProbeReport:
        async with _client(SAMPLE) as client:
            with pytest.raises(NotFound):
                await client.get_product("probe-no-such-product")
            return await probe(client)

    report = asyncio.run(run())
    assert [f.verdict for f in report.findings] == ["held"] * len(report.findings), report.table()
    assert len(report.findings) == 21  # page size served whole, order list from a change date
    assert report.toml() == ""


def test_a_sample_of_another_dialect_replays_to_every_difference_and_its_settings() -> None:
    report = asyncio.run(_probe_sample(SAMPLE_DIALECT2))
    assert {f.assumption for f in report.findings if f.verdict == "differs"} == {
        "authentication",
        "list envelope",
        "page-size parameter",
        "page parameter",
        "change-date filter (name, date format, inclusive at the instant)",
        "fields of Product",
        "fields of Availability",
        "fields of OrderLight",
    }, report.table()
    dialect2 = tomllib.loads((DATA / "dialect2.toml").read_text())
    assert tomllib.loads(report.toml()) == dialect2


async def _probe_sample(sample: Path) -> ProbeReport:
    async with _client(sample) as client:
        return await probe(client)


def test_the_client_reads_the_records_of_a_sample_in_the_suggested_dialect() -> None:
    """The dialect2 sample's availability records, read by the client configured with the
    settings the probe suggested (renamed field, header envelope, null lists)."""
    suggested = tomllib.loads(asyncio.run(_probe_sample(SAMPLE_DIALECT2)).toml())

    async def run() -> list[Any]:
        # the page size the probe asked the availability list with
        dialect = {**suggested["extend"]["dialect"], "page_size": 50}
        async with _client(SAMPLE_DIALECT2, dialect) as client:
            return [b async for b in client.availability_for_products(["P000002"], warehouses=[])]

    try:
        rows = asyncio.run(run())
    except Exception as exc:  # pragma: no cover - shows which request was not recorded
        raise AssertionError(str(exc)) from exc
    assert rows and {r.product_number for r in rows} == {"P000002"}


def _window_probe(answer: list[dict[str, Any]]) -> ProbeReport:
    """The order-window check alone, against an order list answering `answer` to any filter."""
    from extend_connector.extend.probe import Prober
    from support.mock_extend import mock_client

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, json={"items": answer, "totalCount": len(answer)})

    async def run() -> ProbeReport:
        async with mock_client(handler) as client:
            prober = Prober(client)
            prober.since = ("changedSince", "offset")
            await prober._order_window(LISTED)
            return prober.report

    return asyncio.run(run())


LISTED = [
    {"orderNumber": "1", "status": "Registered", "changedDate": "2024-10-01T10:00:00+02:00"},
    {"orderNumber": "2", "status": "Reserved", "changedDate": "2024-10-01T11:00:00+02:00"},
]


def test_the_order_window_holds_when_the_list_answers_from_the_change_date() -> None:
    report = _window_probe(LISTED[1:])
    assert [f.verdict for f in report.findings] == ["held"], report.table()
    assert report.toml() == ""


@pytest.mark.parametrize(
    "answer",
    [LISTED, []],  # the filter ignored (an older order answered); the instant itself excluded
    ids=["older-answered", "instant-excluded"],
)
def test_an_order_list_that_would_miss_a_created_order_turns_the_window_off(
    answer: list[dict[str, Any]],
) -> None:
    report = _window_probe(answer)
    assert [f.verdict for f in report.findings] == ["differs"], report.table()
    assert "sent twice" in report.findings[0].evidence
    assert tomllib.loads(report.toml()) == {"extend": {"dialect": {"order_lookup_window": False}}}
