"""BER as the ACSE APDUs use it: bounded TLV reading, TLV writing, and the encodings of the
fields AARQ, AARE, RLRQ and RLRE share (application context, mechanism name, AP titles,
authentication values, user-information).

Every read is checked against its enclosing value, so a length that overruns its container is
a DecodeError rather than a slice that silently comes up short."""

from __future__ import annotations

from cosem_objects.acse.vocabulary import MechanismName
from cosem_objects.axdr import decode_length, encode_length
from cosem_objects.errors import DecodeError

_UNKNOWN_TAG = -1  # multi-byte (high tag number) tags: never one of ours, always skipped
# {joint-iso-ccitt(2) country(16) country-name(756) identified-organization(5) DLMS-UA(8)
#  application-context(1) | mechanism-name(2)}, BER encoded without the last arc.
_CONTEXT_OID_PREFIX = bytes.fromhex("608574050801")
MECHANISM_OID_PREFIX = bytes.fromhex("608574050802")


def read_tlv(buf: bytes, offset: int, end: int) -> tuple[int, int, int]:
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
        tag, value_start, value_end = read_tlv(buf, offset, end)
        if tag in known:
            if tag in found:
                raise DecodeError(f"duplicate BER field 0x{tag:02X}")
            found[tag] = bytes(buf[value_start:value_end])
        offset = value_end
    return found


def apdu_fields(
    buf: bytes, expected_tag: int, name: str, known: frozenset[int]
) -> dict[int, bytes]:
    """The `known` fields of a whole APDU, which must be one TLV tagged `expected_tag`."""
    if not buf or buf[0] != expected_tag:
        raise DecodeError(f"not an {name} (tag 0x{expected_tag:02X})")
    _tag, start, end = read_tlv(buf, 0, len(buf))
    if end != len(buf):
        raise DecodeError(f"{len(buf) - end} trailing bytes after the {name}")
    return _fields(buf, start, end, known)


def single(content: bytes, expected_tag: int, what: str) -> bytes:
    """The value of the one TLV that makes up `content` (an explicitly tagged field)."""
    tag, start, end = read_tlv(content, 0, len(content))
    if tag != expected_tag:
        raise DecodeError(f"{what}: expected tag 0x{expected_tag:02X}, got 0x{content[0]:02X}")
    if end != len(content):
        raise DecodeError(f"{what}: trailing bytes")
    return content[start:end]


def tlv(tag: int, value: bytes) -> bytes:
    return bytes((tag,)) + encode_length(len(value)) + value


def ber_int_value(value: int) -> bytes:
    size = ((value if value >= 0 else ~value).bit_length() + 8) // 8
    return value.to_bytes(size, "big", signed=True)


def decode_ber_int(raw: bytes, what: str) -> int:
    if not 1 <= len(raw) <= 4:
        raise DecodeError(f"{what}: integer of {len(raw)} bytes")
    return int.from_bytes(raw, "big", signed=True)


def decode_context(content: bytes) -> int:
    oid = single(content, 0x06, "application-context-name")
    if len(oid) != 7 or oid[:6] != _CONTEXT_OID_PREFIX or oid[6] & 0x80:
        raise DecodeError(f"application-context-name {oid.hex()} is not a DLMS context")
    return oid[6]


def encode_context(context: int) -> bytes:
    return tlv(0xA1, tlv(0x06, _CONTEXT_OID_PREFIX + bytes((context,))))


def decode_mechanism(content: bytes) -> MechanismName:
    if len(content) != 7 or content[:6] != MECHANISM_OID_PREFIX:
        raise DecodeError(f"mechanism-name {content.hex()} is not a DLMS mechanism")
    try:
        return MechanismName(content[6])
    except ValueError:
        raise DecodeError(f"unknown authentication mechanism {content[6]}") from None


def decode_ap_title(content: bytes, what: str) -> bytes:
    return single(content, 0x04, what)


def decode_auth_value(content: bytes, what: str) -> bytes:
    return single(content, 0x80, what)  # charstring [0] IMPLICIT GraphicString


def decode_user_information(content: bytes) -> bytes:
    return single(content, 0x04, "user-information")


def check_context(context: int) -> None:
    if not 0 <= context < 0x80:
        raise ValueError(f"application context {context} out of range")
