"""A-RELEASE: the RLRQ and RLRE, a reason and an optional user-information."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cosem_objects.acse.ber import (
    apdu_fields,
    ber_int_value,
    decode_ber_int,
    decode_user_information,
    tlv,
)
from cosem_objects.acse.dump import hex_or_none
from cosem_objects.acse.vocabulary import ReleaseRequestReason, ReleaseResponseReason

RLRQ_TAG = 0x62
RLRE_TAG = 0x63
_RELEASE_FIELDS = frozenset((0x80, 0xBE))


def _encode_release(tag: int, reason: int | None, user_information: bytes | None) -> bytes:
    body = b""
    if reason is not None:
        body += tlv(0x80, ber_int_value(reason))
    if user_information is not None:
        body += tlv(0xBE, tlv(0x04, user_information))
    return tlv(tag, body)


def _decode_release(buf: bytes, tag: int, name: str) -> tuple[int | None, bytes | None]:
    fields = apdu_fields(buf, tag, name, _RELEASE_FIELDS)
    reason = fields.get(0x80)
    info = fields.get(0xBE)
    return (
        decode_ber_int(reason, "release reason") if reason is not None else None,
        decode_user_information(info) if info is not None else None,
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
            "user_information": hex_or_none(self.user_information),
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
            "user_information": hex_or_none(self.user_information),
        }
