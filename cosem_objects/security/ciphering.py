"""Security suite 0 (AES-GCM-128) on one APDU: the security control byte, the keys, and
encrypt / decrypt / authenticate under a given security control.

Where the work is done: dlms-cosem 21.3.2's `dlms_cosem.security` is right for authenticated
encryption (SC 0x30) and for GMAC (which is also what authentication-only SC 0x10 computes: a
GMAC over SC || AK || plaintext), so those go through it. It is wrong for the other security
controls: for SC 0x10 it encrypts the APDU and leaves the plaintext out of the AAD, and for
SC 0x20 it appends (or expects) a tag that encryption-only messages do not carry; it also lets
ValueError out on short input. So encryption-only (AES-CTR from counter block IV || 00000002)
and the input checks are our own. tests/test_security.py::TestDlmsCosemSecurity shows both
halves against the Green Book vectors."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from dlms_cosem import security as _dlms_security
from dlms_cosem.exceptions import CipheringError as _DlmsCipheringError
from dlms_cosem.exceptions import DecryptionError as _DlmsDecryptionError

from cosem_objects.errors import DecodeError, SecurityError

TAG_LENGTH = 12
SYSTEM_TITLE_LENGTH = 8
KEY_LENGTH = 16
MAX_INVOCATION_COUNTER = 0xFFFFFFFF
SUPPORTED_SUITES = (0, 1)  # both use AES-GCM-128 for APDU protection
HEADER_LENGTH = 5  # SC (1) + IC (4)


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
def checked_control(sc: int) -> SecurityControl:
    if not 0 <= sc <= 0xFF:
        raise SecurityError(f"security control is one byte, got {sc}")
    control = SecurityControl.from_byte(sc)
    if control.suite_id not in SUPPORTED_SUITES:
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
    control = checked_control(sc)
    if not control.authenticated:
        return b""
    if control.encrypted:
        return bytes((sc,)) + _auth_key(keys)
    return bytes((sc,)) + _auth_key(keys) + plaintext


def _ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    """GCM's keystream without the tag: AES-CTR from counter block IV || 00000002."""
    cipher = Cipher(algorithms.AES(key), modes.CTR(iv + b"\x00\x00\x00\x02")).encryptor()
    return cipher.update(data) + cipher.finalize()


def gmac(sc: int, system_title: bytes, ic: int, keys: SecurityKeys, data: bytes) -> bytes:
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
    control = checked_control(sc)
    iv = make_iv(system_title, invocation_counter)
    if control.encrypted and not control.authenticated:
        return _ctr(keys.encryption_key, iv, plaintext)
    if not control.encrypted:
        return plaintext + gmac(sc, system_title, invocation_counter, keys, plaintext)
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
    control = checked_control(sc)
    iv = make_iv(system_title, invocation_counter)
    if control.encrypted and not control.authenticated:
        return _ctr(keys.encryption_key, iv, payload)
    if len(payload) < TAG_LENGTH:
        raise SecurityError("ciphered payload shorter than its authentication tag")
    if not control.encrypted:
        plaintext, tag = payload[:-TAG_LENGTH], payload[-TAG_LENGTH:]
        expected = gmac(sc, system_title, invocation_counter, keys, plaintext)
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
    control = checked_control(sc)
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
        "length": HEADER_LENGTH + len(payload),
        "security_control": sc,
        "invocation_counter": invocation_counter,
        "iv": iv.hex().upper() if iv is not None else None,
        "authenticated": control.authenticated,
        "encrypted": control.encrypted,
        "ciphertext": ciphertext.hex().upper() if ciphertext is not None else None,
        "tag": tag.hex().upper() if tag is not None else None,
        "tag_ok": tag_ok,
    }
