"""One typed settings tree: TOML file first, environment variables on top.

Every setting lives here, with its default and a description that `init` writes into
the commented config file. A wrong or missing value stops start-up with `ConfigError`,
whose message names the setting (TOML path and environment variable) and the form expected.
So does an unsafe one: an empty secret, or a public one (the simulator's and the demo's) when
the connector faces more than loopback (see `secret_problems`). Messages never show a secret,
and show URLs with their password masked.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from extend_connector.redact import redact_text

ENV_PREFIX = "EXTEND_CONNECTOR_"
DEFAULT_CONFIG_FILE = "extend-connector.toml"


class ConfigError(Exception):
    """The configuration cannot be used; `problems` lists one line per bad setting."""

    def __init__(
        self, problems: list[str], source: str | None = None, *, unsafe_only: bool = False
    ) -> None:
        self.problems = problems
        self.source = source
        # Every problem is an unsafe secret (the rest of the file is valid): `init` tells what to
        # set.
        self.unsafe_only = unsafe_only
        where = f" ({source})" if source else ""
        super().__init__(f"configuration error{where}:\n  " + "\n  ".join(problems))


def _split_list(value: Any) -> Any:
    """Accept `["A","B"]` from TOML and `A,B` (or JSON) from an environment variable."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


StrList = Annotated[list[str], NoDecode]


class _Section(BaseModel):
    # Inputs stay out of ValidationError's text: they may be secrets or URLs with a password.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class ProductsScope(StrEnum):
    SYNC = "sync"
    OFF = "off"


class CustomersScope(StrEnum):
    FROM_EXTEND = "from_extend"
    TO_EXTEND = "to_extend"
    OFF = "off"


class PricesScope(StrEnum):
    SYNC = "sync"
    OFF = "off"


class ScopeSettings(_Section):
    """The integration scope, as Extend's webshop guide frames it."""

    orders: Literal["on"] = Field(
        "on", description="Always on: orders are mandatory in Extend's guide."
    )
    balances: Literal["on"] = Field(
        "on", description="Always on: balances are mandatory in Extend's guide."
    )
    products: ProductsScope = Field(
        ProductsScope.SYNC, description="Product master data: `sync` (Extend is master) or `off`."
    )
    customers: CustomersScope = Field(
        CustomersScope.FROM_EXTEND,
        description="Customer master: `from_extend` (B2B), "
        "`to_extend` (shop registers customers) or `off`.",
    )
    prices: PricesScope = Field(
        PricesScope.SYNC,
        description="Per-customer net prices from GET ProductPrices: `sync` or `off`.",
    )
    default_customer_number: str = Field(
        "WEB",
        min_length=1,
        description="Extend customer number used for anonymous shoppers (orders and their prices).",
    )
    price_customer_numbers: Annotated[StrList, NoDecode] = Field(
        default_factory=list,
        description="Extra customer numbers whose prices are kept, besides every synced B2B "
        "customer and the default.",
    )

    _split = field_validator("price_customer_numbers", mode="before")(_split_list)


# House contract (extend-commerce-api.md §5): one entry per operation the client performs.
DEFAULT_EXTEND_PATHS: dict[str, str] = {
    "create_order": "POST /CustomerOrders",
    "get_order": "GET /CustomerOrders/{orderNumber}",
    "list_orders": "GET /CustomerOrders",
    "update_order": "PUT /CustomerOrders/{orderNumber}",
    "cancel_order": "DELETE /CustomerOrders/{orderNumber}",
    "list_availability": "GET /ProductAvailability",
    "list_products": "GET /Products",
    "get_product": "GET /Products/{productNumber}",
    "list_customers": "GET /Customers",
    "get_customer": "GET /Customers/{customerNumber}",
    "create_customer": "POST /Customers",
    "list_prices": "GET /ProductPrices",
}
DEFAULT_RATE_LIMIT_GROUPS: dict[str, str] = {
    "create_order": "write",
    "get_order": "standard",
    "list_orders": "heavy",
    "update_order": "write",
    "cancel_order": "write",
    "list_availability": "heavy",
    "list_products": "heavy",
    "get_product": "standard",
    "list_customers": "heavy",
    "get_customer": "standard",
    "create_customer": "write",
    "list_prices": "heavy",
}
# Extend's group limits (house contract, extend-commerce-api.md §5.4): a token bucket of
# LIMIT calls refilled evenly over SECONDS, per credential and group.
DEFAULT_RATE_LIMITS: dict[str, str] = {"standard": "300/60", "heavy": "60/60", "write": "120/60"}
_RATE_LIMIT_FORM = r"\s*([1-9][0-9]*)\s*/\s*([0-9]+(?:\.[0-9]+)?)\s*"


def parse_rate_limit(text: str) -> tuple[int, float]:
    """`"300/60"` -> (300, 60.0); ValueError for anything else."""
    import re

    match = re.fullmatch(_RATE_LIMIT_FORM, text)
    if match is None or float(match.group(2)) <= 0:
        raise ValueError(
            f'expected `LIMIT/SECONDS` such as "300/60" (limit >= 1, seconds > 0), got {text!r}'
        )
    return int(match.group(1)), float(match.group(2))


# The response models whose field names the dialect may rename ([extend.dialect.fields.<Model>]),
# each with the field names the connector expects (the house contract's spelling). Kept equal to
# extend/wire.py's models by tests/unit/test_extend_client.py.
DIALECT_FIELD_MODELS: dict[str, tuple[str, ...]] = {
    "Address": (
        "addressLine1",
        "addressLine2",
        "careOf",
        "city",
        "countryCode",
        "email",
        "name",
        "phone",
        "type",
        "zipCode",
    ),
    "Availability": (
        "availableBalance",
        "changedDate",
        "physicalBalance",
        "productNumber",
        "reservedQuantity",
        "warehouse",
    ),
    "Customer": (
        "addresses",
        "changedDate",
        "currency",
        "customerGroup",
        "customerNumber",
        "customerType",
        "discountList",
        "email",
        "lastName",
        "name",
        "organizationNumber",
        "phone",
        "priceList",
        "salesperson",
    ),
    "Order": (
        "changedDate",
        "expectedDeliveryDate",
        "orderHeader",
        "orderNumber",
        "orderNumberExternal",
        "orderRows",
        "shipments",
        "status",
    ),
    "OrderHeader": (
        "askedDeliveryDate",
        "changedDate",
        "currency",
        "customerNumber",
        "deliveryAddress",
        "expectedDeliveryDate",
        "freightFree",
        "invoiceAddress",
        "notes",
        "orderDate",
        "orderEmail",
        "orderNumber",
        "orderNumberExternal",
        "orderType",
        "ourReference",
        "partialDelivery",
        "paymentType",
        "status",
        "yourReference",
    ),
    "OrderLight": (
        "changedDate",
        "orderNumber",
        "orderNumberExternal",
        "status",
    ),
    "OrderRow": (
        "batchNumber",
        "deliveryData",
        "expectedDeliveryDate",
        "position",
        "product",
        "rowOperation",
        "salesData",
        "shipDate",
        "supplyMode",
        "warehouse",
    ),
    "Price": (
        "campaignFrom",
        "campaignPrice",
        "campaignTo",
        "changedDate",
        "currency",
        "customerNumber",
        "discountPercent",
        "listPrice",
        "priceList",
        "priceSource",
        "productNumber",
        "unitPrice",
        "validFrom",
        "validTo",
        "vatPercent",
    ),
    "Product": (
        "changedDate",
        "customsCommodityCode",
        "ean",
        "phaseOut",
        "productGroup",
        "productName",
        "productNotes",
        "productNumber",
        "supplyMode",
        "unit",
        "vatPercent",
    ),
    "ProductRef": (
        "customerProductNumber",
        "customsCommodityCode",
        "productName",
        "productNotes",
        "productNumber",
    ),
    "SalesData": (
        "currency",
        "listPrice",
        "quantity",
        "unit",
        "unitExplicitCost",
        "unitPrice",
        "vatPercent",
    ),
    "Shipment": (
        "carrier",
        "rows",
        "shipDate",
        "shipmentNumber",
        "trackingNumber",
        "trackingUrl",
    ),
    "ShipmentRow": (
        "position",
        "productNumber",
        "quantity",
    ),
}


class DialectSettings(_Section):
    """Everything Extend has not documented (house contract defaults); see docs/extend-dialect.md."""  # noqa: E501 - its first line heads the section `init` writes

    auth_header: str = Field(
        "Authorization", min_length=1, description="Header that carries the credential."
    )
    auth_scheme: str = Field(
        "Bearer", description="Prefix before the token; empty for a bare API key."
    )
    page_param: str = Field(
        "page", min_length=1, description="Query parameter of the 1-based page number."
    )
    page_size_param: str = Field(
        "pageSize", min_length=1, description="Query parameter of the page size."
    )
    page_size: int = Field(
        500,
        ge=1,
        le=10_000,
        description="Records asked for per page: the contract's largest page (500), since every "
        "list call counts against Extend's rate limit (pages of 100 cost a 10,000-notification "
        "flood 47.8 s to catch up, pages of 500 2.4 s); `probe` checks Extend serves it.",
    )
    envelope: Literal["body", "headers"] = Field(
        "body",
        description="`body`: {items,page,pageSize,totalCount,totalPages}; `headers`: bare array, "
        "totals in headers.",
    )
    changed_since_param: str = Field(
        "changedSince", min_length=1, description="Change-date filter parameter."
    )
    product_numbers_param: str = Field(
        "productNumbers", min_length=1, description="Comma list of product numbers."
    )
    warehouse_param: str = Field(
        "warehouse", min_length=1, description="Warehouse filter parameter."
    )
    max_url_length: int = Field(
        1800, ge=256, description="Longest URL sent; product-number lists are chunked to fit."
    )
    order_lookup_window: bool = Field(
        True,
        description="The look-up after a lost order answer may list the orders changed since "
        "the attempt (one call for many orders) instead of asking by shop reference, one call "
        "each. Needs an order's change date at or after its creation by Extend's clock.",
    )
    clock_spread_seconds: float = Field(
        5.0,
        ge=0,
        le=3600,
        description="How far Extend's own change dates may run out of step (servers behind a "
        "balancer, a clock step): the look-up window opens this much before the latest change "
        "date seen.",
    )
    rate_limit_limit_header: str = Field(
        "x-ratelimit-limit", min_length=1, description="Documented by Extend."
    )
    rate_limit_remaining_header: str = Field(
        "x-ratelimit-remaining", min_length=1, description="Assumed name."
    )
    rate_limit_reset_header: str = Field(
        "x-ratelimit-reset", min_length=1, description="Assumed name (seconds)."
    )
    request_id_header: str = Field(
        "x-request-id", min_length=1, description="Response header quoted in errors."
    )
    status_param: str = Field("status", min_length=1, description="Order status filter parameter.")
    order_number_external_param: str = Field(
        "orderNumberExternal",
        min_length=1,
        description="Find-an-order-by-shop-reference parameter.",
    )
    customer_number_param: str = Field(
        "customerNumber", min_length=1, description="Customer filter (prices)."
    )
    changed_since_format: Literal["offset", "utc"] = Field(
        "offset",
        description="`offset`: 2024-10-15T15:00:00+02:00 in `timezone`; `utc`: "
        "2024-10-15T13:00:00Z.",
    )
    timezone: str = Field(
        "Europe/Stockholm",
        min_length=1,
        description="Zone for naive times from Extend and for `offset` dates sent.",
    )
    ordered_by_change_date: bool = Field(
        True,
        description="Lists come sorted by change date then "
        "key (lets change-date walks re-anchor safely).",
    )
    paths: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_EXTEND_PATHS),
        description="Operation -> `VERB /path` (entries given override the defaults one by one).",
    )
    rate_limit_groups: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_RATE_LIMIT_GROUPS),
        description="Operation -> rate-limit group "
        "(entries given override the defaults one by one).",
    )
    rate_limits: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_RATE_LIMITS),
        validate_default=True,
        description="Rate-limit group -> `LIMIT/SECONDS` (Extend's bucket per credential; entries "
        "given override the defaults one by one). Used until Extend's x-ratelimit-limit header "
        "says otherwise.",
    )

    fields: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="Model -> {expected field name -> the name Extend sends}, for response "
        'fields Extend spells differently (e.g. fields.Product.productNumber = "itemNumber").',
    )

    @field_validator("fields")
    @classmethod
    def _fields(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for model, renames in value.items():
            known = DIALECT_FIELD_MODELS.get(model)
            if known is None:
                raise ValueError(
                    f"unknown model `{model}`; known: {', '.join(sorted(DIALECT_FIELD_MODELS))}"
                )
            for expected, sent in renames.items():
                if expected not in known:
                    raise ValueError(
                        f"`fields.{model}.{expected}`: {model} has no field `{expected}`; "
                        f"known: {', '.join(known)}"
                    )
                if not sent:
                    raise ValueError(f"`fields.{model}.{expected}`: expected a non-empty name")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError("expected an IANA time zone name such as `Europe/Stockholm`") from exc
        return value

    @field_validator("paths")
    @classmethod
    def _paths(cls, value: dict[str, str]) -> dict[str, str]:
        import re

        merged = {**DEFAULT_EXTEND_PATHS, **value}
        for op, spec in merged.items():
            if op not in DEFAULT_EXTEND_PATHS:
                raise ValueError(
                    f"unknown operation `{op}`; known: {', '.join(DEFAULT_EXTEND_PATHS)}"
                )
            want = set(re.findall(r"\{(\w+)\}", DEFAULT_EXTEND_PATHS[op]))
            if (
                not re.fullmatch(r"(GET|POST|PUT|PATCH|DELETE) /\S*", spec)
                or set(re.findall(r"\{(\w+)\}", spec)) != want
            ):
                placeholders = "".join(f" {{{p}}}" for p in sorted(want)) or " no placeholder"
                raise ValueError(f"`{op}` expected `VERB /path` with{placeholders}, got {spec!r}")
        return merged

    @field_validator("rate_limit_groups")
    @classmethod
    def _groups(cls, value: dict[str, str]) -> dict[str, str]:
        merged = {**DEFAULT_RATE_LIMIT_GROUPS, **value}
        for op, group in merged.items():
            if op not in DEFAULT_EXTEND_PATHS or not group:
                raise ValueError(
                    f"expected operation -> non-empty group name, got `{op}` -> {group!r}"
                )
        return merged

    @field_validator("rate_limits")
    @classmethod
    def _limits(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        merged = {**DEFAULT_RATE_LIMITS, **value}
        for group, spec in merged.items():
            try:
                parse_rate_limit(spec)
            except ValueError as exc:
                raise ValueError(f"`{group}`: {exc}") from None
        # rate_limit_groups is declared first, so it is validated already (absent when it was
        # wrong).
        used = set((info.data.get("rate_limit_groups") or {}).values())
        missing = sorted(used - set(merged))
        if missing:
            raise ValueError(
                f"no `LIMIT/SECONDS` for group(s) {', '.join(missing)} used in rate_limit_groups; "
                f'add e.g. {missing[0]} = "60/60"'
            )
        return merged

    @property
    def parsed_rate_limits(self) -> dict[str, tuple[int, float]]:
        """Group -> (limit, period in seconds)."""
        return {group: parse_rate_limit(spec) for group, spec in self.rate_limits.items()}


class ExtendSettings(_Section):
    """How to reach Extend Commerce and check what it sends."""

    base_url: AnyHttpUrl = Field(
        AnyHttpUrl("http://127.0.0.1:8765/api"),
        description="Base URL of Extend's REST API (default: the bundled simulator).",
    )
    api_token: SecretStr = Field(
        SecretStr("sim-token"),
        description="Credential sent with every call. Never empty; the default (the simulator's) "
        "is refused outside loopback.",
    )
    webhook_secret: SecretStr = Field(
        SecretStr("sim-webhook-secret"),
        description="Secret of the webhook registration in Extend (ms-signature). Never empty "
        "while signatures are verified; the default (the simulator's) is refused outside loopback.",
    )
    verify_webhook_signatures: bool = Field(
        True,
        description="Refuse unsigned webhooks. Turning this off logs a warning at every start.",
    )
    warehouses: Annotated[StrList, NoDecode] = Field(
        default_factory=lambda: ["MainWarehouse"],
        min_length=1,
        description="Warehouses the shop sells from (balances are fetched for these).",
    )
    connect_timeout_seconds: float = Field(10.0, gt=0, description="TCP connect timeout per call.")
    read_timeout_seconds: float = Field(
        60.0,
        gt=0,
        description="Read timeout per call; a write that times out is 'outcome unknown'.",
    )
    max_in_flight: int = Field(4, ge=1, le=64, description="Concurrent calls per process.")
    shared_rate_limit: Literal["auto", "on", "off"] = Field(
        "auto",
        description="One rate limit for every process sharing the database (a table in it): `auto` "
        "= on with PostgreSQL (several processes), off "
        "with SQLite (one process); `on` / `off` force it.",
    )
    rate_limit_headroom: float = Field(
        0.9,
        ge=0.5,
        le=1.0,
        description="Share of Extend's limit the fleet uses, so calls in flight and clock jitter "
        "never reach a 429.",
    )
    dialect: DialectSettings = Field(default_factory=DialectSettings)

    _split = field_validator("warehouses", mode="before")(_split_list)


class VendureSettings(_Section):
    """A Vendure shop (`webshop.adapter = "vendure"`; docs/webshops/vendure.md)."""

    admin_api_url: AnyHttpUrl | None = Field(
        None, description="Vendure's Admin API, e.g. `https://shop.example.com/admin-api`."
    )
    username: str = Field(
        "superadmin", min_length=1, description="Vendure administrator the connector logs in as."
    )
    password: SecretStr | None = Field(None, description="That administrator's password.")
    channel_token: str | None = Field(
        None, description="Vendure channel token (`vendure-token` header); unset: default channel."
    )
    stock_locations: dict[str, str] = Field(
        default_factory=dict,
        description="Extend warehouse -> Vendure stock location name (with "
        "webshop.stock_figure = `per_warehouse`); every sell-from warehouse needs one.",
    )
    sum_location: str | None = Field(
        None,
        description="With webshop.stock_figure = `sum`: the stock location that gets the sum "
        "(unset: Vendure's first stock location).",
    )
    language_code: str = Field(
        "en", min_length=2, max_length=5, description="Language of names the connector writes."
    )
    poll_seconds: int = Field(
        60,
        ge=1,
        description="How often the connector looks for paid orders it was not told about (the "
        "plugin's order events are triggers; a connector that was down catches up). Divides a "
        "minute or an hour (5, 10, 30, 60, 300, ...).",
    )

    @field_validator("poll_seconds")
    @classmethod
    def _divides(cls, value: int) -> int:
        if not ((value < 60 and 60 % value == 0) or (value % 60 == 0 and 3600 % value == 0)):
            raise ValueError(
                "must divide a minute or an hour: 1-6, 10, 12, 15, 20, 30, 60, 120, ..."
            )
        return value

    timeout_seconds: float = Field(30.0, gt=0, description="Timeout of one Admin API call.")


class WebshopSettings(_Section):
    """The shop side: the built-in headless adapter (read API + signed outgoing webhooks), or a
    platform adapter (Vendure)."""

    adapter: Literal["headless", "vendure"] = Field(
        "headless",
        description="Webshop adapter: `headless` (read API + signed webhooks to "
        "webshop.webhook_url) or `vendure` (Vendure's Admin API, [webshop.vendure]).",
    )
    vendure: VendureSettings = Field(default_factory=VendureSettings)
    api_token: SecretStr = Field(
        SecretStr("shop-token"),
        description="Bearer token the shop uses on /v1. Outside loopback: at least 16 characters, "
        "not the default.",
    )
    webhook_url: AnyHttpUrl | None = Field(
        None, description="Where changes are pushed (Standard Webhooks); unset = none."
    )
    webhook_secret: SecretStr = Field(
        SecretStr("whsec_c2hvcC13ZWJob29rLXNlY3JldC1kZWZhdWx0"),
        description="Standard Webhooks secret (`whsec_` + base64) used to sign outgoing webhooks. "
        "Outside loopback: at least 16 bytes after `whsec_`, not the default.",
    )
    stock_figure: Literal["sum", "per_warehouse"] = Field(
        "sum",
        description="Shop-facing stock: sum over sell-from "
        "warehouses, or one figure per warehouse.",
    )
    stale_after_seconds: float = Field(
        900.0, gt=0, description="Answers older than this say `stale: true`."
    )

    @field_validator("webhook_secret")
    @classmethod
    def _whsec(cls, value: SecretStr) -> SecretStr:
        import base64
        import binascii

        raw = value.get_secret_value()
        if not raw.startswith("whsec_"):
            raise ValueError("expected `whsec_` followed by base64")
        try:
            base64.b64decode(raw.removeprefix("whsec_"), validate=True)
        except binascii.Error as exc:
            raise ValueError("expected `whsec_` followed by valid base64") from exc
        return value


class StoreSettings(_Section):
    """Where the local copy and the job state live (one database for both)."""

    data_dir: Path = Field(
        Path("var"), description="Directory for the SQLite file and other local data."
    )
    database_url: str | None = Field(
        None,
        description="`sqlite:///path.db` or "
        "`postgresql://user@host/db`; default: SQLite file in data_dir.",
    )
    pool_size: int = Field(
        20,
        ge=2,
        le=500,
        description="Database connections one process keeps open. On PostgreSQL every process "
        "(web, each worker, a `sync`) holds up to pool_size + max_overflow: keep their sum "
        "below the server's max_connections.",
    )
    max_overflow: int = Field(
        10,
        ge=0,
        le=500,
        description="Extra PostgreSQL connections one process may open for a burst beyond "
        "pool_size (closed again when returned).",
    )

    outbox_retention_days: float = Field(
        7.0,
        gt=0,
        description="Events the shop has received are deleted this many days after delivery "
        "(and events never to be delivered, with no shop webhook configured, this long after "
        "they were written). Undelivered events are never deleted.",
    )
    inbox_retention_days: float = Field(
        7.0,
        gt=0,
        description="Extend webhook deliveries are kept this long (Extend retries one for about "
        "5 minutes, and a kept delivery answers a late retry as a duplicate).",
    )
    resolved_failure_retention_days: float = Field(
        90.0,
        gt=0,
        description="Parked failures that were resolved or dismissed, and alerts that were "
        "resolved, are deleted this long after; open ones are never deleted.",
    )
    sync_run_retention_days: float = Field(
        90.0,
        gt=0,
        description="Syncs a person started (the console's Sync page) are deleted this long "
        "after they finished; queued and running ones are never deleted.",
    )

    @field_validator("database_url")
    @classmethod
    def _db_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("sqlite:///", "postgresql://", "postgresql+psycopg://")):
            raise ValueError("expected `sqlite:///PATH` or `postgresql://USER@HOST[:PORT]/DB`")
        return value

    @property
    def url(self) -> str:
        """The effective database URL (SQLAlchemy form)."""
        if self.database_url is None:
            return f"sqlite:///{(self.data_dir / 'extend-connector.db').as_posix()}"
        if self.database_url.startswith("postgresql://"):
            return "postgresql+psycopg://" + self.database_url.removeprefix("postgresql://")
        return self.database_url

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")


class EngineSettings(_Section):
    """The durable job engine."""

    role: Literal["all", "web", "worker"] = Field(
        "all",
        description="`all`: API and workers in one process; "
        "`web` / `worker` for scale-out on PostgreSQL.",
    )
    application_version: str = Field(
        "1",
        min_length=1,
        description="Pinned workflow version; bump deliberately when workflow code changes shape.",
    )
    executor_id: str = Field(
        "local", min_length=1, description="Stable id of this worker (recovers its own work)."
    )
    worker_concurrency: int = Field(
        8, ge=1, le=256, description="Jobs run at once by this worker process."
    )
    transient_db_retry_minutes: float = Field(
        60.0,
        gt=0,
        description="How long a job step waits out a lost or refused database connection (SQLite: "
        "a held lock) before its job fails; the watchdog then resumes it.",
    )
    stuck_order_minutes: float = Field(
        10.0,
        gt=0,
        description="An acknowledged order not in Extend whose job has not moved for this long is "
        "recovered (its job resumed or queued again) or parked, and logged at error level.",
    )
    watchdog_minutes: float = Field(
        1.0, gt=0, description="How often the watchdog looks for stuck orders and failed jobs."
    )
    finished_job_retention_days: float = Field(
        7.0,
        gt=0,
        description="Jobs that finished successfully are deleted with their checkpoints this "
        "long after (failed, cancelled, queued and running jobs are kept).",
    )
    heartbeat_seconds: float = Field(
        10.0,
        gt=0,
        le=300,
        description="How often a process that runs jobs says it is alive and looks for jobs left "
        "running by a process that is gone (or claimed here and never started).",
    )
    executor_dead_seconds: float = Field(
        120.0,
        gt=0,
        description="A process not heard of for this long is gone: the jobs it held as running "
        "go back to their queues for the living. Keep it well above heartbeat_seconds (a live "
        "process taken for dead runs a job twice for a moment) and above clock skew between "
        "hosts.",
    )

    @field_validator("executor_dead_seconds")
    @classmethod
    def _dead_after_beats(cls, value: float, info: ValidationInfo) -> float:
        beat = info.data.get("heartbeat_seconds")
        if beat is not None and value < 3 * beat:
            raise ValueError(
                f"must be at least 3 x engine.heartbeat_seconds ({3 * beat:g}): a process would be "
                "taken for gone between two of its heartbeats"
            )
        return value


class ServerSettings(_Section):
    """The HTTP server (webhook inbox, read API, admin)."""

    host: str = Field("127.0.0.1", min_length=1, description="Interface to bind.")
    port: int = Field(8700, ge=1, le=65535, description="Port to bind.")
    webhook_max_body_bytes: int = Field(
        1_048_576, ge=1024, description="Larger webhook bodies get 413."
    )
    max_body_bytes: int = Field(
        1_048_576,
        ge=1024,
        description="Larger bodies on every other route "
        "(/v1 included) get 413 before they are read.",
    )
    header_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=300,
        description="A connection must complete each "
        "request head within this time, else it is closed.",
    )
    body_timeout_seconds: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="A request body must arrive within this time of its head, else 408.",
    )
    keepalive_timeout_seconds: int = Field(
        5, ge=1, le=300, description="An idle keep-alive connection is closed after this."
    )
    worker_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="engine.role = worker: serve /metrics, /healthz and /readyz on this port "
        "(each worker its own); unset: a worker serves no HTTP.",
    )
    processes: int = Field(
        1,
        ge=1,
        le=64,
        description="engine.role = web: answer server.port from this many processes (PostgreSQL; "
        "one process answers on one core). Each has its own store.pool_size connections. A "
        "worker ignores it, as it ignores server.port.",
    )
    max_connections: int = Field(
        4096,
        ge=16,
        le=1_000_000,
        description="Open connections at most; more get a 503 and are closed (lowered to fit the "
        "open-file limit).",
    )


class SyncSettings(_Section):
    """Schedules and windows of the flows."""

    overlap_seconds: float = Field(
        300.0, ge=0, description="Change-date sweeps re-read this much before the cursor."
    )
    orders_sweep_minutes: float = Field(
        15.0, gt=0, description="Order reconciliation sweep interval."
    )
    balances_sweep_minutes: float = Field(
        10.0, gt=0, description="Balance reconciliation sweep interval."
    )
    products_sweep_minutes: float = Field(60.0, gt=0, description="Product sweep interval.")
    customers_sweep_minutes: float = Field(60.0, gt=0, description="Customer sweep interval.")
    prices_full_refresh_minutes: float = Field(
        360.0, gt=0, description="Full price refresh interval."
    )
    prices_active_refresh_minutes: float = Field(
        30.0, gt=0, description="Price refresh for recently active customers."
    )
    balance_debounce_seconds: float = Field(
        0.3, ge=0, description="Quiet time before a dirty-balance flush."
    )
    balance_max_delay_seconds: float = Field(
        1.0, gt=0, description="Longest a dirty balance waits during a steady stream."
    )
    balance_apply_notification_value: bool = Field(
        False,
        description="Write the notified balance at once "
        "(unconfirmed) before the fetch confirms it.",
    )

    @model_validator(mode="after")
    def _windows(self) -> SyncSettings:
        if self.balance_max_delay_seconds < self.balance_debounce_seconds:
            raise ValueError("balance_max_delay_seconds must be >= balance_debounce_seconds")
        return self


class LogSettings(_Section):
    """What the connector (and every library in it) prints: one stream, one format."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO",
        description="Lowest level printed: DEBUG (adds each Extend HTTP call), INFO, WARNING, "
        "ERROR.",
    )
    format: Literal["json", "console"] = Field(
        "json",
        description="`json`: one JSON object a line (for log shippers); `console`: aligned "
        "human-readable lines.",
    )

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class AlertSettings(_Section):
    """Alerts to an operator: a webhook and/or e-mail, one per open condition, then "resolved"."""

    webhook_url: AnyHttpUrl | None = Field(
        None, description="POST each alert (JSON) here; unset: no webhook alerts."
    )
    webhook_secret: SecretStr | None = Field(
        None,
        description="When set, alert calls are signed like the connector's calls to the shop "
        "(Standard Webhooks headers, HMAC-SHA256 with this `whsec_` secret).",
    )
    smtp_host: str | None = Field(None, description="SMTP server for e-mail alerts; unset: none.")
    smtp_port: int = Field(25, ge=1, le=65535, description="SMTP port.")
    smtp_starttls: bool = Field(False, description="Use STARTTLS on the SMTP connection.")
    smtp_username: str | None = Field(None, description="SMTP login (unset: no login).")
    smtp_password: SecretStr | None = Field(None, description="SMTP password.")
    email_from: str = Field("extend-connector@localhost", description="Sender of alert e-mails.")
    email_to: StrList = Field(
        default_factory=list, description="Recipients of alert e-mails (needs smtp_host)."
    )
    check_seconds: float = Field(
        60.0, gt=0, description="How often the alert conditions are evaluated."
    )
    unreachable_minutes: float = Field(
        5.0, gt=0, description="Alert when Extend has been unreachable for this long."
    )
    stale_minutes: float = Field(
        60.0,
        gt=0,
        description="Alert when Extend last confirmed a data point longer ago than this (or than "
        "twice its sweep interval, when that is longer).",
    )
    outbox_pending: int = Field(
        1000, ge=1, description="Alert when this many events to the shop wait for delivery."
    )
    outbox_age_minutes: float = Field(
        15.0, gt=0, description="Alert when the oldest event to the shop has waited this long."
    )

    _list = field_validator("email_to", mode="before")(_split_list)

    @field_validator("webhook_secret")
    @classmethod
    def _whsec(cls, value: SecretStr | None) -> SecretStr | None:
        return None if value is None else WebshopSettings._whsec(value)

    @field_validator("email_to")
    @classmethod
    def _needs_smtp(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if value and not info.data.get("smtp_host"):
            raise ValueError("needs alerts.smtp_host (the SMTP server to use)")
        return value


class AdminSettings(_Section):
    """The operator's web console at /admin (docs/console.md)."""

    password_hash: SecretStr | None = Field(
        None,
        description="scrypt hash of the console password, made by `extend-connector admin "
        "hash-password`; unset: no console (every /admin page answers 404 saying so).",
    )
    session_hours: float = Field(
        8.0, gt=0, le=24 * 30, description="A console login lasts this long."
    )

    @field_validator("password_hash")
    @classmethod
    def _hash(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        parts = value.get_secret_value().split("$")
        if len(parts) != 6 or parts[0] != "scrypt" or not all(p.isdigit() for p in parts[1:4]):
            raise ValueError(
                "expected the output of `extend-connector admin hash-password` "
                "(scrypt$N$r$p$salt$hash), never the password itself"
            )
        return value


class Settings(BaseSettings):
    """The whole configuration."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        case_sensitive=False,
        hide_input_in_errors=True,
    )

    scope: ScopeSettings = Field(default_factory=ScopeSettings)
    extend: ExtendSettings = Field(default_factory=ExtendSettings)
    webshop: WebshopSettings = Field(default_factory=WebshopSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    sync: SyncSettings = Field(default_factory=SyncSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    admin: AdminSettings = Field(default_factory=AdminSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment variables override the TOML file, which arrives as init kwargs.
        return (env_settings, init_settings)

    @property
    def shared_rate_limit_on(self) -> bool:
        """Whether Extend calls are paced by the database-backed fleet limiter (`auto`:
        PostgreSQL)."""
        mode = self.extend.shared_rate_limit
        return mode == "on" or (mode == "auto" and not self.store.is_sqlite)

    @model_validator(mode="after")
    def _vendure(self) -> Settings:
        shop = self.webshop
        if shop.adapter != "vendure":
            return self
        v = shop.vendure
        if v.admin_api_url is None:
            raise ValueError("webshop.vendure.admin_api_url is required with adapter `vendure`")
        if v.password is None or not v.password.get_secret_value():
            raise ValueError("webshop.vendure.password is required with adapter `vendure`")
        if shop.stock_figure == "per_warehouse":
            missing = [w for w in self.extend.warehouses if w not in v.stock_locations]
            if missing:
                raise ValueError(
                    "webshop.vendure.stock_locations: no Vendure stock location for warehouse "
                    f"{', '.join(map(repr, missing))} (webshop.stock_figure = per_warehouse)"
                )
        elif v.stock_locations:
            raise ValueError(
                "webshop.vendure.stock_locations needs webshop.stock_figure = `per_warehouse` "
                "(with `sum`, set webshop.vendure.sum_location)"
            )
        return self

    @model_validator(mode="after")
    def _cross_checks(self) -> Settings:
        if self.engine.role != "all" and self.store.is_sqlite:
            raise ValueError(
                "engine.role `web`/`worker` needs store.database_url = postgresql://… (a SQLite "
                "file cannot be shared by several processes); use role `all` with SQLite"
            )
        if self.server.processes > 1 and self.engine.role == "all":
            raise ValueError(
                f"server.processes = {self.server.processes} needs engine.role = `web`, with the "
                "jobs in `worker` processes (each with its own engine.executor_id); with role "
                "`all` set server.processes = 1"
            )
        return self

    @model_validator(mode="after")
    def _safe_secrets(self) -> Settings:
        problems = secret_problems(self)
        if problems:
            # A custom type (not ValueError) lets `load_settings` tell these from malformed values.
            raise PydanticCustomError(UNSAFE_SECRET_ERROR, "\n".join(problems))
        return self


def env_name(loc: tuple[str | int, ...]) -> str:
    """The environment variable that sets the setting at `loc`."""
    return ENV_PREFIX + "__".join(str(part).upper() for part in loc)


# --- secrets: empty ones never start; public ones start on loopback only -----------------------

UNSAFE_SECRET_ERROR = "unsafe_secret"
# Secrets the connector chooses itself (the shop's token and signing key) are this long at least
# outside loopback; Extend's credential and webhook secret are whatever Extend issues.
MIN_OWN_SECRET_LENGTH = 16
# Published in this repository (settings defaults, simulator, demo) or in Extend's documentation
# (`secret123` is its signature example): anyone can compute a signature or call with them.
PUBLIC_SECRETS: frozenset[str] = frozenset(
    {
        "sim-token",
        "sim-webhook-secret",
        "shop-token",
        "whsec_c2hvcC13ZWJob29rLXNlY3JldC1kZWZhdWx0",
        "demo-webhook-secret",
        "demo-shop-token",
        "whsec_ZGVtby1zaG9wLXdlYmhvb2stc2VjcmV0LTMyYnl0ZXM=",
        "secret123",
    }
)


def _whsec_key(value: str) -> bytes | None:
    """The key bytes of a `whsec_<base64>` secret (None when it is not one)."""
    try:
        return base64.b64decode(value.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        return None


_PUBLIC_KEYS = {
    key for key in (_whsec_key(v) for v in PUBLIC_SECRETS if v.startswith("whsec_")) if key
}


def is_loopback_host(host: str | None) -> bool:
    """127.0.0.0/8, ::1 and `localhost` names; any other name may resolve anywhere, so it is not."""
    if host is None:
        return False
    name = host.strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def exposure(settings: Settings) -> list[str]:
    """Why the connector faces more than this machine (empty: everything is on loopback)."""
    reasons = []
    if not is_loopback_host(settings.extend.base_url.host):
        reasons.append(f"extend.base_url host {settings.extend.base_url.host}")
    if not is_loopback_host(settings.server.host):
        reasons.append(f"server.host {settings.server.host}")
    hook = settings.webshop.webhook_url
    if hook is not None and not is_loopback_host(hook.host):
        reasons.append(f"webshop.webhook_url host {hook.host}")
    return reasons


_SHOP_TOKEN_HINT = (
    "a random token of at least 16 characters, e.g. the output of "
    "`python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`"
)
_SHOP_WHSEC_HINT = (
    "`whsec_` + base64 of at least 16 random bytes, e.g. the output of `python3 -c 'import base64, "
    'secrets; print("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())\'`'
)
# setting -> what to put there instead
_SECRET_HINTS: dict[tuple[str, ...], str] = {
    ("extend", "api_token"): "the credential Extend issued for this integration",
    ("extend", "webhook_secret"): "the secret of the webhook registration in Extend",
    ("webshop", "api_token"): _SHOP_TOKEN_HINT,
    ("webshop", "webhook_secret"): _SHOP_WHSEC_HINT,
    (
        "webshop",
        "vendure",
        "password",
    ): "the password of the Vendure administrator for the connector",
}


def _secret_problem(loc: tuple[str, ...], value: str, exposed: str) -> str | None:
    """What is unsafe about the secret at `loc` (None: nothing); never quotes the value."""
    is_whsec = loc == ("webshop", "webhook_secret")
    key = _whsec_key(value) if is_whsec else value.strip().encode()
    if not key:
        what = "empty key after `whsec_`" if is_whsec else "empty"
        if loc == ("extend", "webhook_secret"):
            what += (
                ", so anyone can sign a webhook (turn extend.verify_webhook_signatures off instead "
                "only if something in front checks the calls)"
            )
        return f"{what}; set {_SECRET_HINTS[loc]}"
    if not exposed:
        return None
    if value in PUBLIC_SECRETS or (is_whsec and key in _PUBLIC_KEYS):
        return (
            "a public default (published with the simulator, the demo or Extend's docs), refused "
            f"outside loopback ({exposed}); set {_SECRET_HINTS[loc]}"
        )
    if loc[0] == "webshop" and len(key) < MIN_OWN_SECRET_LENGTH:
        unit = "bytes after `whsec_`" if is_whsec else "characters"
        return (
            f"{len(key)} {unit}; outside loopback ({exposed}) at least {MIN_OWN_SECRET_LENGTH} are "
            f"needed; set {_SECRET_HINTS[loc]}"
        )
    return None


def secret_problems(settings: Settings) -> list[str]:
    """One line per unsafe secret, naming the setting and its environment variable.

    Empty secrets are always refused: an empty HMAC key or bearer token is one anyone can use.
    Public secrets (`PUBLIC_SECRETS`) and short self-chosen ones are refused as soon as any of
    extend.base_url, server.host or webshop.webhook_url leaves loopback, so the simulator, the
    demo and the tests keep running with the defaults. With extend.verify_webhook_signatures
    off, extend.webhook_secret is not used and not checked (a warning is logged at every start).
    """
    exposed = ", ".join(exposure(settings))
    secrets: dict[tuple[str, ...], SecretStr] = {
        ("extend", "api_token"): settings.extend.api_token,
        ("extend", "webhook_secret"): settings.extend.webhook_secret,
        ("webshop", "api_token"): settings.webshop.api_token,
        ("webshop", "webhook_secret"): settings.webshop.webhook_secret,
    }
    if not settings.extend.verify_webhook_signatures:
        del secrets[("extend", "webhook_secret")]
    if settings.webshop.adapter == "vendure" and settings.webshop.vendure.password is not None:
        secrets[("webshop", "vendure", "password")] = settings.webshop.vendure.password
    problems = []
    for loc, secret in secrets.items():
        problem = _secret_problem(loc, secret.get_secret_value(), exposed)
        if problem:
            problems.append(f"{'.'.join(loc)} [env {env_name(loc)}]: {problem}")
    return problems


def _describe(error: dict[str, Any]) -> str:
    loc = tuple(
        p for p in error.get("loc", ()) if not (isinstance(p, str) and p.startswith("function-"))
    )
    # Drop pydantic's union / validator branch names that are not setting names.
    loc = tuple(p for p in loc if p not in {"url", "none", "function-after[_whsec(), SecretStr]"})
    dotted = ".".join(str(p) for p in loc)
    message = error.get("msg", "invalid")
    if not dotted:
        return redact_text(str(message).removeprefix("Value error, "))
    if error.get("type") == "extra_forbidden":
        message = (
            "unknown setting (check the spelling; `extend-connector init` writes every setting)"
        )
    given = error.get("input")
    secret = any(word in dotted for word in ("secret", "token", "password"))
    hidden = secret or error.get("type") == "extra_forbidden" or isinstance(given, dict)
    shown = "" if hidden else f" (got {given!r})"
    # A URL given for another setting (or a message quoting it) may carry a password.
    return redact_text(f"{dotted} [env {env_name(loc)}]: {message}{shown}")


def load_settings(config_path: Path | None = None, *, env: bool = True) -> Settings:
    """Read the TOML file (if any) and the environment into `Settings`, or raise `ConfigError`.

    `config_path=None` reads ./extend-connector.toml when present; an explicit path must exist.
    """
    data: dict[str, Any] = {}
    source = None
    path = config_path if config_path is not None else Path(DEFAULT_CONFIG_FILE)
    if path.exists():
        source = str(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"{path}: not valid TOML: {exc}"], source) from exc
    elif config_path is not None:
        raise ConfigError([f"--config {config_path}: file not found"], str(config_path))
    try:
        if env:
            return Settings(**data)
        return EmbeddedSettings(**data)
    except ValidationError as exc:
        errors = exc.errors()
        problems = [line for e in errors for line in _describe(dict(e)).split("\n")]
        unsafe_only = all(e.get("type") == UNSAFE_SECRET_ERROR for e in errors)
        raise ConfigError(problems, source, unsafe_only=unsafe_only) from exc


class EmbeddedSettings(Settings):
    """Settings from code (or a file) only: environment variables are not read (demo, tests)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


SECTIONS: dict[str, type[BaseModel]] = {
    "scope": ScopeSettings,
    "extend": ExtendSettings,
    "webshop": WebshopSettings,
    "store": StoreSettings,
    "engine": EngineSettings,
    "server": ServerSettings,
    "sync": SyncSettings,
    "log": LogSettings,
    "alerts": AlertSettings,
    "admin": AdminSettings,
}
