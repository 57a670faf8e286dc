"""Column types that keep values exact and instants aware on both SQLite and PostgreSQL.

- `UTCDateTime`: always stores UTC; SQLite keeps naive text, so values come back with
  `tzinfo=UTC` attached. A naive datetime is refused on the way in, and so is one whose
  instant lies outside the years 1-9999 in UTC (`0001-01-01T00:00:00+14:00`).
- `Amount`: money and quantities. NUMERIC(20, 6) on PostgreSQL; canonical decimal text on
  SQLite, whose NUMERIC affinity would round-trip through binary floating point.
- `JSONDoc`: JSON on SQLite, JSONB on PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine


class NaiveDatetimeError(ValueError):
    """A datetime without a UTC offset was written to a UTC column."""


class DatetimeOutOfRange(ValueError):
    """An aware datetime whose instant cannot be written in UTC (before year 1 or after 9999)."""


def to_utc(value: datetime) -> datetime:
    """`value` as UTC; raises DatetimeOutOfRange instead of OverflowError at the ends of time."""
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise DatetimeOutOfRange(f"{value.isoformat()} is outside the years 1-9999 in UTC") from exc


class UTCDateTime(TypeDecorator[datetime]):
    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise NaiveDatetimeError(f"naive datetime {value!r} written to a UTC column")
        value = to_utc(value)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


AMOUNT_PRECISION = 20
AMOUNT_SCALE = 6


class Amount(TypeDecorator[Decimal]):
    impl = sa.Numeric(AMOUNT_PRECISION, AMOUNT_SCALE, asdecimal=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.String(48))
        return dialect.type_descriptor(sa.Numeric(AMOUNT_PRECISION, AMOUNT_SCALE, asdecimal=True))

    def process_bind_param(self, value: Decimal | int | str | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        number = value if isinstance(value, Decimal) else Decimal(str(value))
        if not number.is_finite():
            raise ValueError(f"amount must be finite, got {value!r}")
        quantised = number.quantize(Decimal(1).scaleb(-AMOUNT_SCALE))
        if dialect.name == "sqlite":
            return format(quantised, "f")
        return quantised

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        number = value if isinstance(value, Decimal) else Decimal(str(value))
        # Same scale on both databases, so equality and text forms agree across them.
        return number.quantize(Decimal(1).scaleb(-AMOUNT_SCALE))


JSONDoc = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
