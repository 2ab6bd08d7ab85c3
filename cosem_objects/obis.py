"""OBIS codes: the six value groups A.B.C.D.E.F that name every COSEM object."""

from __future__ import annotations

import re
from dataclasses import dataclass

from cosem_objects.errors import DecodeError

_SEPARATORS = re.compile(r"[.\-:*&]")


@dataclass(frozen=True, slots=True, order=True)
class Obis:
    a: int
    b: int
    c: int
    d: int
    e: int
    f: int = 255

    def __post_init__(self) -> None:
        for group in (self.a, self.b, self.c, self.d, self.e, self.f):
            if not 0 <= group <= 255:
                raise ValueError(f"OBIS value group out of range 0..255: {group}")

    @classmethod
    def parse(cls, text: str) -> Obis:
        """Accept dotted (1.0.1.8.0.255) and IEC (1-0:1.8.0*255) forms; F defaults to 255."""
        parts = [p for p in _SEPARATORS.split(text.strip()) if p != ""]
        if len(parts) not in (5, 6) or not all(p.isdigit() for p in parts):
            raise ValueError(f"not an OBIS code: {text!r}")
        values = [int(p) for p in parts]
        return cls(*values)

    @classmethod
    def from_bytes(cls, raw: bytes) -> Obis:
        if len(raw) != 6:
            raise DecodeError(f"OBIS code needs 6 bytes, got {len(raw)}")
        return cls(raw[0], raw[1], raw[2], raw[3], raw[4], raw[5])

    def to_bytes(self) -> bytes:
        return bytes((self.a, self.b, self.c, self.d, self.e, self.f))

    def __str__(self) -> str:
        return f"{self.a}.{self.b}.{self.c}.{self.d}.{self.e}.{self.f}"

    def iec(self) -> str:
        return f"{self.a}-{self.b}:{self.c}.{self.d}.{self.e}*{self.f}"
