"""The built-in headless adapter: signed Standard Webhooks to one URL the shop chooses.

Signing follows the Standard Webhooks spec (`webhook-id`, `webhook-timestamp`,
`webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`), so any shop can verify
with an off-the-shelf library. The shop dedupes on `webhook-id` (stable across retries).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx2
from standardwebhooks.webhooks import Webhook

from extend_connector.webshop.events import ShopEvent
from extend_connector.webshop.port import DeliveryRefused, ShopUnavailable

_RETRYABLE_4XX = {408, 409, 423, 425, 429}


def _retry_after(response: httpx2.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class HeadlessWebshop:
    """Deliver events as signed webhooks to `url`; the read API serves everything else."""

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        timeout: float = 10.0,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        self._url = url
        self._signer = Webhook(secret)
        self._http = httpx2.AsyncClient(timeout=timeout, transport=transport)

    def sign(self, event: ShopEvent, body: str, now: datetime | None = None) -> dict[str, str]:
        """The three Standard Webhooks headers for `body`."""
        when = (now or datetime.now(UTC)).astimezone(UTC)
        return {
            "webhook-id": event.event_id,
            "webhook-timestamp": str(int(when.timestamp())),
            "webhook-signature": self._signer.sign(event.event_id, when, body),
        }

    async def deliver(self, event: ShopEvent) -> None:
        body = json.dumps(event.envelope(), separators=(",", ":"), default=str)
        headers = {
            "content-type": "application/json",
            **event.extra_headers,
            **self.sign(event, body),
        }
        try:
            response = await self._http.post(self._url, content=body.encode(), headers=headers)
        except httpx2.HTTPError as exc:
            raise ShopUnavailable(f"shop webhook {self._url} unreachable: {exc!r}") from exc
        if response.is_success:
            return
        excerpt = response.text[:500]
        if response.status_code >= 500 or response.status_code in _RETRYABLE_4XX:
            raise ShopUnavailable(
                f"shop answered {response.status_code}",
                status=response.status_code,
                body_excerpt=excerpt,
                retry_after=_retry_after(response),
            )
        raise DeliveryRefused(
            f"shop refused {event.type.value} {event.key}: {response.status_code}",
            status=response.status_code,
            body_excerpt=excerpt,
        )

    async def aclose(self) -> None:
        await self._http.aclose()
