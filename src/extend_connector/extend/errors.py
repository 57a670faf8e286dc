"""One error tree for every Extend call, classified by what the caller must do.

```
ExtendError                      every failure of a call; carries status, body excerpt,
 │                               operation, request id
 ├── ValidationFailed            400/404/422, errorType "Validation": fix the data; NEVER
 │    │                          retried unchanged
 │    └── NotFound               404: the record does not exist (a flow may treat this as an answer)
 ├── BusinessConflict            409, errorType "Business": terminal for this request; reconcile
 │                               by GET
 ├── TechnicalFailure            5xx, network errors, read timeouts: retry with backoff, keep the
 │    │                          item queued
 │    ├── AccessDenied           401/403: the credential or dialect is wrong; an operator must act
 │    └── UnexpectedResponse     2xx whose body cannot be understood (not JSON, required field
 │                               missing)
 ├── Throttled                   429: wait as `retry_after` says (Retry-After / x-ratelimit-reset)
 └── OutcomeUnknown              a WRITE whose answer was lost (timeout or broken connection after
                                 sending): look the record up before re-sending; never retried
                                 blindly
```

`classify_response` and `classify_exception` are the only places that decide the class; the
client calls them for every answer that is not a success.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx2

BODY_EXCERPT_CHARS = 500


@dataclass(frozen=True, kw_only=True, slots=True)
class ErrorDetail:
    field: str | None
    message: str


@dataclass(frozen=True, kw_only=True, slots=True)
class ErrorBody:
    """What an error body says, in dialect-neutral terms (every part optional)."""

    error_type: str | None = None
    code: str | None = None
    message: str | None = None
    details: tuple[ErrorDetail, ...] = ()


ErrorBodyParser = Callable[[bytes], ErrorBody]


class ExtendError(Exception):
    """Root of the tree. Attributes are for logs, failure views and the caller's decision."""

    def __init__(
        self,
        message: str,
        *,
        operation: str,
        method: str,
        url: str,
        status: int | None = None,
        body_excerpt: str = "",
        request_id: str | None = None,
        error: ErrorBody | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.operation = operation
        self.method = method
        self.url = url
        self.status = status
        self.body_excerpt = body_excerpt
        self.request_id = request_id
        self.error = error or ErrorBody()
        self.retry_after = retry_after
        status_part = f" {status}" if status is not None else ""
        rid = f" request-id={request_id}" if request_id else ""
        super().__init__(f"{operation} ({method} {url}){status_part}: {message}{rid}")

    @property
    def code(self) -> str | None:
        return self.error.code

    @property
    def details(self) -> tuple[ErrorDetail, ...]:
        return self.error.details


class ValidationFailed(ExtendError):
    """Extend refused the data. Resending it unchanged gives the same answer."""


class NotFound(ValidationFailed):
    """The addressed record does not exist in Extend."""


class BusinessConflict(ExtendError):
    """The request conflicts with the record's state (duplicate, already reserved, phased out)."""


class TechnicalFailure(ExtendError):
    """Extend or the path to it failed; the same request may succeed later."""


class AccessDenied(TechnicalFailure):
    """401/403. Kept under TechnicalFailure so items stay queued, but never retried within a
    call."""


class UnexpectedResponse(TechnicalFailure):
    """A success status with a body this client cannot read; reported, and retried like a 5xx."""


class Throttled(ExtendError):
    """429: the rate-limit group is exhausted; `retry_after` (seconds) says how long to wait."""


class OutcomeUnknown(ExtendError):
    """A write was sent but its answer was lost: Extend may or may not have acted on it."""


# --- error body ----------------------------------------------------------------------------


def _first(obj: Mapping[str, Any], *names: str) -> Any:
    lowered = {k.lower(): v for k, v in obj.items()}
    for name in names:
        if name.lower() in lowered:
            return lowered[name.lower()]
    return None


def parse_error_body(raw: bytes) -> ErrorBody:
    """The house-contract error body, read tolerantly.

    `{"errorType", "code", "message", "details": [{"field", "message"}]}`; key case is ignored and
    the common alternatives (`type`, `title`, `errors`, ASP.NET's `{"errors": {field: [msg]}}`)
    are understood, because Extend's real error body is undocumented.
    """
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return ErrorBody(message=raw[:200].decode("utf-8", "replace").strip() or None)
    if not isinstance(data, dict):
        return ErrorBody()
    details: list[ErrorDetail] = []
    raw_details = _first(data, "details", "errors")
    if isinstance(raw_details, list):
        for item in raw_details:
            if isinstance(item, dict):
                field = _first(item, "field", "name", "property")
                msg = _first(item, "message", "msg", "error")
                details.append(
                    ErrorDetail(field=None if field is None else str(field), message=str(msg or ""))
                )
            elif item is not None:
                details.append(ErrorDetail(field=None, message=str(item)))
    elif isinstance(raw_details, dict):
        for field, msgs in raw_details.items():
            for msg in msgs if isinstance(msgs, list) else [msgs]:
                details.append(ErrorDetail(field=str(field), message=str(msg)))

    def text(value: Any) -> str | None:
        return None if value is None else str(value)

    return ErrorBody(
        error_type=text(_first(data, "errorType", "type")),
        code=text(_first(data, "code", "errorCode")),
        message=text(_first(data, "message", "title", "detail")),
        details=tuple(details),
    )


# --- the mapping ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class CallContext:
    """Which call failed: copied into every error."""

    operation: str
    method: str
    url: str
    is_write: bool


_BY_ERROR_TYPE: dict[str, type[ExtendError]] = {
    "validation": ValidationFailed,
    "business": BusinessConflict,
    "technical": TechnicalFailure,
}


def parse_retry_after(headers: Mapping[str, str], reset_header: str | None) -> float | None:
    """Seconds to wait: `Retry-After` (seconds or HTTP date) first, then the reset header (None:
    only `Retry-After` counts)."""
    from email.utils import parsedate_to_datetime

    value = headers.get("retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                when = parsedate_to_datetime(value)
            except (TypeError, ValueError):
                when = None
            if when is not None and when.tzinfo is not None:
                from datetime import UTC, datetime

                return max(0.0, (when - datetime.now(UTC)).total_seconds())
    reset = headers.get(reset_header) if reset_header else None
    if reset:
        try:
            return max(0.0, float(reset))
        except ValueError:
            return None
    return None


def classify_response(
    response: httpx2.Response,
    ctx: CallContext,
    *,
    parse_body: ErrorBodyParser = parse_error_body,
    request_id_header: str = "x-request-id",
    reset_header: str = "x-ratelimit-reset",
) -> ExtendError:
    """The error for a non-success answer. Status decides first; the body's errorType refines
    4xx."""
    status = response.status_code
    raw = response.content
    body = parse_body(raw)
    kwargs: dict[str, Any] = {
        "operation": ctx.operation,
        "method": ctx.method,
        "url": ctx.url,
        "status": status,
        "body_excerpt": raw[:BODY_EXCERPT_CHARS].decode("utf-8", "replace"),
        "request_id": response.headers.get(request_id_header),
        "error": body,
    }
    message = body.message or response.reason_phrase or "error"
    if body.code:
        message = f"[{body.code}] {message}"
    if status == 429:
        return Throttled(
            message, retry_after=parse_retry_after(response.headers, reset_header), **kwargs
        )
    if status in (401, 403):
        return AccessDenied(message, **kwargs)
    if status == 404:
        return NotFound(message, **kwargs)
    if status == 409:
        return BusinessConflict(message, **kwargs)
    if 400 <= status < 500:
        # Extend promises three error types; when the body names one, trust it over the status.
        cls = _BY_ERROR_TYPE.get((body.error_type or "").lower(), ValidationFailed)
        return cls(message, **kwargs)
    # 5xx (and anything odd): the request may succeed later. On a write we do not know whether
    # the server acted before failing, so the caller gets TechnicalFailure and the client never
    # re-sends it; the order flow looks the order up before a new attempt (design rule 3).
    # Only a 503's own Retry-After (maintenance) asks for a wait: the rate-limit headers ride on
    # every answer, and the window's reset says nothing about when a failing server is back.
    retry_after = parse_retry_after(response.headers, None) if status == 503 else None
    return TechnicalFailure(message, retry_after=retry_after, **kwargs)


# Exceptions raised before a single byte of the request could have reached Extend.
_NOT_SENT: tuple[type[Exception], ...] = (
    httpx2.ConnectError,
    httpx2.ConnectTimeout,
    httpx2.PoolTimeout,
)


def request_not_sent(exc: BaseException) -> bool:
    """True when the transport failed before sending, so even a write may be sent again."""
    return isinstance(exc, _NOT_SENT)


def classify_exception(exc: httpx2.TransportError | OSError, ctx: CallContext) -> ExtendError:
    """The error for a call that got no answer (a transport error, or an OSError such as running
    out of file descriptors inside the HTTP stack: a write is then looked up, never re-sent)."""
    kwargs: dict[str, Any] = {"operation": ctx.operation, "method": ctx.method, "url": ctx.url}
    what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if ctx.is_write and not request_not_sent(exc):
        return OutcomeUnknown(
            f"answer lost after sending ({what}); look it up before re-sending", **kwargs
        )
    return TechnicalFailure(what, **kwargs)
