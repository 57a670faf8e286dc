"""Orders: the shop's orders into Extend exactly once, and their progress back to the shop.

- The shop's order is parsed once into a `payload.ShopOrder` (the JSON stays what is stored and
  what jobs carry; code converts where it reads it).
- Intake (`intake.accept_order`): the order is checked against the local copy (`checks`) and
  stored with its submit job in one transaction; an order that cannot be valid is parked (kind
  `order`).
- Submit (`submit.submit`, workflow id `order-<shopRef>`): POST CustomerOrders once. Every
  attempt is written down before it is sent; an attempt that may have reached Extend (lost
  answer, 5xx, a crash mid-call) is followed by a look-up by `orderNumberExternal` before any
  new POST. Extend down or failing: the order waits, visibly `WaitingForExtend`, with capped
  backoff and no retry budget; a long backoff ends early once Extend answers any call of any
  process again (`flows.retry`, policy `orders`). Extend refusing the data: parked with
  Extend's message.
- Progress (`progress.refresh_orders`): order webhooks mark the order dirty (flows/records.py:
  no job per hook, several hooks about one order are one mark); the order drain fetches the
  marked orders in batches, and the fetched order is the truth, applied unless an even newer
  one was applied already (Extend's changedDate decides, not the status rank). The shop is told
  only when something it shows changed (`view`).
- Sweep (`sweep.sweep_orders`): every `sync.orders_sweep_minutes` the orders changed since the
  cursor are listed and each of ours whose change is newer than our copy is fetched: it repairs
  lost webhooks. Never a poll per order.
- Shop changes (`changes.request_cancel`): a cancellation of the order or of lines before
  Reserved is sent to Extend by a job; later it is refused.
- Replay (`replay`): `failures retry` of a parked order or a refused cancellation.

Importing the package declares its queues (`base`), workflows and steps, the order webhook
handler (`progress`) and the replays (`replay`), each once. Durable names (`orders.submit`,
`orders.send`, ...) are explicit and pinned by tests/unit/test_orders_durable_names.py.
"""

from __future__ import annotations

from extend_connector.flows.orders import replay as replay
from extend_connector.flows.orders.base import (
    CANCEL_FAILURE_KIND,
    FAILURE_KIND,
    PROGRESS_QUEUE,
    SUBMIT_QUEUE,
    SWEEP_QUEUE,
    UNSENT,
    ChangeRefused,
    Intake,
    OrderConflict,
    OrderError,
    Problem,
    UnknownOrder,
    backoff_seconds,
    canonical,
)
from extend_connector.flows.orders.changes import apply_change, request_cancel
from extend_connector.flows.orders.checks import check_order
from extend_connector.flows.orders.intake import accept_order
from extend_connector.flows.orders.payload import (
    ShopLine,
    ShopOrder,
    active_line_numbers,
    order_from_payload,
)
from extend_connector.flows.orders.progress import apply_state, refresh
from extend_connector.flows.orders.replay import ADDRESS_FIELDS, AmendError, amend_parked_order
from extend_connector.flows.orders.submit import _outcome_of, intake_start, park_unsent, submit
from extend_connector.flows.orders.sweep import declare_schedules, sweep_orders
from extend_connector.flows.orders.view import get_order_view

__all__ = [
    "ADDRESS_FIELDS",
    "CANCEL_FAILURE_KIND",
    "FAILURE_KIND",
    "PROGRESS_QUEUE",
    "SUBMIT_QUEUE",
    "SWEEP_QUEUE",
    "UNSENT",
    "AmendError",
    "ChangeRefused",
    "Intake",
    "OrderConflict",
    "OrderError",
    "Problem",
    "ShopLine",
    "ShopOrder",
    "UnknownOrder",
    "_outcome_of",
    "accept_order",
    "active_line_numbers",
    "amend_parked_order",
    "apply_change",
    "apply_state",
    "backoff_seconds",
    "canonical",
    "check_order",
    "declare_schedules",
    "get_order_view",
    "intake_start",
    "order_from_payload",
    "park_unsent",
    "refresh",
    "request_cancel",
    "submit",
    "sweep_orders",
]
