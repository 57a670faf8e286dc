"""The simulator's pure rules: Extend's signature vector, the best-price table, generated data,
paging index."""

from __future__ import annotations

import json

import pytest

from extend_connector.simulator import SimulatorConfig, render_body, sign
from extend_connector.simulator.generator import ean13, generate, luhn_digit
from extend_connector.simulator.index import ChangeIndex
from extend_connector.simulator.pricing import CampaignOffer, best_price


def test_signature_reproduces_extends_documented_vector() -> None:
    # Extend's Webhooks page: secret `secret123`, body {'test':'test2'} (S3, S3v).
    assert sign("secret123", b"{'test':'test2'}") == (
        "sha256=25FB6994568A75CD233E04BA1C653AF1BF476041CC543AF04F82CAAC482C201A"
    )


def test_body_is_pretty_printed_and_in_extends_shape() -> None:
    body = render_body(
        delivery_id="a" * 32,
        attempt=2,
        notification_id="0f8fad5b-d9cb-469f-a165-70867728950e",
        notifications=[{"Action": "ProductCreated", "Details": {"ProductNumber": "P1"}}],
    )
    text = body.decode("utf-8")
    assert '\n  "Id": ' in text  # indented, as the .NET sender does
    parsed = json.loads(body)
    assert list(parsed) == ["Id", "Attempt", "Properties", "Notifications"]
    assert parsed["Attempt"] == 2
    assert parsed["Properties"] == {"NotificationId": "0f8fad5b-d9cb-469f-a165-70867728950e"}


CAMPAIGN = CampaignOffer(code="K1", price=70.0, valid_from_ms=0, valid_to_ms=10)

# (list price, price-list price, discount %, campaigns, expected unit price, expected source)
BEST_PRICE_TABLE = [
    (100.0, None, None, [], 100.0, "ListPrice"),
    (100.0, 90.0, None, [], 90.0, "PriceList"),
    (100.0, 90.0, 15.0, [], 85.0, "Discount"),  # the discount applies to the list price
    (100.0, 80.0, 15.0, [], 80.0, "PriceList"),  # no stacking: 80 is not discounted further
    (100.0, 80.0, 15.0, [CAMPAIGN], 70.0, "Campaign"),
    (100.0, 60.0, 15.0, [CAMPAIGN], 60.0, "PriceList"),
    (100.0, 90.0, 10.0, [], 90.0, "PriceList"),  # tie: the less special source stays
    (100.0, None, 0.0, [], 100.0, "ListPrice"),  # 0 % ties with the list price
    (
        100.0,
        None,
        None,
        [CAMPAIGN, CampaignOffer(code="K2", price=65.0, valid_from_ms=0, valid_to_ms=10)],
        65.0,
        "Campaign",
    ),
    (19.99, None, 12.5, [], 17.49, "Discount"),  # 17.49125 rounds half-up to 2 decimals
    (150.0, 200.0, None, [], 150.0, "ListPrice"),  # a price list above list price never wins
]


@pytest.mark.parametrize(
    ("list_price", "pl_price", "percent", "campaigns", "expected", "source"), BEST_PRICE_TABLE
)
def test_best_price_rules(
    list_price: float,
    pl_price: float | None,
    percent: float | None,
    campaigns: list[CampaignOffer],
    expected: float,
    source: str,
) -> None:
    quote = best_price(
        list_price=list_price,
        price_list_price=pl_price,
        discount_percent=percent,
        campaigns=campaigns,
    )
    assert (quote.unit_price, quote.source) == (expected, source)


def test_ean13_and_organisation_number_check_digits() -> None:
    assert ean13("400638133393") == "4006381333931"  # a published EAN-13 example
    assert luhn_digit("556036079") == "3"  # a valid Swedish organisation number 556036-0793


def _data(seed: int) -> object:
    return generate(
        seed=seed,
        products=300,
        customers=40,
        b2b_share=0.5,
        warehouses=("A", "B"),
        price_lists=2,
        discount_lists=2,
        campaigns=3,
        start_ms=1_700_000_000_000,
    )


def test_generator_is_deterministic_and_valid() -> None:
    first, again, other = _data(5), _data(5), _data(6)
    assert first == again
    assert first != other
    ds = generate(
        seed=1,
        products=2000,
        customers=200,
        b2b_share=0.5,
        warehouses=("A", "B"),
        price_lists=2,
        discount_lists=2,
        campaigns=3,
        start_ms=1_700_000_000_000,
    )
    assert {p.vat_percent for p in ds.products} == {25.0, 12.0, 6.0}
    for p in ds.products:
        assert len(p.ean) == 13 and ean13(p.ean[:12]) == p.ean
    b2b = [c for c in ds.customers if c.customer_type == "B2B"]
    assert b2b and all(c.organization_number and c.salesperson and c.customer_group for c in b2b)
    for c in b2b:
        digits = c.organization_number.replace("-", "")  # type: ignore[union-attr]
        assert luhn_digit(digits[:9]) == digits[9]
    assert any(c.customer_type == "B2C" for c in ds.customers)
    assert ds.customers[0].customer_number == "WEB"


def test_change_index_pages_in_change_order_and_moves_changed_keys_to_the_end() -> None:
    ix = ChangeIndex()
    ix.load([(10, "b"), (10, "a"), (20, "c")])
    assert ix.query(None, 0, 10) == (3, ["a", "b", "c"])  # ties ordered by key
    assert ix.query(10, 1, 1) == (3, ["b"])  # inclusive since
    ix.touch("a", 30)
    assert ix.query(20, 0, 10) == (2, ["c", "a"])
    assert ix.query(None, 0, 10, keep=lambda k: k != "c") == (2, ["b", "a"])


def test_config_refuses_impossible_values() -> None:
    with pytest.raises(ValueError):
        SimulatorConfig(default_page_size=600, max_page_size=500)
    with pytest.raises(ValueError):
        SimulatorConfig(time_scale=0)


def test_fast_pretty_printer_matches_the_standard_library_byte_for_byte() -> None:
    from extend_connector.simulator.webhooks import _pretty

    value = {
        "Id": "ab",
        "Attempt": 3,
        "Properties": {"NotificationId": "x"},
        "Notifications": [
            {"Action": "A", "Details": {"ProductNumber": 'Ö"\\ \n\t', "Quantity": "5 324"}},
            {"Action": "B", "Details": {}},
        ],
        "Empty": [],
        "None": None,
        "Float": 1.5,
        "T": True,
    }
    assert _pretty(value, "") == json.dumps(value, indent=2, ensure_ascii=False)
