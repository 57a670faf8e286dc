"""The read API (/v1): answers from the local copy with freshness, paging and clear 4xx."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from extend_connector.api import shop
from extend_connector.api.app import create_app
from extend_connector.extend.errors import TechnicalFailure
from extend_connector.flows import context
from extend_connector.flows.freshness import freshness, oldest, reachability
from extend_connector.settings import ExtendSettings, Settings, StoreSettings, WebshopSettings
from extend_connector.store.database import Database
from extend_connector.store.migrate import migrate
from extend_connector.store.models import BalanceRow, CustomerRow, PriceRow, ProductRow
from extend_connector.webshop import RecordingWebshop

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
AUTH = {"authorization": "Bearer shop-token"}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        store=StoreSettings(database_url=f"sqlite:///{tmp_path / 'c.db'}"),
        extend=ExtendSettings(warehouses=["MainWarehouse", "GreenWarehouse"]),
        webshop=WebshopSettings(stale_after_seconds=60),
    )
    migrate(settings.store.url)
    db = Database(settings.store.url)
    with db.write() as s:
        s.add_all(
            [
                BalanceRow(
                    product_number="A",
                    warehouse="MainWarehouse",
                    available=Decimal(5),
                    physical=Decimal(6),
                    reserved=Decimal(1),
                    extend_changed_at=NOW,
                    confirmed_at=NOW - timedelta(seconds=10),
                ),
                BalanceRow(
                    product_number="A",
                    warehouse="GreenWarehouse",
                    available=Decimal("2.5"),
                    confirmed_at=NOW - timedelta(seconds=30),
                ),
                BalanceRow(
                    product_number="B",
                    warehouse="MainWarehouse",
                    available=Decimal(1),
                    confirmed_at=NOW - timedelta(seconds=120),
                ),
                BalanceRow(
                    product_number="C", warehouse="TEST", available=Decimal(9), confirmed_at=NOW
                ),
                BalanceRow(
                    product_number="D",
                    warehouse="MainWarehouse",
                    available=Decimal(3),
                    confirmed_at=NOW,
                    notified_available=Decimal(4),
                    notified_at=NOW + timedelta(seconds=1),
                ),
                ProductRow(
                    product_number="A",
                    name="Apple",
                    phase_out=False,
                    extend_changed_at=NOW,
                    confirmed_at=NOW,
                    document={},
                ),
                ProductRow(
                    product_number="B",
                    name="Banana",
                    phase_out=True,
                    extend_changed_at=NOW - timedelta(days=2),
                    confirmed_at=NOW,
                    document={},
                ),
                PriceRow(
                    customer_number="WEB",
                    product_number="A",
                    unit_price=Decimal("10.50"),
                    currency="SEK",
                    confirmed_at=NOW,
                ),
                PriceRow(
                    customer_number="K1",
                    product_number="A",
                    unit_price=Decimal("9.00"),
                    currency="SEK",
                    confirmed_at=NOW,
                ),
                CustomerRow(
                    customer_number="K1",
                    shop_ref="shop-7",
                    name="Kund AB",
                    document={},
                    confirmed_at=NOW,
                ),
            ]
        )
    ctx = context.FlowContext(
        settings=settings,
        db=db,
        engine=None,
        webshop=RecordingWebshop(),  # type: ignore[arg-type]
        clock=lambda: NOW + timedelta(seconds=2),
    )
    context.install(ctx)
    reachability.reset()
    try:
        with TestClient(
            create_app(routers=[shop.router], state={"flow_context": ctx})
        ) as test_client:
            yield test_client
    finally:
        reachability.reset()
        context.install(None)
        db.dispose()


def get(client: TestClient, path: str, **params: Any) -> Any:
    response = client.get(path, params=params, headers=AUTH)
    return response


def test_the_token_is_required(client: TestClient) -> None:
    for path in ("/v1/stock", "/v1/products", "/v1/products/A", "/v1/prices", "/v1/customers/K1"):
        response = client.get(path)
        assert response.status_code == 401
        assert response.json()["error"] == "unauthorized"


def test_stock_sums_sell_from_warehouses_with_freshness(client: TestClient) -> None:
    body = get(client, "/v1/stock", productNumbers="A,B,ZZZ").json()
    assert body["totalCount"] == 3 and body["extendReachable"] is True
    a, b, zzz = body["items"]
    assert a["productNumber"] == "A" and a["available"] == 7.5
    assert [w["warehouse"] for w in a["warehouses"]] == ["MainWarehouse", "GreenWarehouse"]
    assert a["warehouses"][0]["physical"] == 6 and a["warehouses"][0]["reserved"] == 1
    # The product's confirmation is its oldest warehouse's.
    assert a["freshness"]["ageSeconds"] == 32 and a["freshness"]["stale"] is False
    assert b["freshness"]["stale"] is True  # 122 s > 60 s
    assert b["warehouses"][1] == {
        **b["warehouses"][1],
        "warehouse": "GreenWarehouse",
        "available": 0,
    }
    assert zzz["available"] == 0 and zzz["freshness"] == {
        "confirmedAt": None,
        "ageSeconds": None,
        "stale": True,
    }


def test_stock_lists_every_product_of_the_sell_from_warehouses_paged(client: TestClient) -> None:
    first = get(client, "/v1/stock", pageSize=2).json()
    assert (
        first["totalCount"] == 3
    )  # A, B, D (C is only in a warehouse the shop does not sell from)
    assert [i["productNumber"] for i in first["items"]] == ["A", "B"]
    second = get(client, "/v1/stock", pageSize=2, page=2).json()
    assert [i["productNumber"] for i in second["items"]] == ["D"]
    one = get(client, "/v1/stock", warehouse="GreenWarehouse").json()
    assert [i["productNumber"] for i in one["items"]] == ["A"] and one["items"][0][
        "available"
    ] == 2.5


def test_an_unconfirmed_notified_value_is_shown_as_such(client: TestClient) -> None:
    item = get(client, "/v1/stock", productNumbers="D").json()["items"][0]
    assert item["warehouses"][0]["available"] == 4 and item["warehouses"][0]["confirmed"] is False
    assert item["freshness"]["stale"] is True


def test_everything_is_stale_while_extend_is_unreachable(client: TestClient) -> None:
    reachability.failed(
        TechnicalFailure(
            "connection refused",
            operation="list_availability",
            method="GET",
            url="http://extend/ProductAvailability",
        )
    )
    body = get(client, "/v1/stock", productNumbers="A").json()
    assert body["extendReachable"] is False and body["items"][0]["freshness"]["stale"] is True
    assert body["items"][0]["available"] == 7.5  # still answers, last values
    assert get(client, "/v1/products/A").json()["freshness"]["stale"] is True
    reachability.succeeded()
    assert (
        get(client, "/v1/stock", productNumbers="A").json()["items"][0]["freshness"]["stale"]
        is False
    )


@pytest.mark.parametrize(
    ("path", "params", "status", "error"),
    [
        ("/v1/stock", {"warehouse": "TEST"}, 400, "unknown_warehouse"),
        (
            "/v1/stock",
            {"productNumbers": ",".join(f"P{i}" for i in range(501))},
            400,
            "too_many_product_numbers",
        ),
        ("/v1/stock", {"productNumbers": " , "}, 400, "invalid_parameter"),
        ("/v1/stock", {"productNumbers": "A\x00"}, 400, "invalid_parameter"),
        ("/v1/stock", {"pageSize": 0}, 422, "invalid_request"),
        ("/v1/stock", {"pageSize": 501}, 422, "invalid_request"),
        ("/v1/stock", {"page": "x"}, 422, "invalid_request"),
        ("/v1/products", {"changedSince": "2025-01-01T00:00:00"}, 400, "invalid_parameter"),
        ("/v1/products", {"changedSince": "yesterday"}, 422, "invalid_request"),
        ("/v1/products/NOPE", {}, 404, "not_found"),
        ("/v1/customers/NOPE", {}, 404, "not_found"),
    ],
)
def test_bad_parameters_get_a_clear_4xx(
    client: TestClient, path: str, params: dict[str, Any], status: int, error: str
) -> None:
    response = get(client, path, **params)
    assert response.status_code == status, response.text
    assert response.json()["error"] == error and response.json()["message"]


def test_products(client: TestClient) -> None:
    body = get(client, "/v1/products").json()
    assert [p["productNumber"] for p in body["items"]] == ["A", "B"] and body["totalCount"] == 2
    assert get(client, "/v1/products", includePhasedOut="false").json()["totalCount"] == 1
    assert (
        get(client, "/v1/products", changedSince="2025-03-01T00:00:00+00:00").json()["totalCount"]
        == 1
    )
    one = get(client, "/v1/products/B").json()
    assert (
        one["name"] == "Banana" and one["phaseOut"] is True and one["freshness"]["ageSeconds"] == 2
    )


def test_prices_default_to_the_anonymous_customer(client: TestClient) -> None:
    web = get(client, "/v1/prices").json()
    assert [(p["customerNumber"], p["unitPrice"]) for p in web["items"]] == [("WEB", "10.50")]
    k1 = get(client, "/v1/prices", customerNumber="K1", productNumbers="A,B").json()
    assert [(p["productNumber"], p["unitPrice"]) for p in k1["items"]] == [("A", "9.00")]


def test_customer_by_number_or_shop_reference(client: TestClient) -> None:
    assert get(client, "/v1/customers/K1").json()["name"] == "Kund AB"
    assert get(client, "/v1/customers/shop-7").json()["customerNumber"] == "K1"


def test_openapi_documents_the_read_api(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/v1/stock",
        "/v1/products",
        "/v1/products/{productNumber}",
        "/v1/prices",
        "/v1/customers/{customerNumber}",
    ):
        assert "get" in paths[path]
        assert "200" in paths[path]["get"]["responses"]


def test_freshness_rules() -> None:
    assert freshness(None, now=NOW, stale_after_seconds=5, reachable=True).stale is True
    assert (
        freshness(NOW, now=NOW + timedelta(seconds=5), stale_after_seconds=5, reachable=True).stale
        is False
    )
    assert (
        freshness(NOW, now=NOW + timedelta(seconds=6), stale_after_seconds=5, reachable=True).stale
        is True
    )
    assert freshness(NOW, now=NOW, stale_after_seconds=5, reachable=False).stale is True
    assert oldest([NOW, NOW - timedelta(seconds=1)]) == NOW - timedelta(seconds=1)
    assert oldest([NOW, None]) is None


def test_the_stock_read_and_the_stock_pushed_are_one_figure(client: TestClient) -> None:
    """`GET /v1/stock` and the `stock.changed` event compute the figure with one function."""
    from extend_connector.flows import balances

    settings = Settings(extend=ExtendSettings(warehouses=["MainWarehouse", "GreenWarehouse"]))
    stored = {
        "A": {"MainWarehouse": Decimal(5), "GreenWarehouse": Decimal("2.5")},
        "B": {"MainWarehouse": Decimal(1)},
        "Z": {},
    }
    items = {
        i["productNumber"]: i
        for i in get(client, "/v1/stock", productNumbers="A,B,Z").json()["items"]
    }
    for number, available in stored.items():
        pushed = balances.shop_figure(settings, number, available)
        assert items[number]["available"] == pushed["available"]
        figure = balances.stock_figure(number, ["MainWarehouse", "GreenWarehouse"], available)
        assert [(w["warehouse"], w["available"]) for w in items[number]["warehouses"]] == [
            (w, float(v)) for w, v in figure.warehouses
        ]
