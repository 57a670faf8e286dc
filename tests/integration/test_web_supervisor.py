"""The `server.processes` supervisor's restarts (web_processes.Supervisor), with real spawned
children standing in for web processes (no database, no HTTP): a child whose restart hangs
without ever serving is killed after `START_TIMEOUT_SECONDS` and started again, ever more
slowly, while the service goes on."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from extend_connector import web_processes
from extend_connector.metrics import MULTIPROCESS_DIR_ENV
from extend_connector.settings import Settings
from extend_connector.web_processes import Supervisor, _Slot
from support.processes import wait_for


class _HangsOnRestart(Supervisor):
    """Each child's first start serves and ends at once; every later start hangs."""

    def _target(self, slot: _Slot, ready: object) -> tuple[object, tuple[object, ...]]:
        if slot.restarts == 0:
            return ready.set, ()  # type: ignore[attr-defined]
        return time.sleep, (3600,)


def test_a_restart_that_hangs_is_killed_and_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(web_processes, "START_TIMEOUT_SECONDS", 2.0)
    # The supervisor sets it for its children; this test process must not keep it.
    monkeypatch.setenv(MULTIPROCESS_DIR_ENV, "unset-after-the-test")
    settings = Settings.model_validate(
        {
            "engine": {"role": "web"},
            "server": {"processes": 1},
            "store": {"database_url": "postgresql://u@127.0.0.1:1/never"},
        }
    )
    supervisor = _HangsOnRestart(settings, socket.socket(), claimed=False)
    slot = supervisor.slots[0]
    code: list[int] = []
    runner = threading.Thread(target=lambda: code.append(supervisor.run()), daemon=True)
    runner.start()
    try:
        # Served, ended, restarted (hangs), killed, restarted after 1 s (hangs), killed: two
        # failed starts in a row. Without the time-out the first hung restart stays forever.
        wait_for(lambda: slot.failed_starts >= 2, 60, what="two hung restarts killed")
        assert slot.restarts >= 3
        hung = slot.process
    finally:
        supervisor.stop()
        runner.join(60)
    assert not runner.is_alive() and code == [0]
    assert hung is None or not hung.is_alive()
