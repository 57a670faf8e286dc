"""Webhook signature, envelope parsing and Swedish number normalisation (extend/webhooks.py)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from extend_connector.extend.webhooks import (
    AvailableBalanceChanged,
    CustomerNotification,
    InvalidNumber,
    MalformedWebhook,
    OrderNotification,
    ProductNotification,
    PurchaseNotification,
    SignatureInvalid,
    UnknownNotification,
    normalise_number,
    parse_envelope,
    sign,
    verify_and_parse,
    verify_signature,
)

DOC_SECRET = "secret123"
DOC_BODY = b"{'test':'test2'}"
DOC_SIGNATURE = "sha256=25FB6994568A75CD233E04BA1C653AF1BF476041CC543AF04F82CAAC482C201A"


def test_documented_signature_vector() -> None:
    assert sign(DOC_SECRET, DOC_BODY) == DOC_SIGNATURE
    verify_signature(DOC_BODY, DOC_SIGNATURE, DOC_SECRET)
    verify_signature(DOC_BODY, DOC_SIGNATURE.lower(), DOC_SECRET)
    verify_signature(DOC_BODY, "SHA256=" + DOC_SIGNATURE.split("=")[1].lower() + " ", DOC_SECRET)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "sha256=",
        "sha1=25FB6994568A75CD233E04BA1C653AF1BF476041CC543AF04F82CAAC482C201A",
        "25FB6994568A75CD233E04BA1C653AF1BF476041CC543AF04F82CAAC482C201A",
        "sha256=25FB6994568A75CD233E04BA1C653AF1BF476041CC543AF04F82CAAC482C201B",
        "sha256=zzFB6994568A75CD233E04BA1C653AF1BF476041CC543AF04F82CAAC482C201A",
    ],
)
def test_bad_signature_headers_are_refused(header: str | None) -> None:
    with pytest.raises(SignatureInvalid):
        verify_signature(DOC_BODY, header, DOC_SECRET)


def test_wrong_secret_and_reserialised_body_are_refused() -> None:
    with pytest.raises(SignatureInvalid):
        verify_signature(DOC_BODY, DOC_SIGNATURE, "secret124")
    pretty = json.dumps({"Id": "a" * 32, "Attempt": 1, "Notifications": []}, indent=2).encode()
    header = sign("s", pretty)
    verify_signature(pretty, header, "s")
    compact = json.dumps(json.loads(pretty), separators=(",", ":")).encode()
    with pytest.raises(SignatureInvalid):
        verify_signature(compact, header, "s")


def test_bad_signature_is_refused_before_parsing() -> None:
    # Not JSON at all: a parser running first would raise MalformedWebhook instead.
    with pytest.raises(SignatureInvalid):
        verify_and_parse(b"\xff not json", "sha256=" + "0" * 64, "s")


@given(
    body=st.binary(max_size=300),
    secret=st.text(min_size=1, max_size=30),
    flip=st.integers(min_value=0, max_value=10_000),
)
def test_any_changed_byte_breaks_the_signature(body: bytes, secret: str, flip: int) -> None:
    header = sign(secret, body)
    verify_signature(body, header, secret)
    verify_signature(body, header.lower(), secret)
    if body:
        i = flip % len(body)
        tampered = body[:i] + bytes([body[i] ^ 0x01]) + body[i + 1 :]
        with pytest.raises(SignatureInvalid):
            verify_signature(tampered, header, secret)


# --- numbers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("5 324", "5324"),
        ("5\u00a0324", "5324"),
        ("5\u202f324", "5324"),
        ("12,5", "12.5"),
        ("1 234 567,25", "1234567.25"),
        ("1.234,5", "1234.5"),
        ("1,234.5", "1234.5"),
        ("-3", "-3"),
        ("\u22123,5", "-3.5"),
        (" 7 ", "7"),
        ("0,0", "0.0"),
        ("41.0", "41.0"),
    ],
)
def test_swedish_numbers(text: str, value: str) -> None:
    assert normalise_number(text) == Decimal(value)


@pytest.mark.parametrize("text", ["", "abc", "1,2,3", "1..2", "--1", "12 kr", ","])
def test_not_numbers(text: str) -> None:
    with pytest.raises(InvalidNumber):
        normalise_number(text)


def _swedish(value: Decimal, group: str, decimal_comma: bool) -> str:
    sign_ = "-" if value < 0 else ""
    text = f"{abs(value):f}"
    whole, _, frac = text.partition(".")
    groups = []
    while whole:
        groups.insert(0, whole[-3:])
        whole = whole[:-3]
    out = group.join(groups)
    if frac:
        out += ("," if decimal_comma else ".") + frac
    return sign_ + out


@given(
    value=st.decimals(
        min_value=-(10**9), max_value=10**9, places=3, allow_nan=False, allow_infinity=False
    ),
    group=st.sampled_from(["", " ", "\u00a0", "\u202f"]),
    decimal_comma=st.booleans(),
)
def test_normalisation_round_trips_swedish_formatting(
    value: Decimal, group: str, decimal_comma: bool
) -> None:
    assert normalise_number(_swedish(value, group, decimal_comma)) == value


# --- envelope ------------------------------------------------------------------------------------


def _body(notifications: list[dict[str, object]], **extra: object) -> bytes:
    data = {
        "Id": "0123456789abcdef0123456789abcdef",
        "Attempt": 2,
        "Properties": {"NotificationId": "01234567-89ab-cdef-0123-456789abcdef"},
        "Notifications": notifications,
        **extra,
    }
    return json.dumps(data, indent=2).encode()


def test_parse_typed_notifications_and_keys() -> None:
    raw = _body(
        [
            {
                "Action": "OrderPicked",
                "Details": {
                    "OrderNumber": "1001",
                    "OrderNumberExternal": "W-1",
                    "Warehouse": "MainWarehouse",
                },
            },
            {
                "Action": "AvailableBalanceChanged",
                "Details": [
                    {
                        "ProductNumber": "P1",
                        "Warehouse": "MainWarehouse",
                        "AvailableBalance": "5 324",
                    },
                    {"ProductNumber": "P2", "Warehouse": "TEST", "AvailableBalance": "12,5"},
                ],
            },
            {"Action": "ProductCreated", "Details": {"ProductNumber": "P3"}},
            {"action": "customerChanged", "details": {"customernumber": "C9"}},
            {"Action": "CustomerChanged", "Details": {"customerNumber": "C9"}},
            {
                "Action": "PurchasePartiallyDelivered",
                "Details": [
                    {
                        "OrderNumber": "RP-15",
                        "ProductNumber": "P1",
                        "Warehouse": "W",
                        "Quantity": "5 324",
                        "Position": "10",
                        "Unit": "ST",
                    },
                    {
                        "OrderNumber": "RP-15",
                        "ProductNumber": "P2",
                        "Warehouse": "W",
                        "Quantity": "2",
                        "Position": "20",
                        "Unit": "ST",
                    },
                ],
            },
            {"Action": "StockTakeFinished", "Details": {"Whatever": 1}},
            {"Action": "OrderCreated", "Details": {"Warehouse": "W"}},
        ]
    )
    envelope = verify_and_parse(raw, sign("s", raw), "s")
    assert envelope.id == "0123456789abcdef0123456789abcdef"
    assert envelope.attempt == 2
    assert envelope.notification_id == "01234567-89ab-cdef-0123-456789abcdef"
    n = envelope.notifications
    assert isinstance(n[0], OrderNotification) and n[0].entity_key == "order:1001"
    assert n[0].order_number_external == "W-1"
    assert isinstance(n[1], AvailableBalanceChanged) and n[1].available_balance == Decimal(5324)
    assert isinstance(n[2], AvailableBalanceChanged) and n[2].available_balance == Decimal("12.5")
    assert n[2].entity_key == "sku:P2" and n[2].warehouse == "TEST"
    assert isinstance(n[3], ProductNotification) and n[3].entity_key == "sku:P3"
    # `customerChanged` (wrong case) is not a documented action: kept as unknown, not guessed.
    assert isinstance(n[4], UnknownNotification) and n[4].action == "customerChanged"
    assert isinstance(n[5], CustomerNotification) and n[5].entity_key == "customer:C9"
    assert isinstance(n[6], PurchaseNotification) and n[6].entity_key == "purchase:RP-15"
    assert [(r.product_number, r.quantity, r.position) for r in n[6].rows] == [
        ("P1", Decimal(5324), 10),
        ("P2", Decimal(2), 20),
    ]
    assert isinstance(n[7], UnknownNotification) and n[7].details == {"Whatever": "1"}
    assert isinstance(n[8], UnknownNotification) and n[8].problem == "missing 'OrderNumber'"
    assert len(n) == 9


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        b'{"Attempt": 1, "Notifications": []}',
        b'{"Id": "x", "Attempt": "two", "Notifications": []}',
        b'{"Id": "x", "Attempt": 1}',
    ],
)
def test_malformed_envelopes(raw: bytes) -> None:
    with pytest.raises(MalformedWebhook):
        parse_envelope(raw)


def test_single_notification_object_is_accepted() -> None:
    raw = json.dumps(
        {
            "Id": "x",
            "Attempt": 1,
            "Notifications": {"Action": "ProductChanged", "Details": {"ProductNumber": "A"}},
        }
    ).encode()
    (note,) = parse_envelope(raw).notifications
    assert isinstance(note, ProductNotification) and note.product_number == "A"


_ident = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_åäö", min_size=1, max_size=12)
_order_note = st.builds(
    lambda a, o, w: {"Action": a, "Details": {"OrderNumber": o, "Warehouse": w}},
    st.sampled_from(
        [
            "OrderCreated",
            "OrderReserved",
            "OrderPicked",
            "OrderCancelled",
            "OrderDeliveryDataChanged",
        ]
    ),
    _ident,
    _ident,
)
_balance_note = st.builds(
    lambda p, w, q, as_list: {
        "Action": "AvailableBalanceChanged",
        "Details": (
            [{"ProductNumber": p, "Warehouse": w, "AvailableBalance": q}]
            if as_list
            else {"ProductNumber": p, "Warehouse": w, "AvailableBalance": q}
        ),
    },
    _ident,
    _ident,
    st.integers(0, 10**7).map(lambda i: f"{i:,}".replace(",", "\u00a0")),
    st.booleans(),
)
_unknown_note = st.builds(lambda a, v: {"Action": "X" + a, "Details": {"Some": v}}, _ident, _ident)


@given(
    notes=st.lists(st.one_of(_order_note, _balance_note, _unknown_note), min_size=1, max_size=8),
    indent=st.sampled_from([None, 2, 4, "\t"]),
    secret=st.text(min_size=1, max_size=20),
    attempt=st.integers(1, 5),
)
def test_envelope_round_trip(
    notes: list[dict[str, object]], indent: int | str | None, secret: str, attempt: int
) -> None:
    raw = json.dumps(
        {
            "Id": "f" * 32,
            "Attempt": attempt,
            "Properties": {"NotificationId": "n-1"},
            "Notifications": notes,
        },
        indent=indent,
        ensure_ascii=False,
    ).encode("utf-8")
    envelope = verify_and_parse(raw, sign(secret, raw), secret)
    assert envelope.attempt == attempt and envelope.id == "f" * 32
    assert len(envelope.notifications) == len(notes)
    for sent, got in zip(notes, envelope.notifications, strict=True):
        assert got.action == sent["Action"]
        details = sent["Details"]
        first = details[0] if isinstance(details, list) else details
        assert isinstance(first, dict)
        if isinstance(got, OrderNotification):
            assert got.entity_key == f"order:{first['OrderNumber']}"
        elif isinstance(got, AvailableBalanceChanged):
            assert got.entity_key == f"sku:{first['ProductNumber']}"
            assert got.available_balance == Decimal(
                str(first["AvailableBalance"]).replace("\u00a0", "")
            )
        else:
            assert isinstance(got, UnknownNotification)
            assert dict(got.details) == first


def _delivery(**top: object) -> bytes:
    return json.dumps({"Id": "d", "Attempt": 1, "Notifications": [], **top}).encode()


def _note(action: str, **details: str) -> bytes:
    return _delivery(Notifications=[{"Action": action, "Details": details}])


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b'{"Id": "d", "Notifications": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}", "nested"),
        (b'{"Id": "d", "Notifications": [' + b"[" * 40 + b"]" * 40 + b"]}", "nested"),
        (_delivery(Id="i" * 129), "Id is 129 characters"),
        (_delivery(Properties={"NotificationId": "n" * 129}), "NotificationId is 129"),
        (_delivery(Attempt=10**30), "Attempt"),
        (_delivery(Attempt=-1), "Attempt"),
        (_note("AvailableBalanceChanged", ProductNumber="P" * 5000), "ProductNumber is 5000"),
        (
            _note("AvailableBalanceChanged", ProductNumber="P1", Warehouse="W" * 65),
            "Warehouse is 65",
        ),
        (_note("OrderReserved", OrderNumber="9" * 65), "OrderNumber is 65"),
        (_note("CustomerChanged", CustomerNumber="C" * 65), "CustomerNumber is 65"),
        (_note("PurchaseDelivered", OrderNumber="R" * 65), "OrderNumber is 65"),
        (_note("A" * 65), "Action is 65"),
        (_note("ProductChanged", ProductNumber="P\x001"), "NUL"),
        (_note("ProductChanged", ProductNumber="P1", Note="a\x00b"), "NUL"),
        (_delivery(**{"K\x00": 1}), "NUL"),
        (
            b'{"Id": "d", "Notifications": [{"Action": "ProductChanged", "Details": '
            b'{"ProductNumber": "\\ud800"}}]}',
            "surrogate",
        ),
    ],
)
def test_what_no_database_can_store_is_malformed(raw: bytes, why: str) -> None:
    # A 400, never a 5xx: Extend would deliver a 5xx-answered body again forever.
    with pytest.raises(MalformedWebhook, match=why):
        parse_envelope(raw)


def test_keys_at_the_column_size_and_modest_nesting_are_accepted() -> None:
    envelope = parse_envelope(
        _delivery(
            Id="i" * 128,
            Notifications=[
                {
                    "Action": "AvailableBalanceChanged",
                    "Details": {
                        "ProductNumber": "P" * 64,
                        "Warehouse": "W" * 64,
                        "Extra": [[[["deep enough"]]]],
                    },
                }
            ],
        )
    )
    note = envelope.notifications[0]
    assert isinstance(note, AvailableBalanceChanged) and note.product_number == "P" * 64


def test_an_amount_beyond_the_column_is_not_a_balance() -> None:
    envelope = parse_envelope(
        _note("AvailableBalanceChanged", ProductNumber="P1", AvailableBalance="1" * 20)
    )
    note = envelope.notifications[0]
    assert isinstance(note, UnknownNotification) and "out of range" in (note.problem or "")
