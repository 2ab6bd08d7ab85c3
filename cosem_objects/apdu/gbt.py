"""General-block-transfer (0xE0) and the reassembly of the APDU it carries.

Meters (L+G E450 pushes, any long response when GBT is negotiated) cut one APDU into numbered
blocks. The reassembler is a tiny sans-IO state machine: blocks in, the whole APDU out when the
last block arrives. A new block 1 drops any partial message (the E450 sends a push, gives up
half-way and starts over: vector v8-lg-e450-plain-gbt); a gap is an error; the total size is
bounded so a hostile peer cannot make us buffer without limit."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Self

from cosem_objects.apdu.common import check_end, read_octet_string
from cosem_objects.axdr import encode_length
from cosem_objects.errors import DecodeError

GENERAL_BLOCK_TRANSFER = 0xE0
_HEADER = struct.Struct(">BBHH")  # tag, control, block-number, block-number-ack
LAST_BLOCK = 0x80
STREAMING = 0x40
WINDOW_MASK = 0x3F
DEFAULT_MAX_SIZE = 1 << 20


@dataclass(frozen=True, slots=True)
class GeneralBlockTransfer:
    last_block: bool
    streaming: bool
    window: int
    block_number: int
    block_number_ack: int
    block_data: bytes

    @property
    def control(self) -> int:
        return (
            (LAST_BLOCK if self.last_block else 0)
            | (STREAMING if self.streaming else 0)
            | self.window
        )

    def to_bytes(self) -> bytes:
        if not 0 <= self.window <= WINDOW_MASK:
            raise ValueError(f"GBT window must be 0..63, got {self.window}")
        data = self.block_data
        return (
            _HEADER.pack(
                GENERAL_BLOCK_TRANSFER, self.control, self.block_number, self.block_number_ack
            )
            + encode_length(len(data))
            + data
        )

    @classmethod
    def from_bytes(cls, buf: bytes) -> Self:
        if len(buf) < 7 or buf[0] != GENERAL_BLOCK_TRANSFER:
            raise DecodeError("not a general-block-transfer (E0 + 6 bytes at least)")
        _, control, number, ack = _HEADER.unpack_from(buf, 0)
        data, offset = read_octet_string(buf, 6, "general-block-transfer block data")
        check_end(buf, offset, "general-block-transfer")
        return cls(
            bool(control & LAST_BLOCK),
            bool(control & STREAMING),
            control & WINDOW_MASK,
            number,
            ack,
            data,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "general-block-transfer",
            "control": self.control,
            "last_block": self.last_block,
            "streaming": self.streaming,
            "window": self.window,
            "block_number": self.block_number,
            "block_number_ack": self.block_number_ack,
            "block_data_length": len(self.block_data),
            "block_data": self.block_data.hex().upper(),
        }


class GbtReassembler:
    """Joins the block data of blocks 1..n; returns the APDU when block n (last) arrives."""

    __slots__ = ("_blocks", "_expected", "_last_data", "_size", "max_size")

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE) -> None:
        self.max_size = max_size
        self._blocks: list[bytes] = []
        self._expected = 0  # 0: no message in progress
        self._size = 0
        self._last_data = b""

    @property
    def in_progress(self) -> bool:
        return self._expected != 0

    @property
    def last_block_number(self) -> int:
        """The number of the last block taken (0 when no message is in progress)."""
        return self._expected - 1 if self._expected else 0

    def reset(self) -> None:
        self._blocks = []
        self._expected = 0
        self._size = 0
        self._last_data = b""

    def feed(self, block: GeneralBlockTransfer) -> bytes | None:
        number = block.block_number
        data = block.block_data
        if number == 1:
            self.reset()  # a new message: whatever was partial is lost
        elif self._expected == 0:
            raise DecodeError(f"general-block-transfer: block {number} without block 1")
        elif number != self._expected:
            if number == self._expected - 1 and data == self._last_data:
                return None  # a repeated block: already taken
            expected = self._expected
            self.reset()
            raise DecodeError(f"general-block-transfer: block {number}, expected {expected}")
        size = self._size + len(data)
        if size > self.max_size:
            self.reset()
            raise DecodeError(f"general-block-transfer: message over {self.max_size} bytes")
        if block.last_block:
            self._blocks.append(data)
            whole = b"".join(self._blocks)
            self.reset()
            return whole
        self._blocks.append(data)
        self._size = size
        self._expected = number + 1
        self._last_data = data
        return None
