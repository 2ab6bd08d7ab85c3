"""HDLC frames out of a captured byte stream, and the messages their information fields make.

A capture holds both directions and any frame type: the frames are cut by their length field
(drivers.hdlc.HdlcFrameReader: no flag scanning, HCS and FCS checked), then the information
fields of I and UI frames are joined per direction while the segmentation bit is set. The LLC
header (E6 E6 00 / E6 E7 00) is taken off the first segment only: a later segment may start with
those bytes by chance.

This is the one HDLC step of `decode`; when the simulator's push work brings a shared sans-IO
joiner to drivers/hdlc/, `join_hdlc` becomes a thin call to it."""

from __future__ import annotations

from dataclasses import dataclass, field

from drivers.hdlc import BadFrame, FrameType, HdlcFrame, HdlcFrameReader
from drivers.hdlc.frames import LLC_REQUEST, LLC_RESPONSE

MAX_MESSAGE = 1 << 20
"""A segmented message longer than this is given up (a capture joined wrongly, or hostile)."""

_CARRIERS = (FrameType.I, FrameType.UI)


@dataclass(frozen=True, slots=True)
class HdlcMessage:
    """The joined information field of one message (LLC removed) and the frames it came in."""

    frames: tuple[int, ...]  # indexes into HdlcStream.frames
    info: bytes
    llc: bytes | None


@dataclass(slots=True)
class HdlcStream:
    frames: list[HdlcFrame] = field(default_factory=list)
    messages: list[HdlcMessage] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Pending:
    frames: list[int]
    parts: list[bytes]
    size: int


def _direction(frame: HdlcFrame) -> tuple[int, int | None, int, int | None]:
    return (frame.src.upper, frame.src.lower, frame.dst.upper, frame.dst.lower)


def join_hdlc(data: bytes) -> HdlcStream:
    """Every good frame, every whole message, and what went wrong (never raises)."""
    stream = HdlcStream()
    reader = HdlcFrameReader()
    pending: dict[tuple[int, int | None, int, int | None], _Pending] = {}
    last_i: dict[tuple[int, int | None, int, int | None], tuple[int | None, bytes]] = {}
    events = reader.feed_events(data)
    skipped = reader.discarded_bytes - reader.bad_frames
    if skipped > 0:
        stream.problems.append(f"{skipped} bytes outside HDLC frames skipped")
    for item in events:
        if isinstance(item, BadFrame):
            stream.problems.append(f"bad HDLC frame skipped: {item.reason}")
            continue
        index = len(stream.frames)
        stream.frames.append(item)
        if item.frame_type not in _CARRIERS or not item.info:
            continue
        key = _direction(item)
        if item.frame_type is FrameType.I:
            seen = (item.send_seq, item.info)
            if last_i.get(key) == seen:
                stream.problems.append(f"HDLC frame {index + 1} repeats the previous I frame")
                continue
            last_i[key] = seen
        part = pending.get(key)
        if part is None:
            part = pending[key] = _Pending([], [], 0)
        part.frames.append(index)
        part.parts.append(item.info)
        part.size += len(item.info)
        if part.size > MAX_MESSAGE:
            del pending[key]
            stream.problems.append(f"segmented HDLC message over {MAX_MESSAGE} bytes dropped")
            continue
        if item.segmented:
            continue
        del pending[key]
        stream.messages.append(_message(part))
    if reader.buffered > 1:  # one byte left is the last closing flag (it might open another)
        stream.problems.append(f"{reader.buffered} bytes at the end are not a whole HDLC frame")
    for part in pending.values():
        numbers = ", ".join(str(i + 1) for i in part.frames)
        stream.problems.append(f"segmented HDLC message never finished (frames {numbers})")
    return stream


def _message(part: _Pending) -> HdlcMessage:
    info = b"".join(part.parts)
    llc = info[:3] if info[:3] in (LLC_REQUEST, LLC_RESPONSE) else None
    return HdlcMessage(tuple(part.frames), info[3:] if llc else info, llc)
