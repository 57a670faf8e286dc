"""Fakes shared by unit tests (the unit folder is on sys.path: `from fakes import ...`)."""

from __future__ import annotations


class FakeTime:
    """A clock that only moves when somebody sleeps: no test here waits for real."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
