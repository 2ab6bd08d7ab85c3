"""CRC-16/X.25, the HCS and FCS of IEC 62056-46 HDLC frames.

Every frame is checked twice (HCS and FCS) each way, so this runs in C: CRC-16/X.25 is the
bit-reflected form of CRC-CCITT, which `binascii.crc_hqx` computes. Reversing the bits of each
input byte (`bytes.translate`, also C) and of the result turns one into the other. The
table-driven Python form below stays as the reference the tests compare against."""

from __future__ import annotations

import binascii

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


_REVERSED_BYTES = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))


def crc16_x25(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/X.25 (init 0xFFFF, reflected, final XOR 0xFFFF) of `data`."""
    crc = binascii.crc_hqx(bytes(data).translate(_REVERSED_BYTES), 0xFFFF)
    reflected = (_REVERSED_BYTES[crc & 0xFF] << 8) | _REVERSED_BYTES[crc >> 8]
    return reflected ^ 0xFFFF


def crc16_x25_reference(data: bytes | bytearray | memoryview) -> int:
    """The same CRC, table-driven in Python, byte by byte."""
    crc = 0xFFFF
    table = _TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc ^ 0xFFFF


def crc16_x25_bytes(data: bytes | bytearray | memoryview) -> bytes:
    """The check sequence as it goes on the wire: low byte first."""
    return crc16_x25(data).to_bytes(2, "little")
