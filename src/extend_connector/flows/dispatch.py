"""Which flow handles which Extend webhook action, declared by the flows themselves.

The webhook inbox knows no flow: for each notification of a delivery it looks up the
action here. A handler is a function run inside the inbox's own transaction (cheap bookkeeping:
mark the balance pair or the record dirty, so a burst of thousands of notifications costs no
durable job each), plus an optional `after_commit` callback (start a debounced flush or drain).
Balances mark `dirty_balances` (flows/balances.py); orders, products and customers mark
`dirty_records` through `flows.records.handler(kind)`.
Actions with no handler are stored and counted by the inbox, then acknowledged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from extend_connector.extend.webhooks import Notification


@dataclass(frozen=True, kw_only=True, slots=True)
class InlineHandler:
    """`apply` runs per notification inside the inbox transaction; a handler with `apply_many`
    gets every notification of a group-committed batch for it in one call instead (one statement
    for many marks), in delivery order."""

    apply: Callable[[Session, Notification, dict[str, Any]], None]
    after_commit: Callable[[list[Notification]], None] | None = None
    apply_many: Callable[[Session, list[Notification]], None] | None = None


Handler = InlineHandler

_HANDLERS: dict[str, Handler] = {}
_RANKS: dict[int, int] = {}  # id(handler) -> the order it was first routed in


def on(actions: list[str] | tuple[str, ...], handler: Handler) -> None:
    """Route each of `actions` (Extend's action names, case-insensitive) to `handler`."""
    for action in actions:
        key = action.lower()
        existing = _HANDLERS.get(key)
        if existing is not None and existing != handler:
            raise ValueError(f"webhook action {action!r} already has a handler: {existing}")
        _HANDLERS[key] = handler
    _RANKS.setdefault(id(handler), len(_RANKS))


def forget(actions: list[str] | tuple[str, ...]) -> None:
    """Route `actions` to no handler again (a Connector rebuilt in this process with a scope that
    does not keep the data point: its notifications are stored and acknowledged, nothing more)."""
    for action in actions:
        _HANDLERS.pop(action.lower(), None)


def handler_for(action: str) -> Handler | None:
    return _HANDLERS.get(action.lower())


def rank(handler: Handler) -> int:
    """The handler's place among all handlers (the order they were first routed in): a batch
    that runs several handlers runs them in this order, so two batches take their rows' locks
    in one order (PostgreSQL, several web processes) and cannot deadlock on them."""
    return _RANKS.get(id(handler), len(_RANKS))


def notification_json(
    notification: Notification, *, delivery_id: str, index: int, received_at: str
) -> dict[str, Any]:
    """The JSON a job handler receives: enough to refetch, never the data itself."""
    return {
        "action": notification.action,
        "details": dict(notification.details),
        "entityKey": notification.entity_key,
        "deliveryId": delivery_id,
        "index": index,
        "receivedAt": received_at,
    }
