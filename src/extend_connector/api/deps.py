"""What a route needs, as FastAPI dependencies on `app.state` (never a process global).

The composition root (`service.Connector.app`, or a test building an app with one router)
puts the process's `FlowContext` on `app.state.flow_context`; routes take it, and the shop's
bearer-token check, from here.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from extend_connector.api.auth import require_shop_token
from extend_connector.flows.context import FlowContext


async def flow_context(request: Request) -> FlowContext:
    """The process's flow context, installed on the app by whoever built it (async: no
    thread-pool hop for a lookup)."""
    ctx = getattr(request.app.state, "flow_context", None)
    if not isinstance(ctx, FlowContext):
        raise RuntimeError(
            "the app has no flow_context: build it with create_app(state={'flow_context': ...})"
        )
    return ctx


Context = Annotated[FlowContext, Depends(flow_context)]


async def shop_token(request: Request, ctx: Context) -> None:
    """Refuse a request without `Authorization: Bearer <webshop.api_token>` (401)."""
    require_shop_token(request, ctx.settings.webshop.api_token.get_secret_value().encode())
