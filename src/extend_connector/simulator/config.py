"""Every knob of the simulator, as frozen keyword-only values with house-contract defaults.

`SimulatorConfig` is what tests, benchmarks and the `simulator` command build; the
dialect knobs mirror `extend_connector.settings.DialectSettings` so the client can be
tested against a non-default dialect. `FaultConfig` is also the run-time fault state:
`/_sim/faults` swaps in a modified copy, never mutates one.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

EVENTS: tuple[str, ...] = (
    "OrderPicked",
    "OrderReserved",
    "OrderCancelled",
    "BalanceChanged",
    "AvailableBalanceChanged",
    "OrderDeliveryDataChanged",
    "PurchasePartiallyDelivered",
    "PurchaseCancelled",
    "PurchaseDelivered",
    "ProductCreated",
    "ProductChanged",
    "OrderCreated",
    "CustomerCreated",
    "CustomerChanged",
    "OfferCreated",
    "OfferChanged",
    "CustomerInvoiceCreated",
    "CustomerInvoiceChanged",
)
"""The 18 webhook events of Extend's Webhooks page (S3), in the page's order."""

RATE_LIMIT_GROUPS: tuple[str, ...] = ("standard", "heavy", "write")


@dataclass(frozen=True, kw_only=True, slots=True)
class RateLimit:
    """A token bucket: `limit` requests, refilled evenly over `period_seconds`."""

    limit: int
    period_seconds: float

    def __post_init__(self) -> None:
        if self.limit < 1 or self.period_seconds <= 0:
            raise ValueError("a rate limit needs limit >= 1 and period_seconds > 0")


@dataclass(frozen=True, kw_only=True, slots=True)
class WebhookRegistration:
    """One webhook definition, with the fields of Extend's "Create Webhook" form (S3)."""

    callback_url: str
    name: str = "connector"
    secret: str = "sim-webhook-secret"
    tech_contact_email: str = "tech@example.com"
    warehouses: tuple[str, ...] = ()  # empty: every warehouse ("Filter event on" left blank)
    active: bool = True
    events: tuple[str, ...] = EVENTS

    def wants(self, action: str, warehouse: str | None) -> bool:
        """Whether a notification with this action (and warehouse, if it has one) goes here."""
        if not self.active:
            return False
        # Unknown actions (forward-compatibility fault) go to every active registration.
        if action in EVENTS and action not in self.events:
            return False
        return not (warehouse is not None and self.warehouses and warehouse not in self.warehouses)


@dataclass(frozen=True, kw_only=True, slots=True)
class FaultConfig:
    """Fault injection. Every probability is per request (or per delivery) in [0, 1]."""

    error_rate: float = 0.0  # technical 5xx on any /api endpoint
    error_rates: tuple[
        tuple[str, float], ...
    ] = ()  # per endpoint key, e.g. ("GET /ProductAvailability", 0.5)
    error_statuses: tuple[int, ...] = (500, 502, 503, 504)
    latency_seconds: float = 0.0  # added to every /api response
    latency_jitter_seconds: float = 0.0  # plus uniform 0..jitter
    outage: bool = False  # full outage of /api while true (see outage_mode)
    outage_mode: Literal["503", "drop"] = (
        "503"  # 503 Technical body, or the connection is dropped unanswered
    )
    throttle_storm: float = 0.0  # probability that a request gets 429 whatever its budget
    lost_response_rate: float = 0.0  # writes that succeed but whose response is never sent
    webhook_duplicate_rate: float = 0.0  # deliveries POSTed twice (same Id, same Attempt)
    webhook_drop_rate: float = 0.0  # deliveries silently never sent
    webhook_reorder: bool = False  # deliveries of one burst sent in reverse order
    extra_fields: bool = False  # unknown fields appended to every JSON object sent
    unknown_webhook_actions: bool = False  # an unknown Action appended to every delivery

    def rate_for(self, endpoint: str) -> float:
        for key, rate in self.error_rates:
            if key.lower() == endpoint.lower():
                return rate
        return self.error_rate

    def __post_init__(self) -> None:
        for name in (
            "error_rate",
            "throttle_storm",
            "lost_response_rate",
            "webhook_duplicate_rate",
            "webhook_drop_rate",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
        for key, rate in self.error_rates:
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"error rate of {key} must be in [0, 1], got {rate}")
        if self.latency_seconds < 0 or self.latency_jitter_seconds < 0:
            raise ValueError("latency must not be negative")
        if not self.error_statuses or any(s < 500 or s > 599 for s in self.error_statuses):
            raise ValueError("error_statuses must be 5xx codes")


@dataclass(frozen=True, kw_only=True, slots=True)
class SimulatorConfig:
    """Everything the simulator needs; every knob has a default (the house contract, §5)."""

    # seeded data
    seed: int = 1
    products: int = 200
    customers: int = 50  # besides the anonymous webshop customer `WEB`
    b2b_share: float = 0.5
    warehouses: tuple[str, ...] = ("MainWarehouse", "GreenWarehouse", "TEST")
    price_lists: int = 4
    discount_lists: int = 3
    campaigns: int = 6
    orders: int = 0  # initial orders, spread over the life cycle

    # credential and dialect (house contract §5.1, §5.2)
    token: str = "sim-token"
    auth_header: str = "Authorization"
    auth_scheme: str = "Bearer"  # "" = the bare key in auth_header
    page_param: str = "page"
    page_size_param: str = "pageSize"
    default_page_size: int = 100
    max_page_size: int = 500
    envelope: Literal["body", "headers"] = "body"
    changed_since_param: str = "changedSince"
    # "offset": any ISO-8601 instant with an offset (Z included); "utc": only UTC (Z or +00:00)
    changed_since_format: Literal["offset", "utc"] = "offset"
    product_numbers_param: str = "productNumbers"
    warehouse_param: str = "warehouse"
    status_param: str = "status"
    order_number_external_param: str = "orderNumberExternal"
    customer_number_param: str = "customerNumber"
    # response fields (model, house-contract name, name sent), e.g. ("Product", "productNumber",
    # "itemNumber"); models as in simulator/shapes.py
    field_renames: tuple[tuple[str, str, str], ...] = ()
    null_empty_lists: bool = False  # an empty list in a response is sent as null

    # rate limits (§5.4), per credential
    rate_limits_enabled: bool = True
    rate_limit_standard: RateLimit = RateLimit(limit=300, period_seconds=60)
    rate_limit_heavy: RateLimit = RateLimit(limit=60, period_seconds=60)
    rate_limit_write: RateLimit = RateLimit(limit=120, period_seconds=60)

    # time
    timezone: str = "Europe/Stockholm"
    start_time: str | None = None  # ISO-8601 with offset; None = the real now
    frozen_clock: bool = False  # the clock moves only when told (tests)

    # webhooks (§2.5, §5.5)
    webhooks: tuple[WebhookRegistration, ...] = ()
    time_scale: float = 1.0  # multiplies the 1 min / 4 min retry delays
    webhook_timeout_seconds: float = 10.0
    webhook_batch_size: int = 100  # notifications per POST at most
    webhook_concurrency: int = 16
    swedish_numbers: bool = False  # "5 324" and "12,5" in webhook Details
    deliveries_kept: int = 20_000

    faults: FaultConfig = field(default_factory=FaultConfig)

    def rate_limit(self, group: str) -> RateLimit:
        limits = {
            "standard": self.rate_limit_standard,
            "heavy": self.rate_limit_heavy,
            "write": self.rate_limit_write,
        }
        return limits[group]

    def __post_init__(self) -> None:
        if self.products < 0 or self.customers < 0 or self.orders < 0:
            raise ValueError("data sizes must not be negative")
        if not self.warehouses:
            raise ValueError("at least one warehouse is needed")
        if not 1 <= self.default_page_size <= self.max_page_size:
            raise ValueError("need 1 <= default_page_size <= max_page_size")
        if self.time_scale <= 0:
            raise ValueError("time_scale must be > 0")
        if self.webhook_batch_size < 1 or self.webhook_concurrency < 1:
            raise ValueError("webhook_batch_size and webhook_concurrency must be >= 1")
        if not 0.0 <= self.b2b_share <= 1.0:
            raise ValueError("b2b_share must be in [0, 1]")
        if self.changed_since_format not in ("offset", "utc"):
            raise ValueError("changed_since_format must be 'offset' or 'utc'")
        from .shapes import MODELS

        for model, house, sent in self.field_renames:
            if model not in MODELS or not house or not sent:
                raise ValueError(
                    f"field_renames: unknown model {model!r} or empty name; "
                    f"models: {', '.join(sorted(MODELS))}"
                )

    def renames(self) -> dict[str, dict[str, str]]:
        """field_renames as model -> {house-contract name -> name sent}."""
        out: dict[str, dict[str, str]] = {}
        for model, house, sent in self.field_renames:
            out.setdefault(model, {})[house] = sent
        return out


DIALECT_KEYS: dict[str, str] = {
    "auth_header": "auth_header",
    "auth_scheme": "auth_scheme",
    "page_param": "page_param",
    "page_size_param": "page_size_param",
    "envelope": "envelope",
    "changed_since_param": "changed_since_param",
    "changed_since_format": "changed_since_format",
    "product_numbers_param": "product_numbers_param",
    "warehouse_param": "warehouse_param",
    "status_param": "status_param",
    "order_number_external_param": "order_number_external_param",
    "customer_number_param": "customer_number_param",
    "timezone": "timezone",
}
"""[extend.dialect] key -> the SimulatorConfig field the simulator honours it with."""

CLIENT_ONLY_KEYS: frozenset[str] = frozenset(
    {"page_size", "ordered_by_change_date", "max_url_length", "rate_limit_groups", "rate_limits"}
)
"""[extend.dialect] keys that only steer the connector's side (how much it asks, how fast)."""


def dialect_file_settings(path: Path) -> dict[str, Any]:
    """SimulatorConfig fields from the `[extend.dialect]` table of a connector config file.

    One file then configures both sides: the connector (`--config`) and the simulator
    (`--dialect-file`). `[extend.dialect.fields.<Model>]` renames become `field_renames`;
    `extend.api_token`, when the file has it, becomes the token. A key the simulator cannot
    honour (other paths, other rate-limit header names, an unknown key) is a ValueError naming
    it, so the two sides never silently disagree.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"dialect file {path}: {exc}") from exc
    extend = data.get("extend", {})
    dialect = extend.get("dialect", {}) if isinstance(extend, dict) else {}
    if not isinstance(dialect, dict) or not dialect:
        raise ValueError(f"dialect file {path}: no [extend.dialect] table")
    out: dict[str, Any] = {}
    token = extend.get("api_token")
    if isinstance(token, str) and token:
        out["token"] = token
    renames: list[tuple[str, str, str]] = []
    for key, value in dialect.items():
        if key == "fields":
            if not isinstance(value, dict):
                raise ValueError(f"dialect file {path}: extend.dialect.fields must be a table")
            for model, names in value.items():
                if not isinstance(names, dict):
                    raise ValueError(
                        f"dialect file {path}: extend.dialect.fields.{model} must be a table"
                    )
                for house, sent in names.items():
                    if not isinstance(sent, str):
                        raise ValueError(
                            f"dialect file {path}: extend.dialect.fields.{model}.{house} "
                            "must be a string"
                        )
                    renames.append((model, house, sent))
        elif key in DIALECT_KEYS:
            if not isinstance(value, str):
                raise ValueError(f"dialect file {path}: extend.dialect.{key} must be a string")
            out[DIALECT_KEYS[key]] = value
        elif key in CLIENT_ONLY_KEYS:
            continue
        else:
            raise ValueError(
                f"dialect file {path}: extend.dialect.{key} is not something the simulator can "
                f"speak; it honours {', '.join(sorted(DIALECT_KEYS))} and fields.<Model>"
            )
    if renames:
        out["field_renames"] = tuple(renames)
    return out
