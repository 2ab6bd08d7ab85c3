"""HDLC frames (IEC 62056-46, frame format type 3) and a sans-IO frame reader.

Frames are delimited by their 11-bit length field, never by scanning for flags: DLMS HDLC has
no byte stuffing, so 0x7E and 0x7D are ordinary bytes inside an information field."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from cosem_objects.errors import DecodeError
from drivers.hdlc.addresses import HdlcAddress, decode_address, encode_address
from drivers.hdlc.crc import crc16_x25, crc16_x25_bytes

FLAG = 0x7E
FORMAT_TYPE_3 = 0xA
MAX_LENGTH = 0x7FF
"""The largest value of the 11-bit length field: bytes between the flags."""
_MIN_LENGTH = 7  # format (2) + dst (1) + src (1) + control (1) + FCS (2)
_SEGMENT_BIT = 0x08  # in the first format byte
LLC_REQUEST = b"\xe6\xe6\x00"
LLC_RESPONSE = b"\xe6\xe7\x00"


class FrameType(enum.Enum):
    I = "I"  # noqa: E741 - the standard's name
    RR = "RR"
    RNR = "RNR"
    SNRM = "SNRM"
    DISC = "DISC"
    UA = "UA"
    DM = "DM"
    FRMR = "FRMR"
    UI = "UI"


_SUPERVISORY = {0x01: FrameType.RR, 0x05: FrameType.RNR}
_UNNUMBERED = {
    0x83: FrameType.SNRM,
    0x43: FrameType.DISC,
    0x63: FrameType.UA,
    0x0F: FrameType.DM,
    0x87: FrameType.FRMR,
    0x03: FrameType.UI,
}
_UNNUMBERED_CODE = {frame_type: code for code, frame_type in _UNNUMBERED.items()}
_SUPERVISORY_CODE = {frame_type: code for code, frame_type in _SUPERVISORY.items()}


def control_byte(
    frame_type: FrameType, poll_final: bool, send_seq: int = 0, recv_seq: int = 0
) -> int:
    pf = 0x10 if poll_final else 0
    if frame_type is FrameType.I:
        return ((recv_seq & 7) << 5) | pf | ((send_seq & 7) << 1)
    if frame_type in _SUPERVISORY_CODE:
        return ((recv_seq & 7) << 5) | pf | _SUPERVISORY_CODE[frame_type]
    return _UNNUMBERED_CODE[frame_type] | pf


def decode_control(control: int) -> tuple[FrameType, bool, int | None, int | None]:
    """(frame type, P/F, N(S), N(R)); N(S) only for I frames, N(R) for I and S frames."""
    poll_final = bool(control & 0x10)
    if not control & 1:
        return FrameType.I, poll_final, (control >> 1) & 7, control >> 5
    if control & 3 == 1:
        frame_type = _SUPERVISORY.get(control & 0x0F)
        if frame_type is None:
            raise DecodeError(f"unsupported HDLC supervisory frame, control 0x{control:02X}")
        return frame_type, poll_final, None, control >> 5
    frame_type = _UNNUMBERED.get(control & 0xEF)
    if frame_type is None:
        raise DecodeError(f"unsupported HDLC unnumbered frame, control 0x{control:02X}")
    return frame_type, poll_final, None, None


@dataclass(frozen=True, slots=True)
class HdlcFrame:
    """One frame. `info` is empty when the frame has no information field (then no HCS)."""

    dst: HdlcAddress
    src: HdlcAddress
    control: int
    frame_type: FrameType
    poll_final: bool = True
    send_seq: int | None = None
    recv_seq: int | None = None
    segmented: bool = False
    info: bytes = b""

    @classmethod
    def make(
        cls,
        frame_type: FrameType,
        dst: HdlcAddress,
        src: HdlcAddress,
        *,
        poll_final: bool = True,
        send_seq: int = 0,
        recv_seq: int = 0,
        segmented: bool = False,
        info: bytes = b"",
    ) -> HdlcFrame:
        """A frame whose control byte is computed from its type, P/F and sequence numbers."""
        numbered = frame_type is FrameType.I
        sequenced = numbered or frame_type in _SUPERVISORY_CODE
        return cls(
            dst=dst,
            src=src,
            control=control_byte(frame_type, poll_final, send_seq, recv_seq),
            frame_type=frame_type,
            poll_final=poll_final,
            send_seq=send_seq & 7 if numbered else None,
            recv_seq=recv_seq & 7 if sequenced else None,
            segmented=segmented,
            info=bytes(info),
        )

    @property
    def length(self) -> int:
        """The length field: every byte between the flags."""
        header = 2 + self.dst.size + self.src.size + 1
        return header + (2 + len(self.info) if self.info else 0) + 2

    @property
    def llc(self) -> bytes | None:
        """The LLC header the information field starts with, if any.

        Only meaningful on the first segment of a message; a later segment could start with
        the same bytes by chance."""
        head = self.info[:3]
        return head if head in (LLC_REQUEST, LLC_RESPONSE) else None

    def to_bytes(self) -> bytes:
        length = self.length
        if length > MAX_LENGTH:
            raise ValueError(f"HDLC frame of {length} bytes exceeds the 11-bit length field")
        first = 0xA0 | (_SEGMENT_BIT if self.segmented else 0) | (length >> 8)
        header = (
            bytes((first, length & 0xFF))
            + encode_address(self.dst)
            + encode_address(self.src)
            + bytes((self.control,))
        )
        if self.info:
            body = header + crc16_x25_bytes(header) + self.info
        else:
            body = header
        return b"\x7e" + body + crc16_x25_bytes(body) + b"\x7e"


def parse_frame(raw: bytes | bytearray | memoryview) -> HdlcFrame:
    """One whole frame, flags included. Checks HCS (when there is an information field) and FCS."""
    raw = bytes(raw)
    total = len(raw)
    if total < _MIN_LENGTH + 2:
        raise DecodeError(f"HDLC frame of {total} bytes is too short")
    if raw[0] != FLAG or raw[-1] != FLAG:
        raise DecodeError("HDLC frame does not start and end with the 0x7E flag")
    if raw[1] >> 4 != FORMAT_TYPE_3:
        raise DecodeError(f"HDLC frame format type 0x{raw[1] >> 4:X} is not 0xA")
    length = ((raw[1] & 0x07) << 8) | raw[2]
    if length != total - 2:
        raise DecodeError(f"HDLC length field {length} does not match {total - 2} bytes")
    end = total - 1  # index of the closing flag
    dst, offset = decode_address(raw, 3, end)
    src, offset = decode_address(raw, offset, end)
    control_index = offset
    offset += 1
    remaining = end - offset  # bytes after control, before the closing flag
    if remaining < 2:
        raise DecodeError("HDLC frame too short for its addresses")
    frame_type, poll_final, send_seq, recv_seq = decode_control(raw[control_index])
    info = b""
    if remaining > 2:
        if remaining < 4:
            raise DecodeError("HDLC frame too short for an HCS")
        hcs = int.from_bytes(raw[offset : offset + 2], "little")
        if crc16_x25(raw[1:offset]) != hcs:
            raise DecodeError("HDLC header check sequence (HCS) mismatch")
        info = raw[offset + 2 : end - 2]
    fcs = int.from_bytes(raw[end - 2 : end], "little")
    if crc16_x25(raw[1 : end - 2]) != fcs:
        raise DecodeError("HDLC frame check sequence (FCS) mismatch")
    return HdlcFrame(
        dst=dst,
        src=src,
        control=raw[control_index],
        frame_type=frame_type,
        poll_final=poll_final,
        send_seq=send_seq,
        recv_seq=recv_seq,
        segmented=bool(raw[1] & _SEGMENT_BIT),
        info=info,
    )


@dataclass(frozen=True, slots=True)
class BadFrame:
    """Bytes that looked like the start of a frame but failed a check; the reader moved on."""

    reason: str


class HdlcFrameReader:
    """Cuts a byte stream into frames. Never raises on bad input and never stalls on it.

    After garbage or a bad frame it resynchronises on the next 0x7E. The header check sequence
    is verified as soon as the header is in, so a false start that claims a long length is
    dropped at once instead of swallowing the real frames behind it. Memory is bounded by
    `max_length` plus whatever one `feed` call brings."""

    def __init__(self, max_length: int = MAX_LENGTH) -> None:
        if not _MIN_LENGTH <= max_length <= MAX_LENGTH:
            raise ValueError(f"max_length must be between {_MIN_LENGTH} and {MAX_LENGTH}")
        self.max_length = max_length
        self._buf = bytearray()
        self.bad_frames = 0
        self.discarded_bytes = 0

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def clear(self) -> None:
        self.discarded_bytes += len(self._buf)
        self._buf.clear()

    def feed(self, data: bytes | bytearray | memoryview) -> list[HdlcFrame]:
        """Frames completed by `data`; bad frames are only counted (see `feed_events`)."""
        return [item for item in self.feed_events(data) if isinstance(item, HdlcFrame)]

    def feed_events(self, data: bytes | bytearray | memoryview) -> list[HdlcFrame | BadFrame]:
        """Frames completed by `data`, with a BadFrame wherever a frame-like run failed a check."""
        buf = self._buf
        buf += data
        out: list[HdlcFrame | BadFrame] = []
        pos = 0
        size = len(buf)
        while True:
            start = buf.find(FLAG, pos)
            if start < 0:
                self.discarded_bytes += size - pos
                pos = size
                break
            self.discarded_bytes += start - pos
            pos = start
            if size - pos < 2:
                break
            first = buf[pos + 1]
            if first == FLAG or first >> 4 != FORMAT_TYPE_3:
                # An idle/shared flag or garbage: not a frame start.
                self.discarded_bytes += 1
                pos += 1
                continue
            if size - pos < 3:
                break
            length = ((first & 0x07) << 8) | buf[pos + 2]
            verdict = self._check_header(buf, pos, length, size)
            if verdict is None:
                break  # need more bytes
            if verdict:
                self._reject(out, verdict)
                pos += 1
                continue
            if size - pos < length + 2:
                break
            if buf[pos + length + 1] != FLAG:
                self._reject(out, "no closing flag where the length field puts it")
                pos += 1
                continue
            try:
                frame = parse_frame(buf[pos : pos + length + 2])
            except DecodeError as exc:
                self._reject(out, str(exc))
                pos += 1
                continue
            out.append(frame)
            pos += length + 1  # the closing flag may open the next frame
        del buf[:pos]
        return out

    def _reject(self, out: list[HdlcFrame | BadFrame], reason: str) -> None:
        self.bad_frames += 1
        self.discarded_bytes += 1
        out.append(BadFrame(reason))

    def _check_header(self, buf: bytearray, pos: int, length: int, size: int) -> str | None:
        """'' if the header is sound so far, a reason if not, None if more bytes are needed."""
        if length < _MIN_LENGTH:
            return f"HDLC length field {length} is too small"
        if length > self.max_length:
            return f"HDLC length field {length} exceeds {self.max_length}"
        end = pos + 1 + length  # closing flag index
        offset = pos + 3
        for _ in range(2):  # destination, then source address
            for count in range(1, 5):
                index = offset + count - 1
                if index >= end:
                    return "HDLC address runs past the end of the frame"
                if index >= size:
                    return None
                if buf[index] & 1:
                    break
            else:
                return "HDLC address longer than 4 bytes"
            if count == 3:
                return "HDLC address of 3 bytes"
            offset += count
        after_control = offset + 1
        remaining = end - after_control
        if remaining < 2:
            return "HDLC frame too short for its addresses"
        if remaining == 2:
            return ""  # no information field, no HCS: the FCS decides
        if remaining < 4:
            return "HDLC frame too short for an HCS"
        if size < after_control + 2:
            return None
        hcs = buf[after_control] | (buf[after_control + 1] << 8)
        if crc16_x25(buf[pos + 1 : after_control]) != hcs:
            return "HDLC header check sequence (HCS) mismatch"
        return ""
