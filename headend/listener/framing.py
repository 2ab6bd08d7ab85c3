"""Bytes from a meter-initiated connection or datagram, cut into APDUs (sans-IO).

A TCP connection carries either the IEC 62056-47 wrapper or HDLC; which one is told by the
first byte (the wrapper's version field starts 0x00, an HDLC frame the 0x7E flag), and it stays
that way for the connection. HDLC frames are joined by drivers.hdlc.stream (segmented UI and I
frames, outside any link). A UDP datagram is exactly one wrapper frame. Every limit is a
bound on memory: one frame of at most `max_apdu` bytes, and the joiner's own bounds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cosem_objects.errors import DecodeError
from drivers.hdlc.stream import HdlcStreamJoiner, JoinedApdu, JoinError
from drivers.wrapper import WrapperReader, parse_wrapper

__all__ = [
    "DEFAULT_MAX_APDU",
    "FramingError",
    "InboundApdu",
    "StreamFraming",
    "datagram_apdu",
]

DEFAULT_MAX_APDU: Final = 8192
"""Pushes are small; a larger frame is refused rather than buffered."""

WRAPPER: Final = "wrapper"
HDLC: Final = "hdlc"


@dataclass(frozen=True, slots=True)
class InboundApdu:
    """One whole APDU and the link addresses it came with: wrapper wPorts, or the HDLC
    (server upper, lower) and client address."""

    apdu: bytes
    layer: str  # "wrapper" | "hdlc"
    src: int  # wrapper source wPort, or the HDLC server's upper (logical) address
    dst: int  # wrapper destination wPort, or the HDLC client address
    physical: int | None = None  # HDLC server lower (physical) address


@dataclass(frozen=True, slots=True)
class FramingError:
    """Bytes that are no frame. `fatal`: the stream cannot be resynchronised (wrapper)."""

    reason: str
    fatal: bool = False


FramingEvent = InboundApdu | FramingError


class StreamFraming:
    """Feed the bytes of one TCP connection; get APDUs and errors."""

    def __init__(self, max_apdu: int = DEFAULT_MAX_APDU) -> None:
        self.max_apdu = max_apdu
        self.layer: str | None = None
        self.wrapper: WrapperReader | None = None
        self._hdlc: HdlcStreamJoiner | None = None
        self._failed = False

    @property
    def buffered(self) -> int:
        if self.wrapper is not None:
            return self.wrapper.buffered
        if self._hdlc is not None:
            return self._hdlc.buffered
        return 0

    def feed(self, data: bytes) -> list[FramingEvent]:
        if self._failed or not data:
            return []
        if self.layer is None:
            if data[0] == 0x00:
                self.layer = WRAPPER
                self.wrapper = WrapperReader(self.max_apdu)
            elif data[0] == 0x7E:
                self.layer = HDLC
                self._hdlc = HdlcStreamJoiner(max_apdu_size=self.max_apdu, max_partials=2)
            else:
                self._failed = True
                return [
                    FramingError(f"neither wrapper nor HDLC (first byte 0x{data[0]:02X})", True)
                ]
        if self.wrapper is not None:
            try:
                frames = self.wrapper.feed(data)
            except DecodeError as exc:
                self._failed = True
                return [FramingError(f"bad wrapper frame: {exc}", True)]
            return [InboundApdu(f.apdu, WRAPPER, f.src_wport, f.dst_wport) for f in frames]
        assert self._hdlc is not None
        return _hdlc_events(self._hdlc.feed(data))

    def close(self) -> list[FramingEvent]:
        """The connection ended: what was left half-way is an error."""
        if self._hdlc is not None:
            return _hdlc_events(self._hdlc.close())
        if self.wrapper is not None and self.wrapper.buffered and not self._failed:
            return [
                FramingError(f"connection ended inside a frame ({self.wrapper.buffered} bytes)")
            ]
        return []


def _hdlc_events(events: Sequence[object]) -> list[FramingEvent]:
    out: list[FramingEvent] = []
    for event in events:
        if isinstance(event, JoinedApdu):
            out.append(
                InboundApdu(event.apdu, HDLC, event.src.upper, event.dst.upper, event.src.lower)
            )
        elif isinstance(event, JoinError):
            out.append(FramingError(f"HDLC: {event.reason}"))
    return out


def datagram_apdu(data: bytes, max_apdu: int = DEFAULT_MAX_APDU) -> FramingEvent:
    """A UDP datagram: exactly one wrapper frame."""
    try:
        frame = parse_wrapper(data, max_apdu)
    except DecodeError as exc:
        return FramingError(f"bad wrapper datagram: {exc}")
    return InboundApdu(frame.apdu, WRAPPER, frame.src_wport, frame.dst_wport)
