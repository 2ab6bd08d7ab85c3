"""HDLC addresses (IEC 62056-46): 7 address bits per byte, LSB = 1 on the last byte.

A client address is one byte (the client SAP). A server address is 1, 2 or 4 bytes and carries
the logical device (upper) and, for 2 and 4 bytes, the physical device (lower). The same value
may be written in different sizes (upper 1 / lower 17 is `02 23` or `00 02 00 23`), so
addresses compare by value with `same_station`, and the size is kept only to write them back."""

from __future__ import annotations

from dataclasses import dataclass

from cosem_objects.errors import DecodeError

BROADCAST_1 = 0x7F
BROADCAST_MULTI = 0x3FFF
_SIZES = (1, 2, 4)


@dataclass(frozen=True, slots=True)
class HdlcAddress:
    """`upper` = client SAP or server logical address; `lower` = server physical address."""

    upper: int
    lower: int | None = None
    size: int = 1

    def __post_init__(self) -> None:
        if self.size not in _SIZES:
            raise ValueError(f"HDLC address size must be 1, 2 or 4 bytes, not {self.size}")
        limit = 0x7F if self.size <= 2 else 0x3FFF
        if not 0 <= self.upper <= limit:
            raise ValueError(f"upper address {self.upper} does not fit in {self.size} byte(s)")
        if self.size == 1:
            if self.lower is not None:
                raise ValueError("a 1-byte HDLC address has no lower (physical) part")
        elif self.lower is None or not 0 <= self.lower <= limit:
            raise ValueError(f"lower address {self.lower} does not fit in {self.size} byte(s)")

    @classmethod
    def client(cls, sap: int) -> HdlcAddress:
        return cls(sap, None, 1)

    @classmethod
    def server(
        cls, logical: int, physical: int | None = None, size: int | None = None
    ) -> HdlcAddress:
        """Server address in the smallest size that holds it, unless `size` is forced."""
        if size is None:
            if physical is None:
                size = 1 if logical <= 0x7F else 4
            else:
                size = 2 if logical <= 0x7F and physical <= 0x7F else 4
        if size == 1:
            if physical is not None:
                raise ValueError("a 1-byte server address cannot carry a physical address")
            return cls(logical, None, 1)
        return cls(logical, 0 if physical is None else physical, size)

    def to_bytes(self) -> bytes:
        return encode_address(self)

    def same_station(self, other: HdlcAddress) -> bool:
        """Same upper and lower value, whatever the sizes; a missing lower matches any lower."""
        if self.upper != other.upper:
            return False
        return self.lower is None or other.lower is None or self.lower == other.lower

    def __str__(self) -> str:
        return f"{self.upper}" if self.lower is None else f"{self.upper}/{self.lower}"


def encode_address(address: HdlcAddress) -> bytes:
    upper, lower = address.upper, address.lower
    if address.size == 1:
        return bytes(((upper << 1) | 1,))
    assert lower is not None
    if address.size == 2:
        return bytes((upper << 1, (lower << 1) | 1))
    return bytes(
        (
            (upper >> 7) << 1,
            (upper & 0x7F) << 1,
            (lower >> 7) << 1,
            ((lower & 0x7F) << 1) | 1,
        )
    )


def decode_address(buf: bytes, offset: int = 0, end: int | None = None) -> tuple[HdlcAddress, int]:
    """Address starting at `offset`; returns it and the offset after it.

    Reads at most 4 bytes and never past `end`; 3-byte or longer addresses are DecodeError."""
    stop = len(buf) if end is None else min(end, len(buf))
    for size in range(1, 5):
        index = offset + size - 1
        if index >= stop:
            raise DecodeError("HDLC address runs past the end of the frame")
        if buf[index] & 1:
            break
    else:
        raise DecodeError("HDLC address longer than 4 bytes")
    if size == 1:
        return HdlcAddress(buf[offset] >> 1, None, 1), offset + 1
    if size == 2:
        return HdlcAddress(buf[offset] >> 1, buf[offset + 1] >> 1, 2), offset + 2
    if size == 4:
        b0, b1, b2, b3 = buf[offset : offset + 4]
        upper = ((b0 >> 1) << 7) | (b1 >> 1)
        lower = ((b2 >> 1) << 7) | (b3 >> 1)
        return HdlcAddress(upper, lower, 4), offset + 4
    raise DecodeError("HDLC address of 3 bytes")
