"""CRC-16/X.25, the HCS and FCS of IEC 62056-46 HDLC frames.

Table-driven because every received frame is checked twice (HCS and FCS): the 256-entry table
is built once at import, so a check costs one lookup per byte."""

from __future__ import annotations

_POLY_REFLECTED = 0x8408


def _build_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _POLY_REFLECTED if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _build_table()


def crc16_x25(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/X.25 (init 0xFFFF, reflected, final XOR 0xFFFF) of `data`."""
    crc = 0xFFFF
    table = _TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc ^ 0xFFFF


def crc16_x25_bytes(data: bytes | bytearray | memoryview) -> bytes:
    """The check sequence as it goes on the wire: low byte first."""
    return crc16_x25(data).to_bytes(2, "little")
