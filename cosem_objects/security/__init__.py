"""DLMS security suite 0 (AES-GCM-128): ciphering of APDUs and HLS-GMAC.

Every function that reads bytes from the wire raises only ProtocolError subclasses:
DecodeError for malformed framing, SecurityError for anything cryptographic (bad tag, wrong key,
unsupported security control, replayed invocation counter), AuthenticationError for an HLS
reply that does not verify.

One module per part: `ciphering` (security control, keys, encrypt/decrypt of one payload),
`ciphered_apdus` (glo- and general-glo-ciphering framing, wrap/unwrap), `hls_gmac`
(authentication mechanism 5), `replay` (the invocation counter guard)."""

from __future__ import annotations

from cosem_objects.security.ciphered_apdus import (
    GENERAL_GLO_CIPHERING,
    GLO_TAGS,
    PLAIN_TAGS,
    GeneralGloCiphering,
    GloCipheredApdu,
    unwrap_general_glo,
    unwrap_service_specific,
    wrap_general_glo,
    wrap_service_specific,
)
from cosem_objects.security.ciphering import (
    KEY_LENGTH,
    MAX_INVOCATION_COUNTER,
    SYSTEM_TITLE_LENGTH,
    TAG_LENGTH,
    SecurityControl,
    SecurityKeys,
    associated_data,
    decrypt,
    decrypt_unauthenticated,
    encrypt,
    make_iv,
    security_json,
    split_payload,
)
from cosem_objects.security.hls_gmac import (
    HLS_GMAC_REPLY_LENGTH,
    HLS_GMAC_SC,
    hls_gmac_reply,
    hls_gmac_tag,
    verify_hls_gmac_reply,
)
from cosem_objects.security.replay import InvocationCounterGuard

__all__ = [
    "GENERAL_GLO_CIPHERING",
    "GLO_TAGS",
    "HLS_GMAC_REPLY_LENGTH",
    "HLS_GMAC_SC",
    "KEY_LENGTH",
    "MAX_INVOCATION_COUNTER",
    "PLAIN_TAGS",
    "SYSTEM_TITLE_LENGTH",
    "TAG_LENGTH",
    "GeneralGloCiphering",
    "GloCipheredApdu",
    "InvocationCounterGuard",
    "SecurityControl",
    "SecurityKeys",
    "associated_data",
    "decrypt",
    "decrypt_unauthenticated",
    "encrypt",
    "hls_gmac_reply",
    "hls_gmac_tag",
    "make_iv",
    "security_json",
    "split_payload",
    "unwrap_general_glo",
    "unwrap_service_specific",
    "verify_hls_gmac_reply",
    "wrap_general_glo",
    "wrap_service_specific",
]
