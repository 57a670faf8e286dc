"""Telling an operator: alert notices sent as a signed webhook and/or an e-mail.

`Notice` is what is sent (an alert opened or resolved); a `Notifier` sends it or raises
`NotifyError`. `from_settings` builds the ones the `[alerts]` section configures (none: an empty
list). The webhook is signed like the connector's events to the shop (Standard Webhooks:
`webhook-id`, `webhook-timestamp`, `webhook-signature`, HMAC-SHA256 with a `whsec_` secret) when
`alerts.webhook_secret` is set. `RecordingNotifier` keeps notices in memory (tests).
"""

from __future__ import annotations

import json
import smtplib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any, Protocol

import httpx2
from standardwebhooks.webhooks import Webhook

from extend_connector.settings import AlertSettings


class NotifyError(Exception):
    """A notice could not be sent (it is sent again at the next evaluation)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Notice:
    """One alert notice: `event` is `alert.opened` or `alert.resolved`."""

    notice_id: str  # stable across retries: receivers dedupe on it
    event: str
    alert_id: int
    condition: str
    kind: str
    summary: str
    detail: dict[str, Any]
    opened_at: datetime
    resolved_at: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.notice_id,
            "type": self.event,
            "alert": {
                "id": self.alert_id,
                "condition": self.condition,
                "kind": self.kind,
                "summary": self.summary,
                "detail": self.detail,
                "openedAt": self.opened_at.isoformat(),
                "resolvedAt": self.resolved_at.isoformat() if self.resolved_at else None,
            },
        }

    @property
    def subject(self) -> str:
        word = "RESOLVED" if self.event == "alert.resolved" else "ALERT"
        return f"[extend-connector] {word}: {self.summary}"[:200]


class Notifier(Protocol):
    def send(self, notice: Notice) -> None: ...


class WebhookNotifier:
    """POST the notice as JSON; any 2xx is delivered."""

    def __init__(
        self,
        url: str,
        secret: str | None = None,
        *,
        timeout: float = 10.0,
        transport: httpx2.BaseTransport | None = None,
    ) -> None:
        self.url = url
        self._signer = Webhook(secret) if secret else None
        self._timeout = timeout
        self._transport = transport

    def headers(self, notice: Notice, body: str, now: datetime | None = None) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if self._signer is not None:
            when = (now or datetime.now(UTC)).astimezone(UTC)
            headers |= {
                "webhook-id": notice.notice_id,
                "webhook-timestamp": str(int(when.timestamp())),
                "webhook-signature": self._signer.sign(notice.notice_id, when, body),
            }
        return headers

    def send(self, notice: Notice) -> None:
        body = json.dumps(notice.as_json(), separators=(",", ":"), default=str)
        try:
            with httpx2.Client(timeout=self._timeout, transport=self._transport) as http:
                response = http.post(
                    self.url, content=body.encode(), headers=self.headers(notice, body)
                )
        except httpx2.HTTPError as exc:
            raise NotifyError(f"alert webhook unreachable: {type(exc).__name__}") from exc
        if not response.is_success:
            raise NotifyError(f"alert webhook answered {response.status_code}")


class SmtpNotifier:
    """One plain-text e-mail per notice."""

    def __init__(self, settings: AlertSettings) -> None:
        if not settings.smtp_host:
            raise ValueError("alerts.smtp_host is not set")
        self.settings = settings

    def message(self, notice: Notice) -> EmailMessage:
        s = self.settings
        msg = EmailMessage()
        msg["Subject"] = notice.subject
        msg["From"] = s.email_from
        msg["To"] = ", ".join(s.email_to)
        msg["Message-ID"] = f"<{notice.notice_id}@extend-connector>"
        msg.set_content(
            f"{notice.summary}\n\n"
            + json.dumps(notice.as_json(), indent=2, default=str, ensure_ascii=False)
        )
        return msg

    def send(self, notice: Notice) -> None:
        s = self.settings
        try:
            with smtplib.SMTP(str(s.smtp_host), s.smtp_port, timeout=15) as smtp:
                if s.smtp_starttls:
                    smtp.starttls()
                if s.smtp_username:
                    password = s.smtp_password.get_secret_value() if s.smtp_password else ""
                    smtp.login(s.smtp_username, password)
                smtp.send_message(self.message(notice))
        except (OSError, smtplib.SMTPException) as exc:
            raise NotifyError(f"alert e-mail not sent: {type(exc).__name__}: {exc}") from exc


@dataclass
class RecordingNotifier:
    """Keeps every notice (tests)."""

    notices: list[Notice] = field(default_factory=list)
    fail: bool = False

    def send(self, notice: Notice) -> None:
        if self.fail:
            raise NotifyError("recording notifier told to fail")
        self.notices.append(notice)


def from_settings(settings: AlertSettings) -> list[Notifier]:
    """The notifiers `[alerts]` configures (empty: alerts are kept, not sent)."""
    notifiers: list[Notifier] = []
    if settings.webhook_url is not None:
        secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
        notifiers.append(WebhookNotifier(str(settings.webhook_url), secret))
    if settings.smtp_host and settings.email_to:
        notifiers.append(SmtpNotifier(settings))
    return notifiers


__all__ = [
    "Notice",
    "Notifier",
    "NotifyError",
    "RecordingNotifier",
    "SmtpNotifier",
    "WebhookNotifier",
    "from_settings",
]
