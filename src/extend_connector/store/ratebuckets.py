"""The fleet-wide rate limit of Extend calls: one GCRA bucket per (credential, group) in a table.

Extend refills each group's bucket evenly (`limit` calls per `period`). GCRA (the generic cell
rate algorithm) models that bucket with one number, the theoretical arrival time `tat`: with
emission interval T = period / limit and tolerance = period, a call may start at `tat - period`
after `tat` moved on by T. Reserving is ONE atomic statement, so processes never read-then-write:

    UPDATE extend_rate_buckets SET tat = max(tat, now) + T WHERE ... RETURNING tat, now

and every caller gets its own future slot (no polling loop; a slot nobody used only makes the
fleet more conservative). `now` is the database's clock on PostgreSQL (`now()`, the start of the
one-statement transaction), returned with the row so the wait is computed against the same
clock: processes on different hosts need no synchronised clocks. SQLite (one machine) binds
`time.time()`.

This is the store side of `extend.ratelimit.FleetBucket` (blocking; the Extend side runs it in a
worker thread). Unlike `repositories`, each operation owns its short transaction.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from extend_connector.store.models import RateBucketRow

_TABLE: sa.Table = RateBucketRow.metadata.tables[RateBucketRow.__tablename__]
# The part of a group's bucket that bulk calls (a sweep's fetches: `extend.bulk_calls`) leave to
# the others: a bulk slot starts only while more than this is left, so an order's call takes
# one of the kept slots at once instead of queueing behind every fetch a sweep has reserved.
BULK_RESERVE = 0.2


@dataclass(frozen=True, kw_only=True, slots=True)
class Slot:
    """A reserved call: it may start at `start` (epoch seconds); `now` is when it was reserved."""

    start: float
    now: float

    @property
    def wait(self) -> float:
        return max(0.0, self.start - self.now)


class RateBuckets:
    """The buckets of one Extend credential (`credential`: `extend.budget_key(settings)`)."""

    def __init__(
        self, engine: sa.Engine, credential: str, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.engine = engine
        self.credential = credential
        self._clock = clock
        self._postgres = engine.dialect.name == "postgresql"
        self._known: set[str] = set()  # groups whose row exists (inserted once per process)
        self._lock = threading.Lock()
        # Built once: constructing Core statements per call cost more than the round trip.
        c = _TABLE.c
        now = self._now()
        mine = (
            c.credential == sa.bindparam("b_credential"),
            c.rate_group == sa.bindparam("b_group"),
        )
        self._reserve = (
            sa.update(_TABLE)
            .where(*mine)
            .values(
                tat=sa.case((c.tat > now, c.tat), else_=now)
                + sa.bindparam("interval", type_=sa.Double)
            )
            .returning(c.tat, now.label("now"))
        )
        floor = now + sa.bindparam("ahead", type_=sa.Double)
        self._block = (
            sa.update(_TABLE)
            .where(*mine)
            .values(tat=sa.case((c.tat > floor, c.tat), else_=floor))
            .returning(c.tat)
        )
        # Giving a slot back never makes the bucket fuller than full (tat <= now means full).
        back = c.tat - sa.bindparam("interval", type_=sa.Double)
        self._release = (
            sa.update(_TABLE)
            .where(*mine)
            .values(tat=sa.case((back > now, back), else_=now))
            .returning(c.tat)
        )
        insert = postgresql.insert if self._postgres else sqlite.insert
        self._insert = (
            insert(_TABLE)
            .values(
                credential=sa.bindparam("b_credential"), rate_group=sa.bindparam("b_group"), tat=0.0
            )
            .on_conflict_do_nothing()
        )

    # --- the FleetBucket operations (blocking) -------------------------------------------------

    def reserve(self, group: str, limit: float, period: float, bulk: bool = False) -> float:
        """Take the group's next slot; return the seconds to wait before the call may start.
        `bulk`: the slot starts only while more than `BULK_RESERVE` of the bucket is left."""
        return self.reserve_slot(group, limit, period, bulk=bulk).wait

    def block(self, group: str, seconds: float, limit: float, period: float) -> None:
        """After a 429: no slot of the group starts before now + `seconds`, in any process.

        The next reservation adds one interval to `tat` and starts a period before it, hence
        tat >= now + seconds + period - interval.
        """
        self._run(self._block, group, ahead=seconds + period - _interval(limit, period))

    def release(self, group: str, limit: float, period: float) -> None:
        """A reserved call got no answer and was most likely not counted by Extend: give one
        interval back (never beyond a full bucket)."""
        self._run(self._release, group, interval=_interval(limit, period))

    # --- for tests and benchmarks -----------------------------------------------------------------

    def reserve_slot(self, group: str, limit: float, period: float, *, bulk: bool = False) -> Slot:
        """Reserve one call and return its slot (start and reservation instant, database clock).

        GCRA's tolerance is the whole bucket (a slot starts a period before its `tat`); a bulk
        slot's is the bucket less `BULK_RESERVE`. Both move `tat` on by one interval, so the
        group's rate holds for all calls together."""
        row = self._run(self._reserve, group, interval=_interval(limit, period))
        tolerance = period * (1.0 - BULK_RESERVE) if bulk else period
        return Slot(start=float(row[0]) - tolerance, now=float(row[1]))

    def tat(self, group: str) -> float | None:
        """The stored theoretical arrival time of the group (None: never used)."""
        c = _TABLE.c
        with self.engine.connect() as conn:
            value = conn.execute(
                sa.select(c.tat).where(c.credential == self.credential, c.rate_group == group)
            ).scalar_one_or_none()
            conn.rollback()
        return None if value is None else float(value)

    # --- internals --------------------------------------------------------------------------------

    def _now(self) -> sa.ColumnElement[float]:
        if self._postgres:
            # `now()` is the start of the (one-statement) transaction: the same value in SET and
            # RETURNING, and the same clock for every process of the fleet.
            return sa.cast(sa.extract("epoch", sa.func.now()), sa.Double)
        return sa.bindparam("now", type_=sa.Double)

    def _run(self, statement: sa.Update, group: str, **values: float) -> tuple[Any, ...]:
        params: dict[str, Any] = {"b_credential": self.credential, "b_group": group, **values}
        for _ in range(2):
            if group not in self._known:
                self._execute(self._insert, params, returns=False)
                with self._lock:
                    self._known.add(group)
            if not self._postgres:
                params["now"] = self._clock()
            row = self._execute(statement, params)
            if row is not None:
                return row
            # The row went away (a database restored or cleaned): create it again once.
            with self._lock:
                self._known.discard(group)
        raise RuntimeError(f"rate bucket {self.credential!r}/{group!r} could not be created")

    def _execute(
        self, statement: sa.Executable, params: dict[str, Any], *, returns: bool = True
    ) -> tuple[Any, ...] | None:
        if self._postgres:
            # Autocommit: no BEGIN/COMMIT round trips, and `now()` is this statement's start.
            with self.engine.connect() as conn:
                result = conn.execution_options(isolation_level="AUTOCOMMIT").execute(
                    statement, params
                )
                return _first(result) if returns else None
        # SQLite: the driver opens BEGIN IMMEDIATE before the UPDATE (store.database), so the
        # write lock is taken at once and the transaction is this one statement.
        with self.engine.begin() as conn:
            result = conn.execute(statement, params)
            return _first(result) if returns else None


def _first(result: sa.Result[Any]) -> tuple[Any, ...] | None:
    row = result.first()
    return None if row is None else tuple(row)


def _interval(limit: float, period: float) -> float:
    if limit <= 0 or period <= 0:
        raise ValueError(f"a rate bucket needs limit > 0 and period > 0, got {limit}/{period}")
    return period / limit
