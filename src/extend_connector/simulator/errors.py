"""Errors the simulator answers with, in the house contract's body (§5.3).

SimError                 -> {"errorType", "code", "message", "details"}
├── ValidationFailed     400 / 404 / 422  errorType "Validation": fix the data, do not resend
unchanged
├── BusinessConflict     409              errorType "Business": terminal, reconcile by GET
└── TechnicalFailure     5xx              errorType "Technical": retry with backoff
"""

from __future__ import annotations

from typing import Any


class SimError(Exception):
    """An API error with its HTTP status and contract body."""

    error_type = "Technical"
    status = 500

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int | None = None,
        details: list[dict[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or []
        if status is not None:
            self.status = status

    def body(self) -> dict[str, Any]:
        return {
            "errorType": self.error_type,
            "code": self.code,
            "message": self.message,
            "details": self.details,
        }


class ValidationFailed(SimError):
    error_type = "Validation"
    status = 400


class BusinessConflict(SimError):
    error_type = "Business"
    status = 409


class TechnicalFailure(SimError):
    error_type = "Technical"
    status = 503
