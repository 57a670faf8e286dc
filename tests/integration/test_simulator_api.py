"""The simulator's API surface over real loopback HTTP: contract, dialect knobs, rate limits,
paging, faults."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from extend_connector.simulator import RateLimit, RunningSimulator, SimulatorConfig, run_in_thread
from extend_connector.simulator.webhooks import EXTRA_FIELD

START = "2024-10-15T10:00:00+02:00"


@pytest.fixture(scope="module")
def sim() -> Iterator[RunningSimulator]:
    with run_in_thread(
        SimulatorConfig(
            seed=2,
            products=120,
            customers=15,
            orders=6,
            start_time=START,
            rate_limits_enabled=False,
        )
    ) as running:
        yield running


@pytest.fixture
def api(sim: RunningSimulator) -> Iterator[httpx2.Client]:
    sim.state.set_faults(
        **{
            "error_rate": 0.0,
            "error_rates": (),
            "latency_seconds": 0.0,
            "outage": False,
            "throttle_storm": 0.0,
            "lost_response_rate": 0.0,
            "extra_fields": False,
        }
    )
    with httpx2.Client(
        base_url=sim.base_url, headers={"Authorization": f"Bearer {sim.token}"}
    ) as client:
        yield client


def _order_body(external: str, product: str = "P000001", **row: Any) -> dict[str, Any]:
    return {
        "orderHeader": {
            "orderType": "Normal",
            "orderNumberExternal": external,
            "customerNumber": "WEB",
        },
        "orderRows": [
            {
                "product": {"productNumber": product},
                "salesData": {"quantity": 1},
                "warehouse": "MainWarehouse",
                **row,
            }
        ],
    }


def test_routes_are_case_insensitive_and_every_response_has_request_id_and_rate_headers(
    api: httpx2.Client, sim: RunningSimulator
) -> None:
    created = api.post("/CustomerOrders", json=_order_body("CI-1"))
    assert created.status_code == 201
    number = created.json()["orderNumber"]
    for path in (
        f"/CustomerOrders/{number}",
        f"/customerorders/{number}",
        f"/CUSTOMERORDERS/{number}",
    ):
        response = api.get(path)
        assert response.status_code == 200 and response.json()["orderNumber"] == number
    for response in (
        api.get("/Products/NOPE"),
        api.get("/NoSuchThing"),
        httpx2.get(sim.base_url + "/Products"),
    ):
        assert response.headers["x-request-id"]
        assert {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"} <= set(
            response.headers
        )
    missing = api.get("/Products/NOPE")
    assert missing.status_code == 404 and missing.json()["errorType"] == "Validation"


def test_auth_is_required(sim: RunningSimulator) -> None:
    assert httpx2.get(sim.base_url + "/Products").status_code == 401
    wrong = httpx2.get(sim.base_url + "/Products", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["code"] == "Unauthorized"


def test_order_list_detail_and_filters(api: httpx2.Client, sim: RunningSimulator) -> None:
    number = api.post("/CustomerOrders", json=_order_body("F-1")).json()["orderNumber"]
    light = api.get("/CustomerOrders", params={"orderNumberExternal": "F-1"}).json()
    assert light["items"] == [
        {
            "orderNumber": number,
            "orderNumberExternal": "F-1",
            "status": "Registered",
            "changedDate": light["items"][0]["changedDate"],
        }
    ]
    httpx2.post(f"{sim.admin_url}/orders/{number}/reserve").raise_for_status()
    httpx2.post(
        f"{sim.admin_url}/orders/{number}/pick", json={"carrier": "DHL", "trackingNumber": "JD0001"}
    ).raise_for_status()
    reserved = api.get("/CustomerOrders", params={"status": "Picked"}).json()["items"]
    assert number in {o["orderNumber"] for o in reserved}
    assert all(o["status"] == "Picked" for o in reserved)
    detail = api.get(f"/CustomerOrders/{number}").json()
    assert detail["status"] == "Picked" and detail["orderHeader"]["status"] == "Picked"
    assert (
        detail["shipments"][0]["trackingNumber"] == "JD0001"
        and detail["shipments"][0]["trackingUrl"]
    )
    assert detail["orderRows"][0]["deliveryData"]["quantity"] == 1
    # Any change after Reserved is a business conflict.
    late = api.put(
        f"/CustomerOrders/{number}",
        json={
            "orderRows": [
                {"position": 10, "rowOperation": "Inactive", "warehouse": "MainWarehouse"}
            ]
        },
    )
    assert late.status_code == 409 and late.json()["errorType"] == "Business"
    duplicate = api.post("/CustomerOrders", json=_order_body("F-1"))
    assert (
        duplicate.status_code == 409 and duplicate.json()["code"] == "DuplicateOrderNumberExternal"
    )
    invalid = api.post("/CustomerOrders", json=_order_body("F-2", product="NOPE"))
    assert invalid.status_code == 422
    assert invalid.json()["details"][0]["field"] == "orderRows[0].product.productNumber"


def test_the_simulator_assigns_order_numbers_and_keeps_one_everywhere(
    api: httpx2.Client,
) -> None:
    body = _order_body("NUM-1")
    body["orderHeader"]["orderNumber"] = "SHOP-999"
    created = api.post("/CustomerOrders", json=body)
    assert created.status_code == 201, created.text
    number = created.json()["orderNumber"]
    assert number != "SHOP-999"
    assert created.json()["orderHeader"]["orderNumber"] == number
    changed = api.put(
        f"/CustomerOrders/{number}", json={"orderHeader": {"orderNumber": "SHOP-1000"}}
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["orderNumber"] == number
    assert changed.json()["orderHeader"]["orderNumber"] == number
    detail = api.get(f"/CustomerOrders/{number}").json()
    assert detail["orderNumber"] == detail["orderHeader"]["orderNumber"] == number


def test_availability_filters_and_arithmetic(api: httpx2.Client, sim: RunningSimulator) -> None:
    httpx2.post(
        f"{sim.admin_url}/stock",
        json={"productNumber": "P000010", "warehouse": "TEST", "physical": 40},
    ).raise_for_status()
    body = api.get(
        "/ProductAvailability",
        params={"productNumbers": "P000010,P000011", "warehouse": "TEST,MainWarehouse"},
    ).json()
    items = {(i["productNumber"], i["warehouse"]): i for i in body["items"]}
    assert items[("P000010", "TEST")]["physicalBalance"] == 40
    assert all(
        i["availableBalance"] == i["physicalBalance"] - i["reservedQuantity"] for i in body["items"]
    )
    assert {w for _, w in items} <= {"TEST", "MainWarehouse"}
    only = api.get("/ProductAvailability", params={"warehouse": "TEST", "pageSize": 500}).json()
    assert only["items"] and {i["warehouse"] for i in only["items"]} == {"TEST"}
    assert api.get("/ProductAvailability", params={"warehouse": "Nowhere"}).status_code == 422


def test_prices_need_a_customer_and_products_and_customers_list(api: httpx2.Client) -> None:
    missing = api.get("/ProductPrices")
    assert missing.status_code == 400 and missing.json()["details"][0]["field"] == "customerNumber"
    prices = api.get(
        "/ProductPrices", params={"customerNumber": "10001", "productNumbers": "P000001,P000002"}
    )
    assert [p["productNumber"] for p in prices.json()["items"]] == sorted(
        ["P000001", "P000002"],
        key=lambda n: next(
            i["changedDate"] for i in prices.json()["items"] if i["productNumber"] == n
        ),
    )
    for p in prices.json()["items"]:
        assert p["unitPrice"] <= p["listPrice"]
    products = api.get("/Products", params={"pageSize": 500}).json()
    assert products["totalCount"] == 120 and len(products["items"]) == 120
    customers = api.get("/Customers").json()
    assert customers["totalCount"] == 16  # 15 generated + WEB
    created = api.post(
        "/Customers", json={"name": "Ny Kund AB", "organizationNumber": "556036-0793"}
    )
    assert created.status_code == 201
    number = created.json()["customerNumber"]
    assert api.get(f"/customers/{number}").json()["organizationNumber"] == "556036-0793"
    assert (
        api.post(
            "/Customers", json={"name": "Again AB", "organizationNumber": "5560360793"}
        ).status_code
        == 409
    )


def _change_mid_walk(state: Any, round_no: int) -> None:
    # Records early in the order move to the end; a bulk change makes a tie group of one timestamp.
    with state.operation():
        for number in ("P000003", "P000050", "P000119", "P000020", "P000021", "P000022"):
            state.update_product(number, {"productName": f"ändrad {round_no} {number}"})


def test_page_numbers_alone_skip_records_that_shift_under_the_reader(
    api: httpx2.Client, sim: RunningSimulator
) -> None:
    """Why clients must re-anchor: offset paging over a change-ordered list loses records that
    shift."""
    seen: set[str] = set()
    page = 1
    while True:
        body = api.get("/Products", params={"pageSize": 25, "page": page}).json()
        seen.update(i["productNumber"] for i in body["items"])
        if page == 2:
            _change_mid_walk(sim.state, 0)
        if page >= body["totalPages"]:
            break
        page += 1
    assert len(seen) < len(sim.state.products)


def test_paging_while_records_change_loses_nothing_with_an_overlap(
    api: httpx2.Client, sim: RunningSimulator
) -> None:
    """Re-anchored walk: page 1 from the last change date seen (inclusive), dedupe, then re-read
    with an overlap."""
    from datetime import datetime, timedelta

    state = sim.state
    latest: dict[str, tuple[datetime, str]] = {}
    seen: set[tuple[str, str]] = set()
    requests = 0

    def walk(since: datetime | None) -> datetime | None:
        nonlocal requests
        anchor, page, high = since, 1, since
        while True:
            params: dict[str, Any] = {"pageSize": 25, "page": page}
            if anchor is not None:
                params["changedSince"] = anchor.isoformat()
            items = api.get("/Products", params=params).json()["items"]
            requests += 1
            for item in items:
                changed = datetime.fromisoformat(item["changedDate"])
                if (item["productNumber"], item["changedDate"]) not in seen:
                    seen.add((item["productNumber"], item["changedDate"]))
                    if (
                        item["productNumber"] not in latest
                        or latest[item["productNumber"]][0] <= changed
                    ):
                        latest[item["productNumber"]] = (changed, item["productName"])
                high = changed if high is None else max(high, changed)
            if requests in (2, 5):
                _change_mid_walk(state, requests)
            if len(items) < 25:
                return high
            last = datetime.fromisoformat(items[-1]["changedDate"])
            if anchor is not None and last == anchor:
                page += 1  # a whole page of one timestamp: walk the tie group by page number
            else:
                anchor, page = last, 1

    high_water = walk(None)
    assert high_water is not None
    walk(high_water - timedelta(minutes=5))  # the next sweep re-reads an overlap window
    truth = {p.product_number: p.product_name for p in state.products.values()}
    assert {k: v[1] for k, v in latest.items()} == truth


def test_headers_envelope_and_a_bare_key_dialect() -> None:
    cfg = SimulatorConfig(
        products=30,
        customers=2,
        envelope="headers",
        auth_header="X-Api-Key",
        auth_scheme="",
        token="k",
        page_param="p",
        page_size_param="n",
        changed_since_param="since",
        default_page_size=7,
        max_page_size=10,
    )
    with (
        run_in_thread(cfg) as sim,
        httpx2.Client(base_url=sim.base_url, headers={"X-Api-Key": "k"}) as client,
    ):
        first = client.get("/Products")
        assert isinstance(first.json(), list) and len(first.json()) == 7
        assert (
            first.headers["x-total-count"],
            first.headers["x-total-pages"],
            first.headers["x-page"],
            first.headers["x-page-size"],
        ) == ("30", "5", "1", "7")
        capped = client.get("/Products", params={"p": 3, "n": 50})
        assert capped.headers["x-page-size"] == "10" and len(capped.json()) == 10
        future = client.get("/Products", params={"since": "2999-01-01T00:00:00+01:00"})
        assert future.json() == [] and future.headers["x-total-count"] == "0"
        assert client.get("/Products", headers={"X-Api-Key": "wrong"}).status_code == 401


def test_429_after_the_budget_with_headers_and_the_budget_returns() -> None:
    cfg = SimulatorConfig(
        products=5,
        customers=1,
        frozen_clock=True,
        rate_limit_standard=RateLimit(limit=3, period_seconds=30),
        rate_limit_heavy=RateLimit(limit=2, period_seconds=60),
    )
    with (
        run_in_thread(cfg) as sim,
        httpx2.Client(
            base_url=sim.base_url, headers={"Authorization": f"Bearer {sim.token}"}
        ) as client,
    ):
        remaining = [
            client.get("/Products/P000001").headers["x-ratelimit-remaining"] for _ in range(3)
        ]
        assert remaining == ["2", "1", "0"]
        refused = client.get("/Products/P000001")
        assert refused.status_code == 429
        assert (
            refused.headers["x-ratelimit-limit"] == "3"
            and refused.headers["x-ratelimit-remaining"] == "0"
        )
        assert (
            refused.headers["retry-after"] == "10" and refused.headers["x-ratelimit-reset"] == "30"
        )
        # Groups are separate budgets.
        assert client.get("/Products").status_code == 200
        sim.state.clock.advance(10)
        assert client.get("/Products/P000001").status_code == 200
        counters = httpx2.get(sim.admin_url + "/counters").json()
        assert counters["groups"] == {"standard": 5, "heavy": 1, "write": 0}
        assert counters["statuses"]["429"] == 1


def test_fault_switches_are_observable(api: httpx2.Client, sim: RunningSimulator) -> None:
    admin = sim.admin_url
    httpx2.patch(
        admin + "/faults", json={"errorRates": {"GET /Products/{productNumber}": 1.0}}
    ).raise_for_status()
    failing = api.get("/Products/P000001")
    assert (
        failing.status_code in (500, 502, 503, 504) and failing.json()["errorType"] == "Technical"
    )
    assert api.get("/Products").status_code == 200  # only that endpoint
    httpx2.patch(
        admin + "/faults", json={"errorRates": {}, "throttleStorm": 1.0}
    ).raise_for_status()
    storm = api.get("/Products")
    assert storm.status_code == 429 and "retry-after" in storm.headers
    httpx2.patch(
        admin + "/faults", json={"throttle_storm": 0, "extraFields": True}
    ).raise_for_status()
    extra = api.get("/Products", params={"pageSize": 1}).json()
    assert extra[EXTRA_FIELD] and extra["items"][0][EXTRA_FIELD]
    assert list(extra["items"][0])[-1] == EXTRA_FIELD  # appended at the end of the model
    httpx2.patch(
        admin + "/faults", json={"extraFields": False, "latencySeconds": 0.2}
    ).raise_for_status()
    began = time.perf_counter()
    api.get("/Products/P000001")
    assert time.perf_counter() - began >= 0.2
    httpx2.patch(admin + "/faults", json={"latencySeconds": 0}).raise_for_status()
    httpx2.post(admin + "/outage", json={"mode": "503"}).raise_for_status()
    down = api.get("/Products")
    assert down.status_code == 503 and down.json()["errorType"] == "Technical"
    assert down.headers["x-request-id"] and down.headers["x-ratelimit-limit"]
    httpx2.delete(admin + "/outage").raise_for_status()
    httpx2.post(admin + "/outage", json={"mode": "drop", "seconds": 30}).raise_for_status()
    with pytest.raises(httpx2.TransportError):
        api.get("/Products")
    httpx2.delete(admin + "/outage").raise_for_status()
    assert api.get("/Products").status_code == 200
    # A write that succeeds but whose answer is lost: the client sees a dropped connection, Extend
    # has the order.
    httpx2.patch(admin + "/faults", json={"lostResponseRate": 1.0}).raise_for_status()
    with pytest.raises(httpx2.TransportError):
        api.post("/CustomerOrders", json=_order_body("LOST-1"))
    httpx2.patch(admin + "/faults", json={"lostResponseRate": 0.0}).raise_for_status()
    found = api.get("/CustomerOrders", params={"orderNumberExternal": "LOST-1"}).json()
    assert found["totalCount"] == 1
    assert httpx2.patch(admin + "/faults", json={"noSuchSwitch": 1}).status_code == 400


def test_outage_window_ends_by_itself(sim: RunningSimulator, api: httpx2.Client) -> None:
    httpx2.post(sim.admin_url + "/outage", json={"seconds": 60}).raise_for_status()
    assert api.get("/Products").status_code == 503
    sim.state.clock.advance(61)
    assert api.get("/Products").status_code == 200


def test_true_state_and_counters_reset(sim: RunningSimulator) -> None:
    state = httpx2.get(sim.admin_url + "/state").json()
    assert state["counts"]["products"] == 120
    balances = httpx2.get(sim.admin_url + "/state/balances").json()
    assert len(balances) == len(sim.state.balances)
    assert httpx2.post(sim.admin_url + "/counters/reset").json()["total"] == 0
