"""The only code that knows Extend Commerce's wire format: client, dialect, errors, webhooks.

Flows use `ExtendClient` and the error classes; the webhook inbox uses `verify_and_parse`.
"""

from .client import (
    CallObserver,
    ClientStats,
    ExtendClient,
    GroupStats,
    OrdersWindow,
    PageProgress,
    budget_key,
)
from .dialect import AuthHeaders, Dialect, Endpoint, header_auth
from .errors import (
    AccessDenied,
    BusinessConflict,
    ExtendError,
    NotFound,
    OutcomeUnknown,
    TechnicalFailure,
    Throttled,
    UnexpectedResponse,
    ValidationFailed,
)
from .ratelimit import (
    FleetBucket,
    RateBudget,
    SyncFleetBucket,
    ThreadedFleetBucket,
    bulk_calls,
    shared_budget,
)
from .retry import RetryPolicy
from .webhooks import (
    MalformedWebhook,
    SignatureInvalid,
    WebhookEnvelope,
    WebhookError,
    normalise_number,
    parse_envelope,
    verify_and_parse,
    verify_signature,
)
from .wire import DriftRecord, DriftRegistry, default_drift

__all__ = [
    "AccessDenied",
    "AuthHeaders",
    "BusinessConflict",
    "CallObserver",
    "ClientStats",
    "Dialect",
    "DriftRecord",
    "DriftRegistry",
    "Endpoint",
    "ExtendClient",
    "ExtendError",
    "FleetBucket",
    "GroupStats",
    "MalformedWebhook",
    "NotFound",
    "OrdersWindow",
    "OutcomeUnknown",
    "PageProgress",
    "RateBudget",
    "RetryPolicy",
    "SignatureInvalid",
    "SyncFleetBucket",
    "TechnicalFailure",
    "ThreadedFleetBucket",
    "Throttled",
    "UnexpectedResponse",
    "ValidationFailed",
    "WebhookEnvelope",
    "WebhookError",
    "budget_key",
    "bulk_calls",
    "default_drift",
    "header_auth",
    "normalise_number",
    "parse_envelope",
    "shared_budget",
    "verify_and_parse",
    "verify_signature",
]
