"""ACSE APDUs (AARQ, AARE, RLRQ, RLRE) in BER, and the xDLMS InitiateRequest/Response they carry.

Our own codec rather than dlms-cosem's: the decoder here is bounded (every length is checked
against the enclosing value, unknown optional fields are skipped, anything else malformed is a
DecodeError), encodes long BER lengths, and keeps the raw user-information so a ciphered
glo-initiate-request can be passed through and decrypted with cosem_objects.security.

Wire formats: dlms-notes section 16 (Green Book 9.4 / ISO 8650 as profiled by DLMS UA)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, IntFlag
from typing import TYPE_CHECKING, Any, Literal

from cosem_objects.axdr import decode_length, encode_length
from cosem_objects.errors import DecodeError, SecurityError
from cosem_objects.security import GloCipheredApdu, SecurityKeys, unwrap_service_specific

if TYPE_CHECKING:
    from cosem_objects.apdu.errors import ConfirmedServiceError

AARQ_TAG = 0x60
AARE_TAG = 0x61
RLRQ_TAG = 0x62
RLRE_TAG = 0x63

INITIATE_REQUEST_TAG = 0x01
INITIATE_RESPONSE_TAG = 0x08
CONFIRMED_SERVICE_ERROR_TAG = 0x0E
GLO_INITIATE_REQUEST_TAG = 0x21
GLO_INITIATE_RESPONSE_TAG = 0x28

# {joint-iso-ccitt(2) country(16) country-name(756) identified-organization(5) DLMS-UA(8)
#  application-context(1) | mechanism-name(2)}, BER encoded without the last arc.
_CONTEXT_OID_PREFIX = bytes.fromhex("608574050801")
_MECHANISM_OID_PREFIX = bytes.fromhex("608574050802")
_CONFORMANCE_PREFIX = bytes.fromhex("5F1F0400")  # [APPLICATION 31] BIT STRING, 4 bytes, 0 unused
ACSE_REQUIREMENTS_AUTHENTICATION = b"\x07\x80"  # BIT STRING: 7 unused bits, bit 0 set

DiagnosticSource = Literal["acse-service-user", "acse-service-provider"]


class Conformance(IntFlag):
    """The 24-bit conformance block. Member values are the bits as they stand in the 3 wire
    bytes read big-endian, so wire bit 0 (the most significant bit of the first byte) is
    1 << 23 and `to_bytes()` is plain big-endian. Unknown (reserved) bits are kept."""

    RESERVED_ZERO = 1 << 23
    GENERAL_PROTECTION = 1 << 22
    GENERAL_BLOCK_TRANSFER = 1 << 21
    READ = 1 << 20
    WRITE = 1 << 19
    UNCONFIRMED_WRITE = 1 << 18
    DELTA_VALUE_ENCODING = 1 << 17
    RESERVED_SEVEN = 1 << 16
    ATTRIBUTE0_SET = 1 << 15
    PRIORITY_MGMT = 1 << 14
    ATTRIBUTE0_GET = 1 << 13
    BLOCK_TRANSFER_GET = 1 << 12
    BLOCK_TRANSFER_SET = 1 << 11
    BLOCK_TRANSFER_ACTION = 1 << 10
    MULTIPLE_REFERENCES = 1 << 9
    INFORMATION_REPORT = 1 << 8
    DATA_NOTIFICATION = 1 << 7
    ACCESS = 1 << 6
    PARAMETERIZED_ACCESS = 1 << 5
    GET = 1 << 4
    SET = 1 << 3
    SELECTIVE_ACCESS = 1 << 2
    EVENT_NOTIFICATION = 1 << 1
    ACTION = 1 << 0

    def to_bytes(  # type: ignore[override]
        self, length: int = 3, byteorder: Literal["little", "big"] = "big", *, signed: bool = False
    ) -> bytes:
        return int(self).to_bytes(length, byteorder, signed=signed)

    @classmethod
    def from_bytes(  # type: ignore[override]
        cls, raw: bytes, byteorder: Literal["little", "big"] = "big", *, signed: bool = False
    ) -> Conformance:
        if len(raw) != 3:
            raise DecodeError(f"conformance block is 3 bytes, got {len(raw)}")
        return cls(int.from_bytes(raw, byteorder, signed=signed))


# What LN clients commonly propose (v1 vector, 001E1D): get/set/action, block transfer for all
# three, multiple references and selective access.
DEFAULT_LN_CONFORMANCE = (
    Conformance.BLOCK_TRANSFER_GET
    | Conformance.BLOCK_TRANSFER_SET
    | Conformance.BLOCK_TRANSFER_ACTION
    | Conformance.MULTIPLE_REFERENCES
    | Conformance.GET
    | Conformance.SET
    | Conformance.SELECTIVE_ACCESS
    | Conformance.ACTION
)


class ApplicationContext(IntEnum):
    LN = 1
    SN = 2
    LN_CIPHERED = 3
    SN_CIPHERED = 4


_CONTEXT_NAMES = {1: "LN", 2: "SN", 3: "LN-ciphered", 4: "SN-ciphered"}


class MechanismName(IntEnum):
    NONE = 0
    LLS = 1
    HLS = 2
    HLS_MD5 = 3
    HLS_SHA1 = 4
    HLS_GMAC = 5
    HLS_SHA256 = 6
    HLS_ECDSA = 7


_MECHANISM_NAMES = {
    MechanismName.NONE: "none",
    MechanismName.LLS: "LLS",
    MechanismName.HLS: "HLS",
    MechanismName.HLS_MD5: "HLS-MD5",
    MechanismName.HLS_SHA1: "HLS-SHA1",
    MechanismName.HLS_GMAC: "HLS-GMAC",
    MechanismName.HLS_SHA256: "HLS-SHA256",
    MechanismName.HLS_ECDSA: "HLS-ECDSA",
}


class AssociationResult(IntEnum):
    ACCEPTED = 0
    REJECTED_PERMANENT = 1
    REJECTED_TRANSIENT = 2


class AcseServiceUserDiagnostic(IntEnum):
    NULL = 0
    NO_REASON_GIVEN = 1
    APPLICATION_CONTEXT_NAME_NOT_SUPPORTED = 2
    CALLING_AP_TITLE_NOT_RECOGNIZED = 3
    CALLING_AP_INVOCATION_IDENTIFIER_NOT_RECOGNIZED = 4
    CALLING_AE_QUALIFIER_NOT_RECOGNIZED = 5
    CALLING_AE_INVOCATION_IDENTIFIER_NOT_RECOGNIZED = 6
    CALLED_AP_TITLE_NOT_RECOGNIZED = 7
    CALLED_AP_INVOCATION_IDENTIFIER_NOT_RECOGNIZED = 8
    CALLED_AE_QUALIFIER_NOT_RECOGNIZED = 9
    CALLED_AE_INVOCATION_IDENTIFIER_NOT_RECOGNIZED = 10
    AUTHENTICATION_MECHANISM_NAME_NOT_RECOGNISED = 11
    AUTHENTICATION_MECHANISM_NAME_REQUIRED = 12
    AUTHENTICATION_FAILURE = 13
    AUTHENTICATION_REQUIRED = 14


class AcseServiceProviderDiagnostic(IntEnum):
    NULL = 0
    NO_REASON_GIVEN = 1
    NO_COMMON_ACSE_VERSION = 2


class ReleaseRequestReason(IntEnum):
    NORMAL = 0
    URGENT = 1
    USER_DEFINED = 30


class ReleaseResponseReason(IntEnum):
    NORMAL = 0
    NOT_FINISHED = 1
    USER_DEFINED = 30


# -- BER helpers ----------------------------------------------------------------------------
_UNKNOWN_TAG = -1  # multi-byte (high tag number) tags: never one of ours, always skipped
_AARQ_FIELDS = frozenset((0xA1, 0xA6, 0x8A, 0x8B, 0xAC, 0xBE))
_AARE_FIELDS = frozenset((0xA1, 0xA2, 0xA3, 0xA4, 0x88, 0x89, 0xAA, 0xBE))
_RELEASE_FIELDS = frozenset((0x80, 0xBE))


def _read_tlv(buf: bytes, offset: int, end: int) -> tuple[int, int, int]:
    """One BER TLV inside buf[offset:end]: (tag, value start, value end)."""
    if offset >= end:
        raise DecodeError("truncated: BER tag expected")
    tag = buf[offset]
    offset += 1
    if tag & 0x1F == 0x1F:  # high-tag-number form: subsequent bytes, last one has bit 8 clear
        for _ in range(4):
            if offset >= end:
                raise DecodeError("truncated: BER tag number")
            more = buf[offset] & 0x80
            offset += 1
            if not more:
                break
        else:
            raise DecodeError("BER tag number too long")
        tag = _UNKNOWN_TAG
    length, offset = decode_length(buf, offset)
    if offset > end or length > end - offset:
        raise DecodeError("BER value overruns its container")
    return tag, offset, offset + length


def _fields(buf: bytes, start: int, end: int, known: frozenset[int]) -> dict[int, bytes]:
    """The `known` TLVs of a constructed value by tag; other tags are skipped (optional fields
    we do not use), a known tag twice is rejected."""
    found: dict[int, bytes] = {}
    offset = start
    while offset < end:
        tag, value_start, value_end = _read_tlv(buf, offset, end)
        if tag in known:
            if tag in found:
                raise DecodeError(f"duplicate BER field 0x{tag:02X}")
            found[tag] = bytes(buf[value_start:value_end])
        offset = value_end
    return found


def _outer(buf: bytes, expected_tag: int, name: str, known: frozenset[int]) -> dict[int, bytes]:
    if not buf or buf[0] != expected_tag:
        raise DecodeError(f"not an {name} (tag 0x{expected_tag:02X})")
    _tag, start, end = _read_tlv(buf, 0, len(buf))
    if end != len(buf):
        raise DecodeError(f"{len(buf) - end} trailing bytes after the {name}")
    return _fields(buf, start, end, known)


def _single(content: bytes, expected_tag: int, what: str) -> bytes:
    """The value of the one TLV that makes up `content` (an explicitly tagged field)."""
    tag, start, end = _read_tlv(content, 0, len(content))
    if tag != expected_tag:
        raise DecodeError(f"{what}: expected tag 0x{expected_tag:02X}, got 0x{content[0]:02X}")
    if end != len(content):
        raise DecodeError(f"{what}: trailing bytes")
    return content[start:end]


def _tlv(tag: int, value: bytes) -> bytes:
    return bytes((tag,)) + encode_length(len(value)) + value


def _ber_int_value(value: int) -> bytes:
    size = ((value if value >= 0 else ~value).bit_length() + 8) // 8
    return value.to_bytes(size, "big", signed=True)


def _decode_ber_int(raw: bytes, what: str) -> int:
    if not 1 <= len(raw) <= 4:
        raise DecodeError(f"{what}: integer of {len(raw)} bytes")
    return int.from_bytes(raw, "big", signed=True)


def _decode_context(content: bytes) -> int:
    oid = _single(content, 0x06, "application-context-name")
    if len(oid) != 7 or oid[:6] != _CONTEXT_OID_PREFIX or oid[6] & 0x80:
        raise DecodeError(f"application-context-name {oid.hex()} is not a DLMS context")
    return oid[6]


def _encode_context(context: int) -> bytes:
    return _tlv(0xA1, _tlv(0x06, _CONTEXT_OID_PREFIX + bytes((context,))))


def _decode_mechanism(content: bytes) -> MechanismName:
    if len(content) != 7 or content[:6] != _MECHANISM_OID_PREFIX:
        raise DecodeError(f"mechanism-name {content.hex()} is not a DLMS mechanism")
    try:
        return MechanismName(content[6])
    except ValueError:
        raise DecodeError(f"unknown authentication mechanism {content[6]}") from None


def _decode_ap_title(content: bytes, what: str) -> bytes:
    return _single(content, 0x04, what)


def _decode_auth_value(content: bytes, what: str) -> bytes:
    return _single(content, 0x80, what)  # charstring [0] IMPLICIT GraphicString


def _decode_user_information(content: bytes) -> bytes:
    return _single(content, 0x04, "user-information")


def _check_context(context: int) -> None:
    if not 0 <= context < 0x80:
        raise ValueError(f"application context {context} out of range")


def _hex(value: bytes | None) -> str | None:
    return value.hex().upper() if value is not None else None


def _secret_hex(value: bytes | None, redact: bool) -> str | None:
    if value is None:
        return None
    return "<hidden>" if redact else value.hex().upper()


# -- xDLMS InitiateRequest / InitiateResponse ------------------------------------------------
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
            "dedicated_key": _secret_hex(self.dedicated_key, redact),
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


def _confirmed_service_error(buf: bytes) -> ConfirmedServiceError:
    # Imported here, not at the top: cosem_objects.apdu's package imports this module.
    from cosem_objects.apdu.errors import ConfirmedServiceError

    return ConfirmedServiceError.from_bytes(buf)


def _glo_json(
    user_information: bytes, system_title: bytes | None, keys: SecurityKeys | None
) -> dict[str, Any]:
    ciphered = GloCipheredApdu.from_bytes(user_information)
    return ciphered.security_json(system_title, keys)


# -- ACSE APDUs -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AARQ:
    """A-ASSOCIATE request. `user_information` is the raw xDLMS part: an InitiateRequest (0x01)
    or a glo-initiate-request (0x21) ciphered with the client's system title (calling AP
    title). `acse_requirements` None means: 07 80 (authentication) when a mechanism is given,
    absent otherwise."""

    application_context: int = ApplicationContext.LN
    calling_ap_title: bytes | None = None
    mechanism: MechanismName | None = None
    calling_authentication_value: bytes | None = field(default=None, repr=False)
    user_information: bytes | None = None
    acse_requirements: bytes | None = None

    def __post_init__(self) -> None:
        _check_context(self.application_context)
        if self.acse_requirements is None and self.mechanism is not None:
            object.__setattr__(self, "acse_requirements", ACSE_REQUIREMENTS_AUTHENTICATION)

    def to_bytes(self) -> bytes:
        body = bytearray(_encode_context(self.application_context))
        if self.calling_ap_title is not None:
            body += _tlv(0xA6, _tlv(0x04, self.calling_ap_title))
        if self.acse_requirements is not None:
            body += _tlv(0x8A, self.acse_requirements)
        if self.mechanism is not None:
            body += _tlv(0x8B, _MECHANISM_OID_PREFIX + bytes((self.mechanism,)))
        if self.calling_authentication_value is not None:
            body += _tlv(0xAC, _tlv(0x80, self.calling_authentication_value))
        if self.user_information is not None:
            body += _tlv(0xBE, _tlv(0x04, self.user_information))
        return _tlv(AARQ_TAG, bytes(body))

    @classmethod
    def from_bytes(cls, buf: bytes) -> AARQ:
        fields = _outer(buf, AARQ_TAG, "AARQ", _AARQ_FIELDS)
        if 0xA1 not in fields:
            raise DecodeError("AARQ without application-context-name")
        context = _decode_context(fields[0xA1])
        title = fields.get(0xA6)
        mechanism = fields.get(0x8B)
        auth = fields.get(0xAC)
        info = fields.get(0xBE)
        return cls(
            application_context=context,
            calling_ap_title=_decode_ap_title(title, "calling-AP-title")
            if title is not None
            else None,
            mechanism=_decode_mechanism(mechanism) if mechanism is not None else None,
            calling_authentication_value=(
                _decode_auth_value(auth, "calling-authentication-value")
                if auth is not None
                else None
            ),
            user_information=_decode_user_information(info) if info is not None else None,
            acse_requirements=fields.get(0x8A),
        )

    @property
    def initiate_request(self) -> InitiateRequest | None:
        """The plain InitiateRequest, or None when absent or ciphered (see
        decrypt_initiate_request). DecodeError when it is malformed."""
        if not self.user_information or self.user_information[0] != INITIATE_REQUEST_TAG:
            return None
        return InitiateRequest.from_bytes(self.user_information)

    def decrypt_initiate_request(self, keys: SecurityKeys) -> InitiateRequest:
        """Deciphers a glo-initiate-request with the calling AP title as sender system title."""
        if not self.user_information or self.user_information[0] != GLO_INITIATE_REQUEST_TAG:
            raise DecodeError("user-information is not a glo-initiate-request")
        if self.calling_ap_title is None:
            raise SecurityError("ciphered AARQ without calling-AP-title")
        plaintext, _ic = unwrap_service_specific(self.user_information, self.calling_ap_title, keys)
        return InitiateRequest.from_bytes(plaintext)

    def to_json(self, keys: SecurityKeys | None = None, *, redact: bool = False) -> dict[str, Any]:
        """The vectors' `expect["apdu"]` shape. A full dump: it holds the LLS password and any
        dedicated key unless `redact`, so do not log it. With `keys`, a ciphered
        glo-initiate-request is checked and decoded."""
        out: dict[str, Any] = {
            "type": "AARQ",
            "application_context": int(self.application_context),
            "calling_ap_title": _hex(self.calling_ap_title),
            "acse_requirements": _hex(self.acse_requirements),
            "mechanism": int(self.mechanism) if self.mechanism is not None else None,
            "calling_authentication_value": _secret_hex(self.calling_authentication_value, redact),
            "user_information": _hex(self.user_information),
            "application_context_name": _CONTEXT_NAMES.get(self.application_context),
            "mechanism_name": _MECHANISM_NAMES[self.mechanism]
            if self.mechanism is not None
            else None,
        }
        info = self.user_information
        try:
            if info and info[0] == INITIATE_REQUEST_TAG:
                out["initiate_request"] = InitiateRequest.from_bytes(info).to_json(redact=redact)
            elif info and info[0] == GLO_INITIATE_REQUEST_TAG:
                glo = _glo_json(info, self.calling_ap_title, keys)
                out["glo_initiate_request"] = glo
                if keys is not None and glo["tag_ok"] is not False:
                    request = self.decrypt_initiate_request(keys)
                    out["initiate_request"] = request.to_json(redact=redact)
        except (DecodeError, SecurityError) as exc:
            out["user_information_error"] = str(exc)
        return out


@dataclass(frozen=True, slots=True)
class AARE:
    """A-ASSOCIATE response. `user_information` is the raw xDLMS part: an InitiateResponse
    (0x08), a glo-initiate-response (0x28, ciphered with the responding AP title) or a
    confirmed-service-error (0x0E)."""

    application_context: int = ApplicationContext.LN
    result: AssociationResult = AssociationResult.ACCEPTED
    diagnostic_source: DiagnosticSource = "acse-service-user"
    diagnostic: int = AcseServiceUserDiagnostic.NULL
    responding_ap_title: bytes | None = None
    mechanism: MechanismName | None = None
    responding_authentication_value: bytes | None = None
    user_information: bytes | None = None
    acse_requirements: bytes | None = None

    def __post_init__(self) -> None:
        _check_context(self.application_context)
        if self.diagnostic_source not in ("acse-service-user", "acse-service-provider"):
            raise ValueError(f"unknown diagnostic source {self.diagnostic_source!r}")
        if self.acse_requirements is None and self.mechanism is not None:
            object.__setattr__(self, "acse_requirements", ACSE_REQUIREMENTS_AUTHENTICATION)

    def to_bytes(self) -> bytes:
        body = bytearray(_encode_context(self.application_context))
        body += _tlv(0xA2, _tlv(0x02, _ber_int_value(self.result)))
        choice = 0xA1 if self.diagnostic_source == "acse-service-user" else 0xA2
        body += _tlv(0xA3, _tlv(choice, _tlv(0x02, _ber_int_value(self.diagnostic))))
        if self.responding_ap_title is not None:
            body += _tlv(0xA4, _tlv(0x04, self.responding_ap_title))
        if self.acse_requirements is not None:
            body += _tlv(0x88, self.acse_requirements)
        if self.mechanism is not None:
            body += _tlv(0x89, _MECHANISM_OID_PREFIX + bytes((self.mechanism,)))
        if self.responding_authentication_value is not None:
            body += _tlv(0xAA, _tlv(0x80, self.responding_authentication_value))
        if self.user_information is not None:
            body += _tlv(0xBE, _tlv(0x04, self.user_information))
        return _tlv(AARE_TAG, bytes(body))

    @classmethod
    def from_bytes(cls, buf: bytes) -> AARE:
        fields = _outer(buf, AARE_TAG, "AARE", _AARE_FIELDS)
        for tag, name in (
            (0xA1, "application-context-name"),
            (0xA2, "result"),
            (0xA3, "result-source-diagnostic"),
        ):
            if tag not in fields:
                raise DecodeError(f"AARE without {name}")
        context = _decode_context(fields[0xA1])
        result_value = _decode_ber_int(_single(fields[0xA2], 0x02, "result"), "result")
        try:
            result = AssociationResult(result_value)
        except ValueError:
            raise DecodeError(f"unknown association result {result_value}") from None
        source_tag, start, end = _read_tlv(fields[0xA3], 0, len(fields[0xA3]))
        if end != len(fields[0xA3]) or source_tag not in (0xA1, 0xA2):
            raise DecodeError("malformed result-source-diagnostic")
        source: DiagnosticSource = (
            "acse-service-user" if source_tag == 0xA1 else "acse-service-provider"
        )
        diagnostic = _decode_ber_int(
            _single(fields[0xA3][start:end], 0x02, "diagnostic"), "diagnostic"
        )
        title = fields.get(0xA4)
        mechanism = fields.get(0x89)
        auth = fields.get(0xAA)
        info = fields.get(0xBE)
        return cls(
            application_context=context,
            result=result,
            diagnostic_source=source,
            diagnostic=diagnostic,
            responding_ap_title=(
                _decode_ap_title(title, "responding-AP-title") if title is not None else None
            ),
            mechanism=_decode_mechanism(mechanism) if mechanism is not None else None,
            responding_authentication_value=(
                _decode_auth_value(auth, "responding-authentication-value")
                if auth is not None
                else None
            ),
            user_information=_decode_user_information(info) if info is not None else None,
            acse_requirements=fields.get(0x88),
        )

    @property
    def initiate_response(self) -> InitiateResponse | None:
        """The plain InitiateResponse, or None when absent, ciphered or an error."""
        if not self.user_information or self.user_information[0] != INITIATE_RESPONSE_TAG:
            return None
        return InitiateResponse.from_bytes(self.user_information)

    @property
    def confirmed_service_error(self) -> ConfirmedServiceError | None:
        """The confirmed-service-error (0x0E) of a refused xDLMS initiate, e.g. 0E 01 06 01:
        initiateError / initiate / dlms-version-too-low."""
        if not self.user_information or self.user_information[0] != CONFIRMED_SERVICE_ERROR_TAG:
            return None
        return _confirmed_service_error(self.user_information)

    def decrypt_initiate_response(self, keys: SecurityKeys) -> InitiateResponse:
        """Deciphers a glo-initiate-response with the responding AP title as system title."""
        if not self.user_information or self.user_information[0] != GLO_INITIATE_RESPONSE_TAG:
            raise DecodeError("user-information is not a glo-initiate-response")
        if self.responding_ap_title is None:
            raise SecurityError("ciphered AARE without responding-AP-title")
        plaintext, _ic = unwrap_service_specific(
            self.user_information, self.responding_ap_title, keys
        )
        return InitiateResponse.from_bytes(plaintext)

    def to_json(self, keys: SecurityKeys | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "AARE",
            "application_context": int(self.application_context),
            "result": int(self.result),
            "diagnostic": {"source": self.diagnostic_source, "value": int(self.diagnostic)},
            "responding_ap_title": _hex(self.responding_ap_title),
            "acse_requirements": _hex(self.acse_requirements),
            "mechanism": int(self.mechanism) if self.mechanism is not None else None,
            "responding_authentication_value": _hex(self.responding_authentication_value),
            "user_information": _hex(self.user_information),
            "application_context_name": _CONTEXT_NAMES.get(self.application_context),
            "mechanism_name": _MECHANISM_NAMES[self.mechanism]
            if self.mechanism is not None
            else None,
        }
        info = self.user_information
        try:
            if info and info[0] == INITIATE_RESPONSE_TAG:
                out["initiate_response"] = InitiateResponse.from_bytes(info).to_json()
            elif info and info[0] == CONFIRMED_SERVICE_ERROR_TAG:
                out["confirmed_service_error"] = _confirmed_service_error(info).to_json()
            elif info and info[0] == GLO_INITIATE_RESPONSE_TAG:
                glo = _glo_json(info, self.responding_ap_title, keys)
                out["glo_initiate_response"] = glo
                if keys is not None and glo["tag_ok"] is not False:
                    out["initiate_response"] = self.decrypt_initiate_response(keys).to_json()
        except (DecodeError, SecurityError) as exc:
            out["user_information_error"] = str(exc)
        return out


def _encode_release(tag: int, reason: int | None, user_information: bytes | None) -> bytes:
    body = b""
    if reason is not None:
        body += _tlv(0x80, _ber_int_value(reason))
    if user_information is not None:
        body += _tlv(0xBE, _tlv(0x04, user_information))
    return _tlv(tag, body)


def _decode_release(buf: bytes, tag: int, name: str) -> tuple[int | None, bytes | None]:
    fields = _outer(buf, tag, name, _RELEASE_FIELDS)
    reason = fields.get(0x80)
    info = fields.get(0xBE)
    return (
        _decode_ber_int(reason, "release reason") if reason is not None else None,
        _decode_user_information(info) if info is not None else None,
    )


@dataclass(frozen=True, slots=True)
class RLRQ:
    """A-RELEASE request; reason 0 normal, 1 urgent, 30 user-defined (ReleaseRequestReason).
    In ciphered contexts user_information carries a glo-initiate-request."""

    reason: int | None = ReleaseRequestReason.NORMAL
    user_information: bytes | None = None

    def to_bytes(self) -> bytes:
        return _encode_release(RLRQ_TAG, self.reason, self.user_information)

    @classmethod
    def from_bytes(cls, buf: bytes) -> RLRQ:
        return cls(*_decode_release(buf, RLRQ_TAG, "RLRQ"))

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "RLRQ",
            "reason": self.reason,
            "user_information": _hex(self.user_information),
        }


@dataclass(frozen=True, slots=True)
class RLRE:
    """A-RELEASE response; reason 0 normal, 1 not-finished, 30 user-defined."""

    reason: int | None = ReleaseResponseReason.NORMAL
    user_information: bytes | None = None

    def to_bytes(self) -> bytes:
        return _encode_release(RLRE_TAG, self.reason, self.user_information)

    @classmethod
    def from_bytes(cls, buf: bytes) -> RLRE:
        return cls(*_decode_release(buf, RLRE_TAG, "RLRE"))

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "RLRE",
            "reason": self.reason,
            "user_information": _hex(self.user_information),
        }


AcseApdu = AARQ | AARE | RLRQ | RLRE
_DECODERS: dict[int, Any] = {
    AARQ_TAG: AARQ.from_bytes,
    AARE_TAG: AARE.from_bytes,
    RLRQ_TAG: RLRQ.from_bytes,
    RLRE_TAG: RLRE.from_bytes,
}


def decode_acse(buf: bytes) -> AcseApdu:
    """Any ACSE APDU by its first byte (0x60-0x63); DecodeError otherwise."""
    if not buf or buf[0] not in _DECODERS:
        raise DecodeError("not an ACSE APDU (tags 0x60-0x63)")
    result: AcseApdu = _DECODERS[buf[0]](buf)
    return result
