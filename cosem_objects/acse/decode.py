"""Any ACSE APDU from its first byte."""

from __future__ import annotations

from typing import Any

from cosem_objects.acse.association import AARE, AARE_TAG, AARQ, AARQ_TAG
from cosem_objects.acse.release import RLRE, RLRE_TAG, RLRQ, RLRQ_TAG
from cosem_objects.errors import DecodeError

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
