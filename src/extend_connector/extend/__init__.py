"""The only code that knows Extend Commerce's wire format: client, dialect, errors, webhooks.

Flows use `ExtendClient` and the error classes; the webhook inbox uses `verify_and_parse`.
"""

from .client import ClientStats, ExtendClient, GroupStats, PageProgress
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
from .ratelimit import RateBudget
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
    "ClientStats",
    "Dialect",
    "DriftRecord",
    "DriftRegistry",
    "Endpoint",
    "ExtendClient",
    "ExtendError",
    "GroupStats",
    "MalformedWebhook",
    "NotFound",
    "OutcomeUnknown",
    "PageProgress",
    "RateBudget",
    "RetryPolicy",
    "SignatureInvalid",
    "TechnicalFailure",
    "Throttled",
    "UnexpectedResponse",
    "ValidationFailed",
    "WebhookEnvelope",
    "WebhookError",
    "default_drift",
    "header_auth",
    "normalise_number",
    "parse_envelope",
    "verify_and_parse",
    "verify_signature",
]
