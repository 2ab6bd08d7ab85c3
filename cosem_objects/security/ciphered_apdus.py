"""The ciphered APDU forms: service-specific glo- APDUs (glo-get-request, glo-initiate-request,
...) and general-glo-ciphering, their framing (tag | length | SC | IC | payload) and the
wrap/unwrap that ciphers a plain APDU into one and back.

Framing is read before anything is deciphered, and the lengths must account for every byte,
so a malformed frame is a DecodeError and never reaches the cipher."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cosem_objects.axdr import decode_length, encode_length
from cosem_objects.errors import DecodeError, SecurityError
from cosem_objects.security.ciphering import (
    HEADER_LENGTH,
    MAX_INVOCATION_COUNTER,
    SecurityKeys,
    decrypt,
    encrypt,
    security_json,
)

GENERAL_GLO_CIPHERING = 0xDB

# Service-specific global ciphering: plain xDLMS tag -> glo- tag (Green Book xDLMS-APDU CHOICE).
GLO_TAGS: dict[int, int] = {
    0x01: 0x21,  # initiate-request -> glo-initiate-request
    0x05: 0x25,  # read-request (SN) -> glo-read-request
    0x06: 0x26,  # write-request (SN) -> glo-write-request
    0x08: 0x28,  # initiate-response -> glo-initiate-response
    0x0C: 0x2C,  # read-response (SN) -> glo-read-response
    0x0D: 0x2D,  # write-response (SN) -> glo-write-response
    0xC0: 0xC8,  # get-request
    0xC1: 0xC9,  # set-request
    0xC2: 0xCA,  # event-notification-request
    0xC3: 0xCB,  # action-request
    0xC4: 0xCC,  # get-response
    0xC5: 0xCD,  # set-response
    0xC7: 0xCF,  # action-response
}
PLAIN_TAGS: dict[int, int] = {glo: plain for plain, glo in GLO_TAGS.items()}


def _read_ciphered_body(buf: bytes, offset: int) -> tuple[int, int, bytes]:
    """length | SC | IC(4) | payload, which must end the buffer. Returns (sc, ic, payload)."""
    length, offset = decode_length(buf, offset)
    if length < HEADER_LENGTH:
        raise DecodeError("ciphered content shorter than SC + invocation counter")
    if offset + length != len(buf):
        raise DecodeError(
            f"ciphered content length {length} does not match the {len(buf) - offset} bytes left"
        )
    sc = buf[offset]
    ic = int.from_bytes(buf[offset + 1 : offset + 5], "big")
    return sc, ic, bytes(buf[offset + 5 :])


def _ciphered_body(sc: int, ic: int, payload: bytes) -> bytes:
    if not 0 <= sc <= 0xFF:
        raise SecurityError(f"security control is one byte, got {sc}")
    if not 0 <= ic <= MAX_INVOCATION_COUNTER:
        raise SecurityError("invocation counter out of range")
    return (
        encode_length(HEADER_LENGTH + len(payload)) + bytes((sc,)) + ic.to_bytes(4, "big") + payload
    )


@dataclass(frozen=True, slots=True)
class GloCipheredApdu:
    """A service-specific globally ciphered APDU (glo-get-request 0xC8, glo-initiate-request
    0x21, ...): tag | length | SC | IC | payload. It carries no system title: the receiver takes
    the sender's from the association (calling/responding AP title)."""

    tag: int
    security_control: int
    invocation_counter: int
    payload: bytes

    def to_bytes(self) -> bytes:
        return bytes((self.tag,)) + _ciphered_body(
            self.security_control, self.invocation_counter, self.payload
        )

    @classmethod
    def from_bytes(cls, buf: bytes) -> GloCipheredApdu:
        if not buf:
            raise DecodeError("empty ciphered APDU")
        if buf[0] not in PLAIN_TAGS:
            raise DecodeError(f"0x{buf[0]:02X} is not a service-specific glo- tag")
        sc, ic, payload = _read_ciphered_body(buf, 1)
        return cls(buf[0], sc, ic, payload)

    def security_json(
        self, system_title: bytes | None, keys: SecurityKeys | None = None
    ) -> dict[str, Any]:
        return security_json(
            self.security_control, system_title, self.invocation_counter, self.payload, keys
        )


@dataclass(frozen=True, slots=True)
class GeneralGloCiphering:
    """general-glo-ciphering (0xDB): DB | system title (A-XDR octet string) | length | SC | IC |
    payload. The system title in it is the sender's and builds the IV."""

    system_title: bytes
    security_control: int
    invocation_counter: int
    payload: bytes

    def to_bytes(self) -> bytes:
        return (
            bytes((GENERAL_GLO_CIPHERING,))
            + encode_length(len(self.system_title))
            + self.system_title
            + _ciphered_body(self.security_control, self.invocation_counter, self.payload)
        )

    @classmethod
    def from_bytes(cls, buf: bytes) -> GeneralGloCiphering:
        if not buf or buf[0] != GENERAL_GLO_CIPHERING:
            raise DecodeError("not a general-glo-ciphering APDU (tag 0xDB)")
        title_length, offset = decode_length(buf, 1)
        end = offset + title_length
        if end > len(buf):
            raise DecodeError("truncated system title")
        sc, ic, payload = _read_ciphered_body(buf, end)
        return cls(bytes(buf[offset:end]), sc, ic, payload)

    def security_json(self, keys: SecurityKeys | None = None) -> dict[str, Any]:
        return security_json(
            self.security_control, self.system_title, self.invocation_counter, self.payload, keys
        )


def wrap_service_specific(
    plain_apdu: bytes, sc: int, system_title: bytes, ic: int, keys: SecurityKeys
) -> bytes:
    """Ciphers a plain xDLMS APDU into its glo- counterpart; `system_title` is the sender's."""
    if not plain_apdu:
        raise SecurityError("empty APDU")
    glo_tag = GLO_TAGS.get(plain_apdu[0])
    if glo_tag is None:
        raise SecurityError(f"APDU tag 0x{plain_apdu[0]:02X} has no service-specific glo- form")
    payload = encrypt(sc, system_title, ic, keys, plain_apdu)
    return GloCipheredApdu(glo_tag, sc, ic, payload).to_bytes()


def unwrap_service_specific(
    apdu: bytes, system_title: bytes, keys: SecurityKeys
) -> tuple[bytes, int]:
    """Deciphers a glo- APDU sent by the holder of `system_title`: (plaintext APDU, IC).
    The caller checks the IC against replay (InvocationCounterGuard) after this succeeds."""
    ciphered = GloCipheredApdu.from_bytes(apdu)
    plaintext = decrypt(
        ciphered.security_control, system_title, ciphered.invocation_counter, keys, ciphered.payload
    )
    return plaintext, ciphered.invocation_counter


def wrap_general_glo(
    plain_apdu: bytes, sc: int, system_title: bytes, ic: int, keys: SecurityKeys
) -> bytes:
    payload = encrypt(sc, system_title, ic, keys, plain_apdu)
    return GeneralGloCiphering(system_title, sc, ic, payload).to_bytes()


def unwrap_general_glo(apdu: bytes, keys: SecurityKeys) -> tuple[bytes, bytes, int]:
    """(plaintext APDU, sender system title, IC) of a general-glo-ciphering APDU."""
    ciphered = GeneralGloCiphering.from_bytes(apdu)
    plaintext = decrypt(
        ciphered.security_control,
        ciphered.system_title,
        ciphered.invocation_counter,
        keys,
        ciphered.payload,
    )
    return plaintext, ciphered.system_title, ciphered.invocation_counter
