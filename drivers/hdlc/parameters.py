"""SNRM/UA information field: the HDLC parameters each side states (IEC 62056-46, 6.4.4.4.3.2).

`81 80 <len> 05 <n> max_info_tx 06 <n> max_info_rx 07 <n> window_tx 08 <n> window_rx`. Each side
writes its own transmit/receive limits; the receiver swaps them, so the peer's receive limit
caps the local transmit size (Gurux `parseSnrmUaResponse`)."""

from __future__ import annotations

from dataclasses import dataclass

from cosem_objects.errors import DecodeError

FORMAT_ID = 0x81
GROUP_ID = 0x80
_MAX_INFO_TX = 0x05
_MAX_INFO_RX = 0x06
_WINDOW_TX = 0x07
_WINDOW_RX = 0x08
DEFAULT_MAX_INFO = 128
DEFAULT_WINDOW = 1
MAX_WINDOW = 7
MAX_INFO_LIMIT = 2030
"""The largest information field a frame can carry: 2047 minus format, two 4-byte addresses,
control, HCS and FCS."""


@dataclass(frozen=True, slots=True)
class HdlcParameters:
    """Limits as stated by one side (tx = what it sends, rx = what it accepts)."""

    max_info_tx: int = DEFAULT_MAX_INFO
    max_info_rx: int = DEFAULT_MAX_INFO
    window_tx: int = DEFAULT_WINDOW
    window_rx: int = DEFAULT_WINDOW

    def __post_init__(self) -> None:
        for name in ("max_info_tx", "max_info_rx"):
            value = getattr(self, name)
            if not 1 <= value <= 0xFFFFFFFF:
                raise ValueError(f"{name} must be between 1 and 2^32-1, not {value}")
        for name in ("window_tx", "window_rx"):
            value = getattr(self, name)
            if not 1 <= value <= 0xFFFFFFFF:
                raise ValueError(f"{name} must be between 1 and 2^32-1, not {value}")

    @property
    def is_default(self) -> bool:
        return self == HdlcParameters()

    def to_bytes(self) -> bytes:
        """The whole information field, values in the fewest of 1, 2 or 4 bytes (windows: 4)."""
        body = (
            _encode(_MAX_INFO_TX, self.max_info_tx, minimal=True)
            + _encode(_MAX_INFO_RX, self.max_info_rx, minimal=True)
            + _encode(_WINDOW_TX, self.window_tx, minimal=False)
            + _encode(_WINDOW_RX, self.window_rx, minimal=False)
        )
        return bytes((FORMAT_ID, GROUP_ID, len(body))) + body

    @classmethod
    def from_bytes(cls, info: bytes) -> HdlcParameters:
        """Parameters from an SNRM/UA information field; empty = all defaults.

        Missing parameters keep their defaults and unknown ones are skipped, as the standard
        allows; malformed groups and zero values are DecodeError."""
        if not info:
            return cls()
        if len(info) < 3 or info[0] != FORMAT_ID or info[1] != GROUP_ID:
            raise DecodeError("HDLC parameter field does not start with 81 80")
        group_length = info[2]
        if 3 + group_length > len(info):
            raise DecodeError("HDLC parameter group runs past the information field")
        values = {
            _MAX_INFO_TX: DEFAULT_MAX_INFO,
            _MAX_INFO_RX: DEFAULT_MAX_INFO,
            _WINDOW_TX: DEFAULT_WINDOW,
            _WINDOW_RX: DEFAULT_WINDOW,
        }
        offset, end = 3, 3 + group_length
        while offset < end:
            if offset + 2 > end:
                raise DecodeError("HDLC parameter header truncated")
            ident, size = info[offset], info[offset + 1]
            offset += 2
            if offset + size > end:
                raise DecodeError(f"HDLC parameter 0x{ident:02X} value truncated")
            if ident in values:
                if not 1 <= size <= 4:
                    raise DecodeError(f"HDLC parameter 0x{ident:02X} has a {size}-byte value")
                value = int.from_bytes(info[offset : offset + size], "big")
                if value == 0:
                    raise DecodeError(f"HDLC parameter 0x{ident:02X} is zero")
                values[ident] = value
            offset += size
        return cls(
            max_info_tx=values[_MAX_INFO_TX],
            max_info_rx=values[_MAX_INFO_RX],
            window_tx=values[_WINDOW_TX],
            window_rx=values[_WINDOW_RX],
        )

    def swapped(self) -> HdlcParameters:
        """The same limits seen from the other side (its tx is our rx)."""
        return HdlcParameters(self.max_info_rx, self.max_info_tx, self.window_rx, self.window_tx)

    def negotiate(self, peer: HdlcParameters) -> HdlcParameters:
        """Our effective limits given the peer's stated ones: the minimum of ours and its swapped.

        Sizes are also capped by what one frame can hold, windows by the mod-8 sequence space."""
        theirs = peer.swapped()
        return HdlcParameters(
            max_info_tx=min(self.max_info_tx, theirs.max_info_tx, MAX_INFO_LIMIT),
            max_info_rx=min(self.max_info_rx, theirs.max_info_rx, MAX_INFO_LIMIT),
            window_tx=min(self.window_tx, theirs.window_tx, MAX_WINDOW),
            window_rx=min(self.window_rx, theirs.window_rx, MAX_WINDOW),
        )


def _encode(ident: int, value: int, *, minimal: bool) -> bytes:
    if minimal and value <= 0xFF:
        size = 1
    elif minimal and value <= 0xFFFF:
        size = 2
    else:
        size = 4
    return bytes((ident, size)) + value.to_bytes(size, "big")
