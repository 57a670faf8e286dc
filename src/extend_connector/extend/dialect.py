"""Every choice Extend has not documented, in one place (extend-commerce-api.md §4 and §5).

Built from `settings.extend` (+ `.dialect`). Authentication and error-body parsing are plain
callables so a deployment with Extend's real specification can swap them in code as well;
everything else is configuration. Nothing outside `extend/` reads these names.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Literal
from zoneinfo import ZoneInfo

from extend_connector.settings import (
    DEFAULT_EXTEND_PATHS,
    DEFAULT_RATE_LIMIT_GROUPS,
    ExtendSettings,
)

from .errors import ErrorBodyParser, parse_error_body
from .paging import BodyEnvelope, Envelope, HeaderEnvelope

AuthHeaders = Callable[[], Mapping[str, str]]
"""Returns the headers that authenticate one request (called per request, so tokens may rotate)."""


def header_auth(header: str, scheme: str, token: str) -> AuthHeaders:
    """`<header>: <scheme> <token>`, or the bare token when `scheme` is empty (API-key style)."""
    value = f"{scheme} {token}" if scheme else token
    fixed = {header: value}
    return lambda: fixed


@dataclass(frozen=True, kw_only=True, slots=True)
class Endpoint:
    """One operation: verb, path template, rate-limit group and whether it changes data."""

    operation: str
    method: str
    path: str
    group: str

    @property
    def is_write(self) -> bool:
        return self.method in {"POST", "PUT", "PATCH", "DELETE"}

    def render(self, **values: str) -> str:
        from urllib.parse import quote

        def sub(match: re.Match[str]) -> str:
            return quote(values[match.group(1)], safe="")

        return re.sub(r"\{(\w+)\}", sub, self.path)


@dataclass(frozen=True, kw_only=True, slots=True)
class Dialect:
    base_url: str
    auth: AuthHeaders
    endpoints: Mapping[str, Endpoint]
    page_param: str = "page"
    page_size_param: str = "pageSize"
    page_size: int = 500
    envelope: Literal["body", "headers"] = "body"
    changed_since_param: str = "changedSince"
    changed_since_format: Literal["offset", "utc"] = "offset"
    timezone: tzinfo = field(default_factory=lambda: ZoneInfo("Europe/Stockholm"))
    ordered_by_change_date: bool = True
    product_numbers_param: str = "productNumbers"
    warehouse_param: str = "warehouse"
    status_param: str = "status"
    order_number_external_param: str = "orderNumberExternal"
    customer_number_param: str = "customerNumber"
    max_url_length: int = 1800
    order_lookup_window: bool = True
    clock_spread_seconds: float = 5.0
    rate_limit_limit_header: str = "x-ratelimit-limit"
    rate_limit_remaining_header: str = "x-ratelimit-remaining"
    rate_limit_reset_header: str = "x-ratelimit-reset"
    request_id_header: str = "x-request-id"
    total_count_header: str = "x-total-count"
    total_pages_header: str = "x-total-pages"
    page_header: str = "x-page"
    page_size_header: str = "x-page-size"
    parse_error: ErrorBodyParser = parse_error_body
    field_renames: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """Wire model class name -> {lower-cased name Extend sends -> the name the model expects}."""

    @classmethod
    def from_settings(cls, extend: ExtendSettings, *, auth: AuthHeaders | None = None) -> Dialect:
        d = extend.dialect
        endpoints: dict[str, Endpoint] = {}
        for op in DEFAULT_EXTEND_PATHS:
            method, path = d.paths.get(op, DEFAULT_EXTEND_PATHS[op]).split(" ", 1)
            group = d.rate_limit_groups.get(op, DEFAULT_RATE_LIMIT_GROUPS[op])
            endpoints[op] = Endpoint(operation=op, method=method, path=path, group=group)
        return cls(
            base_url=str(extend.base_url).rstrip("/"),
            auth=auth
            or header_auth(d.auth_header, d.auth_scheme, extend.api_token.get_secret_value()),
            endpoints=endpoints,
            page_param=d.page_param,
            page_size_param=d.page_size_param,
            page_size=d.page_size,
            envelope=d.envelope,
            changed_since_param=d.changed_since_param,
            changed_since_format=d.changed_since_format,
            timezone=ZoneInfo(d.timezone),
            ordered_by_change_date=d.ordered_by_change_date,
            product_numbers_param=d.product_numbers_param,
            warehouse_param=d.warehouse_param,
            status_param=d.status_param,
            order_number_external_param=d.order_number_external_param,
            customer_number_param=d.customer_number_param,
            max_url_length=d.max_url_length,
            order_lookup_window=d.order_lookup_window,
            clock_spread_seconds=d.clock_spread_seconds,
            rate_limit_limit_header=d.rate_limit_limit_header,
            rate_limit_remaining_header=d.rate_limit_remaining_header,
            rate_limit_reset_header=d.rate_limit_reset_header,
            request_id_header=d.request_id_header,
            field_renames={
                f"Wire{model}": {sent.lower(): expected for expected, sent in renames.items()}
                for model, renames in d.fields.items()
                if renames
            },
        )

    def page_envelope(self, style: Literal["body", "headers"] | None = None) -> Envelope:
        """The parser of a list answer: the configured envelope, or `style` (the probe reads
        answers in the style Extend turned out to use)."""
        if (style or self.envelope) == "body":
            return BodyEnvelope()
        return HeaderEnvelope(
            total_count_header=self.total_count_header,
            total_pages_header=self.total_pages_header,
            page_header=self.page_header,
            page_size_header=self.page_size_header,
        )

    def endpoint(self, operation: str) -> Endpoint:
        return self.endpoints[operation]

    def format_datetime(self, value: datetime) -> str:
        """A change date as the list endpoints expect it (aware datetimes only)."""
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: change dates must carry an offset")
        if self.changed_since_format == "utc":
            return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
        return value.astimezone(self.timezone).isoformat()

    def aware(self, value: datetime) -> datetime:
        """Times Extend sends without an offset are read in the dialect's zone."""
        if value.tzinfo is None or value.utcoffset() is None:
            return value.replace(tzinfo=self.timezone)
        return value

    def join_numbers(self, numbers: list[str]) -> str:
        return ",".join(numbers)
