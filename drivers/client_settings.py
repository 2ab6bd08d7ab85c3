"""How the client associates with one meter: client SAP, authentication, keys and limits.

Kept apart from the association machine (drivers/client_core.py) because the connection layer
(drivers/connect.py) builds these from an inventory row without touching the protocol."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from cosem_objects import security
from cosem_objects.acse import DEFAULT_LN_CONFORMANCE, Conformance

# The common LN proposal, plus general block transfer (which we can receive).
DEFAULT_CONFORMANCE = DEFAULT_LN_CONFORMANCE | Conformance.GENERAL_BLOCK_TRANSFER


class Authentication(enum.StrEnum):
    NONE = "none"
    LLS = "lls"
    HLS_GMAC = "hls-gmac"


@dataclass(frozen=True)
class ClientSettings:
    """How to associate with one meter. Secrets are kept out of repr."""

    client_sap: int = 16
    server_logical: int = 1
    server_physical: int | None = None
    authentication: Authentication = Authentication.NONE
    password: bytes | None = field(default=None, repr=False)
    auth_key: bytes | None = field(default=None, repr=False)
    enc_key: bytes | None = field(default=None, repr=False)
    client_system_title: bytes = b"HES\x00\x00\x00\x00\x01"
    max_pdu_size: int = 0xFFFF
    conformance: Conformance = DEFAULT_CONFORMANCE
    deviation_sign: int = 1
    max_response_bytes: int = 16 * 1024 * 1024

    def __post_init__(self) -> None:
        object.__setattr__(self, "authentication", Authentication(self.authentication))
        if self.authentication is Authentication.LLS and not self.password:
            raise ValueError("LLS needs a password")
        if self.authentication is Authentication.HLS_GMAC:
            for name, key in (("auth_key", self.auth_key), ("enc_key", self.enc_key)):
                if key is None or len(key) != 16:
                    raise ValueError(f"HLS-GMAC needs a 16-byte {name}")
            if len(self.client_system_title) != 8:
                raise ValueError("client system title must be 8 bytes")

    @property
    def ciphered(self) -> bool:
        return self.authentication is Authentication.HLS_GMAC

    @property
    def keys(self) -> security.SecurityKeys:
        assert self.enc_key is not None and self.auth_key is not None
        return security.SecurityKeys(self.enc_key, self.auth_key)
