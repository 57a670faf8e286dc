"""The durable identities of the orders flow, pinned.

Workflow and step names are stored in every job row and checkpoint: a job in flight across an
upgrade finds its code (and replays its finished steps) only by these names. Moving a function
between modules must not rename it, so the full list is written out here, as it was before
`flows/orders.py` became a package.
"""

from __future__ import annotations

from datetime import timedelta

from extend_connector import engine
from extend_connector.engine._declare import declared_queues, declared_schedules
from extend_connector.extend.webhooks import ORDER_ACTIONS, ORDER_CREATED
from extend_connector.flows import dispatch, failures, orders, records
from extend_connector.settings import Settings

WORKFLOWS = {"orders.apply_change", "orders.refresh", "orders.submit", "orders.sweep"}
STEPS = {
    "orders.begin",
    "orders.change_once",
    "orders.change_refused",
    "orders.mark_waiting",
    "orders.park_order",
    "orders.refresh_once",
    "orders.resolve_customer",
    "orders.send",
    "orders.sweep_step",
}
QUEUES = {
    "orders-submit": engine.QueueSpec(
        name="orders-submit", worker_concurrency=64, poll_seconds=0.2
    ),
    "orders-progress": engine.QueueSpec(
        name="orders-progress", partition_concurrency=1, worker_concurrency=32, poll_seconds=0.5
    ),
    "orders-sweep": engine.QueueSpec(name="orders-sweep", concurrency=1),
}


def _declared_in_orders(declared: dict[str, str]) -> set[str]:
    return {
        name
        for name, module in declared.items()
        if module == orders.__name__ or module.startswith(f"{orders.__name__}.")
    }


def test_the_orders_workflows_keep_their_names() -> None:
    assert _declared_in_orders(engine.declared_workflows()) == WORKFLOWS
    assert engine.workflow_name(orders.submit) == "orders.submit"
    assert engine.workflow_name(orders.refresh) == "orders.refresh"
    assert engine.workflow_name(orders.apply_change) == "orders.apply_change"


def test_the_orders_steps_keep_their_names() -> None:
    assert _declared_in_orders(engine.declared_steps()) == STEPS


def test_the_orders_queues_are_declared_once_as_before() -> None:
    declared = declared_queues()
    assert {name: declared[name] for name in QUEUES} == QUEUES


def test_order_webhooks_mark_the_order_for_the_order_drain() -> None:
    # `orders.refresh` stays declared (jobs of the previous version) but no hook enqueues it.
    for action in ORDER_ACTIONS - {ORDER_CREATED}:
        assert dispatch.handler_for(action) is records.handler(records.ORDER)
    # OrderCreated marks only orders not recorded here (test_orders_flow.py), for the same drain.
    created = dispatch.handler_for(ORDER_CREATED)
    assert created is not None
    assert created.after_commit is records.handler(records.ORDER).after_commit
    assert records.kind(records.ORDER).refresh is orders.progress.refresh_orders


def test_failed_orders_and_cancellations_can_be_replayed() -> None:
    assert orders.FAILURE_KIND in failures.replay_kinds()
    assert orders.CANCEL_FAILURE_KIND in failures.replay_kinds()


def test_the_sweep_schedule_runs_the_sweep_workflow() -> None:
    orders.declare_schedules(Settings())
    spec = declared_schedules()["orders.sweep"]
    assert engine.workflow_name(spec.workflow) == "orders.sweep"
    assert spec.queue == orders.SWEEP_QUEUE
    assert spec.cron == engine.interval_to_cron(
        timedelta(minutes=Settings().sync.orders_sweep_minutes)
    )
