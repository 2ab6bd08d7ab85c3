"""Column types that behave the same on SQLite and PostgreSQL.

SQLite has no timezone-aware timestamps and no exact decimals: SQLAlchemy's DateTime drops the
offset there, and Numeric round-trips through float. Timestamps are therefore stored in UTC
(aware on the way in and out), and money as canonical decimal text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import BigInteger, DateTime, String
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

__all__ = ["DecimalText", "EpochMicros", "UtcDateTime", "iso_or_none", "to_utc"]


def to_utc(value: datetime) -> datetime:
    """Aware UTC; a naive datetime is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def iso_or_none(value: datetime | None) -> str | None:
    """A stored time as the plain data status reports and JSON carry (None stays None)."""
    return None if value is None else value.isoformat()


class UtcDateTime(TypeDecorator[datetime]):
    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        value = to_utc(value)
        if dialect.name == "sqlite":
            # Stored as naive UTC text of one fixed format, so comparisons order correctly.
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return to_utc(value)


class DecimalText(TypeDecorator[Decimal]):
    """An exact decimal kept as text ("12.50"), never a float."""

    impl = String(64)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        if isinstance(value, float):
            raise TypeError("money must be a Decimal or string, not a float")
        try:
            number = Decimal(value)
        except (InvalidOperation, TypeError, ValueError):
            raise ValueError(f"not a decimal number: {value!r:.40}") from None
        if not number.is_finite():
            raise ValueError("decimal must be finite")
        return str(number)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(value)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class EpochMicros(TypeDecorator[datetime]):
    """A UTC timestamp kept compact where it is stored per reading: timestamptz (8 bytes) on
    PostgreSQL, and on SQLite an integer of microseconds since 1970 (8 bytes rather than the
    26 characters of UtcDateTime's text), which orders and compares the same way."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        value = to_utc(value)
        if dialect.name == "sqlite":
            return to_micros(value)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, int):
            return from_micros(value)
        return to_utc(value)


def to_micros(value: datetime) -> int:
    """Microseconds since 1970 (exact: timedelta arithmetic, no float)."""
    return (to_utc(value) - _EPOCH) // timedelta(microseconds=1)


def from_micros(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)
