"""HLS-GMAC (authentication mechanism 5): pass 3 and 4 of a high-level-security association,
where each side proves it holds the keys by a GMAC over the other's challenge.

A reply that does not verify raises AuthenticationError (a SecurityError subclass), so callers
can tell a failed login apart from a message that failed to decipher."""

from __future__ import annotations

import hmac

from cosem_objects.errors import AuthenticationError, SecurityError
from cosem_objects.security.ciphering import (
    SUPPORTED_SUITES,
    TAG_LENGTH,
    SecurityControl,
    SecurityKeys,
    checked_control,
    gmac,
    make_iv,
)

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
    control = checked_control(sc)
    if control.encrypted:
        raise SecurityError("HLS-GMAC uses an authentication-only security control")
    make_iv(system_title, invocation_counter)
    return gmac(sc, system_title, invocation_counter, keys, challenge)


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
        or control.suite_id not in SUPPORTED_SUITES
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
