"""Change-date cursors: inclusive, re-read an overlap window, never advance past the signpost.

A sweep takes a signpost (the instant it starts), lists records changed since
`high_water_mark - overlap` (inclusive), and afterwards moves the mark to
min(latest change date seen, signpost). Records changed while the sweep pages are therefore
re-read by the next sweep instead of being skipped (the singer-sdk rule).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from extend_connector.store.models import CursorRow


def start(
    session: Session, name: str, *, now: datetime, overlap: timedelta, full: bool = False
) -> datetime | None:
    """Begin a sweep: store the signpost; return the `changedSince` to ask for (None =
    everything)."""
    row = session.get(CursorRow, name)
    if row is None:
        row = CursorRow(name=name, stats={})
        session.add(row)
    row.signpost = now
    if full or row.high_water_mark is None:
        return None
    return row.high_water_mark - overlap


def finish(
    session: Session,
    name: str,
    *,
    latest_seen: datetime | None,
    stats: dict[str, Any] | None = None,
    now: datetime,
) -> datetime | None:
    """End a sweep: advance the mark to min(latest_seen, signpost); return the new mark."""
    row = session.get(CursorRow, name)
    if row is None:
        raise RuntimeError(f"cursor {name!r} finished without start()")
    signpost = row.signpost or now
    candidate = signpost if latest_seen is None else min(latest_seen, signpost)
    if row.high_water_mark is None or candidate > row.high_water_mark:
        row.high_water_mark = candidate
    row.last_run_at = now
    row.signpost = None
    if stats is not None:
        row.stats = stats
    return row.high_water_mark


def peek(session: Session, name: str) -> CursorRow | None:
    return session.get(CursorRow, name)
