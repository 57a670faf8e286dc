"""A `Database` that notes every session opened on a thread that runs an event loop.

The flows' rule: async code shares one event loop per process, so database work goes through
`engine.offload` / `asyncio.to_thread`. A session opened on the loop's own thread blocks every
other job (and, on SQLite, waits there for the write lock). This catches it exactly, whatever
the machine's speed: it asks the thread, it does not time anything.
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session

from extend_connector.store.database import Database


class LoopGuardDatabase(Database):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.on_loop: list[str] = []

    def _note(self, kind: str) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # a worker thread (or plain sync code): fine
        caller = traceback.extract_stack(limit=4)[0]
        self.on_loop.append(
            f"{kind} on the event loop at {caller.filename}:{caller.lineno} ({caller.name})"
        )

    @contextmanager
    def write(self) -> Iterator[Session]:
        self._note("write")
        with super().write() as session:
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        self._note("read")
        with super().read() as session:
            yield session
