"""IEC 62056-21 mode E opening: from the 300 baud 7E1 sign-on to binary HDLC at the meter's speed.

Sans-IO: `ModeEHandshake` turns what the line returns into the meter identification and the
option-select message; the serial transport does the writing, waiting and baud switching.
Optical heads echo what they send, so the echo of our request is skipped."""

from __future__ import annotations

from dataclasses import dataclass

from cosem_objects.errors import DecodeError

INITIAL_BAUDRATE = 300
BAUD_RATES = {"0": 300, "1": 600, "2": 1200, "3": 2400, "4": 4800, "5": 9600, "6": 19200}
BAUD_CHARS = {rate: char for char, rate in BAUD_RATES.items()}
ACK = 0x06
PROTOCOL_HDLC = "2"
MODE_BINARY = "2"
_MAX_LINE = 128


def request_message(device_address: str = "") -> bytes:
    """`/?<address>!CRLF`; the address selects one meter on a bus (empty = any)."""
    if not device_address.isascii() or any(c in device_address for c in "/?!\r\n"):
        raise ValueError("device address must be plain ASCII without / ? ! or line breaks")
    return b"/?" + device_address.encode("ascii") + b"!\r\n"


def ack_message(baud_char: str, protocol: str = PROTOCOL_HDLC, mode: str = MODE_BINARY) -> bytes:
    """Acknowledgement/option select `ACK protocol Z mode CRLF`: `06 32 Z 32 0D 0A` for HDLC."""
    if baud_char not in BAUD_RATES:
        raise ValueError(f"unknown baud rate character {baud_char!r}")
    return bytes((ACK,)) + (protocol + baud_char + mode).encode("ascii") + b"\r\n"


@dataclass(frozen=True, slots=True)
class Identification:
    """The meter's `/XXXZ\\W<ident>` answer."""

    manufacturer: str
    baud_char: str
    enhanced: str | None
    ident: str

    @property
    def baudrate(self) -> int:
        return BAUD_RATES[self.baud_char]

    @property
    def supports_hdlc(self) -> bool:
        """Enhanced identification 2 = binary mode (HDLC) available."""
        return self.enhanced == "2"


def parse_identification(line: bytes) -> Identification:
    """One identification line, with or without the trailing CRLF."""
    text = bytes(b & 0x7F for b in line).rstrip(b"\r\n").decode("ascii", "replace")
    if len(text) < 5 or text[0] != "/":
        raise DecodeError(f"not an IEC 62056-21 identification: {text!r}")
    manufacturer, baud_char, rest = text[1:4], text[4], text[5:]
    if baud_char not in BAUD_RATES:
        raise DecodeError(f"identification baud character {baud_char!r} is not a mode C/E rate")
    enhanced: str | None = None
    if len(rest) >= 2 and rest[0] == "\\":
        enhanced, rest = rest[1], rest[2:]
    return Identification(manufacturer, baud_char, enhanced, rest)


class ModeEHandshake:
    """Collects the identification line from what the line returns after `request()`."""

    def __init__(self, device_address: str = "") -> None:
        self._request = request_message(device_address)
        self._buf = bytearray()
        self.identification: Identification | None = None

    def request(self) -> bytes:
        return self._request

    def receive_data(self, data: bytes) -> Identification | None:
        """The identification once its line is complete; DecodeError on a runaway line."""
        if self.identification is not None:
            return self.identification
        self._buf += bytes(b & 0x7F for b in data)
        echo = self._request.rstrip(b"\r\n")
        while True:
            end = self._buf.find(b"\r\n")
            if end < 0:
                if len(self._buf) > _MAX_LINE:
                    raise DecodeError("no identification line from the meter")
                return None
            line = bytes(self._buf[:end])
            del self._buf[: end + 2]
            start = line.find(b"/")
            if start < 0:
                continue  # noise, or an echo fragment
            line = line[start:]
            if line == echo:
                continue
            self.identification = parse_identification(line)
            return self.identification

    def acknowledgement(self) -> bytes:
        """The option select for binary HDLC at the meter's proposed rate."""
        if self.identification is None:
            raise DecodeError("no identification received yet")
        return ack_message(self.identification.baud_char)


def with_even_parity(data: bytes) -> bytes:
    """7E1 characters as 8N1 bytes: bit 7 set where it makes the count of one-bits even.

    Lets a port that cannot do 7 data bits + parity (some USB adapters, pseudo-terminals)
    still put the exact 7E1 bit pattern on the wire."""
    return bytes(b & 0x7F | (0x80 if (b & 0x7F).bit_count() & 1 else 0) for b in data)
