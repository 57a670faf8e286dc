"""The statements whose SQL depends on the database dialect, written once for SQLite and
PostgreSQL; a table's other queries live in the one module that owns it (docs/store.md).

All functions take a `Session` inside `Database.write()` and never commit: the caller's
transaction decides, so a local-copy write, an outbox event and an enqueued job can commit
together.

`upsert(session, Model, values, touch=...)` is the generic building block: insert, or update
the row when a compared column differs. Columns in `touch` (e.g. `confirmed_at`) are written
on every call but do not count as a change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from extend_connector.store.models import Base, DirtyBalanceRow, DirtyPriceProductRow, utcnow

M = TypeVar("M", bound=Base)


@dataclass(frozen=True, kw_only=True, slots=True)
class UpsertResult:
    inserted: bool
    changed: bool  # inserted, or a compared column got a new value
    changed_columns: tuple[str, ...] = ()


def dialect_insert(session: Session) -> Any:
    """The `insert` of the session's database dialect (for ON CONFLICT on SQLite and PostgreSQL)."""
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


_BUILT: dict[tuple[str, str], Any] = {}


def built_once(session: Session, name: str, build: Callable[[Any], Any]) -> Any:
    """The statement `build(insert)` for the session's dialect (`insert`: that dialect's, for ON
    CONFLICT), built at its first use and kept, to be executed with a list of rows (one
    executemany). A statement with its rows in VALUES is compiled again for every batch size and
    has each value walked for its cache key (measured: most of the webhook inbox's marking)."""
    key = (name, session.get_bind().dialect.name)
    stmt = _BUILT.get(key)
    if stmt is None:
        stmt = _BUILT[key] = build(dialect_insert(session))
    return stmt


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
        dialect_insert(session)(table)
        .values(**values)
        .on_conflict_do_nothing()
        .returning(*table.primary_key.columns)
    ).first()
    if inserted is not None:
        return UpsertResult(inserted=True, changed=True, changed_columns=tuple(values))
    where = [table.c[k] == values[k] for k in keys]
    current = session.execute(sa.select(table).where(*where).with_for_update()).mappings().one()
    touched = set(touch)
    changed = tuple(
        name
        for name, value in values.items()
        if name not in keys and name not in touched and current[name] != value
    )
    updates = {name: values[name] for name in (*changed, *(t for t in touched if t in values))}
    if updates:
        session.execute(sa.update(table).where(*where).values(**updates))
    return UpsertResult(inserted=False, changed=bool(changed), changed_columns=changed)


# --- marks: work to fetch, written inside the transaction that learnt of it ------------------


def mark_dirty(
    session: Session, pairs: Iterable[tuple[str, str]], *, now: datetime | None = None
) -> None:
    """Mark (product_number, warehouse) pairs dirty; keeps the first mark time of each. Each pair
    is marked once, in key order (concurrent batches on PostgreSQL lock the rows in one order)."""
    now = now or utcnow()
    rows = [
        {"product_number": p, "warehouse": w, "first_marked_at": now, "last_marked_at": now}
        for p, w in sorted(set(pairs))
    ]
    if rows:
        session.execute(built_once(session, "mark_dirty", _mark_dirty_statement), rows)


def _mark_dirty_statement(insert: Any) -> Any:
    stmt = insert(DirtyBalanceRow.__table__)
    return stmt.on_conflict_do_update(
        index_elements=["product_number", "warehouse"],
        set_={"last_marked_at": stmt.excluded.last_marked_at},
    )


def mark_price_products(
    session: Session, product_numbers: Iterable[str], *, now: datetime | None = None
) -> None:
    """Mark products whose prices must be refreshed for every kept customer; a new mark moves
    `marked_at` on, so a flush that started before it leaves the product marked."""
    now = now or utcnow()
    rows = [{"product_number": n, "marked_at": now} for n in sorted(set(product_numbers))]
    if rows:
        session.execute(built_once(session, "mark_price_products", _mark_prices_statement), rows)


def _mark_prices_statement(insert: Any) -> Any:
    stmt = insert(DirtyPriceProductRow.__table__)
    return stmt.on_conflict_do_update(
        index_elements=["product_number"], set_={"marked_at": stmt.excluded.marked_at}
    )


def insert_many(session: Session, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """Insert many rows with one driver-level executemany.

    SQLAlchemy's executemany builds and processes every row's parameters one by one (about a third
    of a first price load's write time); here each column's bind processor runs over the column
    once, and the driver gets plain tuples (or dicts, for named parameter styles).
    """
    if not rows:
        return
    connection = session.connection()
    dialect = connection.dialect
    names = list(rows[0])
    compiled = sa.insert(table).compile(dialect=dialect, column_keys=names)
    processors = [table.c[name].type._cached_bind_processor(dialect) for name in names]
    columns = []
    for name, process in zip(names, processors, strict=True):
        values = [row[name] for row in rows]
        columns.append(values if process is None else [process(v) for v in values])
    if dialect.positional:
        order = [names.index(key) for key in compiled.positiontup or ()]
        params: list[Any] = [tuple(row[i] for i in order) for row in zip(*columns, strict=True)]
    else:
        params = [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]
    connection.exec_driver_sql(compiled.string, params)
