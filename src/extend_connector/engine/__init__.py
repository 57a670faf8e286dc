"""Durable execution for the connector; the only package that imports DBOS.

Declare at import time, run through an `Engine`:

    from extend_connector import engine

    orders = engine.queue("orders", partition_concurrency=1)

    @engine.step(retries=5, retry_on=is_technical)
    async def post_order(shop_ref: str) -> dict: ...

    @engine.workflow("orders.submit")
    async def submit(shop_ref: str) -> None:
        await post_order(shop_ref)

    with Engine(settings) as eng:               # launch(): executes per settings.engine.role
        with db.write() as session:             # the inbox row and the job commit together
            session.add(InboxRow(...))
            eng.enqueue_in_transaction(session, submit, "S-1", queue="orders",
                                       partition_key="order:S-1", workflow_id="order-S-1")

See docs/engine.md.
"""

from extend_connector.engine._declare import (
    DeclarationError,
    QueueSpec,
    RateLimit,
    ScheduleSpec,
    declared_steps,
    declared_workflows,
    forget_on_launch,
    forget_schedule,
    interval_to_cron,
    offload,
    on_launch,
    queue,
    schedule,
    sleep,
    sleep_async,
    step,
    to_json_value,
    workflow,
    workflow_id,
    workflow_name,
)
from extend_connector.engine._engine import (
    APP_NAME,
    FAILED_STATUSES,
    Engine,
    EngineError,
    EngineStateError,
    StepRecord,
    UnknownWorkflowError,
    WorkflowFailedError,
    WorkflowInfo,
)
from extend_connector.engine._inline import FakeClock, InlineEngine, InlineRun, Job, inline
from extend_connector.engine._transient import (
    TransientRetry,
    configure_transient_retry,
    is_transient_db_error,
    transient_retry_policy,
)

__all__ = [
    "APP_NAME",
    "FAILED_STATUSES",
    "DeclarationError",
    "Engine",
    "EngineError",
    "EngineStateError",
    "FakeClock",
    "InlineEngine",
    "InlineRun",
    "Job",
    "QueueSpec",
    "RateLimit",
    "ScheduleSpec",
    "StepRecord",
    "TransientRetry",
    "UnknownWorkflowError",
    "WorkflowFailedError",
    "WorkflowInfo",
    "configure_transient_retry",
    "declared_steps",
    "declared_workflows",
    "forget_on_launch",
    "forget_schedule",
    "inline",
    "interval_to_cron",
    "is_transient_db_error",
    "offload",
    "on_launch",
    "queue",
    "schedule",
    "sleep",
    "sleep_async",
    "step",
    "to_json_value",
    "transient_retry_policy",
    "workflow",
    "workflow_id",
    "workflow_name",
]
