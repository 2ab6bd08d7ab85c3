"""DLMS security suite 0 (AES-GCM-128): ciphering of APDUs and HLS-GMAC.

Where the work is done: dlms-cosem 21.3.2's `dlms_cosem.security` is right for authenticated
encryption (SC 0x30) and for GMAC (which is also what authentication-only SC 0x10 computes: a
GMAC over SC || AK || plaintext), so those go through it. It is wrong for the other security
controls: for SC 0x10 it encrypts the APDU and leaves the plaintext out of the AAD, and for
SC 0x20 it appends (or expects) a tag that encryption-only messages do not carry; it also lets
ValueError out on short input. So encryption-only (AES-CTR from counter block IV || 00000002)
and the input checks are our own. tests/test_security.py::TestDlmsCosemSecurity shows both
halves against the Green Book vectors.

Every function that reads bytes from the wire raises only ProtocolError subclasses:
DecodeError for malformed framing, SecurityError for anything cryptographic (bad tag, wrong key,
unsupported security control, replayed invocation counter), AuthenticationError for an HLS
reply that does not verify."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from dlms_cosem import security as _dlms_security
from dlms_cosem.exceptions import CipheringError as _DlmsCipheringError
from dlms_cosem.exceptions import DecryptionError as _DlmsDecryptionError

from cosem_objects.axdr import decode_length, encode_length
from cosem_objects.errors import AuthenticationError, DecodeError, SecurityError

TAG_LENGTH = 12
SYSTEM_TITLE_LENGTH = 8
KEY_LENGTH = 16
MAX_INVOCATION_COUNTER = 0xFFFFFFFF
_SUPPORTED_SUITES = (0, 1)  # both use AES-GCM-128 for APDU protection
_HEADER_LENGTH = 5  # SC (1) + IC (4)

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


@dataclass(frozen=True, slots=True)
class SecurityControl:
    """The security control byte: bits 0-3 suite id, 4 authenticated, 5 encrypted,
    6 broadcast key, 7 compressed."""

    suite_id: int = 0
    authenticated: bool = False
    encrypted: bool = False
    broadcast: bool = False
    compressed: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.suite_id <= 0x0F:
            raise ValueError(f"security suite id out of range: {self.suite_id}")

    @classmethod
    def from_byte(cls, value: int) -> SecurityControl:
        if not 0 <= value <= 0xFF:
            raise DecodeError(f"security control is one byte, got {value}")
        return cls(
            suite_id=value & 0x0F,
            authenticated=bool(value & 0x10),
            encrypted=bool(value & 0x20),
            broadcast=bool(value & 0x40),
            compressed=bool(value & 0x80),
        )

    def to_byte(self) -> int:
        return (
            self.suite_id
            | (0x10 if self.authenticated else 0)
            | (0x20 if self.encrypted else 0)
            | (0x40 if self.broadcast else 0)
            | (0x80 if self.compressed else 0)
        )


@dataclass(frozen=True, slots=True)
class SecurityKeys:
    """The global key pair of one association (or the broadcast pair, for SC with bit 6 set:
    the caller picks which keys to pass). The authentication key may be unknown (None): then
    only encryption-only messages and explicitly unauthenticated decryption work."""

    encryption_key: bytes = field(repr=False)
    authentication_key: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if len(self.encryption_key) != KEY_LENGTH:
            raise ValueError(f"encryption key must be {KEY_LENGTH} bytes")
        if self.authentication_key is not None and len(self.authentication_key) != KEY_LENGTH:
            raise ValueError(f"authentication key must be {KEY_LENGTH} bytes")

    def __repr__(self) -> str:
        return "SecurityKeys(encryption_key=<hidden>, authentication_key=<hidden>)"


# -- primitives -----------------------------------------------------------------------------
def _control(sc: int) -> SecurityControl:
    if not 0 <= sc <= 0xFF:
        raise SecurityError(f"security control is one byte, got {sc}")
    control = SecurityControl.from_byte(sc)
    if control.suite_id not in _SUPPORTED_SUITES:
        raise SecurityError(f"security suite {control.suite_id} not supported")
    if control.compressed:
        raise SecurityError("compressed APDUs are not supported")
    if not (control.authenticated or control.encrypted):
        raise SecurityError(f"security control 0x{sc:02X} applies no protection")
    return control


def make_iv(system_title: bytes, invocation_counter: int) -> bytes:
    """IV = sender's system title (8 bytes) || invocation counter (4 bytes, big-endian)."""
    if len(system_title) != SYSTEM_TITLE_LENGTH:
        raise SecurityError(f"system title must be {SYSTEM_TITLE_LENGTH} bytes")
    if not 0 <= invocation_counter <= MAX_INVOCATION_COUNTER:
        raise SecurityError("invocation counter out of range")
    return system_title + invocation_counter.to_bytes(4, "big")


def _auth_key(keys: SecurityKeys) -> bytes:
    if keys.authentication_key is None:
        raise SecurityError("this security control needs the authentication key")
    return keys.authentication_key


def associated_data(sc: int, keys: SecurityKeys, plaintext: bytes = b"") -> bytes:
    """AAD: SC || AK for authenticated encryption, SC || AK || plaintext for authentication
    only, empty for encryption only. Holds the authentication key: never log it."""
    control = _control(sc)
    if not control.authenticated:
        return b""
    if control.encrypted:
        return bytes((sc,)) + _auth_key(keys)
    return bytes((sc,)) + _auth_key(keys) + plaintext


def _ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    """GCM's keystream without the tag: AES-CTR from counter block IV || 00000002."""
    cipher = Cipher(algorithms.AES(key), modes.CTR(iv + b"\x00\x00\x00\x02")).encryptor()
    return cipher.update(data) + cipher.finalize()


def _gmac(sc: int, system_title: bytes, ic: int, keys: SecurityKeys, data: bytes) -> bytes:
    """12-byte GMAC over SC || AK || data (authentication only, and HLS-GMAC)."""
    try:
        return bytes(
            _dlms_security.gmac(
                _dlms_security.SecurityControlField.from_bytes(bytes((sc,))),
                system_title,
                ic,
                keys.encryption_key,
                _auth_key(keys),
                data,
            )
        )
    except (_DlmsCipheringError, ValueError) as exc:  # pragma: no cover - inputs checked first
        raise SecurityError(f"GMAC failed: {exc}") from None


def encrypt(
    sc: int, system_title: bytes, invocation_counter: int, keys: SecurityKeys, plaintext: bytes
) -> bytes:
    """Protects `plaintext` under security control `sc`. Returns ciphertext || tag (SC 0x30),
    plaintext || tag (SC 0x10) or ciphertext (SC 0x20); the SC and IC header is not included."""
    control = _control(sc)
    iv = make_iv(system_title, invocation_counter)
    if control.encrypted and not control.authenticated:
        return _ctr(keys.encryption_key, iv, plaintext)
    if not control.encrypted:
        return plaintext + _gmac(sc, system_title, invocation_counter, keys, plaintext)
    try:
        return bytes(
            _dlms_security.encrypt(
                _dlms_security.SecurityControlField.from_bytes(bytes((sc,))),
                system_title,
                invocation_counter,
                keys.encryption_key,
                plaintext,
                _auth_key(keys),
            )
        )
    except ValueError as exc:  # pragma: no cover - inputs checked first
        raise SecurityError(f"encryption failed: {exc}") from None


def decrypt(
    sc: int, system_title: bytes, invocation_counter: int, keys: SecurityKeys, payload: bytes
) -> bytes:
    """Inverse of encrypt(): checks the tag (SC with the authenticated bit) and returns the
    plaintext. SecurityError when the tag does not verify (wrong key, tampering, wrong IC)."""
    control = _control(sc)
    iv = make_iv(system_title, invocation_counter)
    if control.encrypted and not control.authenticated:
        return _ctr(keys.encryption_key, iv, payload)
    if len(payload) < TAG_LENGTH:
        raise SecurityError("ciphered payload shorter than its authentication tag")
    if not control.encrypted:
        plaintext, tag = payload[:-TAG_LENGTH], payload[-TAG_LENGTH:]
        expected = _gmac(sc, system_title, invocation_counter, keys, plaintext)
        if not hmac.compare_digest(tag, expected):
            raise SecurityError("authentication tag does not verify")
        return plaintext
    try:
        return bytes(
            _dlms_security.decrypt(
                _dlms_security.SecurityControlField.from_bytes(bytes((sc,))),
                system_title,
                invocation_counter,
                keys.encryption_key,
                payload,
                _auth_key(keys),
            )
        )
    except _DlmsDecryptionError:
        raise SecurityError("authentication tag does not verify") from None
    except ValueError as exc:  # pragma: no cover - inputs checked first
        raise SecurityError(f"decryption failed: {exc}") from None


def decrypt_unauthenticated(
    sc: int, system_title: bytes, invocation_counter: int, encryption_key: bytes, payload: bytes
) -> bytes:
    """Decrypts without checking any tag, for pushes whose authentication key is not known
    (e.g. HAN ports that publish only the encryption key). The result is NOT authenticated:
    anyone can forge it. For SC with the authenticated bit the trailing 12-byte tag is dropped."""
    control = _control(sc)
    if len(encryption_key) != KEY_LENGTH:
        raise SecurityError(f"encryption key must be {KEY_LENGTH} bytes")
    iv = make_iv(system_title, invocation_counter)
    if not control.encrypted:
        if len(payload) < TAG_LENGTH:
            raise SecurityError("ciphered payload shorter than its authentication tag")
        return payload[:-TAG_LENGTH]
    if control.authenticated:
        if len(payload) < TAG_LENGTH:
            raise SecurityError("ciphered payload shorter than its authentication tag")
        payload = payload[:-TAG_LENGTH]
    return _ctr(encryption_key, iv, payload)


def split_payload(sc: int, payload: bytes) -> tuple[bytes | None, bytes | None]:
    """(ciphertext, tag) of a ciphered payload; ciphertext is None for authentication only
    (the APDU travels in clear) and tag is None for encryption only."""
    control = SecurityControl.from_byte(sc)
    if control.authenticated:
        if len(payload) < TAG_LENGTH:
            raise DecodeError("ciphered payload shorter than its authentication tag")
        body, tag = payload[:-TAG_LENGTH], payload[-TAG_LENGTH:]
        return (body if control.encrypted else None), tag
    return payload, None


def security_json(
    sc: int,
    system_title: bytes | None,
    invocation_counter: int,
    payload: bytes,
    keys: SecurityKeys | None = None,
) -> dict[str, Any]:
    """The vectors' `expect["security"]` shape for one ciphered payload (without SC and IC).
    `tag_ok` is None when it cannot be checked (no tag, no keys, or no authentication key)."""
    control = SecurityControl.from_byte(sc)
    ciphertext, tag = split_payload(sc, payload)
    iv = None
    if system_title is not None and len(system_title) == SYSTEM_TITLE_LENGTH:
        iv = make_iv(system_title, invocation_counter)
    tag_ok: bool | None = None
    if (
        tag is not None
        and iv is not None
        and system_title is not None
        and keys is not None
        and keys.authentication_key is not None
    ):
        try:
            decrypt(sc, system_title, invocation_counter, keys, payload)
            tag_ok = True
        except SecurityError:
            tag_ok = False
    return {
        "system_title": system_title.hex().upper() if system_title is not None else None,
        "length": _HEADER_LENGTH + len(payload),
        "security_control": sc,
        "invocation_counter": invocation_counter,
        "iv": iv.hex().upper() if iv is not None else None,
        "authenticated": control.authenticated,
        "encrypted": control.encrypted,
        "ciphertext": ciphertext.hex().upper() if ciphertext is not None else None,
        "tag": tag.hex().upper() if tag is not None else None,
        "tag_ok": tag_ok,
    }


# -- ciphered APDU framing ------------------------------------------------------------------
def _read_ciphered_body(buf: bytes, offset: int) -> tuple[int, int, bytes]:
    """length | SC | IC(4) | payload, which must end the buffer. Returns (sc, ic, payload)."""
    length, offset = decode_length(buf, offset)
    if length < _HEADER_LENGTH:
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
        encode_length(_HEADER_LENGTH + len(payload))
        + bytes((sc,))
        + ic.to_bytes(4, "big")
        + payload
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


# -- HLS-GMAC (authentication mechanism 5) --------------------------------------------------
HLS_GMAC_SC = 0x10
HLS_GMAC_REPLY_LENGTH = 1 + 4 + TAG_LENGTH


def hls_gmac_tag(
    keys: SecurityKeys,
    system_title: bytes,
    invocation_counter: int,
    challenge: bytes,
    sc: int = HLS_GMAC_SC,
) -> bytes:
    """GMAC(EK, IV = ST || IC, AAD = SC || AK || challenge), 12 bytes."""
    control = _control(sc)
    if control.encrypted:
        raise SecurityError("HLS-GMAC uses an authentication-only security control")
    make_iv(system_title, invocation_counter)
    return _gmac(sc, system_title, invocation_counter, keys, challenge)


def hls_gmac_reply(keys: SecurityKeys, system_title: bytes, ic: int, challenge: bytes) -> bytes:
    """f(challenge) = SC || IC || GMAC tag: the octet string the signer sends (the client over
    StoC in reply_to_HLS_authentication, the server over CtoS in its answer). `system_title`
    and `ic` are the signer's own."""
    tag = hls_gmac_tag(keys, system_title, ic, challenge, HLS_GMAC_SC)
    return bytes((HLS_GMAC_SC,)) + ic.to_bytes(4, "big") + tag


def verify_hls_gmac_reply(
    keys: SecurityKeys, system_title: bytes, challenge: bytes, reply: bytes
) -> int:
    """Checks the peer's f(challenge), where `challenge` is the one we sent and `system_title`
    the peer's. Returns the peer's IC (check it with an InvocationCounterGuard)."""
    if len(reply) != HLS_GMAC_REPLY_LENGTH:
        raise AuthenticationError(f"HLS-GMAC reply must be {HLS_GMAC_REPLY_LENGTH} bytes")
    sc = reply[0]
    control = SecurityControl.from_byte(sc)
    if (
        not control.authenticated
        or control.encrypted
        or control.compressed
        or control.suite_id not in _SUPPORTED_SUITES
    ):
        raise AuthenticationError(f"HLS-GMAC reply has security control 0x{sc:02X}")
    ic = int.from_bytes(reply[1:5], "big")
    try:
        expected = hls_gmac_tag(keys, system_title, ic, challenge, sc)
    except SecurityError as exc:
        raise AuthenticationError(str(exc)) from None
    if not hmac.compare_digest(reply[5:], expected):
        raise AuthenticationError("HLS-GMAC reply does not verify")
    return ic


# -- replay protection ----------------------------------------------------------------------
class InvocationCounterGuard:
    """Rejects an invocation counter that is not greater than the last one accepted from the
    same sender and key. Call check() only after the message authenticated, so a forged
    message cannot push the counter forward."""

    __slots__ = ("last",)

    def __init__(self, last: int | None = None) -> None:
        self.last = last

    def check(self, ic: int) -> None:
        if not 0 <= ic <= MAX_INVOCATION_COUNTER:
            raise SecurityError("invocation counter out of range")
        if self.last is not None and ic <= self.last:
            raise SecurityError(f"replayed invocation counter {ic} (last accepted {self.last})")
        self.last = ic

    def __repr__(self) -> str:
        return f"InvocationCounterGuard(last={self.last})"
