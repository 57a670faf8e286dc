"""Extend's webhooks: verify `ms-signature` on the raw bytes, then parse into typed notifications.

Verification comes first and works on the bytes as received (Extend pretty-prints bodies, so
re-serialised JSON would not match): `sha256=<hex HMAC-SHA256(secret, body)>`, hex in either
case, compared in constant time. Parsing is tolerant (api doc §2.5, §5.5, §7): one or many
`Notifications`, `Details` as an object or a list of objects, keys in any case, values as
strings with Swedish number formatting ("5 324", "12,5"); unknown actions are kept as
`UnknownNotification`, never dropped. Each notification names the entity it concerns
(`entity_key`, e.g. `order:<OrderNumber>`), which is what the inbox coalesces on.

What no database can store is refused as malformed (the inbox answers 400, so Extend stops
retrying instead of getting a 5xx forever): nesting deeper than `MAX_DEPTH`, a NUL character
or a lone surrogate anywhere, an `Id` or `NotificationId` longer than `MAX_ID_LENGTH`, an action
or key field (order, product, customer number, warehouse) longer than `MAX_KEY_LENGTH`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

SIGNATURE_HEADER = "ms-signature"

# The column sizes these land in (store.models: inbox.delivery_id, balances.product_number, ...).
MAX_ID_LENGTH = 128
MAX_KEY_LENGTH = 64
MAX_DEPTH = 32
MAX_ATTEMPT = 1_000_000
# Amounts are NUMERIC(20, 6): 14 integer digits.
MAX_AMOUNT = Decimal(10) ** 14


class WebhookError(Exception):
    """A delivery this receiver refuses (the inbox answers 4xx; Extend retries or gives up)."""


class SignatureInvalid(WebhookError):
    """Missing, malformed or wrong `ms-signature`: not from Extend, or the secret differs."""


class MalformedWebhook(WebhookError):
    """Correctly signed, but not the documented envelope (not JSON, no Id, ...)."""


# --- signature ---------------------------------------------------------------------------------


def sign(secret: str, raw: bytes) -> str:
    """The header value Extend sends for `raw` (uppercase hex, as documented)."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), raw, hashlib.sha256).hexdigest().upper()


_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


def verify_signature(raw: bytes, header: str | None, secret: str) -> None:
    """Raise SignatureInvalid unless `header` is the HMAC-SHA256 of exactly `raw` under `secret`."""
    if not secret:
        # Settings refuse an empty secret already; a signature under the empty key is one anyone
        # can compute, so it proves nothing even if a caller got here without them.
        raise SignatureInvalid("no secret to verify with: extend.webhook_secret is empty")
    if not header:
        raise SignatureInvalid(f"no {SIGNATURE_HEADER} header")
    scheme, sep, given = header.strip().partition("=")
    given = given.strip()
    if not sep or scheme.strip().lower() != "sha256" or not _HEX64.fullmatch(given):
        raise SignatureInvalid(f"{SIGNATURE_HEADER} is not `sha256=<64 hex>`")
    expected = hmac.new(secret.encode("utf-8"), raw, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode("ascii"), given.lower().encode("ascii")):
        raise SignatureInvalid(f"{SIGNATURE_HEADER} does not match the body")


# --- numbers -----------------------------------------------------------------------------------


class InvalidNumber(ValueError):
    """A Details value that is not a number in any format Extend is known to use."""


# Spaces a Swedish thousands separator may be written with: space, no-break, narrow no-break, thin.
_GROUP_SPACES = str.maketrans("", "", " \u00a0\u202f\u2009\u2007'")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")


def normalise_number(text: str) -> Decimal:
    """'5 324' -> 5324, '12,5' -> 12.5, '1.234,5' -> 1234.5, '−3' -> -3 (Swedish formats)."""
    cleaned = text.strip().translate(_GROUP_SPACES).replace("\u2212", "-")
    if "," in cleaned and "." in cleaned:
        # Both present: the later one is the decimal separator, the other groups thousands.
        if cleaned.rfind(",") > cleaned.rfind("."):
            cleaned = cleaned.replace(".", "").replace(",", ".")
        else:
            cleaned = cleaned.replace(",", "")
    elif cleaned.count(",") == 1:
        cleaned = cleaned.replace(",", ".")
    if not _NUMBER.fullmatch(cleaned):
        raise InvalidNumber(f"not a number: {text!r}")
    try:
        return Decimal(cleaned)
    except InvalidOperation as exc:  # pragma: no cover - the pattern admits only valid decimals
        raise InvalidNumber(f"not a number: {text!r}") from exc


# --- notifications -----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Notification:
    action: str
    details: Mapping[str, str]  # the Details object as sent, values as strings

    @property
    def entity_key(self) -> str:
        return f"action:{self.action}"


@dataclass(frozen=True, kw_only=True, slots=True)
class OrderNotification(Notification):
    """OrderCreated / OrderReserved / OrderPicked / OrderCancelled / OrderDeliveryDataChanged."""

    order_number: str
    order_number_external: str | None = None
    warehouse: str | None = None

    @property
    def entity_key(self) -> str:
        return f"order:{self.order_number}"


@dataclass(frozen=True, kw_only=True, slots=True)
class AvailableBalanceChanged(Notification):
    product_number: str
    warehouse: str | None = None
    available_balance: Decimal | None = None  # the "new balance" Extend sends; a hint, re-fetched

    @property
    def entity_key(self) -> str:
        return f"sku:{self.product_number}"


@dataclass(frozen=True, kw_only=True, slots=True)
class BalanceChanged(Notification):
    product_number: str
    warehouse: str | None = None
    balance: Decimal | None = None

    @property
    def entity_key(self) -> str:
        return f"sku:{self.product_number}"


@dataclass(frozen=True, kw_only=True, slots=True)
class ProductNotification(Notification):
    """ProductCreated / ProductChanged."""

    product_number: str

    @property
    def entity_key(self) -> str:
        return f"sku:{self.product_number}"


@dataclass(frozen=True, kw_only=True, slots=True)
class CustomerNotification(Notification):
    """CustomerCreated / CustomerChanged."""

    customer_number: str

    @property
    def entity_key(self) -> str:
        return f"customer:{self.customer_number}"


@dataclass(frozen=True, kw_only=True, slots=True)
class OfferNotification(Notification):
    offer_number: str

    @property
    def entity_key(self) -> str:
        return f"offer:{self.offer_number}"


@dataclass(frozen=True, kw_only=True, slots=True)
class InvoiceNotification(Notification):
    invoice_number: str
    order_number: str | None = None

    @property
    def entity_key(self) -> str:
        return f"invoice:{self.invoice_number}"


@dataclass(frozen=True, kw_only=True, slots=True)
class PurchaseRow:
    product_number: str | None
    quantity: Decimal | None
    position: int | None
    unit: str | None


@dataclass(frozen=True, kw_only=True, slots=True)
class PurchaseNotification(Notification):
    """PurchasePartiallyDelivered / PurchaseDelivered / PurchaseCancelled (Details per row)."""

    order_number: str
    warehouse: str | None = None
    rows: tuple[PurchaseRow, ...] = ()

    @property
    def entity_key(self) -> str:
        return f"purchase:{self.order_number}"


@dataclass(frozen=True, kw_only=True, slots=True)
class UnknownNotification(Notification):
    """An action this client does not know, or a known one missing its key field; kept, reported."""

    problem: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class WebhookEnvelope:
    id: str  # same for every attempt of one delivery: the dedupe key
    attempt: int
    notification_id: str | None
    notifications: tuple[Notification, ...]


ORDER_CREATED = "OrderCreated"
ORDER_ACTIONS = frozenset(
    {ORDER_CREATED, "OrderReserved", "OrderPicked", "OrderCancelled", "OrderDeliveryDataChanged"}
)
PURCHASE_ACTIONS = frozenset(
    {"PurchasePartiallyDelivered", "PurchaseDelivered", "PurchaseCancelled"}
)


def _lower_keys(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k).lower(): v for k, v in obj.items()}


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else str(value)


def _details(obj: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): _text(v) for k, v in obj.items()}


def _num(value: str | None) -> Decimal | None:
    if value is None or not value.strip():
        return None
    number = normalise_number(value)
    if abs(number) >= MAX_AMOUNT:
        raise InvalidNumber(f"out of range: {value!r}")
    return number


def _bounded(name: str, value: str, limit: int = MAX_KEY_LENGTH) -> str:
    if len(value) > limit:
        raise MalformedWebhook(
            f"{name} is {len(value)} characters long; at most {limit} are stored"
        )
    return value


def _check_storable(data: Any) -> None:
    """Refuse what a database cannot store or a parser cannot walk: deep nesting, NUL, lone
    surrogates."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            _check_text(value)
        elif isinstance(value, Mapping | list):
            if depth > MAX_DEPTH:
                raise MalformedWebhook(f"nested deeper than {MAX_DEPTH} levels")
            if isinstance(value, Mapping):
                for key, item in value.items():
                    _check_text(str(key))
                    stack.append((item, depth + 1))
            else:
                stack.extend((item, depth + 1) for item in value)


def _check_text(text: str) -> None:
    if "\x00" in text:
        raise MalformedWebhook("contains a NUL character (\\u0000)")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise MalformedWebhook("contains a lone surrogate (not valid Unicode text)") from exc


def _notifications(action: str, raw_details: Any) -> list[Notification]:
    if isinstance(raw_details, Mapping):
        objects: list[Mapping[str, Any]] = [raw_details]
    elif isinstance(raw_details, list):
        objects = [d for d in raw_details if isinstance(d, Mapping)]
    else:
        objects = [{}]
    if not objects:
        objects = [{}]
    try:
        if action in PURCHASE_ACTIONS:
            return [_purchase(action, objects)]
        return [_one(action, obj) for obj in objects]
    except (KeyError, InvalidNumber, ValueError) as exc:
        problem = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
        return [
            UnknownNotification(action=action, details=_details(obj), problem=problem)
            for obj in objects
        ]


def _one(action: str, obj: Mapping[str, Any]) -> Notification:
    details = _details(obj)
    d = {k.lower(): v for k, v in details.items()}

    def need(name: str) -> str:
        value = d.get(name.lower(), "").strip()
        if not value:
            raise KeyError(name)
        return _bounded(name, value)

    def opt(name: str) -> str | None:
        value = d.get(name.lower(), "").strip()
        return _bounded(name, value) if value else None

    if action in ORDER_ACTIONS:
        return OrderNotification(
            action=action,
            details=details,
            order_number=need("OrderNumber"),
            order_number_external=opt("OrderNumberExternal"),
            warehouse=opt("Warehouse"),
        )
    if action == "AvailableBalanceChanged":
        return AvailableBalanceChanged(
            action=action,
            details=details,
            product_number=need("ProductNumber"),
            warehouse=opt("Warehouse"),
            available_balance=_num(opt("AvailableBalance") or opt("Balance")),
        )
    if action == "BalanceChanged":
        return BalanceChanged(
            action=action,
            details=details,
            product_number=need("ProductNumber"),
            warehouse=opt("Warehouse"),
            balance=_num(opt("Balance")),
        )
    if action in ("ProductCreated", "ProductChanged"):
        return ProductNotification(
            action=action, details=details, product_number=need("ProductNumber")
        )
    if action in ("CustomerCreated", "CustomerChanged"):
        return CustomerNotification(
            action=action, details=details, customer_number=need("CustomerNumber")
        )
    if action in ("OfferCreated", "OfferChanged"):
        return OfferNotification(action=action, details=details, offer_number=need("OfferNumber"))
    if action in ("CustomerInvoiceCreated", "CustomerInvoiceChanged"):
        return InvoiceNotification(
            action=action,
            details=details,
            invoice_number=need("InvoiceNumber"),
            order_number=opt("OrderNumber"),
        )
    return UnknownNotification(action=action, details=details)


def _purchase(action: str, objects: list[Mapping[str, Any]]) -> Notification:
    rows = []
    order_number = warehouse = None
    merged: dict[str, str] = {}
    for obj in objects:
        d = {k.lower(): v.strip() for k, v in _details(obj).items()}
        merged.update(_details(obj))
        order_number = order_number or _bounded("OrderNumber", d.get("ordernumber") or "") or None
        warehouse = warehouse or _bounded("Warehouse", d.get("warehouse") or "") or None
        if d.get("productnumber") or d.get("quantity"):
            position = d.get("position")
            rows.append(
                PurchaseRow(
                    product_number=d.get("productnumber") or None,
                    quantity=_num(d.get("quantity")),
                    position=int(normalise_number(position)) if position else None,
                    unit=d.get("unit") or None,
                )
            )
    if not order_number:
        raise KeyError("OrderNumber")
    return PurchaseNotification(
        action=action,
        details=merged,
        order_number=order_number,
        warehouse=warehouse,
        rows=tuple(rows),
    )


def parse_envelope(raw: bytes) -> WebhookEnvelope:
    """Parse a delivery (call `verify_signature` on the same bytes first)."""
    try:
        data = json.loads(raw)
    except RecursionError as exc:
        raise MalformedWebhook(f"body is nested deeper than {MAX_DEPTH} levels") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedWebhook(f"body is not JSON: {exc}") from exc
    if not isinstance(data, Mapping):
        raise MalformedWebhook("body is not a JSON object")
    _check_storable(data)
    top = _lower_keys(data)
    delivery_id = _bounded("Id", _text(top.get("id")).strip(), MAX_ID_LENGTH)
    if not delivery_id:
        raise MalformedWebhook("no Id")
    attempt_text = _text(top.get("attempt")).strip()
    if (
        len(attempt_text) > 7
        or not (attempt_text or "1").isdecimal()
        or int(attempt_text or 1) > MAX_ATTEMPT
    ):
        raise MalformedWebhook(
            f"Attempt is not a number from 0 to {MAX_ATTEMPT}: {attempt_text[:20]!r}"
        )
    attempt = int(attempt_text or 1)
    properties = top.get("properties")
    notification_id = None
    if isinstance(properties, Mapping):
        notification_id = (
            _bounded(
                "NotificationId",
                _text(_lower_keys(properties).get("notificationid")).strip(),
                MAX_ID_LENGTH,
            )
            or None
        )
    raw_notes = top.get("notifications")
    if isinstance(raw_notes, Mapping):
        raw_notes = [raw_notes]
    if not isinstance(raw_notes, list):
        raise MalformedWebhook("no Notifications list")
    notifications: list[Notification] = []
    for note in raw_notes:
        if not isinstance(note, Mapping):
            continue
        fields = _lower_keys(note)
        action = _bounded("Action", _text(fields.get("action")).strip())
        notifications.extend(_notifications(action or "(none)", fields.get("details")))
    return WebhookEnvelope(
        id=delivery_id,
        attempt=attempt,
        notification_id=notification_id,
        notifications=tuple(notifications),
    )


def verify_and_parse(
    raw: bytes, header: str | None, secret: str, *, verify: bool = True
) -> WebhookEnvelope:
    """The inbox's one call: refuse a bad signature before a single byte is parsed."""
    if verify:
        verify_signature(raw, header, secret)
    return parse_envelope(raw)
