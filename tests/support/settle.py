"""Waiting for "nothing more will happen" on a condition instead of a fixed sleep."""

from __future__ import annotations

from extend_connector.engine import Engine
from support.processes import wait_for


def wait_settled(engine: Engine, *queues: str, timeout: float = 30.0) -> None:
    """Until none of `queues` has a job waiting or running: whatever the input so far causes on
    them has happened, so a test can assert that something did not."""
    wait_for(
        lambda: not any(engine.queue_depth().get(queue) for queue in queues) or None,
        timeout,
        interval=0.05,
        what=f"no job waiting or running on {', '.join(queues)}",
    )
