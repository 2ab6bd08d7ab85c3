"""COSEM date, time and date-time (12-byte) values with wildcards, deviation and clock status.

Fields keep their raw wire values so that decoding and re-encoding give back the same bytes;
None stands for "not specified" (0xFF / 0xFFFF / 0x8000 on the wire). The deviation follows the
Blue Book convention UTC = local + deviation (so CEST is -120); meters that use the opposite sign
are handled by `deviation_sign=-1` in to_datetime/from_datetime."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

from cosem_objects.errors import DecodeError

NOT_SPECIFIED = 0xFF
DEVIATION_NOT_SPECIFIED = -0x8000


class ClockStatus:
    INVALID_VALUE = 0x01
    DOUBTFUL_VALUE = 0x02
    DIFFERENT_CLOCK_BASE = 0x04
    INVALID_CLOCK_STATUS = 0x08
    DAYLIGHT_SAVING_ACTIVE = 0x80
    NOT_SPECIFIED = 0xFF


def _opt(value: int, sentinel: int = NOT_SPECIFIED) -> int | None:
    return None if value == sentinel else value


def _raw(value: int | None, sentinel: int = NOT_SPECIFIED) -> int:
    return sentinel if value is None else value


@dataclass(frozen=True, slots=True)
class CosemDate:
    year: int | None
    month: int | None  # 1..12, 0xFD DST end, 0xFE DST begin
    day: int | None  # 1..31, 0xFD second-last, 0xFE last
    day_of_week: int | None  # 1 = Monday .. 7 = Sunday

    @classmethod
    def from_bytes(cls, raw: bytes) -> CosemDate:
        if len(raw) != 5:
            raise DecodeError(f"date needs 5 bytes, got {len(raw)}")
        year = int.from_bytes(raw[0:2], "big")
        return cls(_opt(year, 0xFFFF), _opt(raw[2]), _opt(raw[3]), _opt(raw[4]))

    def to_bytes(self) -> bytes:
        return _raw(self.year, 0xFFFF).to_bytes(2, "big") + bytes(
            (_raw(self.month), _raw(self.day), _raw(self.day_of_week))
        )


@dataclass(frozen=True, slots=True)
class CosemTime:
    hour: int | None
    minute: int | None
    second: int | None
    hundredths: int | None

    @classmethod
    def from_bytes(cls, raw: bytes) -> CosemTime:
        if len(raw) != 4:
            raise DecodeError(f"time needs 4 bytes, got {len(raw)}")
        return cls(_opt(raw[0]), _opt(raw[1]), _opt(raw[2]), _opt(raw[3]))

    def to_bytes(self) -> bytes:
        return bytes((_raw(self.hour), _raw(self.minute), _raw(self.second), _raw(self.hundredths)))


@dataclass(frozen=True, slots=True)
class CosemDateTime:
    year: int | None
    month: int | None
    day: int | None
    day_of_week: int | None
    hour: int | None
    minute: int | None
    second: int | None
    hundredths: int | None
    deviation: int | None  # minutes, UTC = local + deviation; None = not specified
    clock_status: int | None  # raw status byte; None = 0xFF not specified

    @classmethod
    def from_bytes(cls, raw: bytes) -> CosemDateTime:
        if len(raw) != 12:
            raise DecodeError(f"date-time needs 12 bytes, got {len(raw)}")
        year = int.from_bytes(raw[0:2], "big")
        deviation = int.from_bytes(raw[9:11], "big", signed=True)
        return cls(
            _opt(year, 0xFFFF),
            _opt(raw[2]),
            _opt(raw[3]),
            _opt(raw[4]),
            _opt(raw[5]),
            _opt(raw[6]),
            _opt(raw[7]),
            _opt(raw[8]),
            _opt(deviation, DEVIATION_NOT_SPECIFIED),
            _opt(raw[11]),
        )

    def to_bytes(self) -> bytes:
        deviation = _raw(self.deviation, DEVIATION_NOT_SPECIFIED)
        return (
            _raw(self.year, 0xFFFF).to_bytes(2, "big")
            + bytes(
                (
                    _raw(self.month),
                    _raw(self.day),
                    _raw(self.day_of_week),
                    _raw(self.hour),
                    _raw(self.minute),
                    _raw(self.second),
                    _raw(self.hundredths),
                )
            )
            + deviation.to_bytes(2, "big", signed=True)
            + bytes((_raw(self.clock_status),))
        )

    @classmethod
    def from_datetime(
        cls,
        moment: _dt.datetime,
        clock_status: int | None = 0,
        deviation_sign: int = 1,
    ) -> CosemDateTime:
        """Naive datetimes get deviation 'not specified'; aware ones carry their offset."""
        deviation: int | None = None
        offset = moment.utcoffset()
        if offset is not None:
            deviation = -deviation_sign * int(offset.total_seconds() // 60)
        return cls(
            moment.year,
            moment.month,
            moment.day,
            moment.isoweekday(),
            moment.hour,
            moment.minute,
            moment.second,
            moment.microsecond // 10000,
            deviation,
            clock_status,
        )

    @property
    def is_complete(self) -> bool:
        return None not in (self.year, self.month, self.day, self.hour, self.minute) and (
            self.month is not None and self.month <= 12 and self.day is not None and self.day <= 31
        )

    def local_datetime(self) -> _dt.datetime:
        """The local wall-clock time as encoded, without applying the deviation."""
        if not self.is_complete:
            raise DecodeError("date-time has wildcards: no single point in time")
        try:
            return _dt.datetime(
                self.year or 0,
                self.month or 0,
                self.day or 0,
                self.hour or 0,
                self.minute or 0,
                self.second or 0,
                (self.hundredths or 0) * 10000,
            )
        except ValueError as exc:
            raise DecodeError(f"invalid date-time: {exc}") from None

    def to_datetime(self, deviation_sign: int = 1) -> _dt.datetime:
        """Aware datetime when the deviation is given, else naive local time."""
        local = self.local_datetime()
        if self.deviation is None:
            return local
        if not -720 <= self.deviation <= 720:
            raise DecodeError(f"date-time deviation out of range: {self.deviation}")
        offset = _dt.timedelta(minutes=-deviation_sign * self.deviation)
        return local.replace(tzinfo=_dt.timezone(offset))

    def utc(self, deviation_sign: int = 1) -> _dt.datetime | None:
        moment = self.to_datetime(deviation_sign)
        if moment.tzinfo is None:
            return None
        return moment.astimezone(_dt.UTC)
