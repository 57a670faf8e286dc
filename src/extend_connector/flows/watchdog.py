"""The watchdog: no acknowledged order stops short of Extend, and no job stops, unnoticed.

Every `engine.watchdog_minutes` (one run at a time across the fleet):

1. Orders the shop was told "accepted" that are not in Extend (`Received`/`WaitingForExtend`, no
   order number) are checked against their submit jobs (`order-<shopRef>`, and the jobs of
   `failures retry`), right away when the latest job stopped, else once the order has not moved
   for `engine.stuck_order_minutes`:
   - the latest job stopped (ERROR, or crashed too often): resumed at the step that failed, at
     most `MAX_RECOVERIES` times per order; the resumed send looks the order up in Extend before
     any POST, so exactly once holds. After that the order is parked with the job's error;
   - no job at all: a submit job is queued (it looks the order up first when attempts were made);
   - the job was cancelled by a person: the order is parked (`failures retry` sends it again);
   - the job is queued or running but silent that long: logged at error level (a job held by a
     gone process, or claimed and never started, is put back by the heartbeat of
     flows/executors.py long before; what is left is e.g. an Extend call that never returns).
2. Any other job that stopped in ERROR is parked as a failure of kind `job` (one per job), so it
   shows in `status` and `failures list`; `failures retry` resumes it.
3. Records marked by webhooks (flows/records.py) that have been due for longer than
   `records.FORGOTTEN_AFTER` get their drain asked for again: the process that marked them may
   have died between its commit and its trigger, and no further hook may come.
4. What is past its retention is deleted, one batch per kind (flows/retention.py): delivered
   shop events, old webhook deliveries, resolved failures, finished jobs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
import structlog

from extend_connector import engine
from extend_connector.flows import failures, orders, records, retention
from extend_connector.flows.balances import sweep_interval
from extend_connector.flows.context import current
from extend_connector.settings import Settings
from extend_connector.store.models import OrderRow, ParkedFailureRow

log = structlog.get_logger("extend_connector.watchdog")

QUEUE = "watchdog"
engine.queue(QUEUE, concurrency=1)

JOB_FAILURE_KIND = "job"
MAX_RECOVERIES = 3
ALIVE = frozenset({"PENDING", "ENQUEUED", "DELAYED"})
SUBMIT_JOB = "orders.submit"
SCAN_LIMIT = 500


@dataclass(frozen=True, kw_only=True, slots=True)
class Unsent:
    """Acknowledged orders not yet in Extend, as `status` shows them."""

    count: int
    oldest: datetime | None
    stuck: int  # not moved for longer than engine.stuck_order_minutes

    def as_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "oldest": self.oldest.isoformat() if self.oldest else None,
            "stuck": self.stuck,
        }


def _unsent() -> sa.ColumnElement[bool]:
    return sa.and_(OrderRow.order_number.is_(None), OrderRow.status.in_(sorted(orders.UNSENT)))


def unsent_orders(session: sa.orm.Session, *, now: datetime, stuck_after: timedelta) -> Unsent:
    count, oldest = session.execute(
        sa.select(sa.func.count(), sa.func.min(OrderRow.created_at)).where(_unsent())
    ).one()
    stuck = session.scalar(
        sa.select(sa.func.count()).where(_unsent(), OrderRow.updated_at < now - stuck_after)
    )
    return Unsent(count=int(count), oldest=oldest, stuck=int(stuck or 0))


def _submit_jobs(shop_ref: str) -> list[engine.WorkflowInfo]:
    """Every submit job of the order, newest first (prefix match, then the exact argument)."""
    found = current().engine.list_workflows(
        name=SUBMIT_JOB, id_prefix=f"order-{shop_ref}", limit=100
    )
    return [j for j in found if j.args and j.args[0] == shop_ref]


def _last_moved(job: engine.WorkflowInfo) -> datetime | None:
    steps = current().engine.list_steps(job.workflow_id)
    times = [t for s in steps for t in (s.completed_at, s.started_at) if t is not None]
    times += [t for t in (job.updated_at, job.created_at) if t is not None]
    return max(times, default=None)


def _park(shop_ref: str, reason: str, message: str, detail: dict[str, Any]) -> str:
    ctx = current()
    with ctx.db.write() as session:
        parked = orders.park_unsent(
            session, shop_ref, reason=reason, message=message, detail=detail, now=ctx.clock()
        )
        row = session.get(OrderRow, shop_ref)
        if row is not None and parked is not None:
            row.watchdog_recoveries = 0  # a `failures retry` starts a fresh count
    return "parked" if parked is not None else "settled"


def _recover_stopped(shop_ref: str, job: engine.WorkflowInfo) -> str:
    ctx = current()
    with ctx.db.write() as session:
        row = session.get(OrderRow, shop_ref)
        if row is None or row.order_number is not None or row.status not in orders.UNSENT:
            return "settled"
        recoveries = row.watchdog_recoveries
        if recoveries < MAX_RECOVERIES:
            row.watchdog_recoveries = recoveries + 1
    if recoveries >= MAX_RECOVERIES:
        return _park(
            shop_ref,
            "job_failed",
            f"the job sending order {shop_ref} to Extend stopped ({job.status}: {job.error}) "
            f"and failed again after {MAX_RECOVERIES} resumptions; fix the cause, then "
            "`extend-connector failures retry`",
            {"workflowId": job.workflow_id, "jobStatus": job.status, "error": job.error},
        )
    ctx.engine.resume(job.workflow_id)
    log.error(
        "order_job_resumed",
        shop_ref=shop_ref,
        workflow_id=job.workflow_id,
        job_status=job.status,
        error=job.error,
        resumption=recoveries + 1,
    )
    return "resumed"


def _requeue_missing(shop_ref: str) -> str:
    ctx = current()
    job = ctx.engine.enqueue(
        orders.submit, shop_ref, queue=orders.SUBMIT_QUEUE, workflow_id=f"order-{shop_ref}"
    )
    log.error("order_job_missing_requeued", shop_ref=shop_ref, workflow_id=job)
    return "requeued"


def check_order(
    shop_ref: str, updated_at: datetime, *, now: datetime, stuck_after: timedelta
) -> str:
    """Look after one acknowledged order that is not in Extend; returns what was done."""
    jobs = _submit_jobs(shop_ref)
    if not jobs:
        return _requeue_missing(shop_ref) if updated_at < now - stuck_after else "young"
    latest = max(jobs, key=lambda j: j.created_at or now)
    if latest.failed:
        return _recover_stopped(shop_ref, latest)
    if latest.status == "CANCELLED":
        return _park(
            shop_ref,
            "job_cancelled",
            f"the job sending order {shop_ref} to Extend was cancelled; `extend-connector failures "
            "retry` sends it again, or cancel the order in the shop",
            {"workflowId": latest.workflow_id},
        )
    if latest.status == "SUCCESS" and updated_at < now - stuck_after:
        return _park(
            shop_ref,
            "job_ended_unsent",
            f"the job sending order {shop_ref} ended ({latest.output}) without the order reaching "
            "Extend; `extend-connector failures retry` "
            "sends it again (looking it up in Extend first)",
            {"workflowId": latest.workflow_id, "output": latest.output},
        )
    if latest.status in ALIVE and updated_at < now - stuck_after:
        moved = _last_moved(latest)
        if moved is None or moved < now - stuck_after:
            log.error(
                "order_stuck",
                shop_ref=shop_ref,
                workflow_id=latest.workflow_id,
                job_status=latest.status,
                executor=latest.executor_id,
                order_updated_at=updated_at.isoformat(),
                job_moved_at=moved.isoformat() if moved else None,
                hint="held by a live process but not moving (a job of a gone process or one that "
                "never started is put back by the heartbeat, flows/executors.py): look at that "
                "process's log for this workflow id",
            )
            return "stuck"
    return "moving"


def _candidates(now: datetime, stuck_after: timedelta) -> list[tuple[str, datetime]]:
    """Unsent orders that have not moved for the threshold, plus those whose latest job stopped."""
    ctx = current()
    failed_refs = {
        j.args[0] for j in ctx.engine.list_failed(name=SUBMIT_JOB, limit=SCAN_LIMIT) if j.args
    }
    with ctx.db.read() as session:
        rows = session.execute(
            sa.select(OrderRow.shop_ref, OrderRow.updated_at)
            .where(
                _unsent(),
                sa.or_(
                    OrderRow.updated_at < now - stuck_after,
                    OrderRow.shop_ref.in_(sorted(failed_refs)),
                ),
            )
            .order_by(OrderRow.updated_at)
            .limit(SCAN_LIMIT)
        ).all()
    return [(ref, updated) for ref, updated in rows]


def _park_failed_jobs() -> int:
    """Every other job in ERROR becomes a parked failure of kind `job` (once per stop)."""
    ctx = current()
    stopped = [j for j in ctx.engine.list_failed(limit=SCAN_LIMIT) if j.name != SUBMIT_JOB]
    if not stopped:
        return 0
    parked = 0
    with ctx.db.write() as session:
        known = [
            failures.view(row)
            for row in session.scalars(
                sa.select(ParkedFailureRow).where(
                    ParkedFailureRow.kind == JOB_FAILURE_KIND,
                    ParkedFailureRow.key.in_([j.workflow_id for j in stopped]),
                )
            )
        ]
        for job in stopped:
            stopped_at = job.updated_at or job.created_at
            # A failure (last) parked after the job last stopped is this stop (open, or retried
            # already); a resumed job that stopped again is parked again (the open failure of
            # the job takes the new error).
            if any(
                f.key == job.workflow_id and stopped_at is not None and f.parked_at >= stopped_at
                for f in known
            ):
                continue
            failures.park(
                session,
                kind=JOB_FAILURE_KIND,
                key=job.workflow_id,
                reason=job.error_type or job.status,
                message=f"job {job.name} stopped ({job.status}): {job.error}"[:2000],
                detail={
                    "workflowId": job.workflow_id,
                    "name": job.name,
                    "jobStatus": job.status,
                    "error": job.error,
                },
                payload={"workflowId": job.workflow_id},
            )
            log.error(
                "job_failed_parked",
                workflow_id=job.workflow_id,
                name=job.name,
                job_status=job.status,
                error=job.error,
            )
            parked += 1
    return parked


def _resolve_recovered_jobs() -> int:
    """Open `job` failures whose job a `failures retry` resumed and that has now succeeded."""
    ctx = current()
    retrying = [
        f
        for f in failures.list_failures(kind=JOB_FAILURE_KIND, limit=SCAN_LIMIT)
        if f.state == "retrying"
    ]
    done = [
        f
        for f in retrying
        if (info := ctx.engine.get_status(str(f.payload.get("workflowId") or f.key))) is not None
        and info.status == "SUCCESS"
    ]
    if not done:
        return 0
    now = ctx.clock()
    with ctx.db.write() as session:
        for f in done:
            failures.resolve_open(session, kind=JOB_FAILURE_KIND, key=f.key, now=now)
    return len(done)


def watch_once() -> dict[str, int]:
    """One watchdog pass (the scheduled job runs this); returns how many of each outcome."""
    ctx = current()
    now = ctx.clock()
    stuck_after = timedelta(minutes=ctx.settings.engine.stuck_order_minutes)
    tally: dict[str, int] = {}
    for shop_ref, updated_at in _candidates(now, stuck_after):
        outcome = check_order(shop_ref, updated_at, now=now, stuck_after=stuck_after)
        tally[outcome] = tally.get(outcome, 0) + 1
    tally["jobs_parked"] = _park_failed_jobs()
    tally["jobs_recovered"] = _resolve_recovered_jobs()
    drains = records.request_forgotten_drains(now)
    if drains:
        tally["drains_requested"] = drains
    try:
        pruned = retention.prune(now)
    except Exception as exc:  # housekeeping must never stop the watchdog's real work
        log.error("retention_failed", error=f"{type(exc).__name__}: {exc}"[:300])
    else:
        tally.update({f"pruned_{kind}": n for kind, n in pruned.as_json().items() if n})
    quiet = ("moving", "young", "settled", "jobs_recovered")  # and pruning (own log line)
    acted = {k: v for k, v in tally.items() if v and k not in quiet and not k.startswith("pruned_")}
    if acted:
        log.warning("watchdog_acted", **acted)
    return tally


def _replay_job(failure: failures.Failure) -> str:
    workflow_id = str(failure.payload.get("workflowId") or failure.key)
    info = current().engine.get_status(workflow_id)
    if info is None:
        raise failures.StillFailing(f"job {workflow_id} no longer exists")
    if not info.failed:
        return f"job {workflow_id} is {info.status} already"
    current().engine.resume(workflow_id)
    # Resolved when the job succeeds (`_resolve_recovered_jobs`), parked again if it stops.
    return failures.Queued(f"job {workflow_id} resumed at the step that failed")


failures.register_replay(JOB_FAILURE_KIND, _replay_job)


@engine.step(name="watchdog.pass")
def _pass() -> dict[str, int]:
    try:
        current()
    except RuntimeError:
        # A process that launched an engine without a Connector (a test, a script) has nothing to
        # watch.
        return {}
    return watch_once()


@engine.workflow("watchdog.run")
def scheduled_watchdog(scheduled_at: Any = None, context: Any = None) -> dict[str, int]:
    result: dict[str, int] = _pass()
    return result


def declare_schedules(settings: Settings) -> None:
    engine.schedule(
        "watchdog",
        scheduled_watchdog,
        every=sweep_interval(settings.engine.watchdog_minutes),
        queue=QUEUE,
    )


__all__ = [
    "JOB_FAILURE_KIND",
    "MAX_RECOVERIES",
    "Unsent",
    "check_order",
    "declare_schedules",
    "unsent_orders",
    "watch_once",
]
