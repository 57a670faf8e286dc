"""The headless adapter signs so that a standard Standard Webhooks receiver accepts it, and
classifies the shop's answers by what the delivery job must do."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx2
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from extend_connector.webshop import (
    DeliveryRefused,
    EventType,
    HeadlessWebshop,
    RecordingWebshop,
    ShopEvent,
    ShopUnavailable,
)

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def _event() -> ShopEvent:
    return ShopEvent(
        event_id="evt_1",
        type=EventType.STOCK_CHANGED,
        key="sku:1001",
        data={"productNumber": "1001", "available": "5"},
        occurred_at=datetime(2026, 11, 28, 12, 0, tzinfo=UTC),
    )


def _adapter(handler: httpx2.MockTransport) -> HeadlessWebshop:
    return HeadlessWebshop("http://shop.test/hooks", SECRET, transport=handler)


@pytest.mark.anyio
async def test_delivery_verifies_with_standard_library() -> None:
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(204)

    shop = _adapter(httpx2.MockTransport(handler))
    await shop.deliver(_event())
    await shop.aclose()
    request = seen[0]
    payload = Webhook(SECRET).verify(request.content, dict(request.headers))
    assert payload["type"] == "stock.changed"
    assert payload["data"] == {"key": "sku:1001", "productNumber": "1001", "available": "5"}
    assert request.headers["webhook-id"] == "evt_1"
    tampered = request.content.replace(b"5", b"6")
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(tampered, dict(request.headers))
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "QUJD" * 8).verify(request.content, dict(request.headers))


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "error"),
    [
        (500, ShopUnavailable),
        (503, ShopUnavailable),
        (429, ShopUnavailable),
        (408, ShopUnavailable),
        (400, DeliveryRefused),
        (404, DeliveryRefused),
        (410, DeliveryRefused),
    ],
)
async def test_answers_are_classified(status: int, error: type[Exception]) -> None:
    shop = _adapter(
        httpx2.MockTransport(
            lambda r: httpx2.Response(status, headers={"retry-after": "7"}, text="nope")
        )
    )
    with pytest.raises(error) as info:
        await shop.deliver(_event())
    assert info.value.status == status  # type: ignore[attr-defined]
    assert info.value.body_excerpt == "nope"  # type: ignore[attr-defined]
    if status == 429:
        assert info.value.retry_after == 7.0  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_unreachable_shop_is_unavailable() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("refused", request=request)

    with pytest.raises(ShopUnavailable, match="unreachable"):
        await _adapter(httpx2.MockTransport(handler)).deliver(_event())


@pytest.mark.anyio
async def test_recording_fake_records_and_fails_on_demand() -> None:
    fake = RecordingWebshop(
        fail_with=lambda e: ShopUnavailable("down") if e.key == "sku:2" else None
    )
    await fake.deliver(_event())
    with pytest.raises(ShopUnavailable):
        await fake.deliver(
            ShopEvent(
                event_id="e2",
                type=EventType.STOCK_CHANGED,
                key="sku:2",
                data={},
                occurred_at=datetime.now(UTC),
            )
        )
    assert [e.event_id for e in fake.of_type("stock.changed")] == ["evt_1"]


def test_naive_time_refused() -> None:
    with pytest.raises(ValueError, match="UTC offset"):
        ShopEvent(
            event_id="e",
            type=EventType.ORDER_UPDATED,
            key="order:1",
            data={},
            occurred_at=datetime(2026, 1, 1),
        )
    assert json.loads(json.dumps(_event().envelope()))["timestamp"].endswith("+00:00")
