"""A sans-IO joiner for HDLC frame streams seen from outside a connected link.

Pushes arrive as UI frames (and some meters push I frames without ever setting up a link); a
capture or probe log holds frames of both directions interleaved. Neither fits the link state
machines in drivers/hdlc/connection.py, which join segments only inside their own link. This
module only reads: bytes in, whole APDUs (LLC header removed) out, segmented frames joined per
(source, destination) pair, every check (HCS, FCS, length) done by the frame reader, and every
problem reported as an event, never raised, so a listener or a decoder keeps going.

Memory is bounded: a joined message is dropped once it passes `max_apdu_size` bytes or
`max_frames` frames, and at most `max_partials` messages are being joined at once (the oldest
is dropped, with an event, when another pair starts one)."""

from __future__ import annotations

from dataclasses import dataclass, field

from drivers.hdlc.addresses import HdlcAddress
from drivers.hdlc.frames import (
    LLC_REQUEST,
    LLC_RESPONSE,
    MAX_LENGTH,
    BadFrame,
    FrameType,
    HdlcFrame,
    HdlcFrameReader,
)

DEFAULT_MAX_APDU_SIZE = 65_535 + 16
"""A 65535-byte APDU plus room for the ciphering header around it."""
DEFAULT_MAX_FRAMES = 512
DEFAULT_MAX_PARTIALS = 16

_LLCS = (LLC_REQUEST, LLC_RESPONSE)
_INFO_TYPES = (FrameType.UI, FrameType.I)


@dataclass(frozen=True, slots=True)
class JoinedApdu:
    """One whole APDU. `llc` is the header the first segment carried (None when it had none,
    as in the later general-block-transfer frames of some pushes); `frames` were joined."""

    apdu: bytes
    src: HdlcAddress
    dst: HdlcAddress
    frame_type: FrameType
    llc: bytes | None
    frames: int


@dataclass(frozen=True, slots=True)
class OtherFrame:
    """A sound frame that carries no APDU (SNRM, UA, RR, DISC, ...), for tools that show it."""

    frame: HdlcFrame


@dataclass(frozen=True, slots=True)
class JoinError:
    """Bytes or frames that could not become an APDU; what was joined so far is dropped.

    `src`/`dst` are None when the bytes were not a sound frame at all."""

    reason: str
    src: HdlcAddress | None = None
    dst: HdlcAddress | None = None


StreamEvent = JoinedApdu | OtherFrame | JoinError


@dataclass(slots=True)
class _Partial:
    src: HdlcAddress
    dst: HdlcAddress
    frame_type: FrameType
    llc: bytes | None
    next_seq: int | None = None
    parts: list[bytes] = field(default_factory=list)
    frames: int = 0
    size: int = 0
    dropping: bool = False
    """Past a bound: the rest of the message is read and thrown away, not joined."""


def _key(frame: HdlcFrame) -> tuple[int, int | None, int, int | None]:
    """Addresses by value: the same station may be written in different sizes."""
    return (frame.src.upper, frame.src.lower, frame.dst.upper, frame.dst.lower)


class HdlcStreamJoiner:
    """Feed bytes with `feed`; call `close` at the end of the stream for what was left open."""

    def __init__(
        self,
        *,
        max_apdu_size: int = DEFAULT_MAX_APDU_SIZE,
        max_frames: int = DEFAULT_MAX_FRAMES,
        max_partials: int = DEFAULT_MAX_PARTIALS,
        max_frame_length: int = MAX_LENGTH,
    ) -> None:
        if max_apdu_size < 1 or max_frames < 1 or max_partials < 1:
            raise ValueError("max_apdu_size, max_frames and max_partials must be positive")
        self.max_apdu_size = max_apdu_size
        self.max_frames = max_frames
        self.max_partials = max_partials
        self._reader = HdlcFrameReader(max_frame_length)
        self._partials: dict[tuple[int, int | None, int, int | None], _Partial] = {}

    @property
    def buffered(self) -> int:
        """Bytes held: an unfinished frame plus the segments of unfinished messages."""
        return self._reader.buffered + sum(
            len(part) for p in self._partials.values() for part in p.parts
        )

    @property
    def discarded_bytes(self) -> int:
        """Bytes that were not part of any sound frame (garbage, idle flags, bad frames)."""
        return self._reader.discarded_bytes

    def feed(self, data: bytes | bytearray | memoryview) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        for item in self._reader.feed_events(data):
            if isinstance(item, BadFrame):
                events.append(JoinError(item.reason))
            else:
                self._on_frame(item, events)
        return events

    def close(self) -> list[StreamEvent]:
        """The stream ended: every message still being joined is reported as truncated."""
        events: list[StreamEvent] = []
        if self._reader.buffered > 1:  # more than the flag that may open a next frame
            events.append(JoinError(f"stream ended inside a frame ({self._reader.buffered} bytes)"))
        self._reader.clear()
        for partial in self._partials.values():
            if not partial.dropping:
                events.append(self._truncated(partial, "stream ended before its last segment"))
        self._partials.clear()
        return events

    # -- joining -------------------------------------------------------------------------------
    def _on_frame(self, frame: HdlcFrame, events: list[StreamEvent]) -> None:
        if frame.frame_type not in _INFO_TYPES or not frame.info:
            events.append(OtherFrame(frame))
            return
        key = _key(frame)
        partial = self._partials.get(key)
        if partial is not None and not self._continues(partial, frame):
            del self._partials[key]
            if not partial.dropping:
                seq = "" if frame.send_seq is None else f" with N(S)={frame.send_seq}"
                events.append(
                    JoinError(
                        f"segmented {partial.frame_type.value} message interrupted after "
                        f"{partial.frames} frame(s) by a {frame.frame_type.value} frame{seq}",
                        frame.src,
                        frame.dst,
                    )
                )
            partial = None
        info = frame.info
        if partial is None:
            partial = self._start(frame, key, events)
            if partial.llc is not None:
                info = info[3:]
        if frame.send_seq is not None:
            partial.next_seq = (frame.send_seq + 1) % 8
        partial.frames += 1
        partial.size += len(info)
        if not partial.dropping:
            if partial.size > self.max_apdu_size or partial.frames > self.max_frames:
                partial.dropping = True
                partial.parts.clear()
                events.append(
                    JoinError(
                        f"segmented message passed {self.max_apdu_size} bytes or "
                        f"{self.max_frames} frames, dropped",
                        frame.src,
                        frame.dst,
                    )
                )
            else:
                partial.parts.append(info)
        if not frame.segmented:
            del self._partials[key]
            if not partial.dropping:
                events.append(
                    JoinedApdu(
                        b"".join(partial.parts),
                        partial.src,
                        partial.dst,
                        partial.frame_type,
                        partial.llc,
                        partial.frames,
                    )
                )

    @staticmethod
    def _continues(partial: _Partial, frame: HdlcFrame) -> bool:
        if frame.frame_type is not partial.frame_type:
            return False
        return partial.next_seq is None or frame.send_seq == partial.next_seq

    def _start(
        self,
        frame: HdlcFrame,
        key: tuple[int, int | None, int, int | None],
        events: list[StreamEvent],
    ) -> _Partial:
        if len(self._partials) >= self.max_partials:
            oldest = self._partials.pop(next(iter(self._partials)))
            if not oldest.dropping:
                events.append(
                    self._truncated(oldest, f"more than {self.max_partials} messages at once")
                )
        llc = frame.info[:3] if frame.info[:3] in _LLCS else None
        partial = _Partial(frame.src, frame.dst, frame.frame_type, llc)
        self._partials[key] = partial
        return partial

    @staticmethod
    def _truncated(partial: _Partial, reason: str) -> JoinError:
        return JoinError(f"{reason}: {partial.frames} segment(s) dropped", partial.src, partial.dst)
