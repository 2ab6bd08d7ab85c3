"""IEC 62056-47 wrapper: an 8-byte header (version, source wPort, destination wPort, length)
in front of each APDU on TCP/UDP.

TCP keeps no message boundaries, so `WrapperReader` reassembles frames from arbitrary chunks.
A bad header cannot be resynchronised on (there is no flag), so the reader fails for good."""

from __future__ import annotations

from dataclasses import dataclass

from cosem_objects.errors import DecodeError

WRAPPER_VERSION = 1
HEADER_LENGTH = 8
MAX_APDU_LENGTH = 0xFFFF


@dataclass(frozen=True, slots=True)
class WrapperHeader:
    version: int
    src_wport: int
    dst_wport: int
    length: int

    def to_bytes(self) -> bytes:
        return (
            self.version.to_bytes(2, "big")
            + self.src_wport.to_bytes(2, "big")
            + self.dst_wport.to_bytes(2, "big")
            + self.length.to_bytes(2, "big")
        )

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> WrapperHeader:
        if len(data) < HEADER_LENGTH:
            raise DecodeError(f"wrapper header needs {HEADER_LENGTH} bytes, got {len(data)}")
        return cls(
            version=int.from_bytes(data[0:2], "big"),
            src_wport=int.from_bytes(data[2:4], "big"),
            dst_wport=int.from_bytes(data[4:6], "big"),
            length=int.from_bytes(data[6:8], "big"),
        )


@dataclass(frozen=True, slots=True)
class WrapperFrame:
    version: int
    src_wport: int
    dst_wport: int
    apdu: bytes

    @property
    def length(self) -> int:
        return len(self.apdu)

    @property
    def header(self) -> WrapperHeader:
        return WrapperHeader(self.version, self.src_wport, self.dst_wport, len(self.apdu))

    def to_bytes(self) -> bytes:
        return self.header.to_bytes() + self.apdu


def encode_wrapper(src_wport: int, dst_wport: int, apdu: bytes) -> bytes:
    if not 0 <= src_wport <= 0xFFFF or not 0 <= dst_wport <= 0xFFFF:
        raise ValueError("wPorts are 16-bit")
    if len(apdu) > MAX_APDU_LENGTH:
        raise ValueError(f"APDU of {len(apdu)} bytes does not fit the 16-bit wrapper length")
    return WrapperFrame(WRAPPER_VERSION, src_wport, dst_wport, bytes(apdu)).to_bytes()


def _check_header(header: WrapperHeader, max_apdu_length: int) -> None:
    if header.version != WRAPPER_VERSION:
        raise DecodeError(f"wrapper version {header.version}, expected {WRAPPER_VERSION}")
    if header.length > max_apdu_length:
        raise DecodeError(f"wrapper length {header.length} exceeds {max_apdu_length}")


def parse_wrapper(
    data: bytes | bytearray | memoryview, max_apdu_length: int = MAX_APDU_LENGTH
) -> WrapperFrame:
    """Exactly one frame (a UDP datagram, or a test vector)."""
    header = WrapperHeader.from_bytes(data)
    _check_header(header, max_apdu_length)
    if len(data) != HEADER_LENGTH + header.length:
        raise DecodeError(
            f"wrapper length {header.length} but {len(data) - HEADER_LENGTH} APDU bytes"
        )
    return WrapperFrame(header.version, header.src_wport, header.dst_wport, bytes(data[8:]))


class WrapperReader:
    """Whole frames out of a TCP byte stream. Memory: at most one frame plus one chunk."""

    def __init__(self, max_apdu_length: int = MAX_APDU_LENGTH) -> None:
        self.max_apdu_length = max_apdu_length
        self._buf = bytearray()
        self._failed: DecodeError | None = None

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[WrapperFrame]:
        """Frames completed by `data`. DecodeError on a bad header, and on every call after."""
        if self._failed is not None:
            raise DecodeError(f"wrapper stream already failed: {self._failed}")
        buf = self._buf
        buf += data
        frames: list[WrapperFrame] = []
        pos = 0
        try:
            while len(buf) - pos >= HEADER_LENGTH:
                header = WrapperHeader.from_bytes(buf[pos : pos + HEADER_LENGTH])
                _check_header(header, self.max_apdu_length)
                end = pos + HEADER_LENGTH + header.length
                if len(buf) < end:
                    break
                frames.append(
                    WrapperFrame(
                        header.version,
                        header.src_wport,
                        header.dst_wport,
                        bytes(buf[pos + HEADER_LENGTH : end]),
                    )
                )
                pos = end
        except DecodeError as exc:
            self._failed = exc
            buf.clear()
            raise
        del buf[:pos]
        return frames
