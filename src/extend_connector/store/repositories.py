"""Small repositories over the tables: the writes flows need, each telling whether
anything really changed (the shop is told only about real changes).

All functions take a `Session` inside `Database.write()` (or `read()` for queries) and never
commit: the caller's transaction decides, so a local-copy write, an outbox event and an
enqueued job can commit together.

`upsert(session, Model, values, touch=...)` is the generic building block: insert, or update
the row when a compared column differs. Columns in `touch` (e.g. `confirmed_at`) are written
on every call but do not count as a change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from extend_connector.store.models import (
    BalanceRow,
    Base,
    CursorRow,
    DirtyBalanceRow,
    DirtyPriceProductRow,
    DriftRow,
    IdMappingRow,
    InboxRow,
    OutboxRow,
    ParkedFailureRow,
    PriceRow,
    ProductRow,
    utcnow,
)

M = TypeVar("M", bound=Base)


@dataclass(frozen=True, kw_only=True, slots=True)
class UpsertResult:
    inserted: bool
    changed: bool  # inserted, or a compared column got a new value
    changed_columns: tuple[str, ...] = ()


def dialect_insert(session: Session) -> Any:
    """The `insert` of the session's database dialect (for ON CONFLICT on SQLite and PostgreSQL)."""
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def upsert(
    session: Session,
    model: type[M],
    values: Mapping[str, Any],
    *,
    touch: Iterable[str] = (),
) -> UpsertResult:
    """Insert `values` or update the row with the same primary key; report real changes.

    Safe against concurrent writers: the insert is `ON CONFLICT DO NOTHING`, and an existing
    row is read `FOR UPDATE` (PostgreSQL) or under SQLite's write lock (`Database.write()`).
    """
    table = model.__table__
    assert isinstance(table, sa.Table)
    keys = [c.name for c in table.primary_key.columns]
    missing = [k for k in keys if k not in values]
    if missing:
        raise ValueError(f"upsert into {table.name} needs primary key columns {missing}")
    inserted = session.execute(
        dialect_insert(session)(table).values(**values).on_conflict_do_nothing().returning(*table.primary_key.columns)
    ).first()
    if inserted is not None:
        return UpsertResult(inserted=True, changed=True, changed_columns=tuple(values))
    where = [table.c[k] == values[k] for k in keys]
    current = session.execute(sa.select(table).where(*where).with_for_update()).mappings().one()
    touched = set(touch)
    changed = tuple(
        name for name, value in values.items() if name not in keys and name not in touched and current[name] != value
    )
    updates = {name: values[name] for name in (*changed, *(t for t in touched if t in values))}
    if updates:
        session.execute(sa.update(table).where(*where).values(**updates))
    return UpsertResult(inserted=False, changed=bool(changed), changed_columns=changed)


# --- local copy ---------------------------------------------------------------------------


def upsert_product(session: Session, values: Mapping[str, Any]) -> UpsertResult:
    return upsert(session, ProductRow, values, touch=("confirmed_at",))


def upsert_balance(session: Session, values: Mapping[str, Any]) -> UpsertResult:
    """A confirmed (fetched) balance; clears any unconfirmed notified value."""
    full = {"notified_available": None, "notified_at": None, **values}
    return upsert(session, BalanceRow, full, touch=("confirmed_at", "notified_available", "notified_at"))


def upsert_price(session: Session, values: Mapping[str, Any]) -> UpsertResult:
    return upsert(session, PriceRow, values, touch=("confirmed_at",))


# --- inbox --------------------------------------------------------------------------------


def record_delivery(
    session: Session,
    *,
    delivery_id: str,
    attempt: int,
    raw_body: str,
    notification_id: str | None = None,
    notification_count: int = 0,
    unknown_action_count: int = 0,
    received_at: datetime | None = None,
) -> bool:
    """Store a webhook delivery; True if it is new (a repeat only bumps `last_seen_attempt`)."""
    inserted = session.execute(
        dialect_insert(session)(InboxRow.__table__)
        .values(
            delivery_id=delivery_id,
            attempt=attempt,
            last_seen_attempt=attempt,
            raw_body=raw_body,
            notification_id=notification_id,
            notification_count=notification_count,
            unknown_action_count=unknown_action_count,
            received_at=received_at or utcnow(),
        )
        .on_conflict_do_nothing()
        .returning(InboxRow.delivery_id)
    ).first()
    if inserted is not None:
        return True
    session.execute(
        sa.update(InboxRow)
        .where(InboxRow.delivery_id == delivery_id)
        .values(last_seen_attempt=sa.func.max(InboxRow.last_seen_attempt, attempt)
                if session.get_bind().dialect.name == "sqlite"
                else sa.func.greatest(InboxRow.last_seen_attempt, attempt))
    )
    return False


# --- outbox -------------------------------------------------------------------------------


def add_outbox(session: Session, *, event_type: str, key: str, payload: dict[str, Any]) -> int:
    row = OutboxRow(event_type=event_type, key=key, payload=payload, next_attempt_at=utcnow())
    session.add(row)
    session.flush()
    return row.id


def due_outbox(session: Session, *, limit: int = 100, now: datetime | None = None) -> Sequence[OutboxRow]:
    """Undelivered events whose next attempt is due, oldest first."""
    now = now or utcnow()
    return session.scalars(
        sa.select(OutboxRow)
        .where(OutboxRow.delivered_at.is_(None), OutboxRow.next_attempt_at <= now)
        .order_by(OutboxRow.id)
        .limit(limit)
    ).all()


def mark_outbox_delivered(session: Session, event_id: int) -> None:
    session.execute(sa.update(OutboxRow).where(OutboxRow.id == event_id).values(delivered_at=utcnow()))


def mark_outbox_failed(session: Session, event_id: int, *, error: str, retry_in: timedelta) -> None:
    session.execute(
        sa.update(OutboxRow)
        .where(OutboxRow.id == event_id)
        .values(attempts=OutboxRow.attempts + 1, last_error=error[:2000], next_attempt_at=utcnow() + retry_in)
    )


# --- cursors ------------------------------------------------------------------------------


def get_cursor(session: Session, name: str) -> CursorRow | None:
    return session.get(CursorRow, name)


def save_cursor(
    session: Session, name: str, *, high_water_mark: datetime | None, signpost: datetime | None,
    stats: dict[str, Any] | None = None,
) -> None:
    """Store a cursor; refuses to move the high-water mark past the signpost (rule 8)."""
    if high_water_mark is not None and signpost is not None and high_water_mark > signpost:
        raise ValueError(f"cursor {name}: high-water mark {high_water_mark} is past the signpost {signpost}")
    upsert(
        session,
        CursorRow,
        {"name": name, "high_water_mark": high_water_mark, "signpost": signpost, "last_run_at": utcnow(),
         "stats": stats or {}},
    )


# --- id mappings --------------------------------------------------------------------------


class IdMappingConflict(Exception):
    """The shop ref or the Extend id is already mapped to something else (reconcile, do not retry)."""


def map_ids(session: Session, *, kind: str, shop_ref: str, extend_id: str) -> bool:
    """Record shop_ref ↔ extend_id; True if new, False if already so; conflict otherwise."""
    existing = session.get(IdMappingRow, (kind, shop_ref))
    if existing is not None:
        if existing.extend_id != extend_id:
            raise IdMappingConflict(f"{kind} {shop_ref} is mapped to {existing.extend_id}, not {extend_id}")
        return False
    other = session.scalar(sa.select(IdMappingRow).where(IdMappingRow.kind == kind, IdMappingRow.extend_id == extend_id))
    if other is not None:
        raise IdMappingConflict(f"{kind} Extend id {extend_id} is mapped to {other.shop_ref}, not {shop_ref}")
    session.add(IdMappingRow(kind=kind, shop_ref=shop_ref, extend_id=extend_id))
    session.flush()
    return True


def extend_id_for(session: Session, *, kind: str, shop_ref: str) -> str | None:
    row = session.get(IdMappingRow, (kind, shop_ref))
    return None if row is None else row.extend_id


# --- parked failures, dirty balances, drift -----------------------------------------------


def park(session: Session, *, kind: str, key: str, reason: str, detail: dict[str, Any],
         payload: dict[str, Any] | None = None) -> int:
    row = ParkedFailureRow(kind=kind, key=key, reason=reason, detail=detail, payload=payload or {})
    session.add(row)
    session.flush()
    return row.id


def open_failures(session: Session, *, kind: str | None = None) -> Sequence[ParkedFailureRow]:
    query = sa.select(ParkedFailureRow).where(ParkedFailureRow.resolved_at.is_(None)).order_by(ParkedFailureRow.id)
    if kind is not None:
        query = query.where(ParkedFailureRow.kind == kind)
    return session.scalars(query).all()


def resolve_failure(session: Session, failure_id: int) -> None:
    session.execute(sa.update(ParkedFailureRow).where(ParkedFailureRow.id == failure_id).values(resolved_at=utcnow()))


def mark_dirty(session: Session, pairs: Iterable[tuple[str, str]], *, now: datetime | None = None) -> None:
    """Mark (product_number, warehouse) pairs dirty; keeps the first mark time of each."""
    now = now or utcnow()
    rows = [{"product_number": p, "warehouse": w, "first_marked_at": now, "last_marked_at": now} for p, w in pairs]
    if not rows:
        return
    stmt = dialect_insert(session)(DirtyBalanceRow.__table__).values(rows)
    session.execute(stmt.on_conflict_do_update(
        index_elements=["product_number", "warehouse"], set_={"last_marked_at": stmt.excluded.last_marked_at}
    ))


def mark_price_products(session: Session, product_numbers: Iterable[str], *, now: datetime | None = None) -> None:
    """Mark products whose prices must be refreshed for every kept customer; a new mark moves
    `marked_at` on, so a flush that started before it leaves the product marked."""
    now = now or utcnow()
    rows = [{"product_number": n, "marked_at": now} for n in sorted(set(product_numbers))]
    if not rows:
        return
    stmt = dialect_insert(session)(DirtyPriceProductRow.__table__)
    session.execute(stmt.on_conflict_do_update(index_elements=["product_number"],
                                               set_={"marked_at": stmt.excluded.marked_at}), rows)


def take_dirty(session: Session, *, limit: int = 1000) -> list[tuple[str, str, datetime]]:
    """Remove and return up to `limit` dirty pairs (oldest mark first). If the caller's
    transaction rolls back they stay dirty."""
    rows = session.execute(
        sa.select(DirtyBalanceRow.product_number, DirtyBalanceRow.warehouse, DirtyBalanceRow.last_marked_at)
        .order_by(DirtyBalanceRow.first_marked_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    for product_number, warehouse, marked in rows:
        session.execute(sa.delete(DirtyBalanceRow).where(
            DirtyBalanceRow.product_number == product_number, DirtyBalanceRow.warehouse == warehouse,
            DirtyBalanceRow.last_marked_at == marked,  # a newer mark keeps the pair dirty
        ))
    return [(p, w, m) for p, w, m in rows]


def note_drift(session: Session, *, model: str, field: str, example: str | None) -> bool:
    """Remember an unknown field of an Extend model; True the first time it is seen."""
    row = session.get(DriftRow, (model, field))
    if row is None:
        session.add(DriftRow(model=model, field=field, example=None if example is None else example[:500]))
        session.flush()
        return True
    row.last_seen = utcnow()
    row.count += 1
    return False
