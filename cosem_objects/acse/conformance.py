"""The xDLMS conformance block: which services the two sides propose and agree on.

Its own module because the session layers (client core, settings, simulator) negotiate with it
without needing the ACSE codec."""

from __future__ import annotations

from enum import IntFlag
from typing import Literal

from cosem_objects.errors import DecodeError


class Conformance(IntFlag):
    """The 24-bit conformance block. Member values are the bits as they stand in the 3 wire
    bytes read big-endian, so wire bit 0 (the most significant bit of the first byte) is
    1 << 23 and `to_bytes()` is plain big-endian. Unknown (reserved) bits are kept."""

    RESERVED_ZERO = 1 << 23
    GENERAL_PROTECTION = 1 << 22
    GENERAL_BLOCK_TRANSFER = 1 << 21
    READ = 1 << 20
    WRITE = 1 << 19
    UNCONFIRMED_WRITE = 1 << 18
    DELTA_VALUE_ENCODING = 1 << 17
    RESERVED_SEVEN = 1 << 16
    ATTRIBUTE0_SET = 1 << 15
    PRIORITY_MGMT = 1 << 14
    ATTRIBUTE0_GET = 1 << 13
    BLOCK_TRANSFER_GET = 1 << 12
    BLOCK_TRANSFER_SET = 1 << 11
    BLOCK_TRANSFER_ACTION = 1 << 10
    MULTIPLE_REFERENCES = 1 << 9
    INFORMATION_REPORT = 1 << 8
    DATA_NOTIFICATION = 1 << 7
    ACCESS = 1 << 6
    PARAMETERIZED_ACCESS = 1 << 5
    GET = 1 << 4
    SET = 1 << 3
    SELECTIVE_ACCESS = 1 << 2
    EVENT_NOTIFICATION = 1 << 1
    ACTION = 1 << 0

    def to_bytes(  # type: ignore[override]
        self, length: int = 3, byteorder: Literal["little", "big"] = "big", *, signed: bool = False
    ) -> bytes:
        return int(self).to_bytes(length, byteorder, signed=signed)

    @classmethod
    def from_bytes(  # type: ignore[override]
        cls, raw: bytes, byteorder: Literal["little", "big"] = "big", *, signed: bool = False
    ) -> Conformance:
        if len(raw) != 3:
            raise DecodeError(f"conformance block is 3 bytes, got {len(raw)}")
        return cls(int.from_bytes(raw, byteorder, signed=signed))


# What LN clients commonly propose (v1 vector, 001E1D): get/set/action, block transfer for all
# three, multiple references and selective access.
DEFAULT_LN_CONFORMANCE = (
    Conformance.BLOCK_TRANSFER_GET
    | Conformance.BLOCK_TRANSFER_SET
    | Conformance.BLOCK_TRANSFER_ACTION
    | Conformance.MULTIPLE_REFERENCES
    | Conformance.GET
    | Conformance.SET
    | Conformance.SELECTIVE_ACCESS
    | Conformance.ACTION
)
