"""xDLMS InitiateRequest and InitiateResponse: the negotiation of DLMS version, conformance and
PDU size that travels, plain or ciphered, in the user-information of the AARQ and AARE.

A-XDR, not BER: optional fields are usage flags, so the decoder reads them through a bounded
cursor that checks every byte it takes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cosem_objects.acse.conformance import DEFAULT_LN_CONFORMANCE, Conformance
from cosem_objects.acse.dump import secret_hex
from cosem_objects.axdr import decode_length, encode_length
from cosem_objects.errors import DecodeError

INITIATE_REQUEST_TAG = 0x01
INITIATE_RESPONSE_TAG = 0x08
_CONFORMANCE_PREFIX = bytes.fromhex("5F1F0400")  # [APPLICATION 31] BIT STRING, 4 bytes, 0 unused


class _Reader:
    """Bounded cursor over A-XDR bytes: every read checks what is left."""

    __slots__ = ("buf", "offset")

    def __init__(self, buf: bytes, offset: int = 0) -> None:
        self.buf = buf
        self.offset = offset

    def take(self, size: int, what: str) -> bytes:
        end = self.offset + size
        if end > len(self.buf):
            raise DecodeError(f"truncated: {what}")
        raw = self.buf[self.offset : end]
        self.offset = end
        return bytes(raw)

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def flag(self, what: str) -> bool:
        """A-XDR OPTIONAL / DEFAULT usage flag: 00 absent, 01 present."""
        value = self.u8(what)
        if value not in (0, 1):
            raise DecodeError(f"{what}: usage flag 0x{value:02X}")
        return value == 1

    def conformance(self) -> Conformance:
        if self.take(4, "conformance header") != _CONFORMANCE_PREFIX:
            raise DecodeError("conformance block must start 5F 1F 04 00")
        return Conformance.from_bytes(self.take(3, "conformance"))

    def end(self, what: str) -> None:
        if self.offset != len(self.buf):
            raise DecodeError(f"{len(self.buf) - self.offset} trailing bytes after the {what}")


def _check_u8(value: int, what: str) -> None:
    if not 0 <= value <= 0xFF:
        raise ValueError(f"{what} out of range: {value}")


def _check_u16(value: int, what: str) -> None:
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"{what} out of range: {value}")


def _check_qos(value: int | None) -> None:
    if value is not None and not -128 <= value <= 127:
        raise ValueError(f"quality of service is an Integer8: {value}")


@dataclass(frozen=True, slots=True)
class InitiateRequest:
    """xDLMS-Initiate.request, the client's half of the xDLMS negotiation (inside the AARQ)."""

    dedicated_key: bytes | None = field(default=None, repr=False)
    response_allowed: bool = True
    quality_of_service: int | None = None
    dlms_version: int = 6
    conformance: Conformance = DEFAULT_LN_CONFORMANCE
    max_pdu_size: int = 0xFFFF

    def __post_init__(self) -> None:
        _check_qos(self.quality_of_service)
        _check_u8(self.dlms_version, "DLMS version")
        _check_u16(self.max_pdu_size, "max PDU size")
        if self.dedicated_key is not None and len(self.dedicated_key) > 0xFFFF:
            raise ValueError("dedicated key too long")

    def to_bytes(self) -> bytes:
        out = bytearray((INITIATE_REQUEST_TAG,))
        if self.dedicated_key is None:
            out.append(0)
        else:
            out += b"\x01" + encode_length(len(self.dedicated_key)) + self.dedicated_key
        out += b"\x00" if self.response_allowed else b"\x01\x00"
        if self.quality_of_service is None:
            out.append(0)
        else:
            out += b"\x01" + self.quality_of_service.to_bytes(1, "big", signed=True)
        out.append(self.dlms_version)
        out += _CONFORMANCE_PREFIX + self.conformance.to_bytes()
        out += self.max_pdu_size.to_bytes(2, "big")
        return bytes(out)

    @classmethod
    def from_bytes(cls, buf: bytes) -> InitiateRequest:
        reader = _Reader(buf)
        if reader.u8("InitiateRequest tag") != INITIATE_REQUEST_TAG:
            raise DecodeError("not an InitiateRequest (tag 0x01)")
        dedicated_key = None
        if reader.flag("dedicated-key"):
            length, reader.offset = decode_length(buf, reader.offset)
            dedicated_key = reader.take(length, "dedicated-key")
        response_allowed = True
        if reader.flag("response-allowed"):
            response_allowed = reader.u8("response-allowed") != 0
        quality_of_service = None
        if reader.flag("proposed-quality-of-service"):
            quality_of_service = int.from_bytes(reader.take(1, "quality of service"), signed=True)
        dlms_version = reader.u8("proposed-dlms-version-number")
        conformance = reader.conformance()
        max_pdu_size = int.from_bytes(reader.take(2, "client-max-receive-pdu-size"), "big")
        reader.end("InitiateRequest")
        return cls(
            dedicated_key,
            response_allowed,
            quality_of_service,
            dlms_version,
            conformance,
            max_pdu_size,
        )

    def to_json(self, *, redact: bool = False) -> dict[str, Any]:
        return {
            "dedicated_key": secret_hex(self.dedicated_key, redact),
            "response_allowed": self.response_allowed,
            "proposed_quality_of_service": self.quality_of_service,
            "dlms_version": self.dlms_version,
            "conformance": self.conformance.to_bytes().hex().upper(),
            "max_pdu_size": self.max_pdu_size,
        }


VAA_NAME_LN = 0x0007
VAA_NAME_SN = 0xFA00


@dataclass(frozen=True, slots=True)
class InitiateResponse:
    """xDLMS-Initiate.response, the server's half (inside the AARE)."""

    quality_of_service: int | None = None
    dlms_version: int = 6
    conformance: Conformance = DEFAULT_LN_CONFORMANCE
    max_pdu_size: int = 0xFFFF
    vaa_name: int = VAA_NAME_LN

    def __post_init__(self) -> None:
        _check_qos(self.quality_of_service)
        _check_u8(self.dlms_version, "DLMS version")
        _check_u16(self.max_pdu_size, "max PDU size")
        _check_u16(self.vaa_name, "VAA name")

    def to_bytes(self) -> bytes:
        out = bytearray((INITIATE_RESPONSE_TAG,))
        if self.quality_of_service is None:
            out.append(0)
        else:
            out += b"\x01" + self.quality_of_service.to_bytes(1, "big", signed=True)
        out.append(self.dlms_version)
        out += _CONFORMANCE_PREFIX + self.conformance.to_bytes()
        out += self.max_pdu_size.to_bytes(2, "big") + self.vaa_name.to_bytes(2, "big")
        return bytes(out)

    @classmethod
    def from_bytes(cls, buf: bytes) -> InitiateResponse:
        reader = _Reader(buf)
        if reader.u8("InitiateResponse tag") != INITIATE_RESPONSE_TAG:
            raise DecodeError("not an InitiateResponse (tag 0x08)")
        quality_of_service = None
        if reader.flag("negotiated-quality-of-service"):
            quality_of_service = int.from_bytes(reader.take(1, "quality of service"), signed=True)
        dlms_version = reader.u8("negotiated-dlms-version-number")
        conformance = reader.conformance()
        max_pdu_size = int.from_bytes(reader.take(2, "server-max-receive-pdu-size"), "big")
        vaa_name = int.from_bytes(reader.take(2, "vaa-name"), "big")
        reader.end("InitiateResponse")
        return cls(quality_of_service, dlms_version, conformance, max_pdu_size, vaa_name)

    def to_json(self) -> dict[str, Any]:
        return {
            "negotiated_quality_of_service": self.quality_of_service,
            "dlms_version": self.dlms_version,
            "conformance": self.conformance.to_bytes().hex().upper(),
            "max_pdu_size": self.max_pdu_size,
            "vaa_name": self.vaa_name,
        }
