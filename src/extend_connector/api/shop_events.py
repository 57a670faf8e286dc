"""`POST /webhooks/vendure`: a shop platform's plugin says an order was paid or cancelled.

Signed like the connector's own webhooks to the shop (Standard Webhooks, `webshop.webhook_secret`:
`webhook-id`, `webhook-timestamp` within 5 minutes, `webhook-signature`). The event is a
trigger: the connector reads the order from the shop's Admin API (`flows.shop_orders`), so
the body is only logged. A forged, stale or malformed event is refused with 401/400 and logged.
"""

from __future__ import annotations

import json

import structlog
from fastapi import APIRouter, Request, Response
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from extend_connector.api.deps import Context
from extend_connector.api.errors import ApiProblem
from extend_connector.flows import shop_orders

log = structlog.get_logger("extend_connector.api.shop_events")
router = APIRouter()
MAX_BODY = 64 * 1024


@router.post(
    "/webhooks/vendure",
    status_code=204,
    summary="Order events from the Vendure plugin (signed triggers)",
)
async def vendure_event(request: Request, ctx: Context) -> Response:
    if ctx.settings.webshop.adapter != "vendure":
        raise ApiProblem(404, "not_found", "no Vendure shop is configured (webshop.adapter)")
    body = await request.body()
    if len(body) > MAX_BODY:
        raise ApiProblem(413, "too_large", f"an event is at most {MAX_BODY} bytes")
    secret = ctx.settings.webshop.webhook_secret.get_secret_value()
    try:
        Webhook(secret).verify(body, dict(request.headers))
    except WebhookVerificationError as exc:
        log.warning(
            "shop_event_refused", reason=str(exc), webhook_id=request.headers.get("webhook-id")
        )
        raise ApiProblem(401, "bad_signature", f"event refused: {exc}") from exc
    try:
        event = json.loads(body)
        data = event["data"]
        code, state = str(data["orderCode"]), str(data["toState"])
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("shop_event_malformed", webhook_id=request.headers.get("webhook-id"))
        raise ApiProblem(400, "malformed", "expected {type, data: {orderCode, toState}}") from exc
    log.info("shop_event", shop_ref=code, state=state)
    shop_orders.trigger()
    return Response(status_code=204)
