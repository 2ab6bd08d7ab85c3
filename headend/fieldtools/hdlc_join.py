"""HDLC frames out of a captured byte stream, and the messages their information fields make.

A capture holds both directions and any frame type. The joining is drivers.hdlc's sans-IO
HdlcStreamJoiner (segments joined per source/destination pair, LLC taken off the first segment,
bounded, every problem an event); the frames are also read on their own (the same
HdlcFrameReader underneath) because a field engineer wants to see every frame, the ones that
carry an APDU included, and the joiner reports only the others."""

from __future__ import annotations

from dataclasses import dataclass, field

from drivers.hdlc import HdlcFrame, HdlcFrameReader, HdlcStreamJoiner, JoinedApdu, JoinError


@dataclass(frozen=True, slots=True)
class HdlcMessage:
    """One joined APDU (LLC removed), where it came from and in how many frames."""

    info: bytes
    llc: bytes | None
    where: str


@dataclass(slots=True)
class HdlcStream:
    frames: list[HdlcFrame] = field(default_factory=list)
    messages: list[HdlcMessage] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def join_hdlc(data: bytes) -> HdlcStream:
    """Every good frame, every whole message, and what went wrong (never raises)."""
    reader = HdlcFrameReader()
    stream = HdlcStream(frames=reader.feed(data))
    joiner = HdlcStreamJoiner()
    events = joiner.feed(data) + joiner.close()
    for event in events:
        if isinstance(event, JoinedApdu):
            where = f"HDLC {event.frame_type.value} {event.src} -> {event.dst}"
            if event.frames > 1:
                where += f", {event.frames} segments"
            stream.messages.append(HdlcMessage(event.apdu, event.llc, where))
        elif isinstance(event, JoinError):
            stream.problems.append(f"HDLC: {event.reason}")
    # The reader counts one byte for each bad frame it stepped over, and the closing flag of a
    # frame followed by the opening flag of the next.
    skipped = reader.discarded_bytes - reader.bad_frames - _closing_flags(data)
    if skipped > 0:
        stream.problems.append(f"HDLC: {skipped} bytes outside frames skipped")
    return stream


def _closing_flags(data: bytes) -> int:
    """Idle flags between frames that the reader counts as discarded (7E 7E: close + open)."""
    return data.count(b"\x7e\x7e")
